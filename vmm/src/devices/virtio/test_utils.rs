//! Unit-test helpers: mock guest memory and a driver-side view of one split queue, built on
//! virtio-queue's `mock` module.

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
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
pub struct Driver<'a> {
    /// The mock queue.
    pub vq: MockSplitQueue<'a, Mem>,
    /// The device side of the queue, kept across calls so its position persists.
    pub queue: Queue,
    mem: &'a Mem,
    size: u16,
    next_desc: u16,
    avail: u16,
    used_seen: u16,
}

impl<'a> Driver<'a> {
    /// A queue of `size` entries at guest address 0 (or `base`).
    pub fn new(mem: &'a Mem, size: u16) -> Self {
        Self::at(mem, GuestAddress(0), size)
    }

    /// A queue of `size` entries at `base`.
    pub fn at(mem: &'a Mem, base: GuestAddress, size: u16) -> Self {
        let vq = MockSplitQueue::create(mem, base, size);
        let queue = vq.create_queue::<Queue>().unwrap();
        Self {
            vq,
            queue,
            mem,
            size,
            next_desc: 0,
            avail: 0,
            used_seen: 0,
        }
    }

    /// The device-side queue for this ring.
    pub fn queue(&self) -> Queue {
        self.vq.create_queue::<Queue>().unwrap()
    }

    /// Writes raw descriptors at table index `at` (no linking) and returns nothing.
    pub fn store(&self, at: u16, d: RawDescriptor) {
        self.vq.desc_table().store(at, d).unwrap();
    }

    /// Publishes `head` in the available ring.
    pub fn publish(&mut self, head: u16) {
        let avail = self.vq.avail_addr();
        let slot = 4 + u64::from(self.avail % self.size) * 2;
        self.mem.write_obj(head, avail.unchecked_add(slot)).unwrap();
        self.avail = self.avail.wrapping_add(1);
        self.mem
            .write_obj(self.avail, avail.unchecked_add(2))
            .unwrap();
    }

    /// Sets the available index directly (to fake a broken driver).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.mem
            .write_obj(idx, self.vq.avail_addr().unchecked_add(2))
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
        let used = self.vq.used_addr();
        let idx: u16 = self.mem.read_obj(used.unchecked_add(2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let slot = 4 + u64::from(self.used_seen % self.size) * 8;
            let id: u32 = self.mem.read_obj(used.unchecked_add(slot)).unwrap();
            let len: u32 = self.mem.read_obj(used.unchecked_add(slot + 4)).unwrap();
            out.push((id, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}
