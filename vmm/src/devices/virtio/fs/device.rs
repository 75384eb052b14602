//! The virtio-fs device (virtio 1.2, 5.11) as the transport sees it: config space
//! `{ tag: [u8; 36], num_request_queues: u32 }`, two queues (hiprio and one request queue) and
//! the features of the vhost-user backend.
//!
//! Activation and reset are requests for the event loop: the transport calls [`VirtioFs::activate`]
//! and [`VirtioFs::reset`] on a vCPU thread, which must not talk to the backend (its seccomp list
//! has no `sendmsg`/`recvmsg`, and a slow backend must not stall a vCPU). Both only record what
//! the driver wants and wake the event loop, which brings the backend in line
//! ([`VirtioFs::sync_backend`]).
//!
//! Must not touch: KVM, the queues' contents (virtiofsd processes them), the host file system.

use std::os::unix::net::UnixStream;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::{BackendError, FsBackend, Ring};
use crate::devices::virtio::config::FsConfig;
use crate::devices::virtio::{
    device_type, read_config_bytes, ActivateError, Interrupt, VirtioDevice,
};
use crate::logging::ratelimited;
use crate::memory::GuestMemoryMmap;

/// Queues: hiprio (FUSE_INTERRUPT, FUSE_FORGET) then one request queue.
pub const NUM_QUEUES: usize = 2;
/// Request queues announced in the config space.
pub const NUM_REQUEST_QUEUES: u32 = 1;
/// Size offered for every queue (virtiofsd accepts up to 1024).
pub const QUEUE_SIZE: u16 = 1024;
/// Length of the tag field.
pub const TAG_LEN: usize = 36;
/// Config space: the tag, then `num_request_queues` (little endian).
pub const CONFIG_SIZE: usize = TAG_LEN + 4;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The backend's socket could not be reached.
    #[error("virtio-fs {socket}: cannot connect: {source}")]
    Connect {
        /// The socket path.
        socket: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Negotiating with the backend failed.
    #[error("virtio-fs {socket}: {source}")]
    Backend {
        /// The socket path.
        socket: String,
        /// What failed.
        source: BackendError,
    },
    /// An eventfd could not be created.
    #[error("virtio-fs eventfd: {0}")]
    EventFd(std::io::Error),
}

/// What the driver last asked for, waiting for the event loop.
struct Activation {
    acked: u64,
    queues: Vec<Queue>,
}

/// A virtio-fs device whose queues a vhost-user backend (virtiofsd) serves.
pub struct VirtioFs {
    pub(super) backend: FsBackend,
    config: [u8; CONFIG_SIZE],
    features: u64,
    acked: u64,
    mem: GuestMemoryMmap,
    /// Notified by the driver (KVM ioeventfds); handed to the backend, never read here.
    kick_evts: Vec<EventFd>,
    /// Written by the backend; the event loop turns each write into the interrupt.
    pub(super) call_evts: Vec<EventFd>,
    /// Wakes the event loop after activation or reset.
    pub(super) state_evt: EventFd,
    pub(super) interrupt: Option<Interrupt>,
    pending: Option<Activation>,
    /// The backend's rings are running (or were started and not stopped since).
    started: bool,
    stop_pending: bool,
    /// The backend closed the socket.
    pub(super) gone: bool,
}

impl VirtioFs {
    /// Connects to the backend named in `cfg` and negotiates with it (at build time: the jailed
    /// VMM can no longer reach the socket's path). Guest memory `mem` must be memfd-backed.
    pub fn new(cfg: &FsConfig, mem: GuestMemoryMmap) -> Result<Self, FsError> {
        let socket = cfg.socket.display().to_string();
        let sock = UnixStream::connect(&cfg.socket).map_err(|source| FsError::Connect {
            socket: socket.clone(),
            source,
        })?;
        Self::with_stream(sock, &cfg.tag, mem).map_err(|e| match e {
            FsError::Backend { source, .. } => FsError::Backend { socket, source },
            e => e,
        })
    }

    /// [`Self::new`] on an already-connected socket (tests, or a caller that passes an fd).
    pub fn with_stream(sock: UnixStream, tag: &str, mem: GuestMemoryMmap) -> Result<Self, FsError> {
        let backend =
            FsBackend::new(sock, NUM_QUEUES, &mem).map_err(|source| FsError::Backend {
                socket: String::new(),
                source,
            })?;
        let mut config = [0u8; CONFIG_SIZE];
        let n = tag.len().min(TAG_LEN);
        config[..n].copy_from_slice(&tag.as_bytes()[..n]);
        config[TAG_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
        let evts = || {
            (0..NUM_QUEUES)
                .map(|_| EventFd::new(EFD_NONBLOCK))
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(FsError::EventFd)
        };
        Ok(Self {
            features: backend.guest_features(),
            backend,
            config,
            acked: 0,
            mem,
            kick_evts: evts()?,
            call_evts: evts()?,
            state_evt: EventFd::new(EFD_NONBLOCK).map_err(FsError::EventFd)?,
            interrupt: None,
            pending: None,
            started: false,
            stop_pending: false,
            gone: false,
        })
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    /// Whether the backend's rings are running.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Brings the backend in line with what the driver last asked for: stops the rings after a
    /// reset (or before a re-activation), then starts them for a pending activation. Runs on
    /// the event loop.
    pub fn sync_backend(&mut self) {
        if self.started && (self.stop_pending || self.pending.is_some()) {
            if let Err(e) = self.backend.stop(NUM_QUEUES) {
                ratelimited!(WARN, "virtio-fs: stopping the backend's rings: {e}");
            }
            self.started = false;
        }
        self.stop_pending = false;
        let Some(activation) = self.pending.take() else {
            return;
        };
        if self.gone {
            ratelimited!(ERROR, "virtio-fs: cannot activate: the backend is gone");
            return;
        }
        let rings: Vec<Ring<'_>> = activation
            .queues
            .iter()
            .zip(self.kick_evts.iter().zip(&self.call_evts))
            .map(|(q, (kick, call))| Ring {
                max_size: q.max_size(),
                size: q.size(),
                desc: q.desc_table(),
                avail: q.avail_ring(),
                used: q.used_ring(),
                next_avail: q.next_avail(),
                kick,
                call,
            })
            .collect();
        match self.backend.start(activation.acked, &rings, &self.mem) {
            Ok(()) => self.started = true,
            Err(e) => {
                // The rings may be half set up: stop whatever runs before a retry.
                self.started = true;
                ratelimited!(ERROR, "virtio-fs: starting the backend's rings: {e}");
            }
        }
    }
}

impl VirtioDevice for VirtioFs {
    fn device_type(&self) -> u32 {
        device_type::FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.kick_evts
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, queues: Vec<Queue>, interrupt: Interrupt) -> Result<(), ActivateError> {
        if queues.len() != NUM_QUEUES {
            return Err(ActivateError::QueueCount {
                expected: NUM_QUEUES,
                got: queues.len(),
            });
        }
        if self.gone {
            return Err(ActivateError::Backend("virtiofsd closed its socket".into()));
        }
        self.pending = Some(Activation {
            acked: self.acked,
            queues,
        });
        self.interrupt = Some(interrupt);
        self.state_evt.write(1).map_err(ActivateError::Signal)
    }

    fn reset(&mut self) {
        self.pending = None;
        self.interrupt = None;
        self.acked = 0;
        if self.started {
            self.stop_pending = true;
            if let Err(e) = self.state_evt.write(1) {
                ratelimited!(WARN, "virtio-fs: cannot signal the reset: {e}");
            }
        }
    }
}
