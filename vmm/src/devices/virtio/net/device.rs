//! The virtio-net device: the MAC and link status in config space, an RX and a TX queue.

use std::io::Read;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::handler::{NetHandler, NetStats};
use super::tap::{Tap, TapError};
use crate::devices::virtio::config::{NetBackend, NetConfig};
use crate::devices::virtio::{
    device_type, read_config_bytes, ActivateError, Interrupt, VirtioDevice, COMMON_FEATURES,
};
use crate::memory::GuestMemoryMmap;

/// The device has a MAC in config space.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// The config space has a link status.
pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// RX queue index.
pub const RXQ: usize = 0;
/// TX queue index.
pub const TXQ: usize = 1;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The TAP could not be opened.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// An eventfd (or the MAC's random bytes) could not be had.
    #[error("virtio-net setup: {0}")]
    Io(std::io::Error),
}

/// A virtio-net device.
pub struct VirtioNet {
    pub(super) handler: NetHandler<Tap>,
    config: [u8; 8],
    acked: u64,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    pub(super) mem: GuestMemoryMmap,
    pub(super) queues: Vec<Queue>,
    pub(super) interrupt: Option<Interrupt>,
    pub(super) broken: bool,
}

/// A locally administered unicast MAC with random low bytes.
fn random_mac() -> Result<[u8; 6], NetError> {
    let mut mac = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut mac[1..]))
        .map_err(NetError::Io)?;
    mac[0] = 0x02;
    Ok(mac)
}

impl VirtioNet {
    /// Opens the TAP `cfg` names for a guest with memory `mem`.
    pub fn new(cfg: &NetConfig, mem: GuestMemoryMmap) -> Result<Self, NetError> {
        let tap = match &cfg.backend {
            NetBackend::Tap(name) => Tap::open(name)?,
            NetBackend::Fd(fd) => Tap::from_fd(*fd)?,
        };
        let mac = match cfg.mac {
            Some(m) => m,
            None => random_mac()?,
        };
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac);
        // VIRTIO_NET_S_LINK_UP
        config[6] = 1;
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(NetError::Io);
        Ok(Self {
            handler: NetHandler::new(tap),
            config,
            acked: 0,
            queue_evts: vec![evt()?, evt()?],
            activate_evt: evt()?,
            mem,
            queues: Vec::new(),
            interrupt: None,
            broken: false,
        })
    }

    /// The guest's MAC.
    pub fn mac(&self) -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.config[..6]);
        m
    }

    /// Frame counters.
    pub fn stats(&self) -> NetStats {
        self.handler.stats()
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    /// Runs TX and/or RX and raises the interrupt when needed.
    pub(super) fn process(&mut self, tx: bool, rx: bool) {
        if self.broken || self.queues.len() != 2 {
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
        if rx && result.is_ok() {
            match self.handler.process_rx(&mut self.queues[RXQ], &self.mem) {
                Ok(n) => notify |= n,
                Err(e) => result = Err(e),
            }
        }
        if notify {
            interrupt.signal_used_queue();
        }
        if let Err(e) = result {
            tracing::warn!("virtio-net: queues stopped until the driver resets it: {e}");
            self.broken = true;
        }
    }
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 2]
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, queues: Vec<Queue>, interrupt: Interrupt) -> Result<(), ActivateError> {
        if queues.len() != 2 {
            return Err(ActivateError::QueueCount {
                expected: 2,
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
    }
}
