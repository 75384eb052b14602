#![no_main]
//! The virtio-mmio register page: arbitrary reads and writes (offset, width, value) against a
//! transport in front of a real virtio-rng device, with guest memory from the same input.

mod common;

use std::sync::{Arc, Mutex};

use husk_vmm::devices::bus::BusDevice;
use husk_vmm::devices::virtio::mmio::MmioTransport;
use husk_vmm::devices::virtio::rng::VirtioRng;
use husk_vmm::devices::virtio::{Interrupt, VirtioDevice};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fuzz_target!(|data: &[u8]| {
    let (mem, _) = common::setup(data);
    let dev = VirtioRng::new(mem.clone()).unwrap();
    let evts = dev
        .queue_events()
        .iter()
        .map(|e| e.try_clone().unwrap())
        .collect();
    let dev: Arc<Mutex<dyn VirtioDevice>> = Arc::new(Mutex::new(dev));
    let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let mut t = MmioTransport::new(dev, mem, irq, evts).unwrap();
    for op in data.chunks_exact(8) {
        let offset = u64::from(u16::from_le_bytes([op[0], op[1]]) & 0x1ff);
        let width = [1usize, 2, 4, 8][usize::from(op[2] & 3)];
        let value = [op[3], op[4], op[5], op[6], op[7], 0, 0, 0];
        if op[2] & 4 == 0 {
            let mut buf = [0u8; 8];
            t.read(offset, &mut buf[..width]);
        } else {
            t.write(offset, &value[..width]);
        }
    }
});
