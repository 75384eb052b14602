//! One vsock stream between a guest port and a host Unix socket: its state, the credit
//! accounting in both directions, and moving bytes between guest buffers and the socket.
//!
//! Owns: per-connection flow control. The guest may send us at most `buf_alloc` bytes that we
//! have not yet written to the socket, so the buffer here is bounded by our own credit; we send
//! the guest at most what its credit allows. Must not touch: epoll or the queues.

use std::io::Write;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use vm_memory::GuestMemory;

use super::packet::{
    op, Header, HDR_LEN, HOST_CID, MAX_PAYLOAD, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use crate::devices::virtio::chain::{is_would_block, Chain};
use crate::logging::ratelimited;

/// Receive buffer we advertise per connection (guest → host bytes not yet in the socket).
pub const CONN_BUF_SIZE: u32 = 256 * 1024;

/// Control packets waiting to go to the guest.
pub mod pending {
    /// REQUEST (host-initiated connection).
    pub const REQUEST: u8 = 1;
    /// RESPONSE (guest-initiated connection accepted).
    pub const RESPONSE: u8 = 2;
    /// CREDIT_UPDATE.
    pub const CREDIT: u8 = 4;
    /// SHUTDOWN (the host side closed).
    pub const SHUTDOWN: u8 = 8;
    /// RST; the connection goes away once it is sent.
    pub const RST: u8 = 16;
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The host connected and asked for a guest port; waiting for the guest's RESPONSE.
    LocalInit,
    /// Both sides may send.
    Established,
}

/// What filling one RX buffer produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// A packet of this many bytes (header included).
    Packet(u32),
    /// A packet, after which the connection is finished (it was an RST).
    Last(u32),
    /// Nothing to send now.
    Nothing,
}

/// One stream.
pub struct Connection {
    /// The host side.
    pub stream: UnixStream,
    /// Host port.
    pub local_port: u32,
    /// Guest port.
    pub peer_port: u32,
    /// Life-cycle state.
    pub state: State,
    /// [`pending`] bits.
    pub pending: u8,
    /// The socket may have data (edge-triggered epoll; cleared on `WouldBlock`).
    pub readable: bool,
    /// Whether the connection is in the muxer's RX queue.
    pub in_rxq: bool,
    guest_cid: u64,
    buf_alloc: u32,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    recv_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    rx_cnt: Wrapping<u32>,
    tx_buf: Vec<u8>,
    tx_off: usize,
    host_eof: bool,
    peer_shut: u32,
}

impl Connection {
    fn new(stream: UnixStream, guest_cid: u64, local_port: u32, peer_port: u32) -> Self {
        Self {
            stream,
            local_port,
            peer_port,
            state: State::LocalInit,
            pending: 0,
            readable: true,
            in_rxq: false,
            guest_cid,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            recv_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            tx_buf: Vec::new(),
            tx_off: 0,
            host_eof: false,
            peer_shut: 0,
        }
    }

    /// A host-initiated connection: a REQUEST to the guest's `peer_port` is pending.
    pub fn new_local(stream: UnixStream, guest_cid: u64, local_port: u32, peer_port: u32) -> Self {
        let mut c = Self::new(stream, guest_cid, local_port, peer_port);
        c.pending = pending::REQUEST;
        c
    }

    /// A guest-initiated connection we accepted: a RESPONSE is pending.
    pub fn new_peer(stream: UnixStream, guest_cid: u64, request: &Header) -> Self {
        let mut c = Self::new(stream, guest_cid, request.dst_port, request.src_port);
        c.state = State::Established;
        c.pending = pending::RESPONSE;
        c.update_peer_credit(request);
        c
    }

    /// How many more bytes the guest can take.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Every guest packet carries its credit.
    pub fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
    }

    /// Bytes from the guest waiting for the socket.
    pub fn buffered(&self) -> usize {
        self.tx_buf.len() - self.tx_off
    }

    /// Whether [`Self::fill_rx`] would produce something.
    pub fn has_rx_work(&self) -> bool {
        self.pending != 0
            || (self.state == State::Established
                && self.readable
                && !self.host_eof
                && self.peer_shut & SHUTDOWN_RCV == 0
                && self.peer_credit() > 0)
    }

    /// Marks the connection for reset: an RST goes to the guest, then it is dropped.
    pub fn reset(&mut self) {
        self.pending = pending::RST;
    }

    fn header(&self, op: u16, len: u32, flags: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    fn emit<M: GuestMemory>(&mut self, mem: &M, chain: &Chain, hdr: Header) -> u32 {
        chain.write_at(mem, 0, &hdr.to_bytes());
        self.last_fwd_cnt_sent = self.fwd_cnt;
        HDR_LEN as u32 + hdr.len
    }

    /// Writes the next packet for the guest into `chain` (whose writable part is at least a
    /// header long).
    pub fn fill_rx<M: GuestMemory>(&mut self, mem: &M, chain: &Chain) -> RxOutcome {
        let take = |c: &mut Self, bit: u8| {
            let had = c.pending & bit != 0;
            c.pending &= !bit;
            had
        };
        if take(self, pending::RST) {
            self.pending = 0;
            let h = self.header(op::RST, 0, 0);
            return RxOutcome::Last(self.emit(mem, chain, h));
        }
        if take(self, pending::REQUEST) {
            let h = self.header(op::REQUEST, 0, 0);
            return RxOutcome::Packet(self.emit(mem, chain, h));
        }
        if take(self, pending::RESPONSE) {
            let h = self.header(op::RESPONSE, 0, 0);
            return RxOutcome::Packet(self.emit(mem, chain, h));
        }
        if take(self, pending::CREDIT) {
            let h = self.header(op::CREDIT_UPDATE, 0, 0);
            return RxOutcome::Packet(self.emit(mem, chain, h));
        }
        if take(self, pending::SHUTDOWN) {
            let h = self.header(op::SHUTDOWN, 0, SHUTDOWN_RCV | SHUTDOWN_SEND);
            return RxOutcome::Packet(self.emit(mem, chain, h));
        }
        if !self.has_rx_work() {
            return RxOutcome::Nothing;
        }
        let room = chain.writable_len().saturating_sub(HDR_LEN as u64);
        let max = room
            .min(u64::from(self.peer_credit()))
            .min(u64::from(MAX_PAYLOAD));
        if max == 0 {
            return RxOutcome::Nothing;
        }
        match chain.writable_from_some(mem, HDR_LEN as u64, max, &mut self.stream) {
            Ok(0) => {
                self.host_eof = true;
                let h = self.header(op::SHUTDOWN, 0, SHUTDOWN_RCV | SHUTDOWN_SEND);
                RxOutcome::Packet(self.emit(mem, chain, h))
            }
            Ok(n) => {
                self.rx_cnt += Wrapping(n as u32);
                let h = self.header(op::RW, n as u32, 0);
                RxOutcome::Packet(self.emit(mem, chain, h))
            }
            Err(e) if is_would_block(&e) => {
                self.readable = false;
                RxOutcome::Nothing
            }
            Err(e) => {
                ratelimited!(
                    DEBUG,
                    "vsock: host socket for port {} failed: {e}",
                    self.local_port
                );
                let h = self.header(op::RST, 0, 0);
                RxOutcome::Last(self.emit(mem, chain, h))
            }
        }
    }

    /// Takes an RW payload of `len` bytes at offset [`HDR_LEN`] of `chain`. Returns false if the
    /// guest overran the credit we gave it (the caller resets the connection).
    pub fn on_rw<M: GuestMemory>(&mut self, mem: &M, chain: &Chain, len: u32) -> bool {
        let free = (self.buf_alloc as usize).saturating_sub(self.buffered());
        if len as usize > free {
            return false;
        }
        self.recv_cnt += Wrapping(len);
        let mut sent = 0usize;
        if self.buffered() == 0 {
            match chain.readable_to_some(mem, HDR_LEN as u64, u64::from(len), &mut self.stream) {
                Ok(n) => sent = n,
                Err(e) => {
                    ratelimited!(
                        DEBUG,
                        "vsock: write to host port {} failed: {e}",
                        self.local_port
                    );
                    return false;
                }
            }
            self.fwd_cnt += Wrapping(sent as u32);
        }
        if sent < len as usize {
            let start = self.tx_buf.len();
            let rest = len as usize - sent;
            self.tx_buf.resize(start + rest, 0);
            chain.read_at(mem, (HDR_LEN + sent) as u64, &mut self.tx_buf[start..]);
        }
        self.check_credit_update();
        true
    }

    /// Writes buffered guest bytes to the socket. Returns false if the socket failed.
    pub fn flush_tx(&mut self) -> bool {
        while self.buffered() > 0 {
            match self.stream.write(&self.tx_buf[self.tx_off..]) {
                Ok(0) => return false,
                Ok(n) => {
                    self.tx_off += n;
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.buffered() == 0 {
            self.tx_buf.clear();
            self.tx_off = 0;
            self.after_drain();
        } else if self.tx_off > self.tx_buf.len() / 2 {
            self.tx_buf.drain(..self.tx_off);
            self.tx_off = 0;
        }
        self.check_credit_update();
        true
    }

    /// The guest shut down one or both directions.
    pub fn on_shutdown(&mut self, flags: u32) {
        self.peer_shut |= flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
        if self.buffered() == 0 {
            self.after_drain();
        }
    }

    fn after_drain(&mut self) {
        if self.peer_shut & SHUTDOWN_SEND != 0 {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        if self.peer_shut == SHUTDOWN_RCV | SHUTDOWN_SEND {
            self.reset();
        }
    }

    /// Queues a CREDIT_UPDATE when the guest's idea of our free space has fallen below half of
    /// the buffer and we have freed some since we last told it.
    fn check_credit_update(&mut self) {
        let guest_view_used = (self.recv_cnt - self.last_fwd_cnt_sent).0;
        let guest_view_free = self.buf_alloc.saturating_sub(guest_view_used);
        if self.fwd_cnt != self.last_fwd_cnt_sent && guest_view_free < self.buf_alloc / 2 {
            self.pending |= pending::CREDIT;
        }
    }

    /// The guest asked for our credit.
    pub fn request_credit_update(&mut self) {
        self.pending |= pending::CREDIT;
    }

    /// The guest accepted our REQUEST: tell the host side which port it got.
    pub fn establish(&mut self) -> bool {
        self.state = State::Established;
        let line = format!("OK {}\n", self.local_port);
        // Nothing else has been written yet; a socket buffer always has room for a line.
        self.stream.write_all(line.as_bytes()).is_ok()
    }
}
