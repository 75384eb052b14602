//! Relays a process's stdio between host fds and the agent's stream RPCs: one thread per
//! direction, each on its own agent connection (the reads block until data comes). For a
//! terminal process the guest has one stream (the pty master): stdin goes in, stdout comes
//! out, there is no stderr, and the host terminal's window size is forwarded as it changes.
//!
//! The container's stdio is what `create`'s caller gave the supervisor as its fds 0/1/2.
//! [`adopt_caller_stdio`] takes them over first thing: the relay gets close-on-exec copies and
//! the supervisor's own 0/1/2 become /dev/null, so the relay's copies are the only ones the
//! sandbox holds (no child inherits them) and an output relay that sees the guest's EOF closes
//! the caller's pipe: `out=$(husk run -d ...)` returns once the container closed its stdout,
//! as with runc.
//!
//! Owns: copying bytes, closing stdin at EOF, window sizes. Knows nothing of the control
//! socket.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::tty;

use super::agent::AgentClient;

/// Takes this process's fds 0, 1 and 2 as the container's stdio: returns close-on-exec
/// duplicates (None where a descriptor is not open) and points 0/1/2 at /dev/null.
pub fn adopt_caller_stdio() -> [Option<File>; 3] {
    adopt([0, 1, 2])
}

/// [`adopt_caller_stdio`] for any three descriptors.
fn adopt(fds: [RawFd; 3]) -> [Option<File>; 3] {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .ok();
    fds.map(|fd| {
        // SAFETY: fcntl takes no pointers; on success the result is a new descriptor that
        // nothing else owns, which the File takes.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if copy < 0 {
            return None;
        }
        if let Some(null) = &null {
            // SAFETY: dup2 takes no pointers; `fd` now refers to /dev/null, and every
            // descriptor Rust code owns stays valid (the copy is a new one).
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
        // SAFETY: `copy` is a fresh descriptor owned by nothing else.
        Some(unsafe { File::from_raw_fd(copy) })
    })
}

/// Bytes asked for per read.
const CHUNK: u32 = 64 * 1024;

/// Copies the process's stdout (or stderr) to `out` until the guest side ends.
fn spawn_output(
    client: &AgentClient,
    id: &str,
    exec: &str,
    stderr: bool,
    mut out: File,
) -> Option<JoinHandle<()>> {
    let client = match client.another() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("stdio relay: {e}");
            return None;
        }
    };
    let (id, exec) = (id.to_string(), exec.to_string());
    let name = if stderr { "stderr" } else { "stdout" };
    std::thread::Builder::new()
        .name(format!("relay-{name}"))
        .spawn(move || {
            let mut broken = false;
            loop {
                match client.read(&id, &exec, stderr, CHUNK) {
                    Ok(Some(data)) => {
                        // Keep draining after the reader went away, so the process never
                        // blocks on a full pipe.
                        if !broken && out.write_all(&data).is_err() {
                            broken = true;
                        }
                    }
                    // The guest's EOF: the thread ends and drops `out`, closing the caller's
                    // copy (the relay holds the only one).
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(exec = %exec, "{name} relay ends: {e}");
                        break;
                    }
                }
            }
        })
        .ok()
}

/// Copies `input` to the process's stdin; closes it at EOF. Gives up (without closing)
/// once `done` is set, so a caller's stdin that never ends does not keep the thread.
fn spawn_input(client: &AgentClient, id: &str, exec: &str, mut input: File, done: Arc<AtomicBool>) {
    use nix::poll::{poll, PollFd, PollFlags};
    let client = match client.another() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("stdin relay: {e}");
            return;
        }
    };
    let (id, exec) = (id.to_string(), exec.to_string());
    let _ = std::thread::Builder::new()
        .name("relay-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK as usize];
            loop {
                let mut pfd = [PollFd::new(input.as_raw_fd(), PollFlags::POLLIN)];
                match poll(&mut pfd, 200) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => {
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                        continue;
                    }
                    _ => {}
                }
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = client.close_stdin(&id, &exec);
                        break;
                    }
                    Ok(n) => {
                        if client.write_stdin(&id, &exec, &buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
}

/// A process's relays: output threads to join and the window-size watcher to stop.
pub struct Relay {
    outputs: Vec<JoinHandle<()>>,
    done: Arc<AtomicBool>,
}

/// How often a terminal's window size is checked (the supervisor gets no SIGWINCH: the host
/// terminal is not its controlling terminal).
const WINSIZE_POLL: Duration = Duration::from_millis(200);

impl Relay {
    /// Starts relaying `stdin`/`stdout`/`stderr` (each optional) for process `exec` of `id`.
    pub fn start(
        client: &AgentClient,
        id: &str,
        exec: &str,
        stdio: [Option<File>; 3],
        terminal: bool,
    ) -> Relay {
        let [stdin, stdout, stderr] = stdio;
        let done = Arc::new(AtomicBool::new(false));
        if terminal {
            if let Some(f) = stdin.as_ref().and_then(|f| f.try_clone().ok()) {
                spawn_winsize(client, id, exec, f, Arc::clone(&done));
            }
        }
        if let Some(f) = stdin {
            spawn_input(client, id, exec, f, Arc::clone(&done));
        }
        let stderr = if terminal { None } else { stderr };
        let outputs = [(stdout, false), (stderr, true)]
            .into_iter()
            .filter_map(|(f, err)| spawn_output(client, id, exec, err, f?))
            .collect();
        Relay { outputs, done }
    }

    /// Stops the window-size watcher and joins the output relays (at most `timeout`).
    pub fn finish(self, timeout: Duration) {
        self.done.store(true, Ordering::Relaxed);
        join_all(self.outputs, timeout);
    }
}

/// Forwards the window size of the terminal `tty` to the guest's pty while `done` is unset.
fn spawn_winsize(client: &AgentClient, id: &str, exec: &str, tty: File, done: Arc<AtomicBool>) {
    if tty::window_size(tty.as_raw_fd()).is_none() {
        return;
    }
    let client = client.clone();
    let (id, exec) = (id.to_string(), exec.to_string());
    let _ = std::thread::Builder::new()
        .name("winsize".into())
        .spawn(move || {
            let mut last = (0, 0);
            while !done.load(Ordering::Relaxed) {
                match tty::window_size(tty.as_raw_fd()) {
                    Some(ws) if ws != last && ws != (0, 0) => {
                        if let Err(e) = client.tty_resize(&id, &exec, ws.0, ws.1) {
                            tracing::debug!(exec = %exec, "TtyWinResize: {e}");
                        }
                        last = ws;
                    }
                    Some(_) => {}
                    None => break,
                }
                std::thread::sleep(WINSIZE_POLL);
            }
        });
}

/// Joins output relays, giving up after `timeout` (a grandchild may hold the pipe open).
fn join_all(handles: Vec<JoinHandle<()>>, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    for h in handles {
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After the adoption the original descriptor is /dev/null and only the returned copy
    /// holds the pipe: dropping the copy (the relay's EOF) gives the reader EOF although the
    /// original number stays open.
    #[test]
    fn the_callers_pipe_is_held_only_by_the_relay_copy() {
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: pipe2 writes two descriptors into the array it is given.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: the read end is a fresh descriptor owned by nothing else.
            (unsafe { File::from_raw_fd(fds[0]) }, fds[1])
        };
        let ((r, fd), (r2, fd2)) = (pipe(), pipe());
        let [a, b, c] = adopt([fd, fd2, 999_999]);
        assert!(c.is_none(), "a descriptor that is not open gives None");
        let (mut a, b) = (a.unwrap(), b.unwrap());
        a.write_all(b"hi").unwrap();
        drop(a);
        drop(b);
        let mut text = String::new();
        let mut r = r;
        r.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hi");
        let mut rest = Vec::new();
        let mut r2 = r2;
        r2.read_to_end(&mut rest).unwrap();
        // The original numbers are still open, now on /dev/null.
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(target, std::path::Path::new("/dev/null"));
        // SAFETY: both are descriptors this test owns (now /dev/null).
        unsafe {
            drop(File::from_raw_fd(fd));
            drop(File::from_raw_fd(fd2));
        }
    }
}
