//! The device event loop: one thread (the VMM's main thread) running event-manager, with the
//! exit latch and console input as subscribers.
//!
//! Owns: event-loop glue only. Device logic stays in [`crate::devices`].

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::serial::Serial;

/// Drains the exit eventfd so the loop wakes once per request; the caller checks the latch.
pub struct ExitWatcher {
    evt: EventFd,
}

impl ExitWatcher {
    /// Watches a clone of the exit signal's eventfd.
    pub fn new(evt: EventFd) -> Self {
        Self { evt }
    }
}

impl MutEventSubscriber for ExitWatcher {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.evt.read();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.evt, EventSet::IN)) {
            tracing::error!("cannot watch the exit eventfd: {e}");
        }
    }
}

/// Forwards bytes from a host fd (stdin) to the UART's input FIFO.
pub struct ConsoleInput<R: Read + AsRawFd + Send> {
    input: R,
    serial: Arc<Mutex<Serial>>,
}

impl<R: Read + AsRawFd + Send> ConsoleInput<R> {
    /// Forwards `input` to `serial`.
    pub fn new(input: R, serial: Arc<Mutex<Serial>>) -> Self {
        Self { input, serial }
    }
}

impl<R: Read + AsRawFd + Send> MutEventSubscriber for ConsoleInput<R> {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        let closed = events
            .event_set()
            .intersects(EventSet::HANG_UP | EventSet::ERROR);
        match self.input.read(&mut buf) {
            Ok(0) => {
                let _ = ops.remove(events);
            }
            Ok(n) => {
                let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
                let taken = serial.enqueue_input(&buf[..n]);
                if taken < n {
                    tracing::debug!(
                        "console input: dropped {} bytes (guest FIFO full)",
                        n - taken
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::debug!("console input closed: {e}");
                let _ = ops.remove(events);
            }
        }
        if closed {
            let _ = ops.remove(Events::new_raw(self.input.as_raw_fd(), EventSet::IN));
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new_raw(self.input.as_raw_fd(), EventSet::IN)) {
            tracing::debug!("console input not watched: {e}");
        }
    }
}
