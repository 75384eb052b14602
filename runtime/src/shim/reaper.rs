//! The shim's reaper. The shim is a child subreaper: the husk verbs it runs are its children,
//! and what they leave behind (the supervisor of a sandbox container, the stand-in of a pod
//! container or of an exec) is reparented to it when the verb returns. One thread waits for
//! every child (`waitpid(-1)`) and records each exit status by pid; whoever wants a pid's
//! status waits for it here. Nothing else in the shim may wait for a child (`Command::wait`
//! would race this thread), so the verbs are spawned and then waited for with [`Reaper::wait`].
//!
//! containerd-shim's mount helper forks and waits through the crate's own monitor, so every
//! exit is also passed to `containerd_shim::monitor`.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// How long an exit nobody asked for is kept (a verb's grandchild that nobody tracks).
const KEEP_UNCLAIMED: Duration = Duration::from_secs(600);

/// A child's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, 128 + the signal for a child killed by one.
    pub code: i32,
    /// When it was reaped.
    pub at: SystemTime,
}

#[derive(Default)]
struct Inner {
    exits: HashMap<i32, Exit>,
    children_maybe: bool,
}

/// The exits seen so far, by pid.
#[derive(Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl Reaper {
    /// Starts the reaping thread.
    pub fn start() -> std::io::Result<Arc<Reaper>> {
        let r = Arc::new(Reaper::default());
        let me = Arc::clone(&r);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || me.run())?;
        Ok(r)
    }

    /// Tells the reaping thread a child may exist now (it sleeps while there is none).
    pub fn kick(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .children_maybe = true;
        self.changed.notify_all();
    }

    /// Waits for `pid` to exit and takes its status.
    pub fn wait(&self, pid: i32) -> Exit {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = g.exits.remove(&pid) {
                return e;
            }
            g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`Reaper::wait`], giving up after `timeout`.
    pub fn wait_timeout(&self, pid: i32, timeout: Duration) -> Option<Exit> {
        let deadline = std::time::Instant::now() + timeout;
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = g.exits.remove(&pid) {
                return Some(e);
            }
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            g = self
                .changed
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn record(&self, pid: i32, code: i32) {
        let now = SystemTime::now();
        {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            g.exits.retain(|_, e| {
                now.duration_since(e.at)
                    .map(|d| d < KEEP_UNCLAIMED)
                    .unwrap_or(true)
            });
            g.exits.insert(pid, Exit { code, at: now });
        }
        self.changed.notify_all();
        let _ = containerd_shim::monitor::monitor_notify_by_pid(pid, code);
    }

    fn run(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Exited(pid, code)) => self.record(pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.record(pid.as_raw(), 128 + sig as i32)
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => {
                    // No children: sleep until one is started (or a while, for orphans
                    // reparented to this subreaper).
                    let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                    if !g.children_maybe {
                        g = self
                            .changed
                            .wait_timeout(g, Duration::from_millis(100))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    g.children_maybe = false;
                }
            }
        }
    }
}

// No unit test: a waitpid(-1) thread in the test binary would reap the children of every
// other test running beside it. tests/e2e/containerd.sh exercises it.
