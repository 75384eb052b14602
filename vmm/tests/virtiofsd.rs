//! virtio-fs against a real virtiofsd, without a guest: the test starts virtiofsd on a temporary
//! directory, lets the device negotiate with it over vhost-user (memfd guest RAM), plays the
//! guest driver by hand (two split rings in guest memory, DRIVER_OK), and sends FUSE_INIT and a
//! FUSE_LOOKUP of a host file through the request queue: the kick is the queue's eventfd (what
//! KVM's ioeventfd writes), the answer arrives as the device's interrupt (the backend's call
//! eventfd, forwarded by the event loop). Skips, saying why, where virtiofsd is not installed
//! (`tests/setup` installs it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use husk_vmm::devices::virtio::config::FsConfig;
use husk_vmm::devices::virtio::fs::VirtioFs;
use husk_vmm::devices::virtio::{DeviceSubscriber, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use husk_vmm::memory::{create_guest_memory, GuestMemoryMmap, MemoryBacking};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempdir::TempDir;

const QSIZE: u16 = 16;
/// Ring bases of the hiprio and request queues.
const RINGS: [u64; 2] = [0x10_0000, 0x20_0000];
/// Request and reply buffers.
const REQ: u64 = 0x30_0000;
const REPLY: u64 = 0x40_0000;
const REPLY_LEN: u32 = 4096;

const FUSE_LOOKUP: u32 = 1;
const FUSE_INIT: u32 = 26;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

fn virtiofsd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HUSK_VIRTIOFSD") {
        return Some(p.into());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("virtiofsd"))
            .find(|p| {
                p.metadata()
                    .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
            })
    })
}

/// Kills virtiofsd if the test fails before it exits on its own.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_virtiofsd(bin: &Path, socket: &Path, shared: &Path) -> Daemon {
    // SAFETY: geteuid has no preconditions.
    let sandbox = if unsafe { libc::geteuid() } == 0 {
        "namespace"
    } else {
        "none"
    };
    let child = Command::new(bin)
        .arg("--socket-path")
        .arg(socket)
        .arg("--shared-dir")
        .arg(shared)
        .args(["--sandbox", sandbox, "--cache", "never"])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting virtiofsd");
    let daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "virtiofsd did not create {socket:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon
}

/// The guest driver's side of one split ring at `base`.
fn ring(mem: &GuestMemoryMmap, base: u64) -> Queue {
    let n = u64::from(QSIZE);
    let (desc, avail) = (base, base + 16 * n);
    let used = (avail + 6 + 2 * n + 3) & !3;
    mem.write_slice(
        &vec![0u8; (used + 6 + 8 * n - base) as usize],
        GuestAddress(base),
    )
    .unwrap();
    let mut q = Queue::new(1024).unwrap();
    q.set_size(QSIZE);
    q.set_desc_table_address(Some(desc as u32), Some(0));
    q.set_avail_ring_address(Some(avail as u32), Some(0));
    q.set_used_ring_address(Some(used as u32), Some(0));
    q.set_ready(true);
    assert!(q.is_valid(mem));
    q
}

/// Puts a two-descriptor chain (request, reply buffer) at head `2 * slot` of the request
/// queue and publishes it.
fn post(mem: &GuestMemoryMmap, q: &Queue, slot: u16, request: &[u8]) {
    let head = 2 * slot;
    let req = REQ + u64::from(slot) * 0x1000;
    let reply = REPLY + u64::from(slot) * 0x1000;
    mem.write_slice(request, GuestAddress(req)).unwrap();
    let desc = |i: u16, addr: u64, len: u32, flags: u16, next: u16| {
        let d = GuestAddress(q.desc_table() + 16 * u64::from(i));
        mem.write_obj(addr, d).unwrap();
        mem.write_obj(len, GuestAddress(d.0 + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(d.0 + 12)).unwrap();
        mem.write_obj(next, GuestAddress(d.0 + 14)).unwrap();
    };
    desc(head, req, request.len() as u32, VRING_DESC_F_NEXT, head + 1);
    desc(head + 1, reply, REPLY_LEN, VRING_DESC_F_WRITE, 0);
    let avail = q.avail_ring();
    mem.write_obj(head, GuestAddress(avail + 4 + 2 * u64::from(slot)))
        .unwrap();
    // used_event (EVENT_IDX was accepted): interrupt me once this chain is used.
    mem.write_obj(slot, GuestAddress(avail + 4 + 2 * u64::from(QSIZE)))
        .unwrap();
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    mem.write_obj(slot + 1, GuestAddress(avail + 2)).unwrap();
}

fn fuse_request(opcode: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&(40 + body.len() as u32).to_le_bytes());
    r.extend_from_slice(&opcode.to_le_bytes());
    r.extend_from_slice(&unique.to_le_bytes());
    r.extend_from_slice(&nodeid.to_le_bytes());
    r.extend_from_slice(&[0u8; 16]); // uid, gid, pid, total_extlen, padding
    r.extend_from_slice(body);
    r
}

/// Runs the event loop until the used ring of `q` reaches `idx`; returns the reply's
/// (error, unique, body).
fn wait_reply(
    em: &mut EventManager<Box<dyn MutEventSubscriber + Send>>,
    irq: &Interrupt,
    mem: &GuestMemoryMmap,
    q: &Queue,
    slot: u16,
) -> (i32, u64, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        em.run_with_timeout(100).unwrap();
        let used_idx: u16 = mem.read_obj(GuestAddress(q.used_ring() + 2)).unwrap();
        // The used index moves before the backend writes the call eventfd.
        if used_idx > slot && irq.status() != 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reply from virtiofsd (used index {used_idx}) or no interrupt"
        );
    }
    irq.ack(irq.status());
    let reply = REPLY + u64::from(slot) * 0x1000;
    let len: u32 = mem.read_obj(GuestAddress(reply)).unwrap();
    let error: i32 = mem.read_obj(GuestAddress(reply + 4)).unwrap();
    let unique: u64 = mem.read_obj(GuestAddress(reply + 8)).unwrap();
    let mut body = vec![0u8; len.saturating_sub(16) as usize];
    mem.read_slice(&mut body, GuestAddress(reply + 16)).unwrap();
    (error, unique, body)
}

#[test]
fn a_real_virtiofsd_serves_fuse_requests_from_guest_memory() {
    let Some(bin) = virtiofsd() else {
        eprintln!(
            "SKIP: virtiofsd is not installed (tests/setup installs it; or set HUSK_VIRTIOFSD)"
        );
        return;
    };
    let dir = TempDir::new().unwrap();
    let shared = dir.as_path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("hello"), b"hello from the host\n").unwrap();
    let socket = dir.as_path().join("vfs.sock");
    let mut daemon = start_virtiofsd(&bin, &socket, &shared);

    let mem = create_guest_memory(128 << 20, MemoryBacking::Memfd).unwrap();
    let cfg = FsConfig {
        socket: socket.clone(),
        tag: "hostshare".into(),
    };
    let dev = VirtioFs::new(&cfg, mem.clone()).expect("vhost-user handshake with virtiofsd");
    assert_ne!(dev.features() & VIRTIO_F_VERSION_1, 0);
    let kick = dev.queue_events()[1].try_clone().unwrap();
    let dev = Arc::new(Mutex::new(dev));
    let mut em: EventManager<Box<dyn MutEventSubscriber + Send>> = EventManager::new().unwrap();
    em.add_subscriber(Box::new(DeviceSubscriber(dev.clone())));

    // The driver: features, rings, DRIVER_OK (the transport's part, done by hand).
    let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let queues: Vec<Queue> = RINGS.iter().map(|&b| ring(&mem, b)).collect();
    let request_queue = ring_copy(&queues[1]);
    {
        let mut d = dev.lock().unwrap();
        let features = d.features();
        d.ack_features(features);
        d.activate(queues, irq.clone()).unwrap();
    }
    em.run_with_timeout(1000).unwrap();
    assert!(dev.lock().unwrap().started(), "virtiofsd refused the rings");

    // FUSE_INIT {major 7, minor 31, max_readahead, flags 0}.
    let mut init = Vec::new();
    for v in [7u32, 31, 0x2_0000, 0] {
        init.extend_from_slice(&v.to_le_bytes());
    }
    post(
        &mem,
        &request_queue,
        0,
        &fuse_request(FUSE_INIT, 1, 0, &init),
    );
    kick.write(1).unwrap();
    let (error, unique, body) = wait_reply(&mut em, &irq, &mem, &request_queue, 0);
    assert_eq!((error, unique), (0, 1), "FUSE_INIT failed");
    assert_eq!(u32::from_le_bytes(body[..4].try_into().unwrap()), 7);

    // FUSE_LOOKUP "hello" in the root (node 1): the entry's attr.size is the host file's.
    post(
        &mem,
        &request_queue,
        1,
        &fuse_request(FUSE_LOOKUP, 2, 1, b"hello\0"),
    );
    kick.write(1).unwrap();
    let (error, unique, body) = wait_reply(&mut em, &irq, &mem, &request_queue, 1);
    assert_eq!((error, unique), (0, 2), "FUSE_LOOKUP failed");
    let size = u64::from_le_bytes(body[48..56].try_into().unwrap());
    assert_eq!(size, b"hello from the host\n".len() as u64);

    // Reset: GET_VRING_BASE stops both rings.
    {
        let mut d = dev.lock().unwrap();
        d.reset();
        d.sync_backend();
        assert!(!d.started());
    }
    // The frontend closing its socket ends virtiofsd.
    drop(em);
    drop(dev);
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "virtiofsd did not exit after the frontend left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ring_copy(q: &Queue) -> Queue {
    Queue::try_from(q.state()).unwrap()
}
