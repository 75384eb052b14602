#![no_main]
//! virtio-blk request processing on arbitrary rings and descriptors, over a 64 KiB image.

mod common;

use std::io::Write;

use husk_vmm::devices::virtio::block::handler::BlockHandler;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mem, mut q) = common::setup(data);
    let tf = vmm_sys_util::tempfile::TempFile::new().unwrap();
    let mut f = tf.as_file().try_clone().unwrap();
    f.write_all(&[0x5a; 0x1_0000]).unwrap();
    let mut h = BlockHandler::new(
        f,
        0x1_0000,
        data.get(1).is_some_and(|b| b & 1 == 1),
        [7; 20],
    );
    let _ = h.process_queue(&mut q, &mem);
});
