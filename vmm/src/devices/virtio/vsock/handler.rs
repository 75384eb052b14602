//! virtio-vsock queue processing: TX chains become packets for the muxer, RX chains are filled
//! from it. Generic over guest memory; tested with mock memory and real Unix sockets, no guest.
//!
//! Must not touch: eventfds, interrupts, the transport.

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use super::muxer::VsockMuxer;
use super::packet::{Header, HDR_LEN};
use crate::devices::virtio::chain::Chain;
use crate::devices::virtio::{drain_queue, QueueError};

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
        drain_queue(queue, mem, |q, m| {
            let Some(desc_chain) = q.pop_descriptor_chain(m) else {
                return Ok(false);
            };
            let head = desc_chain.head_index();
            match self.chain.parse(m, desc_chain) {
                Ok(()) => {
                    let mut hdr = [0u8; HDR_LEN];
                    if self.chain.read_at(m, 0, &mut hdr) == HDR_LEN {
                        self.muxer
                            .send_pkt(m, &self.chain, &Header::from_bytes(&hdr));
                    } else {
                        tracing::debug!("vsock: TX packet shorter than a header");
                    }
                }
                Err(e) => tracing::debug!("vsock: bad TX chain: {e}"),
            }
            q.add_used(m, head, 0)?;
            Ok(true)
        })
    }

    /// Fills RX buffers while the muxer has packets. Returns whether the driver must be
    /// interrupted.
    pub fn process_rx<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
    ) -> Result<bool, QueueError> {
        drain_queue(queue, mem, |q, m| {
            if !self.muxer.has_rx() {
                return Ok(false);
            }
            let Some(desc_chain) = q.pop_descriptor_chain(m) else {
                return Ok(false);
            };
            let head = desc_chain.head_index();
            if let Err(e) = self.chain.parse(m, desc_chain) {
                tracing::debug!("vsock: bad RX chain: {e}");
                q.add_used(m, head, 0)?;
                return Ok(true);
            }
            if self.chain.writable_len() < HDR_LEN as u64 {
                q.add_used(m, head, 0)?;
                return Ok(true);
            }
            match self.muxer.fill_rx(m, &self.chain) {
                Some(len) => {
                    q.add_used(m, head, len)?;
                    Ok(true)
                }
                None => {
                    q.go_to_previous_position();
                    Ok(false)
                }
            }
        })
    }
}
