//! virtio-net queue processing: TX chains become frames written to the TAP, frames read from
//! the TAP fill RX chains. One reusable bounce buffer each way (a TAP moves whole frames per
//! read/write, so a frame cannot be split across several calls), so no per-packet allocation.
//! Generic over guest memory and the frame source, so tests use a datagram socket pair.
//!
//! Must not touch: eventfds, interrupts, the transport.

use virtio_queue::{DescriptorChain, Queue};
use vm_memory::GuestMemory;

use super::tap::{FrameIo, VNET_HDR_LEN};
use crate::devices::virtio::chain::Chain;
use crate::devices::virtio::{complete_chains, QueueError};
use crate::logging::ratelimited;

/// Largest frame with its header: 64 KiB of payload, an Ethernet header and the vnet header.
pub const MAX_FRAME: usize = 65535 + 14 + VNET_HDR_LEN;

/// Counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Frames dropped on the way in (no fitting buffer, bad chain).
    pub rx_dropped: u64,
    /// Frames sent by the guest.
    pub tx_frames: u64,
    /// Guest frames dropped (malformed, or the TAP refused them).
    pub tx_dropped: u64,
}

/// Moves frames between the queues and a TAP.
pub struct NetHandler<T: FrameIo> {
    /// The backend.
    pub tap: T,
    rx_buf: Vec<u8>,
    rx_len: usize,
    tx_buf: Vec<u8>,
    chain: Chain,
    stats: NetStats,
}

impl<T: FrameIo> NetHandler<T> {
    /// A handler over `tap`.
    pub fn new(tap: T) -> Self {
        Self {
            tap,
            rx_buf: vec![0; MAX_FRAME],
            rx_len: 0,
            tx_buf: vec![0; MAX_FRAME],
            chain: Chain::default(),
            stats: NetStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Sends every frame the guest queued. Returns whether the driver must be interrupted.
    pub fn process_tx<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
    ) -> Result<bool, QueueError> {
        complete_chains(
            queue,
            mem,
            self,
            |_| true,
            |h, m, desc_chain| {
                h.send_frame(m, desc_chain);
                Some(0)
            },
        )
    }

    /// Writes one TX chain to the TAP as a frame, or drops it.
    fn send_frame<M: GuestMemory>(&mut self, mem: &M, desc_chain: DescriptorChain<&M>) {
        let ok = match self.chain.parse(mem, desc_chain) {
            Ok(()) if self.chain.writable_len() == 0 => {
                let len = (self.chain.readable_len() as usize).min(MAX_FRAME);
                let n = self.chain.read_at(mem, 0, &mut self.tx_buf[..len]);
                n > VNET_HDR_LEN && self.tap.write_frame(&self.tx_buf[..n]).is_ok()
            }
            _ => false,
        };
        if ok {
            self.stats.tx_frames += 1;
        } else {
            self.stats.tx_dropped += 1;
        }
    }

    /// Delivers frames from the TAP while the guest has buffers. A frame that arrives when
    /// there is no buffer waits here until the guest adds one. Returns whether the driver must
    /// be interrupted.
    pub fn process_rx<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
    ) -> Result<bool, QueueError> {
        complete_chains(queue, mem, self, Self::fetch_frame, |h, m, desc_chain| {
            Some(h.deliver_frame(m, desc_chain))
        })
    }

    /// Whether a frame is waiting for a buffer, reading one from the TAP if none is.
    fn fetch_frame(&mut self) -> bool {
        if self.rx_len == 0 {
            match self.tap.read_frame(&mut self.rx_buf) {
                Ok(n) if n > 0 => self.rx_len = n,
                Ok(_) => return false,
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        ratelimited!(DEBUG, "virtio-net: TAP read failed: {e}");
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Puts the waiting frame into one RX chain, or drops it when it does not fit; returns the
    /// used length.
    fn deliver_frame<M: GuestMemory>(&mut self, mem: &M, desc_chain: DescriptorChain<&M>) -> u32 {
        let len = std::mem::take(&mut self.rx_len);
        let fits = self.chain.parse(mem, desc_chain).is_ok()
            && self.chain.writable_len() >= len as u64
            && self.chain.readable_len() == 0;
        if !fits || len < VNET_HDR_LEN {
            self.stats.rx_dropped += 1;
            return 0;
        }
        // num_buffers is 1: we never merge buffers.
        self.rx_buf[10..12].copy_from_slice(&1u16.to_le_bytes());
        self.chain.write_at(mem, 0, &self.rx_buf[..len]);
        self.stats.rx_frames += 1;
        len as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{mem, Driver, DATA, MEM_SIZE, R, W};
    use std::os::unix::net::UnixDatagram;
    use vm_memory::{Bytes, GuestAddress};

    fn pair() -> (NetHandler<UnixDatagram>, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (NetHandler::new(a), b)
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn tx_frames_reach_the_backend_whole() {
        let m = mem();
        let (mut h, host) = pair();
        let mut d = Driver::new(&m, 16);
        let f = frame(b"hello ethernet");
        m.write_slice(&f[..6], GuestAddress(DATA)).unwrap();
        m.write_slice(&f[6..], GuestAddress(DATA + 0x100)).unwrap();
        d.add(&[(DATA, 6, R), (DATA + 0x100, (f.len() - 6) as u32, R)]);
        // Malformed: writable, too short, out of range.
        d.add(&[(DATA, 64, W)]);
        d.add(&[(DATA, 4, R)]);
        d.add(&[(MEM_SIZE - 8, 64, R)]);
        assert!(h.process_tx(&mut d.queue, &m).unwrap());
        assert_eq!(d.used().len(), 4);
        let mut buf = [0u8; 128];
        let n = host.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &f[..]);
        host.set_nonblocking(true).unwrap();
        assert!(host.recv(&mut buf).is_err());
        assert_eq!(
            h.stats(),
            NetStats {
                tx_frames: 1,
                tx_dropped: 3,
                ..Default::default()
            }
        );
    }

    #[test]
    fn rx_frames_fill_buffers_and_wait_for_them() {
        let m = mem();
        let (mut h, host) = pair();
        let mut d = Driver::new(&m, 16);
        let f1 = frame(b"first");
        let f2 = frame(&[0xab; 1000]);
        host.send(&f1).unwrap();
        host.send(&f2).unwrap();
        // No buffers yet: the first frame waits.
        assert!(!h.process_rx(&mut d.queue, &m).unwrap());
        d.add(&[(DATA, 1526, W)]);
        assert!(h.process_rx(&mut d.queue, &m).unwrap());
        assert_eq!(d.used(), vec![(0, f1.len() as u32)]);
        let mut got = vec![0u8; f1.len()];
        m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(&got[VNET_HDR_LEN..], b"first");
        assert_eq!(&got[10..12], &[1, 0]);
        // A buffer too small for the second frame: dropped, buffer returned empty.
        d.add(&[(DATA, 100, W)]);
        d.add(&[(DATA + 0x1000, 2000, W)]);
        host.send(&f1).unwrap();
        h.process_rx(&mut d.queue, &m).unwrap();
        assert_eq!(d.used(), vec![(1, 0), (2, f1.len() as u32)]);
        assert_eq!(h.stats().rx_frames, 2);
        assert_eq!(h.stats().rx_dropped, 1);
    }
}
