//! Log lines a guest can trigger, kept from flooding the host.
//!
//! A guest that programs a bad queue, or writes one register in a loop, can make the VMM log on
//! every VM exit; the supervisor's log lives on a tmpfs, so an unthrottled line is a way for a
//! guest to fill host memory. Two limits stop that:
//!
//! - [`ratelimited!`](crate::logging::ratelimited): every log line in device code that a guest
//!   action can reach goes through it. At most [`BURST`] lines per call site every [`WINDOW`];
//!   the first line after a window that dropped some carries `suppressed=K`, the number dropped.
//!   The budget belongs to the call site (a `static` beside it, like the callsite cache tracing
//!   keeps there anyway), so handlers stay pure functions with nothing to thread through.
//! - [`LogThrottle`]: a tracing [`Layer`] that the husk-vmm binary and the supervisor put in
//!   front of their subscribers. It applies the same limit to events from crates husk cannot
//!   edit: rust-vmm's virtio-queue logs through the `log` facade at ERROR on every access to a
//!   queue the driver set up badly, and tracing-log turns those records into tracing events.
//!   husk's own events (targets `husk*`) pass untouched: the guest-reachable ones are limited at
//!   their call sites, and the rest must not be hidden.
//!
//! Owns: the limits. Must not touch: where log lines go (the binaries' subscribers).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines one call site may log per [`WINDOW`] (Linux's printk_ratelimit default).
pub const BURST: u32 = 10;
/// The rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(5);
/// Call sites [`LogThrottle`] tracks one by one; beyond that they share one budget.
const MAX_SITES: usize = 1024;

/// One window's count for a call site.
#[derive(Debug, Default)]
struct Budget {
    start: Option<Instant>,
    emitted: u32,
    suppressed: u64,
}

impl Budget {
    /// `Some(k)`: log now, `k` lines were dropped since the last one; `None`: drop this line.
    fn take(&mut self, now: Instant, burst: u32, window: Duration) -> Option<u64> {
        if self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= window)
        {
            self.start = Some(now);
            self.emitted = 0;
        }
        if self.emitted >= burst {
            self.suppressed += 1;
            return None;
        }
        self.emitted += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// At most `burst` lines per `window`, counting what it drops. Usable as a `static`.
#[derive(Debug)]
pub struct RateLimiter {
    burst: u32,
    window: Duration,
    budget: Mutex<Budget>,
}

impl RateLimiter {
    /// A limiter of `burst` lines per `window`.
    pub const fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            budget: Mutex::new(Budget {
                start: None,
                emitted: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may go out now: `Some(k)` where `k` lines were dropped since the last one
    /// that went out, `None` when this one must be dropped.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    /// [`Self::check`] at a given time (for tests).
    pub fn check_at(&self, now: Instant) -> Option<u64> {
        self.budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(now, self.burst, self.window)
    }
}

/// `ratelimited!(LEVEL, ...)`: `tracing::event!` at `Level::LEVEL`, at most [`BURST`] times per
/// [`WINDOW`] from this call site; a line that follows dropped ones carries `suppressed = K`.
/// Nothing is counted while the level is disabled.
macro_rules! ratelimited {
    ($lvl:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::logging::RateLimiter =
            $crate::logging::RateLimiter::new($crate::logging::BURST, $crate::logging::WINDOW);
        if ::tracing::enabled!(::tracing::Level::$lvl) {
            match LIMIT.check() {
                Some(0) => ::tracing::event!(::tracing::Level::$lvl, $($arg)+),
                Some(suppressed) => ::tracing::event!(::tracing::Level::$lvl, suppressed, $($arg)+),
                None => {}
            }
        }
    }};
}
pub(crate) use ratelimited;

/// The [`Layer`] that rate-limits events from other crates (see the module header). Install it
/// outermost, so it sees events before the formatter:
///
/// ```no_run
/// use tracing_subscriber::layer::SubscriberExt;
/// use tracing_subscriber::util::SubscriberInitExt;
/// tracing_subscriber::fmt()
///     .finish()
///     .with(husk_vmm::logging::LogThrottle::default())
///     .init();
/// ```
///
/// `init` also installs tracing-log's bridge, through which virtio-queue's `log` records come.
#[derive(Debug)]
pub struct LogThrottle {
    burst: u32,
    window: Duration,
    sites: Mutex<HashMap<u64, Site>>,
}

#[derive(Debug, Default)]
struct Site {
    budget: Budget,
    /// Lines dropped before the one now going out, reported after it.
    pending: u64,
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new(BURST, WINDOW)
    }
}

impl LogThrottle {
    /// At most `burst` events per `window` from each call site of another crate.
    pub fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            sites: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `meta`'s events are limited: everything but husk's own crates. Events bridged
    /// from `log` have the target "log" here (the record's own target is a field).
    fn limits(meta: &Metadata<'_>) -> bool {
        !meta.target().starts_with("husk")
    }

    fn with_site<T>(&self, event: &Event<'_>, f: impl FnOnce(&mut Site) -> T) -> T {
        let key = site_key(event);
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        // Call sites are finite, but a `log` record's fields come from code we do not control:
        // past MAX_SITES, new ones share one budget instead of growing the map.
        let key = if sites.len() >= MAX_SITES && !sites.contains_key(&key) {
            0
        } else {
            key
        };
        f(sites.entry(key).or_default())
    }
}

impl<S: Subscriber> Layer<S> for LogThrottle {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if !Self::limits(event.metadata()) {
            return true;
        }
        let now = Instant::now();
        self.with_site(event, |site| {
            match site.budget.take(now, self.burst, self.window) {
                Some(dropped) => {
                    site.pending = dropped;
                    true
                }
                None => false,
            }
        })
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !Self::limits(event.metadata()) {
            return;
        }
        let dropped = self.with_site(event, |site| std::mem::take(&mut site.pending));
        if dropped > 0 {
            // A nested event: it reaches the global subscriber (the binaries install this layer
            // globally); under a scoped test subscriber tracing drops it.
            tracing::warn!(
                suppressed = dropped,
                "{dropped} similar log lines from {} were suppressed before the one above",
                origin(event)
            );
        }
    }
}

/// Where an event comes from: its target, or for a `log` record the record's own target.
fn origin(event: &Event<'_>) -> String {
    struct LogTarget(Option<String>);
    impl Visit for LogTarget {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "log.target" {
                self.0 = Some(value.to_owned());
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }
    let mut t = LogTarget(None);
    if event.metadata().target() == "log" {
        event.record(&mut t);
    }
    t.0.unwrap_or_else(|| event.metadata().target().to_owned())
}

/// Identifies an event's call site: its callsite, plus for `log` records (which tracing-log
/// sends through one callsite per level) the record's target, module, file and line.
fn site_key(event: &Event<'_>) -> u64 {
    struct LogFields<'a>(&'a mut DefaultHasher);
    impl Visit for LogFields<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name().starts_with("log.") {
                field.name().hash(self.0);
                value.hash(self.0);
            }
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name().starts_with("log.") {
                field.name().hash(self.0);
                value.hash(self.0);
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }
    let mut h = DefaultHasher::new();
    event.metadata().callsite().hash(&mut h);
    if event.metadata().target() == "log" {
        event.record(&mut LogFields(&mut h));
    }
    // 0 is the shared overflow budget.
    h.finish().max(1)
}

#[cfg(test)]
pub(crate) mod test_capture {
    //! A subscriber that counts what reaches the formatter, for tests of the limits.

    use std::sync::{Arc, Mutex};

    use tracing::Subscriber;
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    /// Counts the events that reach it, with their messages.
    #[derive(Clone, Default)]
    pub struct Capture(pub Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            struct Msg(String);
            impl tracing::field::Visit for Msg {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!(" {}={v:?}", f.name()));
                }
            }
            let mut m = Msg(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }

    /// Runs `f` with a scoped subscriber: `throttle` (if any) in front of a capture of every
    /// event at DEBUG and above. Bridges `log` records into tracing (once per process). Returns
    /// the captured lines.
    pub fn capture(throttle: Option<super::LogThrottle>, f: impl FnOnce()) -> Vec<String> {
        let _ = tracing_log::LogTracer::init();
        let cap = Capture::default();
        let sub = tracing_subscriber::registry()
            .with(throttle)
            .with(cap.clone())
            .with(tracing_subscriber::filter::LevelFilter::DEBUG);
        tracing::subscriber::with_default(sub, f);
        let lines = cap.0.lock().unwrap().clone();
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::test_capture::capture;
    use super::*;

    #[test]
    fn limiter_allows_a_burst_per_window_and_counts_the_rest() {
        let l = RateLimiter::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(l.check_at(t0), Some(0));
        assert_eq!(l.check_at(t0), Some(0));
        assert_eq!(l.check_at(t0), Some(0));
        for _ in 0..100 {
            assert_eq!(l.check_at(t0 + Duration::from_millis(500)), None);
        }
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            l.check_at(t1),
            Some(100),
            "the first line after reports the drops"
        );
        assert_eq!(l.check_at(t1), Some(0));
    }

    #[test]
    fn ratelimited_lines_are_bounded_per_call_site() {
        let lines = capture(None, || {
            for i in 0..1000 {
                ratelimited!(WARN, "guest did a bad thing {i}");
                ratelimited!(DEBUG, "and another");
            }
        });
        assert_eq!(lines.len(), 2 * BURST as usize, "{lines:?}");
    }

    #[test]
    fn throttle_limits_other_crates_per_call_site_and_passes_husk() {
        let throttle = LogThrottle::new(4, Duration::from_secs(3600));
        let lines = capture(Some(throttle), || {
            for _ in 0..500 {
                tracing::error!(target: "virtio_queue::queue", "bad queue");
                tracing::warn!(target: "other_crate", "other");
                tracing::info!(target: "husk_vmm::builder", "ours");
            }
        });
        let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(count("bad queue"), 4);
        assert_eq!(count("other"), 4);
        assert_eq!(count("ours"), 500);
    }

    #[test]
    fn throttle_tells_log_records_apart_by_origin() {
        let throttle = LogThrottle::new(2, Duration::from_secs(3600));
        let lines = capture(Some(throttle), || {
            for _ in 0..50 {
                tracing_log::log::error!(target: "crate_a", "from a");
                tracing_log::log::error!(target: "crate_b", "from b");
            }
        });
        let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
        assert_eq!((count("from a"), count("from b")), (2, 2), "{lines:?}");
    }
}
