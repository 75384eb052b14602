//! Creating the configured virtio devices and placing them on the guest's MMIO bus.
//!
//! Owns: slot and GSI assignment (device `i` gets [`virtio_mmio_slot`]`(i)` and GSI
//! [`IRQ_DEVICE_BASE`]` + i`), the `virtio_mmio.device=<size>@<addr>:<irq>` kernel command-line
//! entries, and the event-loop subscribers. Order on the bus (and so `vda`, `vdb`, ...): disks in
//! the order given, then network cards, vsock, rng, file systems.
//!
//! Must not touch: KVM. The builder passes closures that register ioeventfds and irqfds.

use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::block::VirtioBlock;
use super::config::{DiskConfig, FsConfig, NetConfig, VsockConfig};
use super::fs::VirtioFs;
use super::mmio::{reg, MmioTransport};
use super::net::VirtioNet;
use super::rng::VirtioRng;
use super::vsock::VirtioVsock;
use super::{DeviceEventHandler, DeviceSubscriber, Interrupt, VirtioDevice};
use crate::devices::bus::Bus;
use crate::layout::{virtio_mmio_slot, IRQ_DEVICE_BASE, IRQ_MAX, VIRTIO_MMIO_SLOT_SIZE};
use crate::memory::GuestMemoryMmap;

/// The virtio devices of one VM, as the flags describe them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtioConfig {
    /// `--disk`, in order.
    pub disks: Vec<DiskConfig>,
    /// `--net`, in order.
    pub nets: Vec<NetConfig>,
    /// `--vsock`.
    pub vsock: Option<VsockConfig>,
    /// `--rng`.
    pub rng: bool,
    /// `--fs`, in order: virtio-fs devices served by vhost-user backends (virtiofsd). Guest
    /// memory must be memfd-backed ([`crate::memory::MemoryBacking::Memfd`]).
    pub fs: Vec<FsConfig>,
}

impl VirtioConfig {
    /// How many devices this asks for.
    pub fn count(&self) -> usize {
        self.disks.len()
            + self.nets.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.rng)
            + self.fs.len()
    }
}

/// Errors attaching devices.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// More devices than GSIs.
    #[error("{0} virtio devices requested; at most {max} fit", max = IRQ_MAX - IRQ_DEVICE_BASE + 1)]
    TooMany(usize),
    /// A block device failed.
    #[error(transparent)]
    Block(#[from] super::block::BlockError),
    /// The rng failed.
    #[error(transparent)]
    Rng(#[from] super::rng::RngError),
    /// The vsock device failed.
    #[error(transparent)]
    Vsock(#[from] super::vsock::VsockError),
    /// A network card failed.
    #[error(transparent)]
    Net(#[from] super::net::NetError),
    /// A virtio-fs device failed (its backend is unreachable or refused the session).
    #[error(transparent)]
    Fs(#[from] super::fs::FsError),
    /// The transport refused the device.
    #[error(transparent)]
    Transport(#[from] super::mmio::TransportError),
    /// Placing it on the bus failed.
    #[error("virtio slot: {0}")]
    Bus(#[from] crate::devices::bus::BusError),
    /// Registering an eventfd with the VM failed.
    #[error("{what}: {message}")]
    Vm {
        /// Which registration.
        what: &'static str,
        /// The VM's error.
        message: String,
    },
    /// An eventfd could not be created or cloned.
    #[error("virtio eventfd: {0}")]
    EventFd(std::io::Error),
}

/// Registers an eventfd with the VM: (eventfd, guest address or GSI, datamatch).
pub type IoeventFn<'a> = dyn FnMut(&EventFd, u64, u32) -> Result<(), String> + 'a;
/// Registers an irqfd with the VM: (eventfd, GSI).
pub type IrqfdFn<'a> = dyn FnMut(&EventFd, u32) -> Result<(), String> + 'a;

/// What [`attach`] produced.
#[derive(Default)]
pub struct AttachedDevices {
    /// Kernel command-line entries announcing the devices.
    pub cmdline: Vec<String>,
    /// Event-loop subscribers, one per device.
    pub subscribers: Vec<Box<dyn MutEventSubscriber + Send>>,
    /// The block devices (for their counters).
    pub blocks: Vec<Arc<Mutex<VirtioBlock>>>,
}

struct Attacher<'a, 'b> {
    mem: &'a GuestMemoryMmap,
    mmio: &'a Bus,
    ioevent: &'a mut IoeventFn<'b>,
    irqfd: &'a mut IrqfdFn<'b>,
    out: AttachedDevices,
    next: u32,
}

impl Attacher<'_, '_> {
    fn add<D>(&mut self, device: D) -> Result<Arc<Mutex<D>>, AttachError>
    where
        D: VirtioDevice + DeviceEventHandler + 'static,
    {
        let base = virtio_mmio_slot(self.next);
        let gsi = IRQ_DEVICE_BASE + self.next;
        let vm_err = |what| move |message| AttachError::Vm { what, message };
        let evts = device
            .queue_events()
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(AttachError::EventFd)?;
        for (i, evt) in evts.iter().enumerate() {
            (self.ioevent)(evt, base + reg::QUEUE_NOTIFY, i as u32)
                .map_err(vm_err("KVM_IOEVENTFD"))?;
        }
        let irq = EventFd::new(EFD_NONBLOCK).map_err(AttachError::EventFd)?;
        (self.irqfd)(&irq, gsi).map_err(vm_err("KVM_IRQFD"))?;
        let device = Arc::new(Mutex::new(device));
        let transport = MmioTransport::new(
            device.clone() as Arc<Mutex<dyn VirtioDevice>>,
            self.mem.clone(),
            Interrupt::new(irq),
            evts,
        )?;
        self.mmio
            .insert(Arc::new(Mutex::new(transport)), base, VIRTIO_MMIO_SLOT_SIZE)?;
        self.out.cmdline.push(format!(
            "virtio_mmio.device={}K@{base:#x}:{gsi}",
            VIRTIO_MMIO_SLOT_SIZE >> 10
        ));
        self.out
            .subscribers
            .push(Box::new(DeviceSubscriber(device.clone())));
        self.next += 1;
        Ok(device)
    }
}

/// Creates every device in `cfg`, puts each on `mmio` and wires its eventfds through `ioevent`
/// and `irqfd`.
pub fn attach(
    cfg: &VirtioConfig,
    mem: &GuestMemoryMmap,
    mmio: &Bus,
    ioevent: &mut IoeventFn<'_>,
    irqfd: &mut IrqfdFn<'_>,
) -> Result<AttachedDevices, AttachError> {
    let max = (IRQ_MAX - IRQ_DEVICE_BASE + 1) as usize;
    if cfg.count() > max {
        return Err(AttachError::TooMany(cfg.count()));
    }
    let mut a = Attacher {
        mem,
        mmio,
        ioevent,
        irqfd,
        out: AttachedDevices::default(),
        next: 0,
    };
    for disk in &cfg.disks {
        let dev = a.add(VirtioBlock::new(disk, mem.clone())?)?;
        a.out.blocks.push(dev);
    }
    for net in &cfg.nets {
        a.add(VirtioNet::new(net, mem.clone())?)?;
    }
    if let Some(vsock) = &cfg.vsock {
        a.add(VirtioVsock::new(vsock, mem.clone())?)?;
    }
    if cfg.rng {
        a.add(VirtioRng::new(mem.clone())?)?;
    }
    for fs in &cfg.fs {
        a.add(VirtioFs::new(fs, mem.clone())?)?;
    }
    Ok(a.out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::mem;
    use vmm_sys_util::tempfile::TempFile;

    #[test]
    fn devices_get_slots_irqs_and_cmdline_entries() {
        let tf = TempFile::new().unwrap();
        let disk = DiskConfig {
            path: tf.as_path().into(),
            read_only: true,
            serial: None,
        };
        let cfg = VirtioConfig {
            disks: vec![disk.clone(), disk],
            rng: true,
            ..Default::default()
        };
        let m = mem();
        let bus = Bus::new();
        let mut ioevents = Vec::new();
        let mut irqs = Vec::new();
        let out = attach(
            &cfg,
            &m,
            &bus,
            &mut |_, addr, dm| {
                ioevents.push((addr, dm));
                Ok(())
            },
            &mut |_, gsi| {
                irqs.push(gsi);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            out.cmdline,
            vec![
                "virtio_mmio.device=4K@0xd0001000:5",
                "virtio_mmio.device=4K@0xd0002000:6",
                "virtio_mmio.device=4K@0xd0003000:7"
            ]
        );
        assert_eq!(irqs, vec![5, 6, 7]);
        assert_eq!(ioevents[0], (0xd000_1050, 0));
        assert_eq!(out.subscribers.len(), 3);
        let mut magic = [0u8; 4];
        assert!(bus.read(0xd000_3000, &mut magic));
        assert_eq!(u32::from_le_bytes(magic), super::super::mmio::MMIO_MAGIC);
        let mut id = [0u8; 4];
        bus.read(0xd000_3008, &mut id);
        assert_eq!(u32::from_le_bytes(id), 4);
    }

    #[test]
    fn too_many_devices_and_vm_errors_are_reported() {
        let tf = TempFile::new().unwrap();
        let disk = DiskConfig {
            path: tf.as_path().into(),
            read_only: false,
            serial: None,
        };
        let cfg = VirtioConfig {
            disks: vec![disk; 20],
            ..Default::default()
        };
        let m = mem();
        let e = attach(&cfg, &m, &Bus::new(), &mut |_, _, _| Ok(()), &mut |_, _| {
            Ok(())
        })
        .err()
        .unwrap();
        assert!(matches!(e, AttachError::TooMany(20)));
        let cfg = VirtioConfig {
            rng: true,
            ..Default::default()
        };
        let e = attach(&cfg, &m, &Bus::new(), &mut |_, _, _| Ok(()), &mut |_, _| {
            Err("nope".into())
        })
        .err()
        .unwrap();
        assert_eq!(e.to_string(), "KVM_IRQFD: nope");
    }
}
