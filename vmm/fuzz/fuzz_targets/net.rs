#![no_main]
//! virtio-net TX then RX on arbitrary rings, with a datagram socket pair standing in for the
//! TAP (the host side echoes every frame back).

mod common;

use std::os::unix::net::UnixDatagram;

use husk_vmm::devices::virtio::net::handler::NetHandler;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mem, mut q) = common::setup(data);
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let mut h = NetHandler::new(a);
    let _ = h.process_tx(&mut q, &mem);
    let mut buf = vec![0u8; 70_000];
    while let Ok(n) = b.recv(&mut buf) {
        let _ = b.send(&buf[..n]);
    }
    // The same rings as RX: TX consumed some chains, the rest now receive.
    let _ = h.process_rx(&mut q, &mem);
});
