//! The virtio-rng device: no features or config space of its own, one request queue.

use std::fs::File;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::handler::RngHandler;
use crate::devices::virtio::queues::DeviceQueues;
use crate::devices::virtio::{
    device_type, ActivateError, Interrupt, VirtioDevice, COMMON_FEATURES,
};
use crate::memory::GuestMemoryMmap;

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 64;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum RngError {
    /// /dev/urandom could not be opened.
    #[error("cannot open /dev/urandom: {0}")]
    Source(std::io::Error),
    /// An eventfd could not be created.
    #[error("rng eventfd: {0}")]
    EventFd(std::io::Error),
}

/// A virtio-rng device.
pub struct VirtioRng {
    pub(super) handler: RngHandler<File>,
    pub(super) queues: DeviceQueues,
}

impl VirtioRng {
    /// A device for a guest with memory `mem`.
    pub fn new(mem: GuestMemoryMmap) -> Result<Self, RngError> {
        let source = File::open("/dev/urandom").map_err(RngError::Source)?;
        Ok(Self {
            handler: RngHandler::new(source),
            queues: DeviceQueues::new("virtio-rng", 1, mem).map_err(RngError::EventFd)?,
        })
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.queues.acked_features()
    }
}

impl VirtioDevice for VirtioRng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
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

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, queues: Vec<Queue>, interrupt: Interrupt) -> Result<(), ActivateError> {
        self.queues.activate(queues, interrupt)
    }

    fn reset(&mut self) {
        self.queues.reset();
    }
}
