#![no_main]
//! The control socket's framing and JSON (`runtime/src/control.rs`), from both ends: the input
//! is the byte stream a peer wrote on `<root>/<id>/control.sock` (any number of frames, cut
//! anywhere) and is read as the supervisor reads requests (`recv::<Request>`) and as the CLI
//! reads answers (`answer`). Every request that parses must survive `send` and `recv` again
//! unchanged.

use std::io::Write;
use std::os::unix::net::UnixStream;

use husk_runtime_fuzz::control::{self, Request, Response};
use libfuzzer_sys::fuzz_target;

/// Less than a socket pair's buffer, so writing the whole input never blocks.
const MAX_INPUT: usize = 64 << 10;
/// Frames read per input.
const MAX_FRAMES: usize = 64;

/// A socket whose peer wrote `data` and hung up.
fn stream_of(data: &[u8]) -> UnixStream {
    let (mut w, r) = UnixStream::pair().unwrap();
    w.write_all(data).unwrap();
    r
}

fn resend<T: serde::Serialize + for<'de> serde::Deserialize<'de>>(msg: &T) -> T {
    let (a, b) = UnixStream::pair().unwrap();
    control::send(&a, msg, &[]).expect("re-sending a message that parsed");
    drop(a);
    control::recv::<T>(&b)
        .expect("reading back a message just sent")
        .0
}

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_INPUT)];

    // The supervisor's side: requests.
    let sock = stream_of(data);
    for _ in 0..MAX_FRAMES {
        let Ok((req, fds)) = control::recv::<Request>(&sock) else {
            break;
        };
        assert!(fds.is_empty());
        let again = resend(&req);
        assert_eq!(format!("{req:?}"), format!("{again:?}"));
    }

    // The CLI's side: answers (exec gets two on one connection).
    let sock = stream_of(data);
    for _ in 0..MAX_FRAMES {
        match control::answer(&sock) {
            Ok(resp) => {
                let _: Response = resend(&resp);
            }
            Err(control::ControlError::Refused(_)) => {}
            Err(_) => break,
        }
    }
});
