//! OOM kills of the sandbox's containers: one thread asks the agent's `GetOomEvent` for the
//! whole sandbox (the agent keeps one queue, so a single reader must take the events) and
//! counts each on its container's count; `events` callers wait on the count through the control
//! socket, each from the count it has already seen, so several can watch at once.
//!
//! Owns: the count and its waiters. Knows nothing of the control wire format.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::agent::AgentClient;

#[derive(Debug, Default)]
struct Inner {
    count: u64,
    closed: bool,
}

/// The container's OOM kills so far, and whether more can come.
#[derive(Debug, Default)]
pub struct OomCount {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl OomCount {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more OOM kill.
    pub fn record(&self) {
        self.lock().count += 1;
        self.changed.notify_all();
    }

    /// No more events will come (the container stopped).
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Waits until the count passes `after`, the count is closed or `timeout` passes; the
    /// count and whether it is closed. `after` unset: at once.
    pub fn wait(&self, after: Option<u64>, timeout: Duration) -> (u64, bool) {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        if let Some(after) = after {
            while g.count <= after && !g.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                g = self
                    .changed
                    .wait_timeout(g, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        (g.count, g.closed)
    }
}

/// Starts the thread that reads the sandbox's OOM events (on its own agent connection,
/// since `GetOomEvent` blocks) and counts each on the count `route` gives for its container
/// (the sandbox's containers: its own and a pod's later ones). It ends when the agent goes
/// away or has no `GetOomEvent`.
pub fn watch<F>(agent: &AgentClient, route: F)
where
    F: Fn(&str) -> Option<Arc<OomCount>> + Send + 'static,
{
    let agent = match agent.another() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("OOM events: {e}");
            return;
        }
    };
    let _ = std::thread::Builder::new()
        .name("oom-events".into())
        .spawn(move || loop {
            match agent.oom_event() {
                Ok(c) => match route(&c) {
                    Some(count) => {
                        tracing::warn!(container = %c, "the container's cgroup OOM-killed a process");
                        count.record();
                    }
                    None => tracing::debug!(container = %c, "OOM event of an unknown container"),
                },
                Err(e) => {
                    tracing::debug!("OOM events end: {e}");
                    break;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_see_new_kills_and_the_end() {
        let c = Arc::new(OomCount::default());
        assert_eq!(c.wait(None, Duration::ZERO), (0, false));
        assert_eq!(c.wait(Some(0), Duration::from_millis(10)), (0, false));
        let c2 = Arc::clone(&c);
        let t = std::thread::spawn(move || c2.wait(Some(0), Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        c.record();
        assert_eq!(t.join().unwrap(), (1, false));
        // A waiter that has seen 1 is woken by the end, not held to its timeout.
        let c2 = Arc::clone(&c);
        let t = std::thread::spawn(move || c2.wait(Some(1), Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        c.close();
        assert_eq!(t.join().unwrap(), (1, true));
    }
}
