//! Guest-side helper for tests/e2e/devices.sh (built static with plain rustc, no crates):
//!   vsock-echo listen PORT          accept one stream, echo it back until EOF
//!   vsock-echo connect CID PORT MSG send MSG, expect it echoed, print it
//!   vsock-echo serve PORT N         like listen, for N streams one after another
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

const AF_VSOCK: i32 = 40;
const SOCK_STREAM: i32 = 1;

#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved: u16,
    port: u32,
    cid: u32,
    flags: u8,
    zero: [u8; 3],
}

extern "C" {
    fn socket(domain: i32, ty: i32, proto: i32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn accept(fd: i32, addr: *mut u8, len: *mut u32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
}

fn addr(cid: u32, port: u32) -> SockaddrVm {
    SockaddrVm { family: AF_VSOCK as u16, reserved: 0, port, cid, flags: 0, zero: [0; 3] }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let len = std::mem::size_of::<SockaddrVm>() as u32;
    // SAFETY: plain socket syscalls on fds this process owns, with a correctly sized address.
    unsafe {
        let fd = socket(AF_VSOCK, SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        match args.get(1).map(String::as_str) {
            Some(mode @ ("listen" | "serve")) => {
                let a = addr(u32::MAX, args[2].parse().unwrap());
                assert!(bind(fd, &a, len) == 0, "bind: {}", std::io::Error::last_os_error());
                assert!(listen(fd, 1) == 0);
                let rounds: u32 = if mode == "serve" { args[3].parse().unwrap() } else { 1 };
                for _ in 0..rounds {
                let c = accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
                assert!(c >= 0, "accept: {}", std::io::Error::last_os_error());
                let mut s = std::fs::File::from_raw_fd(c);
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                }
            }
            Some("connect") => {
                let a = addr(args[2].parse().unwrap(), args[3].parse().unwrap());
                assert!(connect(fd, &a, len) == 0, "connect: {}", std::io::Error::last_os_error());
                let mut s = std::fs::File::from_raw_fd(fd);
                let msg = args[4].as_bytes();
                s.write_all(msg).unwrap();
                let mut got = vec![0u8; msg.len()];
                s.read_exact(&mut got).unwrap();
                println!("{}", String::from_utf8_lossy(&got));
                std::process::exit(if got == msg { 0 } else { 1 });
            }
            _ => {
                eprintln!("usage: vsock-echo listen PORT | connect CID PORT MSG");
                std::process::exit(2);
            }
        }
    }
}
