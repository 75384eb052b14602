//! Unit-test helpers: mock guest memory and a driver-side view of one split queue, built on
//! virtio-queue's `mock` module.

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

/// Guest memory for tests.
pub type Mem = vm_memory::GuestMemoryMmap<()>;

/// Size of the test guest memory.
pub const MEM_SIZE: u64 = 0x100_0000;
/// Where tests put data buffers (the rings live near 0).
pub const DATA: u64 = 0x10_0000;

/// Readable (device reads) descriptor.
pub const R: u16 = 0;
/// Writable (device writes) descriptor.
pub const W: u16 = VRING_DESC_F_WRITE as u16;

/// 16 MiB of guest memory at 0.
pub fn mem() -> Mem {
    Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// A driver's view of one queue: it builds chains and reads back the used ring.
///
/// It lays the rings out itself: virtio-queue 0.18's `MockSplitQueue` places the used ring
/// `len` bytes (not `2 * len`) after the available ring's entries, so the two overlap once more
/// than a few entries are in use.
pub struct Driver<'a> {
    mem: &'a Mem,
    size: u16,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    /// The device side of the queue, kept across calls so its position persists.
    pub queue: Queue,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl<'a> Driver<'a> {
    /// A queue of `size` entries at guest address 0.
    pub fn new(mem: &'a Mem, size: u16) -> Self {
        Self::at(mem, GuestAddress(0), size)
    }

    /// A queue of `size` entries at `base`.
    pub fn at(mem: &'a Mem, base: GuestAddress, size: u16) -> Self {
        let n = u64::from(size);
        let desc = base;
        let avail = desc.unchecked_add(16 * n);
        let used = GuestAddress((avail.0 + 6 + 2 * n + 3) & !3);
        // Clean rings (flags, idx, event fields).
        let zeros = vec![0u8; (used.0 + 6 + 8 * n - base.0) as usize];
        mem.write_slice(&zeros, base).unwrap();
        let mut queue = Queue::new(size).unwrap();
        queue.set_size(size);
        queue.set_desc_table_address(Some(desc.0 as u32), Some((desc.0 >> 32) as u32));
        queue.set_avail_ring_address(Some(avail.0 as u32), Some((avail.0 >> 32) as u32));
        queue.set_used_ring_address(Some(used.0 as u32), Some((used.0 >> 32) as u32));
        queue.set_ready(true);
        Self {
            mem,
            size,
            desc,
            avail,
            used,
            queue,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// Descriptor table address.
    pub fn desc_addr(&self) -> GuestAddress {
        self.desc
    }

    /// Available ring address.
    pub fn avail_addr(&self) -> GuestAddress {
        self.avail
    }

    /// Used ring address.
    pub fn used_addr(&self) -> GuestAddress {
        self.used
    }

    /// A fresh device-side queue over the same rings.
    pub fn queue(&self) -> Queue {
        Queue::try_from(self.queue.state()).unwrap()
    }

    /// Writes one raw descriptor at table index `at`.
    pub fn store(&self, at: u16, d: RawDescriptor) {
        self.mem
            .write_obj(d, self.desc.unchecked_add(16 * u64::from(at)))
            .unwrap();
    }

    /// Publishes `head` in the available ring.
    pub fn publish(&mut self, head: u16) {
        let slot = 4 + u64::from(self.avail_idx % self.size) * 2;
        self.mem
            .write_obj(head, self.avail.unchecked_add(slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, self.avail.unchecked_add(2))
            .unwrap();
    }

    /// Sets the available index directly (to fake a broken driver).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.mem
            .write_obj(idx, self.avail.unchecked_add(2))
            .unwrap();
    }

    /// Adds a chain of `(addr, len, flags)` buffers, linked in order; returns its head.
    pub fn add(&mut self, bufs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in bufs.iter().enumerate() {
            let idx = (head + i as u16) % self.size;
            let last = i + 1 == bufs.len();
            let flags = if last {
                flags
            } else {
                flags | VRING_DESC_F_NEXT as u16
            };
            let next = (idx + 1) % self.size;
            self.store(
                idx,
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next)),
            );
        }
        self.next_desc = (head + bufs.len() as u16) % self.size;
        self.publish(head);
        head
    }

    /// Used ring entries the device added since the last call: (head, len).
    pub fn used(&mut self) -> Vec<(u32, u32)> {
        let idx: u16 = self.mem.read_obj(self.used.unchecked_add(2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let slot = 4 + u64::from(self.used_seen % self.size) * 8;
            let id: u32 = self.mem.read_obj(self.used.unchecked_add(slot)).unwrap();
            let len: u32 = self
                .mem
                .read_obj(self.used.unchecked_add(slot + 4))
                .unwrap();
            out.push((id, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}
