//! The virtio-blk device: features, configuration space and activation.
//!
//! Owns: opening the image, what the guest is told about it (capacity, read-only, discard
//! limits) and the queue once the driver starts the device. Request processing is
//! [`super::handler`]'s.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::handler::{BlockHandler, BlockStats, ID_LEN};
use crate::devices::virtio::config::DiskConfig;
use crate::devices::virtio::queues::DeviceQueues;
use crate::devices::virtio::{
    device_type, read_config_bytes, ActivateError, Interrupt, VirtioDevice, COMMON_FEATURES,
};
use crate::memory::GuestMemoryMmap;

/// The disk is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// FLUSH is supported.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
/// DISCARD is supported.
pub const VIRTIO_BLK_F_DISCARD: u64 = 1 << 13;
/// WRITE_ZEROES is supported.
pub const VIRTIO_BLK_F_WRITE_ZEROES: u64 = 1 << 14;

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Largest discard / write-zeroes request, in sectors (2 GiB).
const MAX_DISCARD_SECTORS: u32 = 0x40_0000;
/// Length of the configuration space we expose (through `write_zeroes_may_unmap`).
const CONFIG_LEN: usize = 60;

/// Errors creating a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image could not be opened or sized.
    #[error("disk {path}: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An eventfd could not be created.
    #[error("disk eventfd: {0}")]
    EventFd(std::io::Error),
}

/// A virtio-blk device.
pub struct VirtioBlock {
    pub(super) handler: BlockHandler,
    features: u64,
    config: [u8; CONFIG_LEN],
    pub(super) queues: DeviceQueues,
}

impl VirtioBlock {
    /// Opens the image `cfg` names for a guest with memory `mem`.
    pub fn new(cfg: &DiskConfig, mem: GuestMemoryMmap) -> Result<Self, BlockError> {
        let open_err = |source| BlockError::Open {
            path: cfg.path.clone(),
            source,
        };
        let mut file: File = OpenOptions::new()
            .read(true)
            .write(!cfg.read_only)
            .open(&cfg.path)
            .map_err(open_err)?;
        // Works for regular files and block devices alike.
        let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        let mut id = [0u8; ID_LEN];
        let serial = cfg.serial.as_deref().unwrap_or_default().as_bytes();
        id[..serial.len().min(ID_LEN)].copy_from_slice(&serial[..serial.len().min(ID_LEN)]);
        let handler = BlockHandler::new(file, size, cfg.read_only, id);

        let mut features = COMMON_FEATURES | VIRTIO_BLK_F_FLUSH;
        if cfg.read_only {
            features |= VIRTIO_BLK_F_RO;
        } else {
            features |= VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES;
        }
        let mut config = [0u8; CONFIG_LEN];
        config[0..8].copy_from_slice(&handler.sectors().to_le_bytes());
        // num_queues
        config[34..36].copy_from_slice(&1u16.to_le_bytes());
        // max_discard_sectors, max_discard_seg, discard_sector_alignment (4 KiB)
        config[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        config[40..44].copy_from_slice(&1u32.to_le_bytes());
        config[44..48].copy_from_slice(&8u32.to_le_bytes());
        // max_write_zeroes_sectors, max_write_zeroes_seg, write_zeroes_may_unmap
        config[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        config[52..56].copy_from_slice(&1u32.to_le_bytes());
        config[56] = 1;

        Ok(Self {
            handler,
            features,
            config,
            queues: DeviceQueues::new("virtio-blk", 1, mem).map_err(BlockError::EventFd)?,
        })
    }

    /// Request counters.
    pub fn stats(&self) -> BlockStats {
        self.handler.stats()
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.queues.acked_features()
    }
}

impl VirtioDevice for VirtioBlock {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn queue_events(&self) -> &[EventFd] {
        self.queues.queue_events()
    }

    fn features(&self) -> u64 {
        self.features
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::mem;
    use std::io::Write;
    use virtio_queue::QueueT;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;
    use vmm_sys_util::tempfile::TempFile;

    fn cfg(tf: &TempFile, read_only: bool, serial: Option<&str>) -> DiskConfig {
        DiskConfig {
            path: tf.as_path().to_path_buf(),
            read_only,
            serial: serial.map(str::to_owned),
        }
    }

    #[test]
    fn config_space_and_features() {
        let tf = TempFile::new().unwrap();
        tf.as_file()
            .try_clone()
            .unwrap()
            .write_all(&[0u8; 4096 + 100])
            .unwrap();
        let b = VirtioBlock::new(&cfg(&tf, false, Some("root")), mem()).unwrap();
        let mut cap = [0u8; 8];
        b.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);
        assert_ne!(b.features() & VIRTIO_BLK_F_DISCARD, 0);
        assert_eq!(b.features() & VIRTIO_BLK_F_RO, 0);
        let ro = VirtioBlock::new(&cfg(&tf, true, None), mem()).unwrap();
        assert_ne!(ro.features() & VIRTIO_BLK_F_RO, 0);
        assert_eq!(ro.features() & VIRTIO_BLK_F_WRITE_ZEROES, 0);
        assert_eq!(ro.queue_events().len(), 1);
    }

    #[test]
    fn missing_image_names_the_path() {
        let c = DiskConfig {
            path: "/nonexistent/husk.img".into(),
            read_only: false,
            serial: None,
        };
        let e = VirtioBlock::new(&c, mem()).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/husk.img"), "{e}");
    }

    #[test]
    fn activation_needs_one_queue() {
        let tf = TempFile::new().unwrap();
        let mut b = VirtioBlock::new(&cfg(&tf, false, None), mem()).unwrap();
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        assert!(b.activate(vec![], irq.clone()).is_err());
        b.activate(vec![Queue::new(16).unwrap()], irq).unwrap();
        // The activation eventfd and reset: `DeviceQueues`' tests.
    }
}
