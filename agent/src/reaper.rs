//! Zombie reaping and exit statuses. The agent blocks SIGCHLD in every thread (call
//! `block_sigchld` before spawning any) and one thread reads it from a signalfd, reaps every
//! child with waitpid(-1, WNOHANG) and records the status; processes wait for their pid here.
//! As guest PID 1 this also reaps orphans; in host mode the agent is a child subreaper.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Blocks SIGCHLD for the calling thread (and the threads it creates later).
pub fn block_sigchld() -> nix::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
}

/// Makes orphaned descendants re-parent to this process (host mode; PID 1 already is).
pub fn become_subreaper() -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    nix::errno::Errno::result(rc).map(drop)
}

/// Shell-style status: the exit code, or 128 + the signal.
pub fn shell_status(ws: WaitStatus) -> Option<(Pid, i32)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid, code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid, 128 + sig as i32)),
        _ => None,
    }
}

#[derive(Default)]
struct Table {
    statuses: HashMap<i32, i32>,
    ignored: HashSet<i32>,
}

/// Exit statuses of reaped children, keyed by pid.
#[derive(Default)]
pub struct ExitRegistry {
    table: Mutex<Table>,
    cv: Condvar,
}

impl ExitRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn record(&self, pid: i32, status: i32) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !t.ignored.remove(&pid) {
            t.statuses.insert(pid, status);
        }
        self.cv.notify_all();
    }

    /// Blocks until `pid` has exited and returns (and forgets) its status.
    pub fn wait(&self, pid: i32) -> i32 {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = t.statuses.remove(&pid) {
                return s;
            }
            t = self.cv.wait(t).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Discards the status of a helper process whose exit nobody waits for.
    pub fn ignore(&self, pid: i32) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if t.statuses.remove(&pid).is_none() {
            t.ignored.insert(pid);
        }
    }

    /// Starts the reaping thread. SIGCHLD must already be blocked in this thread.
    pub fn start(self: &Arc<Self>) -> nix::Result<()> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        let mut sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)?;
        let reg = Arc::clone(self);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || loop {
                let _ = sfd.read_signal();
                reg.reap_all();
            })
            .map_err(|_| nix::errno::Errno::EAGAIN)?;
        // Children that exited before the signalfd existed.
        self.reap_all();
        Ok(())
    }

    fn reap_all(&self) {
        loop {
            match waitpid(
                Pid::from_raw(-1),
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
            ) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(ws) => {
                    if let Some((pid, status)) = shell_status(ws) {
                        tracing::debug!(pid = pid.as_raw(), status, "reaped");
                        self.record(pid.as_raw(), status);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_and_waited_statuses() {
        let r = ExitRegistry::new();
        r.record(10, 3);
        assert_eq!(r.wait(10), 3);
        r.ignore(11);
        r.record(11, 0);
        r.record(12, 137);
        r.ignore(12);
        assert!(r.table.lock().unwrap().statuses.is_empty());
        let r2 = Arc::clone(&r);
        let h = std::thread::spawn(move || r2.wait(13));
        r.record(13, 130);
        assert_eq!(h.join().unwrap(), 130);
    }
}
