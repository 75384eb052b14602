//! virtio-fs without virtiofsd: a scripted vhost-user backend on a socketpair records every
//! request (code, body, attached fds) and answers the ones that expect a reply, so the tests
//! check the frontend's messages in order, the features offered to the guest, the config space
//! and the interrupt forwarding. `vmm/tests/virtiofsd.rs` runs the same handshake against a
//! real virtiofsd.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::backend::{BackendError, VHOST_USER_F_PROTOCOL_FEATURES};
use super::device::{FsError, VirtioFs, CONFIG_SIZE, NUM_QUEUES, QUEUE_SIZE};
use crate::devices::virtio::test_utils::{mem as anonymous_mem, Driver};
use crate::devices::virtio::{
    device_type, DeviceSubscriber, Interrupt, VirtioDevice, COMMON_FEATURES, INT_VRING,
    VIRTIO_F_VERSION_1,
};
use crate::memory::{create_guest_memory, GuestMemoryMmap, MemoryBacking, MIN_MEMORY_BYTES};

// vhost-user request codes.
const GET_FEATURES: u32 = 1;
const SET_FEATURES: u32 = 2;
const SET_OWNER: u32 = 3;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_NUM: u32 = 8;
const SET_VRING_ADDR: u32 = 9;
const SET_VRING_BASE: u32 = 10;
const GET_VRING_BASE: u32 = 11;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_CALL: u32 = 13;
const GET_PROTOCOL_FEATURES: u32 = 15;
const SET_PROTOCOL_FEATURES: u32 = 16;
const GET_QUEUE_NUM: u32 = 17;
const SET_VRING_ENABLE: u32 = 18;

const NEED_REPLY: u32 = 0x8;
const REPLY: u32 = 0x4 | 0x1;
const MQ: u64 = 0x1;
const REPLY_ACK: u64 = 0x8;
const CONFIG: u64 = 0x200;
const BACKEND_REQ: u64 = 0x20;

/// Features virtiofsd offers, plus two a husk transport cannot honour (packed rings, IOMMU).
const BACKEND_FEATURES: u64 =
    COMMON_FEATURES | VHOST_USER_F_PROTOCOL_FEATURES | (1 << 34) | (1 << 33);

/// One request as the scripted backend received it.
#[derive(Debug, Clone)]
struct Request {
    code: u32,
    body: Vec<u8>,
    fds: usize,
}

impl Request {
    fn u64(&self) -> u64 {
        u64::from_le_bytes(self.body[..8].try_into().unwrap())
    }
}

struct Script {
    features: u64,
    protocol: u64,
    queues: u64,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            features: BACKEND_FEATURES,
            protocol: MQ | REPLY_ACK | CONFIG | BACKEND_REQ,
            queues: NUM_QUEUES as u64,
        }
    }
}

fn reply(sock: &mut UnixStream, code: u32, body: &[u8]) {
    let mut msg = Vec::with_capacity(12 + body.len());
    msg.extend_from_slice(&code.to_le_bytes());
    msg.extend_from_slice(&REPLY.to_le_bytes());
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(body);
    sock.write_all(&msg).unwrap();
}

/// Serves `script` on `sock` until the frontend closes it; returns what it received.
fn backend(mut sock: UnixStream, script: Script) -> JoinHandle<Vec<Request>> {
    std::thread::spawn(move || {
        let mut log = Vec::new();
        loop {
            let mut hdr = [0u8; 12];
            let mut fds = [-1; 8];
            let mut iov = [libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: hdr.len(),
            }];
            // SAFETY: the iovec points at `hdr`, which lives across the call.
            let Ok((n, nfds)) = (unsafe { sock.recv_with_fds(&mut iov, &mut fds) }) else {
                break;
            };
            if n == 0 {
                break;
            }
            for &fd in &fds[..nfds] {
                // SAFETY: recvmsg just gave us this fd; closing it is ours to do.
                drop(unsafe { File::from_raw_fd(fd) });
            }
            sock.read_exact(&mut hdr[n..]).unwrap();
            let word = |i: usize| u32::from_le_bytes(hdr[i * 4..i * 4 + 4].try_into().unwrap());
            let (code, flags, size) = (word(0), word(1), word(2));
            let mut body = vec![0u8; size as usize];
            sock.read_exact(&mut body).unwrap();
            let req = Request {
                code,
                body,
                fds: nfds,
            };
            match code {
                GET_FEATURES => reply(&mut sock, code, &script.features.to_le_bytes()),
                GET_PROTOCOL_FEATURES => reply(&mut sock, code, &script.protocol.to_le_bytes()),
                GET_QUEUE_NUM => reply(&mut sock, code, &script.queues.to_le_bytes()),
                GET_VRING_BASE => {
                    let mut state = req.body[..4].to_vec();
                    state.extend_from_slice(&7u32.to_le_bytes());
                    reply(&mut sock, code, &state);
                }
                _ if flags & NEED_REPLY != 0 => reply(&mut sock, code, &0u64.to_le_bytes()),
                _ => {}
            }
            log.push(req);
        }
        log
    })
}

fn memfd_mem() -> GuestMemoryMmap {
    create_guest_memory(MIN_MEMORY_BYTES, MemoryBacking::Memfd).unwrap()
}

fn device(
    script: Script,
    mem: GuestMemoryMmap,
) -> (Result<VirtioFs, FsError>, JoinHandle<Vec<Request>>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let b = backend(theirs, script);
    (VirtioFs::with_stream(ours, "hostshare", mem), b)
}

fn codes(log: &[Request]) -> Vec<u32> {
    log.iter().map(|r| r.code).collect()
}

#[test]
fn negotiation_offers_the_guest_only_what_the_transport_can_honour() {
    let (dev, b) = device(Script::default(), memfd_mem());
    let dev = dev.unwrap();
    assert_eq!(dev.features(), COMMON_FEATURES);
    assert_eq!(dev.backend.backend_features(), BACKEND_FEATURES);
    assert_eq!(dev.backend.protocol_features().bits(), MQ | REPLY_ACK);
    drop(dev);
    let log = b.join().unwrap();
    assert_eq!(
        codes(&log),
        [
            SET_OWNER,
            GET_FEATURES,
            GET_PROTOCOL_FEATURES,
            SET_PROTOCOL_FEATURES,
            GET_QUEUE_NUM,
            SET_MEM_TABLE
        ]
    );
    assert_eq!(log[3].u64(), MQ | REPLY_ACK);
    // One memfd per RAM region (one region below 3 GiB for a small guest).
    assert_eq!(log[5].fds, memfd_mem().num_regions());
}

#[test]
fn config_space_and_identity() {
    let (dev, _b) = device(Script::default(), memfd_mem());
    let dev = dev.unwrap();
    assert_eq!(dev.device_type(), device_type::FS);
    assert_eq!(dev.device_type(), 26);
    assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE; 2]);
    assert_eq!(dev.queue_events().len(), 2);
    let mut cfg = [0xffu8; CONFIG_SIZE];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..9], b"hostshare");
    assert!(cfg[9..36].iter().all(|&b| b == 0));
    assert_eq!(u32::from_le_bytes(cfg[36..40].try_into().unwrap()), 1);
    let mut n = [0u8; 4];
    dev.read_config(36, &mut n);
    assert_eq!(u32::from_le_bytes(n), 1);
    dev.read_config(40, &mut n);
    assert_eq!(n, [0; 4]);
}

#[test]
fn backends_that_cannot_serve_virtio_fs_are_refused() {
    let (dev, _b) = device(
        Script {
            features: VHOST_USER_F_PROTOCOL_FEATURES,
            ..Default::default()
        },
        memfd_mem(),
    );
    let e = dev.err().unwrap().to_string();
    assert!(e.contains("VIRTIO_F_VERSION_1"), "{e}");
    let (dev, _b) = device(
        Script {
            queues: 1,
            ..Default::default()
        },
        memfd_mem(),
    );
    let e = dev.err().unwrap().to_string();
    assert!(e.contains("serves 1 queues"), "{e}");
    let (dev, _b) = device(Script::default(), anonymous_mem());
    assert!(matches!(
        dev.err().unwrap(),
        FsError::Backend {
            source: BackendError::MemoryNotShared(0),
            ..
        }
    ));
}

fn ready_queues(mem: &GuestMemoryMmap) -> Vec<Queue> {
    [0x1_0000u64, 0x2_0000]
        .iter()
        .map(|&base| {
            let mut q = Driver::at(mem, GuestAddress(base), 16).queue;
            assert!(q.is_valid(mem));
            q.set_event_idx(true);
            q
        })
        .collect()
}

#[test]
fn activation_starts_the_rings_on_the_event_loop_and_reset_stops_them() {
    let mem = memfd_mem();
    let (dev, b) = device(Script::default(), mem.clone());
    let mut dev = dev.unwrap();
    let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
    dev.ack_features(VIRTIO_F_VERSION_1 | crate::devices::virtio::VIRTIO_RING_F_EVENT_IDX);
    assert!(dev
        .activate(
            ready_queues(&mem).into_iter().take(1).collect(),
            irq.clone()
        )
        .is_err());
    dev.activate(ready_queues(&mem), irq.clone()).unwrap();
    // Nothing reached the backend from the (vCPU-side) activate call.
    assert!(!dev.started());
    assert_eq!(dev.state_evt.read().unwrap(), 1);
    dev.sync_backend();
    assert!(dev.started());
    // Reset, then the driver comes back before the event loop ran: stop, then start again.
    dev.reset();
    dev.ack_features(VIRTIO_F_VERSION_1);
    dev.activate(ready_queues(&mem), irq).unwrap();
    dev.sync_backend();
    dev.reset();
    dev.sync_backend();
    assert!(!dev.started());
    // A reset with nothing running sends nothing.
    dev.reset();
    dev.sync_backend();
    drop(dev);
    let log = b.join().unwrap();
    let start = [
        SET_FEATURES,
        SET_VRING_NUM,
        SET_VRING_ADDR,
        SET_VRING_BASE,
        SET_VRING_CALL,
        SET_VRING_KICK,
        SET_VRING_NUM,
        SET_VRING_ADDR,
        SET_VRING_BASE,
        SET_VRING_CALL,
        SET_VRING_KICK,
        SET_VRING_ENABLE,
        SET_VRING_ENABLE,
    ];
    let stop = [GET_VRING_BASE, GET_VRING_BASE];
    let expected: Vec<u32> = [&start[..], &stop, &start, &stop].concat();
    assert_eq!(codes(&log[6..]), expected);
    // SET_FEATURES: what the driver accepted plus vhost-user's protocol-feature bit.
    assert_eq!(
        log[6].u64(),
        VIRTIO_F_VERSION_1
            | crate::devices::virtio::VIRTIO_RING_F_EVENT_IDX
            | VHOST_USER_F_PROTOCOL_FEATURES
    );
    assert_eq!(
        log[6 + start.len() + 2].u64(),
        VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES
    );
    // SET_VRING_NUM {index, 16}; kick and call carry one eventfd each.
    assert_eq!(log[7].body[..8], [0, 0, 0, 0, 16, 0, 0, 0]);
    assert!(log[10].fds == 1 && log[11].fds == 1);
    // SET_VRING_ADDR holds VMM addresses: the descriptor table of ring 1 at guest 0x2_0000.
    let hva = |gpa: u64| mem.get_host_address(GuestAddress(gpa)).unwrap() as u64;
    let desc = u64::from_le_bytes(log[13].body[8..16].try_into().unwrap());
    assert_eq!(desc, hva(0x2_0000));
    // SET_VRING_ENABLE {1, 1}.
    assert_eq!(log[18].body[..8], [1, 0, 0, 0, 1, 0, 0, 0]);
}

#[test]
fn backend_calls_become_the_device_interrupt() {
    let mem = memfd_mem();
    let (dev, _b) = device(Script::default(), mem.clone());
    let dev = Arc::new(Mutex::new(dev.unwrap()));
    let mut em: EventManager<Box<dyn MutEventSubscriber + Send>> = EventManager::new().unwrap();
    em.add_subscriber(Box::new(DeviceSubscriber(dev.clone())));
    let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
    {
        let mut d = dev.lock().unwrap();
        d.ack_features(VIRTIO_F_VERSION_1);
        d.activate(ready_queues(&mem), irq.clone()).unwrap();
    }
    // The activation runs on the loop.
    em.run_with_timeout(1000).unwrap();
    assert!(dev.lock().unwrap().started());
    dev.lock().unwrap().call_evts[1].write(1).unwrap();
    em.run_with_timeout(1000).unwrap();
    assert_eq!(irq.status(), INT_VRING);
    assert_eq!(irq.irqfd().read().unwrap(), 1);
}

#[test]
fn a_backend_that_hangs_up_is_noticed() {
    let mem = memfd_mem();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let b = backend(theirs, Script::default());
    let dev = VirtioFs::with_stream(ours.try_clone().unwrap(), "t", mem.clone()).unwrap();
    let dev = Arc::new(Mutex::new(dev));
    let mut em: EventManager<Box<dyn MutEventSubscriber + Send>> = EventManager::new().unwrap();
    em.add_subscriber(Box::new(DeviceSubscriber(dev.clone())));
    ours.shutdown(std::net::Shutdown::Both).unwrap();
    drop(ours);
    b.join().unwrap();
    em.run_with_timeout(1000).unwrap();
    let mut d = dev.lock().unwrap();
    assert!(d.gone);
    let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
    assert!(d.activate(ready_queues(&mem), irq).is_err());
}
