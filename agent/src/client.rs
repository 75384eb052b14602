//! What the agent's host-side clients share (the runtime's supervisor and `husk-agent-ctl`):
//! the hybrid-vsock handshake that reaches a guest port through the VMM's Unix socket
//! (Firecracker's convention: `CONNECT <port>\n`, answered `OK <hostport>\n`), and signal
//! names read the way runc reads them.
//!
//! Owns: those two conventions, in one copy. Runs on the host; nothing here is used in the
//! guest.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Errors of the hybrid-vsock handshake or of a signal name.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The VMM closed the connection: nothing listens on that guest port.
    #[error("connection closed during CONNECT {port} (is the guest listening?)")]
    Closed {
        /// The guest port.
        port: u32,
    },
    /// The VMM answered something other than `OK <hostport>`.
    #[error("CONNECT {port}: unexpected reply {reply:?}")]
    BadReply {
        /// The guest port.
        port: u32,
        /// What came back (at most one line).
        reply: String,
    },
    /// Reading or writing the socket failed (or timed out).
    #[error("CONNECT {port}: {source}")]
    Io {
        /// The guest port.
        port: u32,
        /// Why.
        source: std::io::Error,
    },
    /// Not a signal name or number.
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    /// A number outside 1..=64.
    #[error("invalid signal number {0}")]
    BadSignalNumber(u32),
}

/// Longest reply line accepted (`OK 4294967295\n` is 14 bytes).
const MAX_REPLY: usize = 64;

/// Performs the handshake on a stream connected to the VMM's socket, waiting at most
/// `timeout` for the reply. The reply is read a byte at a time, so whatever follows it (the
/// guest's first bytes) stays in the stream. The read timeout is cleared on success.
pub fn hybrid_vsock_connect(
    s: &mut UnixStream,
    port: u32,
    timeout: Duration,
) -> Result<(), ClientError> {
    let io = |source| ClientError::Io { port, source };
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(io)?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        if s.read(&mut byte).map_err(io)? == 0 {
            return Err(ClientError::Closed { port });
        }
        line.push(byte[0]);
        if line.len() > MAX_REPLY {
            break;
        }
    }
    if line.len() > MAX_REPLY || !line.starts_with(b"OK ") {
        return Err(ClientError::BadReply {
            port,
            reply: String::from_utf8_lossy(&line).trim_end().to_string(),
        });
    }
    s.set_read_timeout(None).map_err(io)
}

/// A signal as runc's `kill` takes it: a number in 1..=64, or a name with or without `SIG`,
/// in any case (`KILL`, `sigkill`, `SIGTERM`).
pub fn parse_signal(s: &str) -> Result<u32, ClientError> {
    if let Ok(n) = s.parse::<u32>() {
        if n == 0 || n > 64 {
            return Err(ClientError::BadSignalNumber(n));
        }
        return Ok(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32 as u32)
        .map_err(|_| ClientError::UnknownSignal(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("term").unwrap(), 15);
        assert_eq!(parse_signal("sigusr1").unwrap(), libc::SIGUSR1 as u32);
        assert!(matches!(
            parse_signal("NOPE"),
            Err(ClientError::UnknownSignal(_))
        ));
        assert!(matches!(
            parse_signal("0"),
            Err(ClientError::BadSignalNumber(0))
        ));
        assert!(parse_signal("65").is_err());
    }

    /// A VMM stand-in that reads the CONNECT line and answers `reply`, then sends `after`.
    fn vmm(reply: &'static [u8], after: &'static [u8]) -> UnixStream {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while line.last() != Some(&b'\n') && theirs.read(&mut b).unwrap_or(0) == 1 {
                line.push(b[0]);
            }
            assert_eq!(line, b"CONNECT 1024\n");
            theirs.write_all(reply).unwrap();
            theirs.write_all(after).unwrap();
        });
        ours
    }

    #[test]
    fn handshake_leaves_the_stream_after_the_reply() {
        let mut s = vmm(b"OK 1073741824\n", b"ttrpc");
        hybrid_vsock_connect(&mut s, 1024, Duration::from_secs(5)).unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "ttrpc");
        assert_eq!(s.read_timeout().unwrap(), None);
    }

    #[test]
    fn handshake_failures_are_typed() {
        let mut s = vmm(b"", b"");
        assert!(matches!(
            hybrid_vsock_connect(&mut s, 1024, Duration::from_secs(5)),
            Err(ClientError::Closed { port: 1024 })
        ));
        let mut s = vmm(b"NO\n", b"");
        let e = hybrid_vsock_connect(&mut s, 1024, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.to_string(), "CONNECT 1024: unexpected reply \"NO\"");
        let mut s = vmm(&[b'O'; 100], b"");
        assert!(matches!(
            hybrid_vsock_connect(&mut s, 1024, Duration::from_secs(5)),
            Err(ClientError::BadReply { .. })
        ));
    }
}
