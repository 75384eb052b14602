#![no_main]
//! virtio-rng request processing on arbitrary rings and descriptors.

mod common;

use husk_vmm::devices::virtio::rng::handler::RngHandler;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mem, mut q) = common::setup(data);
    let entropy = [0xa5u8; 4096];
    let mut h = RngHandler::new(&entropy[..]);
    let _ = h.process_queue(&mut q, &mem);
});
