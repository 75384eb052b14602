//! virtio-rng request processing: fill each chain's writable buffers from an entropy source.
//! Generic over guest memory and the source, so tests and fuzzing use mock memory and a
//! byte slice.
//!
//! Must not touch: eventfds, interrupts, the transport.

use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{GuestMemory, ReadVolatile};

use crate::devices::virtio::chain::Chain;
use crate::devices::virtio::{complete_chains, QueueError};
use crate::logging::ratelimited;

/// Most bytes handed out per request; Linux asks for at most a page or so.
pub const MAX_REQUEST: u64 = 64 * 1024;

/// Fills virtio-rng requests from `source`.
pub struct RngHandler<S: ReadVolatile> {
    source: S,
    chain: Chain,
    /// Bytes handed to the guest so far.
    pub bytes: u64,
}

impl<S: ReadVolatile> RngHandler<S> {
    /// A handler reading entropy from `source`.
    pub fn new(source: S) -> Self {
        Self {
            source,
            chain: Chain::default(),
            bytes: 0,
        }
    }

    /// Completes every available request. Returns whether the driver must be interrupted.
    pub fn process_queue<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
    ) -> Result<bool, QueueError> {
        complete_chains(
            queue,
            mem,
            self,
            |_| true,
            |h, m, desc_chain| Some(h.fill(m, desc_chain)),
        )
    }

    /// Fills one request's writable buffers; returns the used length.
    fn fill<M: GuestMemory>(&mut self, mem: &M, desc_chain: DescriptorChain<&M>) -> u32 {
        let mut used = 0u32;
        match self.chain.parse(mem, desc_chain) {
            Ok(()) => {
                let want = self.chain.writable_len().min(MAX_REQUEST);
                match self
                    .chain
                    .writable_from_some(mem, 0, want, &mut self.source)
                {
                    Ok(n) => used = n as u32,
                    Err(e) => ratelimited!(DEBUG, "virtio-rng: entropy source failed: {e}"),
                }
            }
            Err(e) => ratelimited!(DEBUG, "virtio-rng: bad request: {e}"),
        }
        self.bytes += u64::from(used);
        used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{mem, Driver, DATA, MEM_SIZE, R, W};
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn fills_writable_buffers() {
        let m = mem();
        let mut d = Driver::new(&m, 16);
        let src: Vec<u8> = (0..=255).cycle().take(4096).collect();
        let mut h = RngHandler::new(&src[..]);
        d.add(&[(DATA, 16, W), (DATA + 0x100, 8, W)]);
        d.add(&[(DATA + 0x200, 4, W)]);
        let mut q = d.queue();
        assert!(h.process_queue(&mut q, &m).unwrap());
        assert_eq!(d.used(), vec![(0, 24), (2, 4)]);
        let mut b = [0u8; 8];
        m.read_slice(&mut b, GuestAddress(DATA + 0x100)).unwrap();
        assert_eq!(b, [16, 17, 18, 19, 20, 21, 22, 23]);
        m.read_slice(&mut b[..4], GuestAddress(DATA + 0x200))
            .unwrap();
        assert_eq!(&b[..4], &[24, 25, 26, 27]);
        assert_eq!(h.bytes, 28);
    }

    #[test]
    fn bad_requests_complete_empty() {
        let m = mem();
        let mut d = Driver::new(&m, 16);
        let src = [7u8; 64];
        let mut h = RngHandler::new(&src[..]);
        // Readable only, out of range, and more than the source has.
        d.add(&[(DATA, 16, R)]);
        d.add(&[(MEM_SIZE - 2, 16, W)]);
        d.add(&[(DATA, 1000, W)]);
        let mut q = d.queue();
        h.process_queue(&mut q, &m).unwrap();
        assert_eq!(d.used(), vec![(0, 0), (1, 0), (2, 64)]);
    }

    #[test]
    fn requests_are_capped() {
        let m = mem();
        let mut d = Driver::new(&m, 16);
        let src = vec![1u8; 1 << 20];
        let mut h = RngHandler::new(&src[..]);
        d.add(&[(DATA, 0x8_0000, W)]);
        let mut q = d.queue();
        h.process_queue(&mut q, &m).unwrap();
        assert_eq!(d.used(), vec![(0, MAX_REQUEST as u32)]);
    }
}
