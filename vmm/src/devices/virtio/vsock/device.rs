//! The virtio-vsock device: the guest CID in config space, three queues (RX, TX, event).

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::handler::VsockHandler;
use super::muxer::{MuxerError, VsockMuxer};
use crate::devices::virtio::config::VsockConfig;
use crate::devices::virtio::queues::DeviceQueues;
use crate::devices::virtio::{
    device_type, read_config_bytes, ActivateError, Interrupt, VirtioDevice, COMMON_FEATURES,
};
use crate::memory::GuestMemoryMmap;

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// RX queue index.
pub const RXQ: usize = 0;
/// TX queue index.
pub const TXQ: usize = 1;
/// Event queue index (we never send transport events).
pub const EVQ: usize = 2;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The host side could not be set up.
    #[error(transparent)]
    Muxer(#[from] MuxerError),
    /// An eventfd could not be created.
    #[error("vsock eventfd: {0}")]
    EventFd(std::io::Error),
}

/// A virtio-vsock device.
pub struct VirtioVsock {
    pub(super) handler: VsockHandler,
    cid: u64,
    pub(super) queues: DeviceQueues,
}

impl VirtioVsock {
    /// A device for `cfg`, listening on its Unix socket.
    pub fn new(cfg: &VsockConfig, mem: GuestMemoryMmap) -> Result<Self, VsockError> {
        let cid = u64::from(cfg.cid);
        let muxer = VsockMuxer::new(cid, &cfg.uds)?;
        Ok(Self {
            handler: VsockHandler::new(muxer),
            cid,
            queues: DeviceQueues::new("virtio-vsock", 3, mem).map_err(VsockError::EventFd)?,
        })
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.queues.acked_features()
    }

    /// Runs the queues `order` names (TX before RX: TX may queue replies) and raises the
    /// interrupt when needed. The event queue is never processed: we send no transport events.
    pub(super) fn process(&mut self, order: &[usize]) {
        self.queues.process(order, |i, queue, mem| {
            if i == TXQ {
                self.handler.process_tx(queue, mem)
            } else {
                self.handler.process_rx(queue, mem)
            }
        });
    }
}

impl VirtioDevice for VirtioVsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn queue_events(&self) -> &[EventFd] {
        self.queues.queue_events()
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
    }

    fn ack_features(&mut self, features: u64) {
        self.queues.ack_features(features);
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, queues: Vec<Queue>, interrupt: Interrupt) -> Result<(), ActivateError> {
        self.queues.activate(queues, interrupt)
    }

    fn reset(&mut self) {
        self.queues.reset();
        self.handler.muxer.reset();
    }
}
