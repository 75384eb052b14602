//! virtio-vsock queue processing: TX chains become packets for the muxer, RX chains are filled
//! from it. Generic over guest memory; tested with mock memory and real Unix sockets, no guest.
//!
//! Must not touch: eventfds, interrupts, the transport.

use virtio_queue::{DescriptorChain, Queue};
use vm_memory::GuestMemory;

use super::muxer::VsockMuxer;
use super::packet::{Header, HDR_LEN};
use crate::devices::virtio::chain::Chain;
use crate::devices::virtio::{complete_chains, QueueError};
use crate::logging::ratelimited;

/// Moves packets between the queues and the host sockets.
pub struct VsockHandler {
    /// The host side.
    pub muxer: VsockMuxer,
    chain: Chain,
}

impl VsockHandler {
    /// A handler over `muxer`.
    pub fn new(muxer: VsockMuxer) -> Self {
        Self {
            muxer,
            chain: Chain::default(),
        }
    }

    /// Takes every packet the guest queued. Returns whether the driver must be interrupted.
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
                h.take_tx_packet(m, desc_chain);
                Some(0)
            },
        )
    }

    /// Hands one TX chain to the muxer as a packet, or drops it.
    fn take_tx_packet<M: GuestMemory>(&mut self, mem: &M, desc_chain: DescriptorChain<&M>) {
        match self.chain.parse(mem, desc_chain) {
            Ok(()) => {
                let mut hdr = [0u8; HDR_LEN];
                if self.chain.read_at(mem, 0, &mut hdr) == HDR_LEN {
                    self.muxer
                        .send_pkt(mem, &self.chain, &Header::from_bytes(&hdr));
                } else {
                    ratelimited!(DEBUG, "vsock: TX packet shorter than a header");
                }
            }
            Err(e) => ratelimited!(DEBUG, "vsock: bad TX chain: {e}"),
        }
    }

    /// Fills RX buffers while the muxer has packets. Returns whether the driver must be
    /// interrupted.
    pub fn process_rx<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
    ) -> Result<bool, QueueError> {
        complete_chains(queue, mem, self, |h| h.muxer.has_rx(), Self::fill_rx)
    }

    /// Fills one RX chain with the muxer's next packet; returns the used length, or `None` when
    /// the muxer had nothing for it after all (the chain goes back to the ring).
    fn fill_rx<M: GuestMemory>(&mut self, mem: &M, desc_chain: DescriptorChain<&M>) -> Option<u32> {
        if let Err(e) = self.chain.parse(mem, desc_chain) {
            ratelimited!(DEBUG, "vsock: bad RX chain: {e}");
            return Some(0);
        }
        if self.chain.writable_len() < HDR_LEN as u64 {
            return Some(0);
        }
        self.muxer.fill_rx(mem, &self.chain)
    }
}
