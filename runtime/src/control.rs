//! The supervisor's control socket, `<root>/<id>/control.sock`: one request per connection,
//! a length-prefixed JSON message each way. `exec` passes the caller's stdio fds along with
//! its request (SCM_RIGHTS), so the supervisor relays the process straight to them, and gets
//! two answers: `started` once the process runs, then its exit status.
//!
//! Owns: the wire format and both ends' framing. The supervisor's handlers live in
//! `supervisor::server`.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

/// Largest message accepted.
const MAX_MESSAGE: usize = 4 << 20;

/// Errors talking to a supervisor.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Socket I/O.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// A malformed message.
    #[error("control socket: bad message: {0}")]
    Json(#[from] serde_json::Error),
    /// The supervisor refused the request.
    #[error("{0}")]
    Refused(String),
}

/// What a caller asks the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start the created container.
    Start,
    /// Signal init (or every process with `all`).
    Kill {
        /// Signal number.
        signal: u32,
        /// All processes of the container.
        all: bool,
    },
    /// Run a process in the container; stdio fds travel with the request. Answered twice:
    /// `started` (or an error), then the exit status.
    Exec {
        /// OCI process JSON.
        process_json: String,
    },
    /// Pids in the container.
    Ps,
    /// Resource usage (events).
    Stats,
    /// Freeze.
    Pause,
    /// Thaw.
    Resume,
    /// Change the container's resources (OCI `linux.resources` JSON, merged by the agent:
    /// only what it names changes).
    Update {
        /// LinuxResources JSON.
        resources_json: String,
    },
    /// OOM kills of the container so far: at once with `after` unset, else once the count
    /// passes `after`, the container stops, or a few seconds pass (ask again).
    Oom {
        /// The count the caller has seen.
        after: Option<u64>,
    },
}

/// The supervisor's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    /// Error text when the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Exit status (exec's second answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// The process runs (exec's first answer).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub started: bool,
    /// Pids (ps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<i32>,
    /// runc's stats object (events): cpu, memory, pids, blkio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<serde_json::Value>,
    /// OOM kills so far (oom).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_count: Option<u64>,
    /// The container stopped (oom: no more events will come).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
}

impl Response {
    /// A failure.
    pub fn error(msg: impl ToString) -> Response {
        Response {
            error: Some(msg.to_string()),
            ..Default::default()
        }
    }
}

/// Writes one framed message, with `fds` attached to its first byte.
pub fn send<T: Serialize>(sock: &UnixStream, msg: &T, fds: &[RawFd]) -> Result<(), ControlError> {
    let body = serde_json::to_vec(msg)?;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let mut sent = 0;
    if !fds.is_empty() {
        let cmsg = [ControlMessage::ScmRights(fds)];
        sent = sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&frame)],
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .map_err(std::io::Error::from)?;
    }
    let mut w = sock;
    w.write_all(&frame[sent..])?;
    Ok(())
}

/// Reads one framed message and any fds that came with it. Reads exactly the frame, so a
/// second frame on the same connection stays for the next call.
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: &UnixStream,
) -> Result<(T, Vec<OwnedFd>), ControlError> {
    let mut head = [0u8; 4];
    let mut cmsg_space = nix::cmsg_space!([RawFd; 8]);
    let mut fds = Vec::new();
    let n = {
        let mut iov = [IoSliceMut::new(&mut head)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        for c in msg.cmsgs() {
            if let ControlMessageOwned::ScmRights(rs) = c {
                // SAFETY: the kernel just installed these descriptors in this process for us;
                // nothing else owns them.
                fds.extend(rs.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        msg.bytes
    };
    if n == 0 {
        return Err(ControlError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    let mut r = sock;
    r.read_exact(&mut head[n..])?;
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_MESSAGE {
        return Err(ControlError::Refused(format!("message of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((serde_json::from_slice(&body)?, fds))
}

/// Sends `req` to the supervisor at `sock_path` and waits up to `timeout` (None: forever).
pub fn call(
    sock_path: &Path,
    req: &Request,
    fds: &[RawFd],
    timeout: Option<Duration>,
) -> Result<Response, ControlError> {
    let sock = crate::sockpath::connect(sock_path)?;
    sock.set_read_timeout(timeout)?;
    send(&sock, req, fds)?;
    answer(&sock)
}

/// The next answer on `sock`; the supervisor's error as `Refused`.
pub fn answer(sock: &UnixStream) -> Result<Response, ControlError> {
    let (resp, _): (Response, _) = recv(sock)?;
    match resp.error {
        Some(e) => Err(ControlError::Refused(e)),
        None => Ok(resp),
    }
}

/// Sends an `exec` request with `fds` and waits for its first answer (`started`); the
/// connection then carries the exit status (`answer`).
pub fn start_exec(
    sock_path: &Path,
    process_json: String,
    fds: &[RawFd],
) -> Result<UnixStream, ControlError> {
    let sock = crate::sockpath::connect(sock_path)?;
    send(&sock, &Request::Exec { process_json }, fds)?;
    answer(&sock)?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_fd_passing() {
        let (a, b) = UnixStream::pair().unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let req = Request::Exec {
            process_json: "{\"args\":[\"x\"]}".repeat(10_000),
        };
        let t = std::thread::spawn(move || send(&a, &req, &[devnull.as_raw_fd()]).unwrap());
        let (got, fds): (Request, _) = recv(&b).unwrap();
        t.join().unwrap();
        assert!(matches!(got, Request::Exec { ref process_json } if process_json.len() == 140_000));
        assert_eq!(fds.len(), 1);
        let (a, b) = UnixStream::pair().unwrap();
        send(&a, &Response::error("nope"), &[]).unwrap();
        let (r, fds): (Response, _) = recv(&b).unwrap();
        assert_eq!(r.error.as_deref(), Some("nope"));
        assert!(fds.is_empty());
        // Two answers already queued: each recv takes exactly one.
        let started = Response {
            started: true,
            ..Default::default()
        };
        let exited = Response {
            status: Some(7),
            ..Default::default()
        };
        send(&a, &started, &[]).unwrap();
        send(&a, &exited, &[]).unwrap();
        assert!(answer(&b).unwrap().started);
        assert_eq!(answer(&b).unwrap().status, Some(7));
    }
}
