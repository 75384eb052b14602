//! The virtio-net device: the MAC and link status in config space, an RX and a TX queue.

use std::io::Read;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::handler::{NetHandler, NetStats};
use super::tap::{Tap, TapError};
use crate::devices::virtio::config::{NetBackend, NetConfig};
use crate::devices::virtio::queues::DeviceQueues;
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
    pub(super) queues: DeviceQueues,
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
        Ok(Self {
            handler: NetHandler::new(tap),
            config,
            queues: DeviceQueues::new("virtio-net", 2, mem).map_err(NetError::Io)?,
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
        self.queues.acked_features()
    }

    /// Runs the queues `order` names (TX and/or RX, in that order) and raises the interrupt when
    /// needed.
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

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 2]
    }

    fn queue_events(&self) -> &[EventFd] {
        self.queues.queue_events()
    }

    fn features(&self) -> u64 {
        COMMON_FEATURES | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS
    }

    fn ack_features(&mut self, features: u64) {
        self.queues.ack_features(features);
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, queues: Vec<Queue>, interrupt: Interrupt) -> Result<(), ActivateError> {
        self.queues.activate(queues, interrupt)
    }

    fn reset(&mut self) {
        self.queues.reset();
    }
}
