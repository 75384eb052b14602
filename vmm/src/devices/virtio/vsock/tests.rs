//! Host-side tests of the vsock muxer and queues without a guest: a scripted "guest" drives the
//! RX/TX queues on mock memory while real Unix sockets play the host.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::connection::CONN_BUF_SIZE;
use super::handler::VsockHandler;
use super::muxer::VsockMuxer;
use super::packet::{op, Header, HDR_LEN, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use crate::devices::virtio::test_utils::{mem, Driver, Mem, R, W};

const CID: u64 = 3;
const RX_BUF: u64 = 0x40_0000;
const RX_LEN: u32 = 0x2000;
const TX_BUF: u64 = 0x80_0000;
const TX_SLOT: u64 = 0x1_1000;
const TX_SIZE: u16 = 64;

struct Guest<'a> {
    m: &'a Mem,
    rx: Driver<'a>,
    tx: Driver<'a>,
    h: VsockHandler,
    tx_slot: u64,
    rx_posted: u16,
}

fn tmp_uds() -> (vmm_sys_util::tempdir::TempDir, PathBuf) {
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/husk-vsock-").unwrap();
    let uds = dir.as_path().join("v.sock");
    (dir, uds)
}

impl<'a> Guest<'a> {
    fn new(m: &'a Mem, uds: &std::path::Path) -> Self {
        Self {
            m,
            rx: Driver::at(m, GuestAddress(0), 256),
            tx: Driver::at(m, GuestAddress(0x1_0000), TX_SIZE),
            h: VsockHandler::new(VsockMuxer::new(CID, uds).unwrap()),
            tx_slot: 0,
            rx_posted: 0,
        }
    }

    fn hdr(src_port: u32, dst_port: u32, op: u16) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            type_: TYPE_STREAM,
            op,
            buf_alloc: 1 << 20,
            ..Default::default()
        }
    }

    fn send(&mut self, mut hdr: Header, payload: &[u8]) {
        hdr.len = payload.len() as u32;
        let addr = TX_BUF + (self.tx_slot % u64::from(TX_SIZE)) * TX_SLOT;
        self.tx_slot += 1;
        self.m
            .write_slice(&hdr.to_bytes(), GuestAddress(addr))
            .unwrap();
        self.m
            .write_slice(payload, GuestAddress(addr + HDR_LEN as u64))
            .unwrap();
        self.tx.add(&[(addr, (HDR_LEN + payload.len()) as u32, R)]);
        self.h.process_tx(&mut self.tx.queue, self.m).unwrap();
        self.tx.used();
    }

    /// Keeps 256 RX buffers posted, lets the host side run, returns what arrived.
    fn recv(&mut self) -> Vec<(Header, Vec<u8>)> {
        while self.rx_posted < 256 {
            let idx = self.rx.add(&[(0, 0, W)]);
            let addr = RX_BUF + u64::from(idx) * u64::from(RX_LEN);
            self.rx.store(
                idx,
                virtio_queue::desc::RawDescriptor::from(
                    virtio_queue::desc::split::Descriptor::new(addr, RX_LEN, W, 0),
                ),
            );
            self.rx_posted += 1;
        }
        self.h.muxer.process_host_events();
        self.h.process_rx(&mut self.rx.queue, self.m).unwrap();
        let mut out = Vec::new();
        for (id, len) in self.rx.used() {
            self.rx_posted -= 1;
            let addr = RX_BUF + u64::from(id) * u64::from(RX_LEN);
            let mut hb = [0u8; HDR_LEN];
            self.m.read_slice(&mut hb, GuestAddress(addr)).unwrap();
            let hdr = Header::from_bytes(&hb);
            assert_eq!(len as usize, HDR_LEN + hdr.len as usize);
            let mut payload = vec![0u8; hdr.len as usize];
            self.m
                .read_slice(&mut payload, GuestAddress(addr + HDR_LEN as u64))
                .unwrap();
            out.push((hdr, payload));
        }
        out
    }

    /// Receives until something arrives (host sockets are asynchronous).
    fn recv_some(&mut self) -> Vec<(Header, Vec<u8>)> {
        for _ in 0..200 {
            let got = self.recv();
            if !got.is_empty() {
                return got;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Vec::new()
    }
}

fn host_connect(uds: &std::path::Path, port: u32) -> UnixStream {
    let mut s = UnixStream::connect(uds).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    writeln!(s, "CONNECT {port}").unwrap();
    s
}

fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

#[test]
fn host_initiated_stream_echo_and_close() {
    let m = mem();
    let (_dir, uds) = tmp_uds();
    let mut g = Guest::new(&m, &uds);
    let mut host = host_connect(&uds, 1024);
    let got = g.recv_some();
    assert_eq!(got.len(), 1);
    let req = got[0].0;
    assert_eq!(
        (req.op, req.dst_port, req.dst_cid),
        (op::REQUEST, 1024, CID)
    );
    assert!(req.src_port >= 1 << 30);
    let local = req.src_port;
    g.send(Guest::hdr(1024, local, op::RESPONSE), &[]);
    assert_eq!(read_line(&mut host), format!("OK {local}"));
    host.write_all(b"ping").unwrap();
    let got = g.recv_some();
    assert_eq!(got[0].0.op, op::RW);
    assert_eq!(got[0].1, b"ping");
    g.send(Guest::hdr(1024, local, op::RW), b"pong");
    let mut b = [0u8; 4];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");
    drop(host);
    let got = g.recv_some();
    assert_eq!(got[0].0.op, op::SHUTDOWN);
    assert_eq!(got[0].0.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    g.send(Guest::hdr(1024, local, op::RST), &[]);
    assert_eq!(g.h.muxer.connections(), 0);
}

#[test]
fn guest_initiated_stream_echo_and_shutdown() {
    let m = mem();
    let (_dir, uds) = tmp_uds();
    let listener = UnixListener::bind(format!("{}_5000", uds.display())).unwrap();
    let mut g = Guest::new(&m, &uds);
    g.send(Guest::hdr(40000, 5000, op::REQUEST), &[]);
    let got = g.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0.op, got[0].0.src_port, got[0].0.dst_port),
        (op::RESPONSE, 5000, 40000)
    );
    let (mut host, _) = listener.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(b"hi").unwrap();
    let got = g.recv_some();
    assert_eq!((got[0].0.op, got[0].1.as_slice()), (op::RW, &b"hi"[..]));
    g.send(Guest::hdr(40000, 5000, op::RW), b"yo");
    let mut b = [0u8; 2];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"yo");
    let mut shut = Guest::hdr(40000, 5000, op::SHUTDOWN);
    shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.send(shut, &[]);
    let got = g.recv();
    assert_eq!(got[0].0.op, op::RST);
    assert_eq!(g.h.muxer.connections(), 0);
    assert_eq!(host.read(&mut b).unwrap(), 0);
}

#[test]
fn refused_unknown_and_foreign_packets() {
    let m = mem();
    let (_dir, uds) = tmp_uds();
    let mut g = Guest::new(&m, &uds);
    // Nobody listens on port 6000.
    g.send(Guest::hdr(40001, 6000, op::REQUEST), &[]);
    // Data for a connection that does not exist.
    g.send(Guest::hdr(40002, 6001, op::RW), b"x");
    // A datagram type.
    let mut dgram = Guest::hdr(40003, 6002, op::REQUEST);
    dgram.type_ = 2;
    g.send(dgram, &[]);
    // Spoofed source CID: dropped silently.
    let mut spoof = Guest::hdr(40004, 6003, op::REQUEST);
    spoof.src_cid = 7;
    g.send(spoof, &[]);
    // An RST for nothing: ignored.
    g.send(Guest::hdr(40005, 6004, op::RST), &[]);
    let got = g.recv();
    let rsts: Vec<_> = got.iter().map(|(h, _)| (h.op, h.dst_port)).collect();
    assert_eq!(
        rsts,
        vec![(op::RST, 40001), (op::RST, 40002), (op::RST, 40003)]
    );
    // A bad CONNECT line closes the host connection.
    let mut host = UnixStream::connect(&uds).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(b"HELLO 1\n").unwrap();
    g.recv();
    let mut b = [0u8; 1];
    assert_eq!(host.read(&mut b).unwrap(), 0);
    assert_eq!(g.h.muxer.connections(), 0);
}

#[test]
fn guest_credit_limits_what_the_host_sends() {
    let m = mem();
    let (_dir, uds) = tmp_uds();
    let listener = UnixListener::bind(format!("{}_5001", uds.display())).unwrap();
    let mut g = Guest::new(&m, &uds);
    let mut req = Guest::hdr(40000, 5001, op::REQUEST);
    req.buf_alloc = 10;
    g.send(req, &[]);
    g.recv();
    let (mut host, _) = listener.accept().unwrap();
    host.write_all(&[7u8; 100]).unwrap();
    let got = g.recv_some();
    let total: usize = got.iter().map(|(_, p)| p.len()).sum();
    assert_eq!(total, 10);
    assert!(g.recv().is_empty());
    // The guest consumed those 10 bytes.
    let mut upd = Guest::hdr(40000, 5001, op::CREDIT_UPDATE);
    upd.buf_alloc = 10;
    upd.fwd_cnt = 10;
    g.send(upd, &[]);
    let got = g.recv();
    let total: usize = got.iter().map(|(_, p)| p.len()).sum();
    assert_eq!(total, 10);
    // A credit request is answered.
    g.send(Guest::hdr(40000, 5001, op::CREDIT_REQUEST), &[]);
    let got = g.recv();
    assert_eq!(got[0].0.op, op::CREDIT_UPDATE);
    assert_eq!(got[0].0.buf_alloc, CONN_BUF_SIZE);
}

#[test]
fn host_backpressure_credit_updates_and_overrun_reset() {
    let m = mem();
    let (_dir, uds) = tmp_uds();
    let listener = UnixListener::bind(format!("{}_5002", uds.display())).unwrap();
    let mut g = Guest::new(&m, &uds);
    g.send(Guest::hdr(40000, 5002, op::REQUEST), &[]);
    g.recv();
    let (mut host, _) = listener.accept().unwrap();
    // The host does not read: the socket fills, then our buffer. Stay within our credit.
    let chunk = vec![1u8; 60 * 1024];
    let mut sent = 0usize;
    while sent + chunk.len() <= CONN_BUF_SIZE as usize {
        g.send(Guest::hdr(40000, 5002, op::RW), &chunk);
        sent += chunk.len();
    }
    assert_eq!(g.h.muxer.connections(), 1);
    // Now the host drains everything; flushing frees credit and we tell the guest.
    host.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let mut updates = 0;
    while total < sent {
        if let Ok(n) = host.read(&mut buf) {
            total += n;
        }
        updates += g
            .recv()
            .iter()
            .filter(|(h, _)| h.op == op::CREDIT_UPDATE)
            .count();
    }
    assert_eq!(total, sent);
    updates += g
        .recv()
        .iter()
        .filter(|(h, _)| h.op == op::CREDIT_UPDATE)
        .count();
    assert!(updates >= 1);
    // A guest that ignores our credit gets its connection reset.
    let big = vec![2u8; 64 * 1024];
    let mut reset = false;
    for _ in 0..64 {
        g.send(Guest::hdr(40000, 5002, op::RW), &big);
        if g.recv().iter().any(|(h, _)| h.op == op::RST) {
            reset = true;
            break;
        }
    }
    assert!(reset);
    assert_eq!(g.h.muxer.connections(), 0);
}

#[test]
fn many_streams_share_the_rx_queue_fairly() {
    let m = mem();
    let (_dir, uds) = tmp_uds();
    let mut g = Guest::new(&m, &uds);
    const N: u32 = 200;
    let mut hosts = Vec::new();
    for i in 0..N {
        hosts.push(host_connect(&uds, 2000 + i));
        if i % 32 == 31 {
            // Keep the listener's backlog short.
            g.h.muxer.process_host_events();
        }
    }
    let mut requests = Vec::new();
    while requests.len() < N as usize {
        let got = g.recv_some();
        assert!(!got.is_empty());
        requests.extend(got.into_iter().map(|(h, _)| h));
    }
    for r in &requests {
        assert_eq!(r.op, op::REQUEST);
        g.send(Guest::hdr(r.dst_port, r.src_port, op::RESPONSE), &[]);
    }
    for h in &mut hosts {
        read_line(h);
        h.write_all(&[9u8; 32 * 1024]).unwrap();
    }
    // The first N data packets come from N different streams.
    let mut seen = std::collections::HashSet::new();
    let mut order = Vec::new();
    while order.len() < N as usize {
        let got = g.recv_some();
        assert!(!got.is_empty());
        order.extend(got.into_iter().map(|(h, _)| h.src_port));
    }
    for p in &order[..N as usize] {
        seen.insert(*p);
    }
    assert_eq!(seen.len(), N as usize);
    assert_eq!(g.h.muxer.connections(), N as usize);
}

#[test]
fn reset_drops_every_connection() {
    let m = mem();
    let (_dir, uds) = tmp_uds();
    let mut g = Guest::new(&m, &uds);
    let mut host = host_connect(&uds, 1);
    g.recv_some();
    assert_eq!(g.h.muxer.connections(), 1);
    g.h.muxer.reset();
    assert_eq!(g.h.muxer.connections(), 0);
    let mut b = [0u8; 1];
    assert_eq!(host.read(&mut b).unwrap(), 0);
}

#[test]
fn the_host_side_socket_is_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, uds) = tmp_uds();
    // SAFETY: umask takes no pointers; restored below.
    let old = unsafe { libc::umask(0) };
    let muxer = VsockMuxer::new(CID, &uds);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let _muxer = muxer.unwrap();
    let mode = std::fs::metadata(&uds).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
}
