//! husk-vmm's side of the vhost-user protocol to virtiofsd (rust-vmm's `vhost` crate, frontend
//! role): the backend processes the virtio-fs queues itself, in its own sandboxed process,
//! straight from guest RAM it maps from the memfd; the VMM only tells it where the rings are and
//! which eventfds carry notifications.
//!
//! Owns: the session on one connected Unix socket. At build time (before the jail)
//! [`FsBackend::new`] sends SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM
//! and SET_MEM_TABLE; when the driver activates the device [`FsBackend::start`] sends
//! SET_FEATURES and, per ring, SET_VRING_NUM/ADDR/BASE/CALL/KICK, then SET_VRING_ENABLE; on
//! reset [`FsBackend::stop`] sends GET_VRING_BASE, which stops each ring. Every step runs on the
//! event-loop thread after the jail, so only `sendmsg`/`recvmsg` on this socket are needed.
//!
//! Must not touch: queue contents, KVM, the host file system.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::VIRTIO_RING_F_INDIRECT_DESC;
use crate::devices::virtio::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::memory::GuestMemoryMmap;

/// vhost-user's own feature bit in GET/SET_FEATURES (never offered to the guest): the backend
/// speaks the protocol-feature extension, and its rings start disabled until SET_VRING_ENABLE.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// Ring features the transport and the backend can both honour; whatever else the backend
/// offers (packed rings, IOMMU, notification data) needs transport support husk lacks.
pub const GUEST_FEATURE_MASK: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX;

/// Protocol features husk uses: MQ (to check the backend serves enough queues) and REPLY_ACK
/// (every request is acknowledged, so a refused ring setup is an error here, not a silent hang
/// in the guest).
pub const PROTOCOL_FEATURES: VhostUserProtocolFeatures =
    VhostUserProtocolFeatures::MQ.union(VhostUserProtocolFeatures::REPLY_ACK);

/// How long one request may wait for the backend's reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors talking to the backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A vhost-user request failed (socket error, timeout, refusal, malformed reply).
    #[error("vhost-user {step}: {source}")]
    Request {
        /// The request.
        step: &'static str,
        /// The vhost crate's error.
        source: vhost::Error,
    },
    /// Setting socket timeouts failed.
    #[error("vhost-user socket: {0}")]
    Socket(std::io::Error),
    /// The backend lacks something virtio-fs needs.
    #[error("backend {0}")]
    Unsupported(String),
    /// A guest RAM region is not file-backed, so the backend cannot map it.
    #[error("guest RAM at {0:#x} is not in a memfd; virtio-fs needs memfd-backed guest memory (--memfd)")]
    MemoryNotShared(u64),
    /// A ring address is outside guest RAM (the transport validates rings, so a bug).
    #[error("ring {index}: address {addr:#x} is outside guest RAM")]
    RingAddress {
        /// The ring.
        index: usize,
        /// The guest address.
        addr: u64,
    },
}

fn req(step: &'static str) -> impl FnOnce(vhost::Error) -> BackendError {
    move |source| BackendError::Request { step, source }
}

/// One ring as the driver set it up, for [`FsBackend::start`].
pub struct Ring<'a> {
    /// Largest size the device offered.
    pub max_size: u16,
    /// Size the driver chose.
    pub size: u16,
    /// Descriptor table (guest address).
    pub desc: u64,
    /// Available ring (guest address).
    pub avail: u64,
    /// Used ring (guest address).
    pub used: u64,
    /// Where the backend starts reading the available ring.
    pub next_avail: u16,
    /// Written by KVM (the ioeventfd) when the driver notifies the queue.
    pub kick: &'a EventFd,
    /// Written by the backend when it used buffers; the VMM turns it into the interrupt.
    pub call: &'a EventFd,
}

/// A negotiated vhost-user session with a virtio-fs backend.
pub struct FsBackend {
    frontend: Frontend,
    features: u64,
    protocol: VhostUserProtocolFeatures,
}

impl FsBackend {
    /// Negotiates with the backend on `sock` (connected, blocking) for a device with `queues`
    /// queues, and hands it guest memory `mem` (every region must be file-backed).
    pub fn new(
        sock: UnixStream,
        queues: usize,
        mem: &GuestMemoryMmap,
    ) -> Result<Self, BackendError> {
        sock.set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|()| sock.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(BackendError::Socket)?;
        let mut frontend = Frontend::from_stream(sock, queues as u64);
        frontend.set_owner().map_err(req("SET_OWNER"))?;
        let features = frontend.get_features().map_err(req("GET_FEATURES"))?;
        if features & VIRTIO_F_VERSION_1 == 0 {
            return Err(BackendError::Unsupported(format!(
                "features {features:#x} lack VIRTIO_F_VERSION_1"
            )));
        }
        let mut protocol = VhostUserProtocolFeatures::empty();
        if features & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            let offered = frontend
                .get_protocol_features()
                .map_err(req("GET_PROTOCOL_FEATURES"))?;
            protocol = offered & PROTOCOL_FEATURES;
            frontend
                .set_protocol_features(protocol)
                .map_err(req("SET_PROTOCOL_FEATURES"))?;
            if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
            if protocol.contains(VhostUserProtocolFeatures::MQ) {
                let n = frontend.get_queue_num().map_err(req("GET_QUEUE_NUM"))?;
                if n < queues as u64 {
                    return Err(BackendError::Unsupported(format!(
                        "serves {n} queues; virtio-fs needs {queues}"
                    )));
                }
            }
        }
        let regions = mem
            .iter()
            .map(|r| {
                VhostUserMemoryRegionInfo::from_guest_region(r)
                    .map_err(|_| BackendError::MemoryNotShared(r.start_addr().0))
            })
            .collect::<Result<Vec<_>, _>>()?;
        frontend
            .set_mem_table(&regions)
            .map_err(req("SET_MEM_TABLE"))?;
        Ok(Self {
            frontend,
            features,
            protocol,
        })
    }

    /// The backend's virtio features, as GET_FEATURES reported them.
    pub fn backend_features(&self) -> u64 {
        self.features
    }

    /// The protocol features both sides use.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    /// The features the device offers the guest: the backend's, within
    /// [`GUEST_FEATURE_MASK`].
    pub fn guest_features(&self) -> u64 {
        self.features & GUEST_FEATURE_MASK
    }

    /// Starts the rings: the driver accepted `acked` (a subset of [`Self::guest_features`]) and
    /// set up `rings` in guest memory `mem`.
    pub fn start(
        &mut self,
        acked: u64,
        rings: &[Ring<'_>],
        mem: &GuestMemoryMmap,
    ) -> Result<(), BackendError> {
        let extension = self.features & VHOST_USER_F_PROTOCOL_FEATURES;
        self.frontend
            .set_features((acked & self.guest_features()) | extension)
            .map_err(req("SET_FEATURES"))?;
        for (index, ring) in rings.iter().enumerate() {
            let hva = |addr: u64| {
                mem.get_host_address(GuestAddress(addr))
                    .map(|p| p as u64)
                    .map_err(|_| BackendError::RingAddress { index, addr })
            };
            // vhost-user ring addresses are the frontend's virtual addresses; the backend
            // translates them through the userspace_addr of each SET_MEM_TABLE region.
            let addrs = VringConfigData {
                queue_max_size: ring.max_size,
                queue_size: ring.size,
                flags: 0,
                desc_table_addr: hva(ring.desc)?,
                used_ring_addr: hva(ring.used)?,
                avail_ring_addr: hva(ring.avail)?,
                log_addr: None,
            };
            self.frontend
                .set_vring_num(index, ring.size)
                .map_err(req("SET_VRING_NUM"))?;
            self.frontend
                .set_vring_addr(index, &addrs)
                .map_err(req("SET_VRING_ADDR"))?;
            self.frontend
                .set_vring_base(index, ring.next_avail)
                .map_err(req("SET_VRING_BASE"))?;
            self.frontend
                .set_vring_call(index, ring.call)
                .map_err(req("SET_VRING_CALL"))?;
            self.frontend
                .set_vring_kick(index, ring.kick)
                .map_err(req("SET_VRING_KICK"))?;
        }
        if extension != 0 {
            for index in 0..rings.len() {
                self.frontend
                    .set_vring_enable(index, true)
                    .map_err(req("SET_VRING_ENABLE"))?;
            }
        }
        Ok(())
    }

    /// Stops `count` rings (GET_VRING_BASE); returns where each stopped in the available ring.
    pub fn stop(&mut self, count: usize) -> Result<Vec<u32>, BackendError> {
        (0..count)
            .map(|index| {
                self.frontend
                    .get_vring_base(index)
                    .map_err(req("GET_VRING_BASE"))
            })
            .collect()
    }

    /// The socket, for watching the backend hang up.
    pub fn socket_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.frontend)
    }
}
