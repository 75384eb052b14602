//! Event-loop glue for virtio-net: the two queue eventfds, the activation eventfd and the TAP
//! (edge-triggered: the handler reads until the TAP is empty or the guest has no buffers, and
//! resumes on the next RX queue notification).

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;

use super::device::{RXQ, TXQ};
use super::VirtioNet;
use crate::devices::virtio::{watch, DeviceEventHandler};

const ACTIVATE: u32 = 2;
const TAP: u32 = 3;

impl DeviceEventHandler for VirtioNet {
    fn init_events(&mut self, ops: &mut EventOps) {
        for (i, evt) in self.queue_evts.iter().enumerate() {
            watch(ops, evt, i as u32, "virtio-net queue");
        }
        watch(ops, &self.activate_evt, ACTIVATE, "virtio-net activation");
        let fd = self.handler.tap.as_raw_fd();
        if let Err(e) = ops.add(Events::with_data_raw(
            fd,
            TAP,
            EventSet::IN | EventSet::EDGE_TRIGGERED,
        )) {
            tracing::error!("cannot watch the TAP: {e}");
        }
    }

    fn process_event(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            d if d == RXQ as u32 => {
                let _ = self.queue_evts[RXQ].read();
                self.process(false, true);
            }
            d if d == TXQ as u32 => {
                let _ = self.queue_evts[TXQ].read();
                self.process(true, false);
            }
            ACTIVATE => {
                let _ = self.activate_evt.read();
                self.process(true, true);
            }
            TAP => self.process(false, true),
            _ => {}
        }
    }
}
