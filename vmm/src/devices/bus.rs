//! Address-range buses (port I/O and MMIO) that vCPU threads dispatch exits through.
//!
//! Owns: the mapping from guest address ranges to devices. A read-write lock guards the map, so
//! vCPUs look devices up concurrently; each device has its own mutex, so two vCPUs touching
//! different devices never contend (Cloud Hypervisor's `vm-device` bus, in small).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A device on a bus. Offsets are relative to the range it was inserted at.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors changing a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps one already present.
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap {
        /// Base of the rejected range.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// Zero-length or wrapping range.
    #[error("bus range {base:#x}+{len:#x} is empty or wraps")]
    BadRange {
        /// Base of the rejected range.
        base: u64,
        /// Its length.
        len: u64,
    },
}

type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// A set of non-overlapping ranges, each served by one device.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, (u64, SharedDevice)>>,
    touched: AtomicBool,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `device` at `[base, base + len)`.
    pub fn insert(&self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(BusError::BadRange { base, len });
        };
        let mut ranges = self.ranges.write().unwrap_or_else(|p| p.into_inner());
        let before = ranges.range(..end).next_back();
        if let Some((b, (l, _))) = before {
            if b + l > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        ranges.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, SharedDevice)> {
        let ranges = self.ranges.read().unwrap_or_else(|p| p.into_inner());
        let (base, (len, dev)) = ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset + size as u64 <= *len).then(|| (offset, dev.clone()))
    }

    /// Dispatches a read. Returns false (and fills `data` with 0xff, like an empty ISA bus) when
    /// no device covers the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.touched.store(true, Ordering::Relaxed);
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write. Returns false when no device covers it (the write is dropped).
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        self.touched.store(true, Ordering::Relaxed);
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write(offset, data);
                true
            }
            None => false,
        }
    }

    /// Whether the guest has accessed this bus at all: the VMM's "first sign of life".
    pub fn touched(&self) -> bool {
        self.touched.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let bus = Bus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        assert!(!bus.touched());
        assert!(bus.write(0x3f9, &[7]));
        let mut buf = [0u8; 1];
        assert!(bus.read(0x3fd, &mut buf));
        assert_eq!(buf, [5]);
        assert_eq!(a.lock().unwrap().writes, vec![(1, vec![7])]);
        assert!(bus.touched());
    }

    #[test]
    fn misses_read_as_all_ones() {
        let bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Recorder::default())), 0x1000, 0x10)
            .unwrap();
        let mut buf = [0u8; 4];
        assert!(!bus.read(0x2000, &mut buf));
        assert_eq!(buf, [0xff; 4]);
        // An access that straddles the end of a range is a miss, not a partial hit.
        assert!(!bus.read(0x100e, &mut buf));
        assert!(!bus.write(0xfff, &[1]));
    }

    #[test]
    fn overlaps_and_bad_ranges_are_rejected() {
        let bus = Bus::new();
        let d = || Arc::new(Mutex::new(Recorder::default()));
        bus.insert(d(), 0x100, 0x10).unwrap();
        assert_eq!(
            bus.insert(d(), 0x108, 0x10),
            Err(BusError::Overlap {
                base: 0x108,
                len: 0x10
            })
        );
        assert_eq!(
            bus.insert(d(), 0xf8, 0x10),
            Err(BusError::Overlap {
                base: 0xf8,
                len: 0x10
            })
        );
        assert!(bus.insert(d(), 0x110, 0x10).is_ok());
        assert!(bus.insert(d(), 0xf0, 0x10).is_ok());
        assert_eq!(
            bus.insert(d(), 0, 0),
            Err(BusError::BadRange { base: 0, len: 0 })
        );
        assert!(bus.insert(d(), u64::MAX, 2).is_err());
    }
}
