//! Event-loop glue for virtio-net: the two queue eventfds, the activation eventfd and the TAP
//! (edge-triggered: the handler reads until the TAP is empty or the guest has no buffers, and
//! resumes on the next RX queue notification).

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;

use super::device::{RXQ, TXQ};
use super::VirtioNet;
use crate::devices::virtio::queues::DeviceEvent;
use crate::devices::virtio::DeviceEventHandler;

impl DeviceEventHandler for VirtioNet {
    fn init_events(&mut self, ops: &mut EventOps) {
        self.queues.watch(ops);
        self.queues.watch_backend(
            ops,
            self.handler.tap.as_raw_fd(),
            EventSet::IN | EventSet::EDGE_TRIGGERED,
            "the TAP",
        );
    }

    fn process_event(&mut self, events: Events, _ops: &mut EventOps) {
        match self.queues.take_event(events.data()) {
            Some(DeviceEvent::Queue(TXQ)) => self.process(&[TXQ]),
            Some(DeviceEvent::Queue(_) | DeviceEvent::Backend) => self.process(&[RXQ]),
            Some(DeviceEvent::Activate) => self.process(&[TXQ, RXQ]),
            None => {}
        }
    }
}
