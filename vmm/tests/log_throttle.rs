//! The subscriber the husk-vmm binary and the supervisor install, end to end: virtio-queue's
//! `log` records reach it through tracing-log, a bad queue setup repeated a thousand times
//! yields a burst of lines, and the drops are reported once the window passes.
//!
//! Its own test binary: it installs a global subscriber, as the binaries do (a scoped one would
//! not see the nested summary event).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use husk_vmm::logging::LogThrottle;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use virtio_queue::{Queue, QueueT};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

#[test]
fn virtio_queue_errors_are_limited_and_the_drops_reported() {
    let buf = Buf::default();
    // The binaries' line, with a short window for the test.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(buf.clone())
        .finish()
        .with(LogThrottle::new(3, Duration::from_millis(300)))
        .init();
    let mut q = Queue::new(16).unwrap();
    for _ in 0..1000 {
        // Not a power of two: virtio-queue logs "virtio queue with invalid size" at ERROR.
        q.set_size(3);
    }
    tracing::info!("husk's own lines pass");
    std::thread::sleep(Duration::from_millis(400));
    q.set_size(3);
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("virtio queue with invalid size"), 4, "{out}");
    assert_eq!(
        count("997 similar log lines from virtio_queue::queue were suppressed"),
        1,
        "{out}"
    );
    assert_eq!(count("husk's own lines pass"), 1, "{out}");
    assert_eq!(lines.len(), 6, "{out}");
}
