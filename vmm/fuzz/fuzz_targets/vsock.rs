#![no_main]
//! virtio-vsock TX then RX on arbitrary rings: arbitrary packets reach the muxer (which has a
//! real listening socket and a host-side listener on port 1024), then RX drains its replies.

mod common;

use std::os::unix::net::UnixListener;

use husk_vmm::devices::virtio::vsock::handler::VsockHandler;
use husk_vmm::devices::virtio::vsock::muxer::VsockMuxer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mem, mut q) = common::setup(data);
    let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/husk-fuzz-vsock-").unwrap();
    let uds = dir.as_path().join("v.sock");
    let _l = UnixListener::bind(format!("{}_1024", uds.display())).unwrap();
    let mut h = VsockHandler::new(VsockMuxer::new(3, &uds).unwrap());
    let _ = h.process_tx(&mut q, &mem);
    h.muxer.process_host_events();
    let _ = h.process_rx(&mut q, &mem);
});
