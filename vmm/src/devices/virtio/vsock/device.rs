//! The virtio-vsock device: the guest CID in config space, three queues (RX, TX, event).

use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::handler::VsockHandler;
use super::muxer::{MuxerError, VsockMuxer};
use crate::devices::virtio::config::VsockConfig;
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
    acked: u64,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    pub(super) mem: GuestMemoryMmap,
    pub(super) queues: Vec<Queue>,
    pub(super) interrupt: Option<Interrupt>,
    pub(super) broken: bool,
}

impl VirtioVsock {
    /// A device for `cfg`, listening on its Unix socket.
    pub fn new(cfg: &VsockConfig, mem: GuestMemoryMmap) -> Result<Self, VsockError> {
        let cid = u64::from(cfg.cid);
        let muxer = VsockMuxer::new(cid, &cfg.uds)?;
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(VsockError::EventFd);
        Ok(Self {
            handler: VsockHandler::new(muxer),
            cid,
            acked: 0,
            queue_evts: vec![evt()?, evt()?, evt()?],
            activate_evt: evt()?,
            mem,
            queues: Vec::new(),
            interrupt: None,
            broken: false,
        })
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    /// Runs TX then RX (TX may queue replies) and raises the interrupt when needed.
    pub(super) fn process(&mut self, tx: bool) {
        if self.broken || self.queues.len() != 3 {
            return;
        }
        let Some(interrupt) = self.interrupt.as_ref() else {
            return;
        };
        let mut notify = false;
        let mut result = Ok(());
        if tx {
            match self.handler.process_tx(&mut self.queues[TXQ], &self.mem) {
                Ok(n) => notify |= n,
                Err(e) => result = Err(e),
            }
        }
        if result.is_ok() {
            match self.handler.process_rx(&mut self.queues[RXQ], &self.mem) {
                Ok(n) => notify |= n,
                Err(e) => result = Err(e),
            }
        }
        if notify {
            interrupt.signal_used_queue();
        }
        if let Err(e) = result {
            tracing::warn!("virtio-vsock: queues stopped until the driver resets it: {e}");
            self.broken = true;
        }
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
        &self.queue_evts
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, queues: Vec<Queue>, interrupt: Interrupt) -> Result<(), ActivateError> {
        if queues.len() != 3 {
            return Err(ActivateError::QueueCount {
                expected: 3,
                got: queues.len(),
            });
        }
        self.queues = queues;
        self.interrupt = Some(interrupt);
        self.broken = false;
        self.activate_evt.write(1).map_err(ActivateError::Signal)
    }

    fn reset(&mut self) {
        self.queues.clear();
        self.interrupt = None;
        self.broken = false;
        self.acked = 0;
        self.handler.muxer.reset();
    }
}
