//! The host side of vsock: Firecracker's "hybrid vsock" over Unix sockets, multiplexed.
//!
//! Host-initiated streams connect to the listening socket `uds` and write `CONNECT <port>\n`;
//! once the guest accepts they read `OK <hostport>\n` and then the stream is raw. A guest
//! connecting to host port P reaches the Unix socket `<uds>_P`.
//!
//! Owns: the listener, every connection, and an epoll set of their fds (the device's event loop
//! watches only the epoll fd). RX fairness: connections with something to send wait in a
//! round-robin queue and each sends at most one packet per turn, so one busy stream cannot
//! starve the others; control packets (RST for unknown connections) go first.
//!
//! Must not touch: the virtqueues (the handler gives it one parsed chain at a time).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vm_memory::GuestMemory;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{Connection, RxOutcome, State};
use super::packet::{op, Header, HDR_LEN, HOST_CID, MAX_PAYLOAD, TYPE_STREAM};
use crate::devices::virtio::chain::Chain;
use crate::logging::ratelimited;

/// Most live connections per VM; more guest REQUESTs are refused with RST.
pub const MAX_CONNECTIONS: usize = 4096;
/// Most host connections still sending their `CONNECT` line.
pub const MAX_PENDING_ACCEPTS: usize = 256;
/// Most RSTs for unknown connections held while the guest gives no RX buffers.
const MAX_STRAY_RSTS: usize = 1024;
/// Longest `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 32;
/// First host port handed to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Errors setting up the host side.
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    /// The listening socket could not be created.
    #[error("vsock socket {path}: {source}")]
    Listen {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// epoll failed.
    #[error("vsock epoll: {0}")]
    Epoll(std::io::Error),
}

type Key = (u32, u32);

enum Target {
    Listener,
    Pending,
    Conn(Key),
}

/// All vsock streams of one VM.
pub struct VsockMuxer {
    guest_cid: u64,
    uds: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    conns: HashMap<Key, Connection>,
    targets: HashMap<RawFd, Target>,
    pending: HashMap<RawFd, (UnixStream, Vec<u8>)>,
    rxq: VecDeque<Key>,
    stray_rsts: VecDeque<Header>,
    next_local_port: u32,
}

fn conn_events() -> EventSet {
    EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED | EventSet::READ_HANG_UP
}

/// Adds `fd` to `epoll` (or changes its events) for `events`, tagged with the fd itself.
fn epoll_watch(
    epoll: &Epoll,
    op: ControlOperation,
    fd: RawFd,
    events: EventSet,
) -> std::io::Result<()> {
    epoll.ctl(op, fd, EpollEvent::new(events, fd as u64))
}

impl VsockMuxer {
    /// Listens on `uds` (replacing a stale socket file there) for a guest with CID `guest_cid`.
    pub fn new(guest_cid: u64, uds: &Path) -> Result<Self, MuxerError> {
        let listen_err = |source| MuxerError::Listen {
            path: uds.to_path_buf(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(uds) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(uds).map_err(listen_err)?;
            }
        }
        let listener = UnixListener::bind(uds).map_err(listen_err)?;
        // Whoever can connect drives the guest's agent: owner only, whatever the umask.
        std::fs::set_permissions(uds, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let epoll = Epoll::new().map_err(MuxerError::Epoll)?;
        let fd = listener.as_raw_fd();
        epoll_watch(&epoll, ControlOperation::Add, fd, EventSet::IN).map_err(MuxerError::Epoll)?;
        let mut targets = HashMap::new();
        targets.insert(fd, Target::Listener);
        Ok(Self {
            guest_cid,
            uds: uds.to_path_buf(),
            listener,
            epoll,
            conns: HashMap::new(),
            targets,
            pending: HashMap::new(),
            rxq: VecDeque::new(),
            stray_rsts: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
        })
    }

    /// The epoll fd the device's event loop watches.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether [`Self::fill_rx`] may produce a packet.
    pub fn has_rx(&self) -> bool {
        !self.stray_rsts.is_empty() || !self.rxq.is_empty()
    }

    /// Drops every connection (device reset); the listener stays.
    pub fn reset(&mut self) {
        for (_, c) in self.conns.drain() {
            self.targets.remove(&c.stream.as_raw_fd());
        }
        for (fd, _) in self.pending.drain() {
            self.targets.remove(&fd);
        }
        self.rxq.clear();
        self.stray_rsts.clear();
    }

    fn enqueue(&mut self, key: Key) {
        if let Some(c) = self.conns.get_mut(&key) {
            if !c.in_rxq && c.has_rx_work() {
                c.in_rxq = true;
                self.rxq.push_back(key);
            }
        }
    }

    fn remove(&mut self, key: Key) {
        if let Some(c) = self.conns.remove(&key) {
            let fd = c.stream.as_raw_fd();
            self.targets.remove(&fd);
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }

    fn stray_rst(&mut self, to: &Header) {
        if self.stray_rsts.len() >= MAX_STRAY_RSTS {
            return;
        }
        self.stray_rsts.push_back(Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: to.dst_port,
            dst_port: to.src_port,
            type_: TYPE_STREAM,
            op: op::RST,
            ..Default::default()
        });
    }

    /// Handles every ready host fd (new connections, CONNECT lines, readable and writable
    /// streams) without blocking.
    pub fn process_host_events(&mut self) {
        let mut events = [EpollEvent::default(); 64];
        // Bounded: a flood of host activity cannot keep the event loop here forever.
        for _ in 0..16 {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    ratelimited!(WARN, "vsock epoll: {e}");
                    return;
                }
            };
            if n == 0 {
                return;
            }
            for ev in &events[..n] {
                self.handle_host_event(ev.fd(), ev.event_set());
            }
        }
    }

    fn handle_host_event(&mut self, fd: RawFd, set: EventSet) {
        match self.targets.get(&fd) {
            Some(Target::Listener) => self.accept_all(),
            Some(Target::Pending) => self.read_connect_line(fd),
            Some(Target::Conn(key)) => {
                let key = *key;
                let Some(c) = self.conns.get_mut(&key) else {
                    return;
                };
                if set.intersects(
                    EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR,
                ) {
                    c.readable = true;
                }
                if set.contains(EventSet::OUT) && !c.flush_tx() {
                    c.reset();
                }
                self.enqueue(key);
            }
            None => {}
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.pending.len() >= MAX_PENDING_ACCEPTS
                        || self.conns.len() >= MAX_CONNECTIONS
                    {
                        ratelimited!(WARN, "vsock: too many host connections; refusing one");
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    if epoll_watch(&self.epoll, ControlOperation::Add, fd, EventSet::IN).is_err() {
                        continue;
                    }
                    self.targets.insert(fd, Target::Pending);
                    self.pending.insert(fd, (stream, Vec::new()));
                    // The line may already be there.
                    self.read_connect_line(fd);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    ratelimited!(WARN, "vsock: accept on {}: {e}", self.uds.display());
                    return;
                }
            }
        }
    }

    /// Reads the `CONNECT <port>\n` line a byte at a time, so no stream data is consumed.
    fn read_connect_line(&mut self, fd: RawFd) {
        let Some((stream, line)) = self.pending.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        let done = loop {
            match stream.read(&mut byte) {
                Ok(0) => break Err(()),
                Ok(_) if byte[0] == b'\n' => break Ok(()),
                Ok(_) if line.len() >= MAX_CONNECT_LINE => break Err(()),
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break Err(()),
            }
        };
        let Some((stream, line)) = self.pending.remove(&fd) else {
            return;
        };
        self.targets.remove(&fd);
        let port = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.trim_end_matches('\r').strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let (Ok(()), Some(peer_port)) = (done, port) else {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            ratelimited!(
                DEBUG,
                "vsock: host connection sent a bad CONNECT line; closed"
            );
            return;
        };
        let local_port = self.alloc_local_port(peer_port);
        if epoll_watch(&self.epoll, ControlOperation::Modify, fd, conn_events()).is_err() {
            return;
        }
        let key = (local_port, peer_port);
        self.targets.insert(fd, Target::Conn(key));
        self.conns.insert(
            key,
            Connection::new_local(stream, self.guest_cid, local_port, peer_port),
        );
        self.enqueue(key);
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = p.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(p, peer_port)) {
                return p;
            }
        }
    }

    fn connect_to_host(&mut self, hdr: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            ratelimited!(WARN, "vsock: too many connections; refusing a guest one");
            self.stray_rst(hdr);
            return;
        }
        let mut path = OsString::from(self.uds.as_os_str());
        path.push(format!("_{}", hdr.dst_port));
        let stream = match UnixStream::connect(&path) {
            Ok(s) if s.set_nonblocking(true).is_ok() => s,
            _ => {
                ratelimited!(
                    DEBUG,
                    "vsock: guest connection to {} refused",
                    Path::new(&path).display()
                );
                self.stray_rst(hdr);
                return;
            }
        };
        let fd = stream.as_raw_fd();
        if epoll_watch(&self.epoll, ControlOperation::Add, fd, conn_events()).is_err() {
            self.stray_rst(hdr);
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        self.targets.insert(fd, Target::Conn(key));
        self.conns
            .insert(key, Connection::new_peer(stream, self.guest_cid, hdr));
        self.enqueue(key);
    }

    /// Takes one packet the guest sent; `chain` holds it (header, then `hdr.len` payload bytes).
    pub fn send_pkt<M: GuestMemory>(&mut self, mem: &M, chain: &Chain, hdr: &Header) {
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            ratelimited!(
                DEBUG,
                "vsock: dropped a packet from cid {} to cid {}",
                hdr.src_cid,
                hdr.dst_cid
            );
            return;
        }
        if hdr.type_ != TYPE_STREAM {
            self.stray_rst(hdr);
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        let Some(c) = self.conns.get_mut(&key) else {
            match hdr.op {
                op::REQUEST => self.connect_to_host(hdr),
                op::RST => {}
                _ => self.stray_rst(hdr),
            }
            return;
        };
        c.update_peer_credit(hdr);
        match hdr.op {
            op::RESPONSE if c.state == State::LocalInit => {
                if !c.establish() {
                    c.reset();
                }
            }
            op::RW if c.state == State::Established => {
                let payload = chain.readable_len().saturating_sub(HDR_LEN as u64);
                if hdr.len > MAX_PAYLOAD
                    || u64::from(hdr.len) > payload
                    || !c.on_rw(mem, chain, hdr.len)
                {
                    c.reset();
                }
            }
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => c.request_credit_update(),
            op::SHUTDOWN => c.on_shutdown(hdr.flags),
            op::RST => {
                self.remove(key);
                return;
            }
            _ => c.reset(),
        }
        self.enqueue(key);
    }

    /// Writes the next packet for the guest into `chain`; returns its length, or `None` when
    /// nothing is ready (the chain is not used).
    pub fn fill_rx<M: GuestMemory>(&mut self, mem: &M, chain: &Chain) -> Option<u32> {
        if chain.writable_len() < HDR_LEN as u64 {
            return None;
        }
        if let Some(h) = self.stray_rsts.pop_front() {
            chain.write_at(mem, 0, &h.to_bytes());
            return Some(HDR_LEN as u32);
        }
        while let Some(key) = self.rxq.pop_front() {
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            c.in_rxq = false;
            match c.fill_rx(mem, chain) {
                RxOutcome::Packet(n) => {
                    self.enqueue(key);
                    return Some(n);
                }
                RxOutcome::Last(n) => {
                    self.remove(key);
                    return Some(n);
                }
                RxOutcome::Nothing => {}
            }
        }
        None
    }
}

impl Drop for VsockMuxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds);
    }
}
