//! The virtio-rng device: no features or config space of its own, one request queue.

use std::fs::File;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::handler::RngHandler;
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
    acked: u64,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    pub(super) mem: GuestMemoryMmap,
    pub(super) queue: Option<Queue>,
    pub(super) interrupt: Option<Interrupt>,
    pub(super) broken: bool,
}

impl VirtioRng {
    /// A device for a guest with memory `mem`.
    pub fn new(mem: GuestMemoryMmap) -> Result<Self, RngError> {
        let source = File::open("/dev/urandom").map_err(RngError::Source)?;
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(RngError::EventFd);
        Ok(Self {
            handler: RngHandler::new(source),
            acked: 0,
            queue_evts: vec![evt()?],
            activate_evt: evt()?,
            mem,
            queue: None,
            interrupt: None,
            broken: false,
        })
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    pub(super) fn process_queue(&mut self) {
        if self.broken {
            return;
        }
        let (Some(queue), Some(interrupt)) = (self.queue.as_mut(), self.interrupt.as_ref()) else {
            return;
        };
        match self.handler.process_queue(queue, &self.mem) {
            Ok(true) => interrupt.signal_used_queue(),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("virtio-rng: queue stopped until the driver resets it: {e}");
                self.broken = true;
            }
        }
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
        &self.queue_evts
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(
        &mut self,
        mut queues: Vec<Queue>,
        interrupt: Interrupt,
    ) -> Result<(), ActivateError> {
        if queues.len() != 1 {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: queues.len(),
            });
        }
        self.queue = queues.pop();
        self.interrupt = Some(interrupt);
        self.broken = false;
        self.activate_evt.write(1).map_err(ActivateError::Signal)
    }

    fn reset(&mut self) {
        self.queue = None;
        self.interrupt = None;
        self.broken = false;
        self.acked = 0;
    }
}
