//! The supervisor's control socket, `<root>/<id>/control.sock`: one request per connection,
//! a length-prefixed JSON message each way. `exec` passes the caller's stdio fds along with
//! its request (SCM_RIGHTS), so the supervisor relays the process straight to them, and gets
//! two answers: `started` once the process runs, then its exit status.
//!
//! A request travels in an [`Envelope`] that may name a container of the sandbox (a pod's
//! later containers, added with `add_container`): `{"op":"start","container":"c2"}`. Without
//! `container` it addresses the sandbox's own container, so a message of a caller that never
//! names one is what it always was.
//!
//! Owns: the wire format and both ends' framing. The supervisor's handlers live in
//! `supervisor::server`.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

/// Most fds one message carries (the kernel's SCM_MAX_FD): stdio and up to 250 extra fds.
pub const MAX_FDS: usize = 253;

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
    /// Signal one exec'd process, by the id the supervisor gave it (exec's `started` answer).
    KillExec {
        /// The exec's id (`exec_id` of its `started` answer).
        exec_id: String,
        /// Signal number.
        signal: u32,
    },
    /// Run a process in the container; stdio fds travel with the request, then its extra
    /// fds 3, 4, ... (runc's `--preserve-fds`), if any. Answered twice: `started` (or an
    /// error), then the exit status.
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
    /// Create container `id` in the sandbox's VM (a pod container); its stdio fds (stdin,
    /// stdout, stderr; with `process.terminal` all three are the pty slave), then its extra
    /// fds 3, 4, ... (`--preserve-fds`), travel with the request. The spec's sources are
    /// already guest paths (the CLI attached them to the share); the supervisor maps its
    /// namespaces and network, the agent creates it with its rootfs at `guest_root`. `<root>/<id>` must exist: its `status` is written there.
    AddContainer {
        /// The new container's id.
        id: String,
        /// Its OCI spec (config.json), sources rewritten to the guest.
        spec_json: String,
        /// Its rootfs's guest path.
        guest_root: String,
        /// Its bundle directory on the host (the guest hooks' state).
        bundle: PathBuf,
    },
    /// Answered (`status`) once the container's init has exited, at once if it has; 255 when
    /// the sandbox went down first. The connection stays open until then.
    Wait,
    /// Remove a pod container in the guest: a created or stopped one, or with `force` a
    /// running or paused one (killed first). Refused for the sandbox's own container.
    RemoveContainer {
        /// Kill it first if it runs.
        force: bool,
    },
}

/// A request on the wire: `container` beside `op`, None (absent) for the sandbox's own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The container addressed (None: the sandbox's own container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// What is asked.
    #[serde(flatten)]
    pub request: Request,
}

impl Envelope {
    /// `request` for `container`.
    pub fn new(container: Option<&str>, request: Request) -> Envelope {
        Envelope {
            container: container.map(str::to_string),
            request,
        }
    }
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
    /// The exec's id in the sandbox (exec's `started` answer), for `kill_exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
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
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
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

/// Sends `req` for the sandbox's own container to the supervisor at `sock_path` and waits up
/// to `timeout` (None: forever).
pub fn call(
    sock_path: &Path,
    req: &Request,
    fds: &[RawFd],
    timeout: Option<Duration>,
) -> Result<Response, ControlError> {
    call_in(sock_path, None, req, fds, timeout)
}

/// [`call`] for `container` of the sandbox (None: the sandbox's own container).
pub fn call_in(
    sock_path: &Path,
    container: Option<&str>,
    req: &Request,
    fds: &[RawFd],
    timeout: Option<Duration>,
) -> Result<Response, ControlError> {
    let sock = crate::sockpath::connect(sock_path)?;
    sock.set_read_timeout(timeout)?;
    send(&sock, &Envelope::new(container, req.clone()), fds)?;
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

/// Sends an `exec` request (the sandbox's own container) with `fds` and waits for its first
/// answer (`started`); the connection then carries the exit status (`answer`).
pub fn start_exec(
    sock_path: &Path,
    process_json: String,
    fds: &[RawFd],
) -> Result<(UnixStream, Option<String>), ControlError> {
    start_exec_in(sock_path, None, process_json, fds)
}

/// [`start_exec`] in `container` of the sandbox (None: the sandbox's own container).
pub fn start_exec_in(
    sock_path: &Path,
    container: Option<&str>,
    process_json: String,
    fds: &[RawFd],
) -> Result<(UnixStream, Option<String>), ControlError> {
    let sock = crate::sockpath::connect(sock_path)?;
    send(
        &sock,
        &Envelope::new(container, Request::Exec { process_json }),
        fds,
    )?;
    let started = answer(&sock)?;
    Ok((sock, started.exec_id))
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

    #[test]
    fn the_envelope_names_a_container_beside_op() {
        // What callers sent before envelopes (and still send for the sandbox's container).
        for (old, want) in [
            (r#"{"op":"start"}"#, "Start"),
            (r#"{"op":"kill","signal":9,"all":false}"#, "Kill"),
            (r#"{"op":"oom","after":null}"#, "Oom"),
        ] {
            let e: Envelope = serde_json::from_str(old).unwrap();
            assert_eq!(e.container, None, "{old}");
            assert!(format!("{:?}", e.request).starts_with(want), "{old}");
        }
        let e = Envelope::new(None, Request::Start);
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"op":"start"}"#);
        let e = Envelope::new(
            Some("c2"),
            Request::Kill {
                signal: 15,
                all: true,
            },
        );
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"container":"c2","op":"kill","signal":15,"all":true}"#
        );
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.container.as_deref(), Some("c2"));
        assert!(matches!(
            back.request,
            Request::Kill {
                signal: 15,
                all: true
            }
        ));
        // The new requests.
        let add = Envelope::new(
            None,
            Request::AddContainer {
                id: "c2".into(),
                spec_json: "{}".into(),
                guest_root: "/run/husk/share/c2/rootfs".into(),
                bundle: "/b".into(),
            },
        );
        let v = serde_json::to_value(&add).unwrap();
        assert_eq!(v["op"], "add_container");
        assert_eq!(v["bundle"], "/b");
        let back: Envelope = serde_json::from_value(v).unwrap();
        assert!(matches!(back.request, Request::AddContainer { ref id, .. } if id == "c2"));
        let w: Envelope = serde_json::from_str(r#"{"op":"wait","container":"c2"}"#).unwrap();
        assert!(matches!(w.request, Request::Wait));
        assert_eq!(w.container.as_deref(), Some("c2"));
        let r: Envelope =
            serde_json::from_str(r#"{"container":"c2","op":"remove_container","force":true}"#)
                .unwrap();
        assert!(matches!(
            r.request,
            Request::RemoveContainer { force: true }
        ));
        assert!(serde_json::from_str::<Envelope>(r#"{"op":"bogus"}"#).is_err());
    }

    #[test]
    fn kill_exec_and_the_exec_id_of_started() {
        let e = Envelope::new(
            Some("c2"),
            Request::KillExec {
                exec_id: "exec-3".into(),
                signal: 9,
            },
        );
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"container":"c2","op":"kill_exec","exec_id":"exec-3","signal":9}"#
        );
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            back.request,
            Request::KillExec { ref exec_id, signal: 9 } if exec_id == "exec-3"
        ));
        // An old supervisor's `started` (no exec_id) still parses.
        let r: Response = serde_json::from_str(r#"{"started":true}"#).unwrap();
        assert!(r.started && r.exec_id.is_none());
    }

    #[test]
    fn call_in_and_start_exec_in_carry_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let (conn, _) = listener.accept().unwrap();
                let (e, fds): (Envelope, _) = recv(&conn).unwrap();
                seen.push((e.container.clone(), fds.len()));
                if let Request::Exec { .. } = e.request {
                    let started = Response {
                        started: true,
                        ..Default::default()
                    };
                    send(&conn, &started, &[]).unwrap();
                }
                let done = Response {
                    status: Some(3),
                    ..Default::default()
                };
                send(&conn, &done, &[]).unwrap();
            }
            seen
        });
        let r = call_in(&path, Some("c2"), &Request::Wait, &[], None).unwrap();
        assert_eq!(r.status, Some(3));
        call(&path, &Request::Start, &[], None).unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let (conn, _) =
            start_exec_in(&path, Some("c3"), "{}".into(), &[devnull.as_raw_fd()]).unwrap();
        assert_eq!(answer(&conn).unwrap().status, Some(3));
        assert_eq!(
            server.join().unwrap(),
            vec![(Some("c2".into()), 0), (None, 0), (Some("c3".into()), 1)]
        );
    }
}
