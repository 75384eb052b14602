//! Shared setup: the fuzz input becomes guest memory holding a 16-entry queue (descriptors at
//! 0x0, available ring at 0x100, used ring at 0x200) and the buffers it points at.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const MEM_SIZE: usize = 0x1_0000;
pub const QUEUE_SIZE: u16 = 16;

pub fn setup(data: &[u8]) -> (GuestMemoryMmap<()>, Queue) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let n = data.len().min(MEM_SIZE);
    mem.write_slice(&data[..n], GuestAddress(0)).unwrap();
    let mut q = Queue::new(QUEUE_SIZE).unwrap();
    q.set_size(QUEUE_SIZE);
    q.set_desc_table_address(Some(0), Some(0));
    q.set_avail_ring_address(Some(0x100), Some(0));
    q.set_used_ring_address(Some(0x200), Some(0));
    // Let the first byte decide event-idx, so both notification paths run.
    q.set_event_idx(data.first().is_some_and(|b| b & 1 == 1));
    q.set_ready(true);
    (mem, q)
}
