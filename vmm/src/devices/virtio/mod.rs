//! virtio devices on the virtio-mmio transport (version 2, "modern").
//!
//! Owns: the [`VirtioDevice`] trait the transport drives, interrupts ([`Interrupt`]), the
//! transport ([`mmio`]), what every device keeps of its queues ([`queues`]) and the devices
//! ([`block`], [`rng`], [`vsock`], [`net`], [`fs`]). Each device is a directory: `device.rs` (features,
//! config space, activation), `handler.rs` (pure queue processing, generic over guest memory) and
//! `event_handler.rs` (event-manager glue).
//!
//! Must not touch: KVM. The builder registers the ioeventfds (queue notifications) and irqfds
//! (interrupts) with the VM and hands the eventfds to the transport and devices.
//!
//! Everything here is reachable by a malicious guest: malformed rings and descriptor chains are
//! errors that end one request (or, at worst, stop one queue until the driver resets the device),
//! never a panic, and every log line the guest can trigger goes through
//! [`ratelimited!`](crate::logging::ratelimited).

pub mod attach;
pub mod block;
pub mod chain;
pub mod config;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod queues;
pub mod rng;
pub mod vsock;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::logging::ratelimited;
use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;
use vmm_sys_util::eventfd::EventFd;

/// virtio 1.0 ("modern") device: the only kind the transport offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Indirect descriptor tables (handled by virtio-queue's chain iterator).
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// used_event / avail_event notification suppression.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// Features every device offers on top of its own.
pub const COMMON_FEATURES: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device may process queues.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// virtio device type ids (virtio 1.2, 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Socket device.
    pub const VSOCK: u32 = 19;
    /// File system device (virtio-fs).
    pub const FS: u32 = 26;
}

/// Interrupt status bit: a queue has new used buffers.
pub const INT_VRING: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
/// Interrupt status bit: the configuration (or the device status) changed.
pub const INT_CONFIG: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

/// Errors activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up a different number of queues than the device has.
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// What the device needs.
        expected: usize,
        /// What it got.
        got: usize,
    },
    /// Signalling the event loop failed.
    #[error("cannot signal activation: {0}")]
    Signal(std::io::Error),
    /// The device's backend could not be started.
    #[error("backend: {0}")]
    Backend(String),
}

/// The interrupt line of one device: an interrupt status register shared with the transport and
/// an irqfd the VM routes to the device's GSI.
#[derive(Clone)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    irqfd: Arc<EventFd>,
}

impl Interrupt {
    /// An interrupt raised by writing `irqfd`.
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: Arc::new(AtomicU32::new(0)),
            irqfd: Arc::new(irqfd),
        }
    }

    /// Sets `bits` in the interrupt status and raises the line.
    pub fn signal(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        if let Err(e) = self.irqfd.write(1) {
            ratelimited!(DEBUG, "virtio irqfd write failed: {e}");
        }
    }

    /// Tells the driver a queue has new used buffers.
    pub fn signal_used_queue(&self) {
        self.signal(INT_VRING);
    }

    /// Tells the driver the configuration or status changed.
    pub fn signal_config_change(&self) {
        self.signal(INT_CONFIG);
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears everything (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// The irqfd, for tests that wait for interrupts.
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// A virtio device as the transport sees it.
pub trait VirtioDevice: Send {
    /// The virtio device type ([`device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The eventfd each queue is notified through, in queue order (the builder registers them
    /// as ioeventfds; the transport writes them when a notification reaches it instead).
    fn queue_events(&self) -> &[EventFd];
    /// Features the device offers (including [`COMMON_FEATURES`]).
    fn features(&self) -> u64;
    /// The driver accepted `features` (a subset of [`Self::features`]) and set FEATURES_OK.
    fn ack_features(&mut self, features: u64);
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (most devices ignore it).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK: start processing `queues`, raising `interrupt`.
    fn activate(&mut self, queues: Vec<Queue>, interrupt: Interrupt) -> Result<(), ActivateError>;
    /// The driver reset the device: drop the queues and stop processing.
    fn reset(&mut self);
}

/// Copies `config[offset..offset + data.len()]` into `data`; bytes past the end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}

/// Errors processing a queue that stop it until the driver resets the device.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The ring itself is unusable (bad index, inaccessible used ring).
    #[error("virtqueue: {0}")]
    Ring(#[from] virtio_queue::Error),
    /// The available index ran more than a queue's worth ahead of the device.
    #[error("virtqueue: available index is invalid")]
    BadAvailIndex,
}

/// Runs `pop` on `queue` until the driver has nothing more, with notifications suppressed while
/// the device is busy (the usual virtio loop: disable, drain, re-enable, re-check). `pop` returns
/// `Ok(true)` after consuming a chain, `Ok(false)` when it cannot make progress (no more chains,
/// or no room in the backend). Returns whether the driver must be interrupted.
pub fn drain_queue<M, F>(queue: &mut Queue, mem: &M, mut pop: F) -> Result<bool, QueueError>
where
    M: GuestMemory,
    F: FnMut(&mut Queue, &M) -> Result<bool, QueueError>,
{
    let mut used_any = false;
    loop {
        queue.disable_notification(mem)?;
        let mut progressed = false;
        while pop(queue, mem)? {
            progressed = true;
            used_any = true;
        }
        if !queue.enable_notification(mem)? {
            break;
        }
        if !progressed {
            // The driver claims more buffers but none could be popped: either the backend has
            // no room (it will retry when it has) or the index is garbage. Either way, stop.
            let avail = queue.avail_idx(mem, Ordering::Acquire)?;
            if avail.0.wrapping_sub(queue.next_avail()) > queue.size() {
                return Err(QueueError::BadAvailIndex);
            }
            break;
        }
    }
    Ok(used_any && queue.needs_notification(mem)?)
}

/// The pop-chain / add-used loop of every queue, run inside [`drain_queue`]. Before each pop,
/// `ready(state)` says whether the device has work for another chain (an RX queue with nothing
/// to deliver says no, and the ring is left alone). `complete(state, mem, chain)` consumes one
/// chain and returns the length for its used entry, or `None` when the device cannot take the
/// chain after all: it goes back to the ring and the loop stops. Both closures get `state` (the
/// handler) rather than capturing it, so both may use it. Returns whether the driver must be
/// interrupted.
pub fn complete_chains<M, S, R, C>(
    queue: &mut Queue,
    mem: &M,
    state: &mut S,
    mut ready: R,
    mut complete: C,
) -> Result<bool, QueueError>
where
    M: GuestMemory,
    R: FnMut(&mut S) -> bool,
    C: FnMut(&mut S, &M, DescriptorChain<&M>) -> Option<u32>,
{
    drain_queue(queue, mem, |q, m| {
        if !ready(state) {
            return Ok(false);
        }
        let Some(desc_chain) = q.pop_descriptor_chain(m) else {
            return Ok(false);
        };
        let head = desc_chain.head_index();
        match complete(state, m, desc_chain) {
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

/// Event-manager glue a device implements; [`DeviceSubscriber`] locks the device around it.
pub trait DeviceEventHandler: Send {
    /// Registers the device's fds (queue eventfds, activation eventfd, backend fds).
    fn init_events(&mut self, ops: &mut EventOps);
    /// Handles one ready fd.
    fn process_event(&mut self, events: Events, ops: &mut EventOps);
}

/// The event-manager subscriber for a device shared with its transport.
pub struct DeviceSubscriber<D: DeviceEventHandler>(pub Arc<Mutex<D>>);

impl<D: DeviceEventHandler> MutEventSubscriber for DeviceSubscriber<D> {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .process_event(events, ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .init_events(ops);
    }
}

/// Registers `fd` for input with `data` as its tag, logging failures.
pub fn watch<T: AsRawFd>(ops: &mut EventOps, fd: &T, data: u32, what: &str) {
    if let Err(e) = ops.add(Events::with_data(
        fd,
        data,
        vmm_sys_util::epoll::EventSet::IN,
    )) {
        ratelimited!(ERROR, "cannot watch {what}: {e}");
    }
}

#[cfg(test)]
pub(crate) mod test_utils;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounded() {
        let cfg = [1u8, 2, 3, 4];
        let mut d = [9u8; 4];
        read_config_bytes(&cfg, 2, &mut d);
        assert_eq!(d, [3, 4, 0, 0]);
        read_config_bytes(&cfg, 100, &mut d);
        assert_eq!(d, [0; 4]);
        read_config_bytes(&cfg, u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn interrupt_status_and_ack() {
        let irq = Interrupt::new(EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap());
        irq.signal_used_queue();
        irq.signal_config_change();
        assert_eq!(irq.status(), INT_VRING | INT_CONFIG);
        assert_eq!(irq.irqfd().read().unwrap(), 2);
        irq.ack(INT_VRING);
        assert_eq!(irq.status(), INT_CONFIG);
        irq.clear();
        assert_eq!(irq.status(), 0);
    }
}
