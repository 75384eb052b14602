//! The virtio-mmio transport, version 2: the register page a guest driver programs to discover a
//! device, negotiate features, set up queues and start it (virtio 1.2, 4.2).
//!
//! Owns: the register state machine (status bits in order, features in two 32-bit halves, per-queue
//! configuration until DRIVER_OK, interrupt status and acknowledgement, reset). Queue
//! notifications normally never reach it: the builder registers each queue's eventfd as a KVM
//! ioeventfd on `QueueNotify` with the queue index as datamatch; a write that does reach the
//! transport (no ioeventfd, or a mismatched width) is forwarded to the same eventfd.
//!
//! Must not touch: KVM or queue contents; the device behind it does the work on the event loop.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;
use vmm_sys_util::eventfd::EventFd;

use super::{status, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::devices::bus::BusDevice;
use crate::logging::ratelimited;

/// "virt" in little endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// The modern virtio-mmio layout.
pub const MMIO_VERSION: u32 = 2;
/// Our vendor id ("HUSK" would be nicer; 0 is what Firecracker and QEMU-microvm use too).
pub const VENDOR_ID: u32 = 0;

/// Register offsets (virtio 1.2, 4.2.2).
pub mod reg {
    /// Magic value (R).
    pub const MAGIC: u64 = 0x00;
    /// Version (R).
    pub const VERSION: u64 = 0x04;
    /// Device id (R).
    pub const DEVICE_ID: u64 = 0x08;
    /// Vendor id (R).
    pub const VENDOR_ID: u64 = 0x0c;
    /// Device features, the half chosen by DEVICE_FEATURES_SEL (R).
    pub const DEVICE_FEATURES: u64 = 0x10;
    /// Which half of the device features to read (W).
    pub const DEVICE_FEATURES_SEL: u64 = 0x14;
    /// Driver features, the half chosen by DRIVER_FEATURES_SEL (W).
    pub const DRIVER_FEATURES: u64 = 0x20;
    /// Which half of the driver features to write (W).
    pub const DRIVER_FEATURES_SEL: u64 = 0x24;
    /// Queue selector (W).
    pub const QUEUE_SEL: u64 = 0x30;
    /// Largest size of the selected queue (R).
    pub const QUEUE_NUM_MAX: u64 = 0x34;
    /// Size of the selected queue (W).
    pub const QUEUE_NUM: u64 = 0x38;
    /// Selected queue ready (RW).
    pub const QUEUE_READY: u64 = 0x44;
    /// Queue notification (W).
    pub const QUEUE_NOTIFY: u64 = 0x50;
    /// Interrupt status (R).
    pub const INTERRUPT_STATUS: u64 = 0x60;
    /// Interrupt acknowledge (W).
    pub const INTERRUPT_ACK: u64 = 0x64;
    /// Device status (RW).
    pub const STATUS: u64 = 0x70;
    /// Descriptor table address, low half (W).
    pub const QUEUE_DESC_LOW: u64 = 0x80;
    /// Descriptor table address, high half (W).
    pub const QUEUE_DESC_HIGH: u64 = 0x84;
    /// Available ring address, low half (W).
    pub const QUEUE_AVAIL_LOW: u64 = 0x90;
    /// Available ring address, high half (W).
    pub const QUEUE_AVAIL_HIGH: u64 = 0x94;
    /// Used ring address, low half (W).
    pub const QUEUE_USED_LOW: u64 = 0xa0;
    /// Used ring address, high half (W).
    pub const QUEUE_USED_HIGH: u64 = 0xa4;
    /// Configuration generation (R).
    pub const CONFIG_GENERATION: u64 = 0xfc;
    /// Start of the device-specific configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// Errors creating a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A device declared a queue size virtio-queue rejects (zero or not a power of two).
    #[error("queue {index}: invalid maximum size {size}")]
    QueueSize {
        /// The queue.
        index: usize,
        /// Its declared maximum.
        size: u16,
    },
    /// The device's queue eventfds do not match its queues.
    #[error("device has {queues} queues but {events} queue eventfds")]
    QueueEvents {
        /// Queue count.
        queues: usize,
        /// Eventfd count.
        events: usize,
    },
    /// Cloning a queue eventfd failed.
    #[error("cannot clone a queue eventfd: {0}")]
    Clone(std::io::Error),
}

/// The guest-visible register page of one virtio device.
pub struct MmioTransport<M: GuestMemory> {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: M,
    interrupt: Interrupt,
    queue_evts: Vec<EventFd>,
    queue_max: Vec<u16>,
    queues: Vec<Queue>,
    device_type: u32,
    device_features: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
}

impl<M: GuestMemory> MmioTransport<M> {
    /// A transport for `device`; `queue_evts` are the eventfds its queues are notified through
    /// (clones of the ones the device watches), in queue order.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: M,
        interrupt: Interrupt,
        queue_evts: Vec<EventFd>,
    ) -> Result<Self, TransportError> {
        let (device_type, device_features, queue_max) = {
            let d = device.lock().unwrap_or_else(|p| p.into_inner());
            (d.device_type(), d.features(), d.queue_max_sizes().to_vec())
        };
        if queue_evts.len() != queue_max.len() {
            return Err(TransportError::QueueEvents {
                queues: queue_max.len(),
                events: queue_evts.len(),
            });
        }
        let queues = new_queues(&queue_max)?;
        Ok(Self {
            device,
            mem,
            interrupt,
            queue_evts,
            queue_max,
            queues,
            device_type,
            device_features,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
        })
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The features the driver acknowledged.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn queue_config_writable(&self) -> bool {
        self.status & status::FEATURES_OK != 0 && self.status & status::DRIVER_OK == 0
    }

    fn reset(&mut self) {
        self.device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reset();
        // Sizes were validated in new(); rebuilding cannot fail.
        if let Ok(q) = new_queues(&self.queue_max) {
            self.queues = q;
        }
        self.interrupt.clear();
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
    }

    fn features_acceptable(&self) -> bool {
        self.driver_features & !self.device_features == 0
            && self.driver_features & VIRTIO_F_VERSION_1 != 0
    }

    fn activate(&mut self) -> bool {
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready() || !q.is_valid(&self.mem) {
                ratelimited!(
                    WARN,
                    "virtio device type {}: queue {i} is not ready or not valid at DRIVER_OK",
                    self.device_type
                );
                return false;
            }
        }
        let event_idx = self.driver_features & super::VIRTIO_RING_F_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            // The state was validated above, so the copy cannot fail.
            let Ok(mut copy) = Queue::try_from(q.state()) else {
                return false;
            };
            copy.set_event_idx(event_idx);
            queues.push(copy);
        }
        let result = self
            .device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .activate(queues, self.interrupt.clone());
        match result {
            Ok(()) => true,
            Err(e) => {
                ratelimited!(
                    WARN,
                    "virtio device type {}: activation failed: {e}",
                    self.device_type
                );
                false
            }
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & self.status != self.status {
            ratelimited!(
                DEBUG,
                "virtio-mmio: status {:#x} -> {value:#x} clears bits; ignored",
                self.status
            );
            return;
        }
        let new = value & !self.status;
        let mut next = self.status;
        if new & status::ACKNOWLEDGE != 0 {
            next |= status::ACKNOWLEDGE;
        }
        if new & status::DRIVER != 0 && next & status::ACKNOWLEDGE != 0 {
            next |= status::DRIVER;
        }
        if new & status::FEATURES_OK != 0
            && next & status::DRIVER != 0
            && self.features_acceptable()
        {
            self.device
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .ack_features(self.driver_features);
            next |= status::FEATURES_OK;
        }
        if new & status::DRIVER_OK != 0 && next & status::FEATURES_OK != 0 {
            self.status = next;
            if self.activate() {
                next |= status::DRIVER_OK;
            } else {
                next |= status::DEVICE_NEEDS_RESET;
                self.status = next;
                self.interrupt.signal_config_change();
            }
        }
        if new & status::FAILED != 0 {
            next |= status::FAILED;
        }
        self.status = next;
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC => MMIO_MAGIC,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device_type,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features as u32,
                1 => (self.device_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self
                .queue_max
                .get(self.queue_sel as usize)
                .map_or(0, |&m| u32::from(m)),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => 0,
            _ => {
                ratelimited!(DEBUG, "virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, v: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => {
                if self.status & status::DRIVER == 0 || self.status & status::FEATURES_OK != 0 {
                    ratelimited!(DEBUG, "virtio-mmio: driver features written out of order");
                    return;
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NOTIFY => {
                if self.status & status::DRIVER_OK != 0 {
                    if let Some(evt) = self.queue_evts.get(v as usize) {
                        if let Err(e) = evt.write(1) {
                            ratelimited!(DEBUG, "virtio-mmio: queue {v} notify failed: {e}");
                        }
                    }
                }
            }
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.set_status(v),
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_AVAIL_LOW
            | reg::QUEUE_AVAIL_HIGH
            | reg::QUEUE_USED_LOW
            | reg::QUEUE_USED_HIGH => {
                if !self.queue_config_writable() {
                    ratelimited!(
                        DEBUG,
                        "virtio-mmio: queue register {offset:#x} written out of order"
                    );
                    return;
                }
                let Some(q) = self.selected_queue() else {
                    return;
                };
                match offset {
                    // virtio-queue ignores (and logs) sizes that are not a power of two or too big.
                    reg::QUEUE_NUM if v <= u32::from(q.max_size()) => q.set_size(v as u16),
                    reg::QUEUE_READY => q.set_ready(v == 1),
                    reg::QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
                    reg::QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
                    reg::QUEUE_AVAIL_LOW => q.set_avail_ring_address(Some(v), None),
                    reg::QUEUE_AVAIL_HIGH => q.set_avail_ring_address(None, Some(v)),
                    reg::QUEUE_USED_LOW => q.set_used_ring_address(Some(v), None),
                    reg::QUEUE_USED_HIGH => q.set_used_ring_address(None, Some(v)),
                    _ => {}
                }
            }
            _ => ratelimited!(DEBUG, "virtio-mmio: write of unknown register {offset:#x}"),
        }
    }
}

fn new_queues(max: &[u16]) -> Result<Vec<Queue>, TransportError> {
    max.iter()
        .enumerate()
        .map(|(index, &size)| {
            Queue::new(size).map_err(|_| TransportError::QueueSize { index, size })
        })
        .collect()
}

impl<M: GuestMemory + Send> BusDevice for MmioTransport<M> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            ratelimited!(
                DEBUG,
                "virtio-mmio: {}-byte read at {offset:#x} ignored",
                data.len()
            );
            data.fill(0);
            return;
        }
        let v = self.read_register(offset);
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            ratelimited!(
                DEBUG,
                "virtio-mmio: {}-byte write at {offset:#x} ignored",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{mem, Driver, Mem};
    use crate::devices::virtio::{ActivateError, COMMON_FEATURES, INT_CONFIG, INT_VRING};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Default)]
    struct Fake {
        acked: u64,
        activated: Option<usize>,
        resets: u32,
        fail_activate: bool,
        config_writes: Vec<(u64, Vec<u8>)>,
    }

    impl VirtioDevice for Fake {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn queue_events(&self) -> &[EventFd] {
            &[]
        }
        fn features(&self) -> u64 {
            COMMON_FEATURES | 0b101
        }
        fn ack_features(&mut self, features: u64) {
            self.acked = features;
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[10, 11, 12, 13, 14, 15, 16, 17], offset, data);
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            self.config_writes.push((offset, data.to_vec()));
        }
        fn activate(&mut self, queues: Vec<Queue>, _: Interrupt) -> Result<(), ActivateError> {
            if self.fail_activate {
                return Err(ActivateError::Backend("no".into()));
            }
            self.activated = Some(queues.len());
            Ok(())
        }
        fn reset(&mut self) {
            self.activated = None;
            self.resets += 1;
        }
    }

    struct Rig {
        t: MmioTransport<Mem>,
        dev: Arc<Mutex<Fake>>,
        evts: Vec<EventFd>,
        irq: Interrupt,
    }

    fn rig(m: &Mem) -> Rig {
        let dev = Arc::new(Mutex::new(Fake::default()));
        let evts: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let t = MmioTransport::new(
            dev.clone(),
            m.clone(),
            irq.clone(),
            evts.iter().map(|e| e.try_clone().unwrap()).collect(),
        )
        .unwrap();
        Rig { t, dev, evts, irq }
    }

    fn rd(t: &mut MmioTransport<Mem>, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &mut MmioTransport<Mem>, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn negotiate(t: &mut MmioTransport<Mem>, features: u64) {
        wr(t, reg::STATUS, status::ACKNOWLEDGE);
        wr(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(t, reg::DRIVER_FEATURES_SEL, 0);
        wr(t, reg::DRIVER_FEATURES, features as u32);
        wr(t, reg::DRIVER_FEATURES_SEL, 1);
        wr(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
        wr(
            t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    fn setup_queue(t: &mut MmioTransport<Mem>, index: u32, d: &Driver<'_>) {
        wr(t, reg::QUEUE_SEL, index);
        assert_eq!(rd(t, reg::QUEUE_NUM_MAX), 16);
        wr(t, reg::QUEUE_NUM, 16);
        let a = |g: vm_memory::GuestAddress| g.0;
        wr(t, reg::QUEUE_DESC_LOW, a(d.desc_addr()) as u32);
        wr(t, reg::QUEUE_DESC_HIGH, 0);
        wr(t, reg::QUEUE_AVAIL_LOW, a(d.avail_addr()) as u32);
        wr(t, reg::QUEUE_AVAIL_HIGH, 0);
        wr(t, reg::QUEUE_USED_LOW, a(d.used_addr()) as u32);
        wr(t, reg::QUEUE_USED_HIGH, 0);
        wr(t, reg::QUEUE_READY, 1);
        assert_eq!(rd(t, reg::QUEUE_READY), 1);
    }

    const ALL: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;

    #[test]
    fn identity_registers() {
        let m = mem();
        let mut r = rig(&m);
        assert_eq!(rd(&mut r.t, reg::MAGIC), MMIO_MAGIC);
        assert_eq!(rd(&mut r.t, reg::VERSION), 2);
        assert_eq!(rd(&mut r.t, reg::DEVICE_ID), 42);
        assert_eq!(
            rd(&mut r.t, reg::DEVICE_FEATURES),
            0b101 | (1 << 28) | (1 << 29)
        );
        wr(&mut r.t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&mut r.t, reg::DEVICE_FEATURES), 1);
        wr(&mut r.t, reg::DEVICE_FEATURES_SEL, 7);
        assert_eq!(rd(&mut r.t, reg::DEVICE_FEATURES), 0);
        wr(&mut r.t, reg::QUEUE_SEL, 5);
        assert_eq!(rd(&mut r.t, reg::QUEUE_NUM_MAX), 0);
    }

    #[test]
    fn full_bring_up_activates_the_device() {
        let m = mem();
        let mut r = rig(&m);
        negotiate(&mut r.t, VIRTIO_F_VERSION_1 | 1);
        assert_eq!(rd(&mut r.t, reg::STATUS), ALL);
        assert_eq!(r.dev.lock().unwrap().acked, VIRTIO_F_VERSION_1 | 1);
        let d0 = Driver::at(&m, vm_memory::GuestAddress(0x1000), 16);
        let d1 = Driver::at(&m, vm_memory::GuestAddress(0x4000), 16);
        setup_queue(&mut r.t, 0, &d0);
        setup_queue(&mut r.t, 1, &d1);
        wr(&mut r.t, reg::STATUS, ALL | status::DRIVER_OK);
        assert_eq!(rd(&mut r.t, reg::STATUS), ALL | status::DRIVER_OK);
        assert_eq!(r.dev.lock().unwrap().activated, Some(2));
        // Queue registers are frozen after DRIVER_OK.
        wr(&mut r.t, reg::QUEUE_SEL, 0);
        wr(&mut r.t, reg::QUEUE_READY, 0);
        assert_eq!(rd(&mut r.t, reg::QUEUE_READY), 1);
        // Notifications that reach the transport go to the queue's eventfd.
        wr(&mut r.t, reg::QUEUE_NOTIFY, 1);
        wr(&mut r.t, reg::QUEUE_NOTIFY, 9);
        assert_eq!(r.evts[1].read().unwrap(), 1);
        assert!(r.evts[0].read().is_err());
        // Interrupt status and acknowledgement.
        r.irq.signal_used_queue();
        assert_eq!(rd(&mut r.t, reg::INTERRUPT_STATUS), INT_VRING);
        wr(&mut r.t, reg::INTERRUPT_ACK, INT_VRING);
        assert_eq!(rd(&mut r.t, reg::INTERRUPT_STATUS), 0);
        // Reset.
        wr(&mut r.t, reg::STATUS, 0);
        assert_eq!(rd(&mut r.t, reg::STATUS), 0);
        assert_eq!(r.dev.lock().unwrap().activated, None);
        assert_eq!(r.dev.lock().unwrap().resets, 1);
        assert_eq!(rd(&mut r.t, reg::QUEUE_READY), 0);
    }

    #[test]
    fn features_without_version_1_or_unknown_are_refused() {
        let m = mem();
        for bad in [
            1u64,
            VIRTIO_F_VERSION_1 | 0b10,
            VIRTIO_F_VERSION_1 | (1 << 40),
        ] {
            let mut r = rig(&m);
            negotiate(&mut r.t, bad);
            assert_eq!(
                rd(&mut r.t, reg::STATUS),
                status::ACKNOWLEDGE | status::DRIVER,
                "{bad:#x}"
            );
        }
    }

    #[test]
    fn out_of_order_status_and_registers_are_ignored() {
        let m = mem();
        let mut r = rig(&m);
        // DRIVER_OK before anything else.
        wr(&mut r.t, reg::STATUS, status::DRIVER_OK);
        assert_eq!(rd(&mut r.t, reg::STATUS), 0);
        // DRIVER without ACKNOWLEDGE.
        wr(&mut r.t, reg::STATUS, status::DRIVER);
        assert_eq!(rd(&mut r.t, reg::STATUS), 0);
        // Features before DRIVER.
        wr(&mut r.t, reg::STATUS, status::ACKNOWLEDGE);
        wr(&mut r.t, reg::DRIVER_FEATURES_SEL, 1);
        wr(&mut r.t, reg::DRIVER_FEATURES, 1);
        assert_eq!(r.t.driver_features(), 0);
        // Queue setup before FEATURES_OK.
        wr(&mut r.t, reg::QUEUE_READY, 1);
        assert_eq!(rd(&mut r.t, reg::QUEUE_READY), 0);
        // Clearing a bit without a reset.
        wr(&mut r.t, reg::STATUS, status::DRIVER);
        assert_eq!(rd(&mut r.t, reg::STATUS), status::ACKNOWLEDGE);
        // Odd widths and unaligned offsets.
        r.t.write(reg::STATUS, &[0xff]);
        r.t.write(reg::STATUS + 1, &[0xff; 4]);
        let mut b = [0xaau8; 2];
        r.t.read(reg::MAGIC, &mut b);
        assert_eq!(b, [0, 0]);
        assert_eq!(rd(&mut r.t, reg::STATUS), status::ACKNOWLEDGE);
        assert_eq!(rd(&mut r.t, 0x3c), 0);
    }

    #[test]
    fn driver_ok_with_bad_queues_needs_reset() {
        let m = mem();
        let mut r = rig(&m);
        negotiate(&mut r.t, VIRTIO_F_VERSION_1);
        let d0 = Driver::at(&m, vm_memory::GuestAddress(0x1000), 16);
        setup_queue(&mut r.t, 0, &d0);
        // Queue 1: rings outside guest memory.
        wr(&mut r.t, reg::QUEUE_SEL, 1);
        wr(&mut r.t, reg::QUEUE_NUM, 16);
        wr(&mut r.t, reg::QUEUE_DESC_HIGH, 0x10);
        wr(&mut r.t, reg::QUEUE_AVAIL_HIGH, 0x10);
        wr(&mut r.t, reg::QUEUE_USED_HIGH, 0x10);
        wr(&mut r.t, reg::QUEUE_READY, 1);
        wr(&mut r.t, reg::STATUS, ALL | status::DRIVER_OK);
        assert_eq!(rd(&mut r.t, reg::STATUS), ALL | status::DEVICE_NEEDS_RESET);
        assert_eq!(r.dev.lock().unwrap().activated, None);
        assert_eq!(rd(&mut r.t, reg::INTERRUPT_STATUS), INT_CONFIG);
    }

    #[test]
    fn activation_failure_needs_reset_and_bad_sizes_are_ignored() {
        let m = mem();
        let mut r = rig(&m);
        r.dev.lock().unwrap().fail_activate = true;
        negotiate(&mut r.t, VIRTIO_F_VERSION_1);
        let d0 = Driver::at(&m, vm_memory::GuestAddress(0x1000), 16);
        let d1 = Driver::at(&m, vm_memory::GuestAddress(0x4000), 16);
        setup_queue(&mut r.t, 0, &d0);
        setup_queue(&mut r.t, 1, &d1);
        wr(&mut r.t, reg::QUEUE_NUM, 3);
        wr(&mut r.t, reg::QUEUE_NUM, 0x1_0000);
        wr(&mut r.t, reg::STATUS, ALL | status::DRIVER_OK);
        assert_ne!(rd(&mut r.t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn a_guest_looping_on_bad_queue_setup_logs_a_bounded_number_of_lines() {
        use crate::logging::test_capture::capture;
        use crate::logging::{LogThrottle, BURST};
        // Each round is what a hostile driver can do in a few VM exits: a queue size
        // virtio-queue rejects (it logs at ERROR through `log`), a descriptor table outside
        // guest memory (its validity check logs again at DRIVER_OK), husk's own warning that
        // activation failed, and a reset. Unlimited, that is three lines a round.
        const ROUNDS: usize = 2000;
        let m = mem();
        let mut r = rig(&m);
        let lines = capture(Some(LogThrottle::default()), || {
            for _ in 0..ROUNDS {
                negotiate(&mut r.t, VIRTIO_F_VERSION_1);
                wr(&mut r.t, reg::QUEUE_SEL, 0);
                wr(&mut r.t, reg::QUEUE_NUM, 3);
                wr(&mut r.t, reg::QUEUE_DESC_HIGH, 0x10);
                wr(&mut r.t, reg::QUEUE_READY, 1);
                wr(&mut r.t, reg::STATUS, ALL | status::DRIVER_OK);
                assert_ne!(rd(&mut r.t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
                wr(&mut r.t, reg::STATUS, 0);
            }
        });
        let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
        // The throttle in front of the bridge is this test's own, so these are exact.
        assert_eq!(count("invalid size"), BURST as usize, "{lines:#?}");
        assert_eq!(count("descriptor table is not accessible"), BURST as usize);
        // husk's own line shares its call-site budget with other tests: at most a burst.
        assert!(count("not ready or not valid") <= BURST as usize);
        assert!(lines.len() <= 3 * BURST as usize, "{lines:#?}");
    }

    #[test]
    fn config_space_goes_to_the_device() {
        let m = mem();
        let mut r = rig(&m);
        let mut b = [0u8; 2];
        r.t.read(reg::CONFIG + 6, &mut b);
        assert_eq!(b, [16, 17]);
        r.t.read(reg::CONFIG + 7, &mut b);
        assert_eq!(b, [17, 0]);
        r.t.write(reg::CONFIG + 1, &[5]);
        assert_eq!(r.dev.lock().unwrap().config_writes, vec![(1, vec![5])]);
    }

    #[test]
    fn mismatched_queue_events_are_an_error() {
        let m = mem();
        let dev: Arc<Mutex<dyn VirtioDevice>> = Arc::new(Mutex::new(Fake::default()));
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        assert!(matches!(
            MmioTransport::new(dev, m.clone(), irq, vec![]),
            Err(TransportError::QueueEvents { .. })
        ));
    }
}
