//! OOM events for `GetOomEvent`: one watcher thread per container whose cgroup has the memory
//! controller. It waits for changes of `memory.events` (cgroup v2 wakes pollers with POLLPRI
//! when a counter changes) and queues the container id each time `oom_kill` grows. It only
//! reads that one cgroup file and stops when the file goes away (the cgroup was removed).

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::syscall::linux::poll;

/// How long a watcher or a waiting caller sleeps before looking again anyway.
const TICK: Duration = Duration::from_secs(1);

/// The `oom_kill` counter of a `memory.events` text.
pub fn oom_kills(memory_events: &str) -> Option<u64> {
    memory_events.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == "oom_kill").then(|| v.trim().parse().ok())?
    })
}

/// Container ids with an OOM kill not yet reported, oldest first.
#[derive(Default)]
pub struct OomEvents {
    queue: Mutex<VecDeque<String>>,
    cv: Condvar,
}

impl OomEvents {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn push(&self, id: &str) {
        tracing::warn!(container = id, "OOM kill in the container's cgroup");
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(id.to_string());
        self.cv.notify_all();
    }

    /// The next event. None (and the event stays queued) when the deadline passes or
    /// `gone` says the caller left first.
    pub fn next(&self, deadline: Option<Instant>, gone: &dyn Fn() -> bool) -> Option<String> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if gone() {
                return None;
            }
            if let Some(id) = q.pop_front() {
                return Some(id);
            }
            let mut tick = TICK;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                tick = tick.min(left);
            }
            q = self
                .cv
                .wait_timeout(q, tick)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Watches `memory_events` (a cgroup's `memory.events`) for container `id` until it
    /// disappears. False if it cannot be opened (no memory controller).
    pub fn watch(self: &Arc<Self>, id: &str, memory_events: PathBuf) -> bool {
        let Ok(file) = File::open(&memory_events) else {
            return false;
        };
        let (me, id) = (Arc::clone(self), id.to_string());
        let spawned = std::thread::Builder::new()
            .name(format!("oom-{id}"))
            .spawn(move || me.watch_loop(&id, &file));
        spawned.is_ok()
    }

    fn watch_loop(&self, id: &str, file: &File) {
        let read = || {
            let mut buf = [0u8; 512];
            let n = file.read_at(&mut buf, 0).ok()?;
            oom_kills(std::str::from_utf8(&buf[..n]).ok()?)
        };
        let Some(mut last) = read() else { return };
        loop {
            let mut fds = [libc::pollfd {
                fd: file.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            }];
            if poll(&mut fds, TICK).is_err() {
                std::thread::sleep(TICK);
            }
            // A removed cgroup's files read ENODEV: the container is gone.
            let Some(now) = read() else { return };
            if now > last {
                self.push(id);
            }
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_is_parsed_from_memory_events() {
        let text = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills(text), Some(1));
        assert_eq!(oom_kills("low 0\n"), None);
    }

    #[test]
    fn next_waits_for_a_push_and_keeps_events_for_a_caller_that_left() {
        let ev = OomEvents::new();
        let soon = Some(Instant::now() + Duration::from_millis(50));
        assert_eq!(ev.next(soon, &|| false), None, "deadline, nothing queued");
        ev.push("c1");
        assert_eq!(ev.next(None, &|| true), None, "caller gone: not taken");
        assert_eq!(ev.next(None, &|| false).as_deref(), Some("c1"));
        let e2 = Arc::clone(&ev);
        let t = std::thread::spawn(move || e2.next(None, &|| false));
        std::thread::sleep(Duration::from_millis(50));
        ev.push("c2");
        assert_eq!(t.join().unwrap().as_deref(), Some("c2"));
    }

    #[test]
    fn a_watcher_reports_growth_of_oom_kill_and_stops_when_the_file_goes() {
        let dir = std::env::temp_dir().join(format!("husk-oom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("memory.events");
        std::fs::write(&f, "oom 0\noom_kill 0\n").unwrap();
        let ev = OomEvents::new();
        assert!(ev.watch("w", f.clone()));
        assert!(!ev.watch("x", dir.join("missing")));
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(&f, "oom 1\noom_kill 1\n").unwrap();
        // A regular file never signals POLLPRI: the watcher's tick finds the change.
        let got = ev.next(Some(Instant::now() + Duration::from_secs(5)), &|| false);
        assert_eq!(got.as_deref(), Some("w"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
