//! Event-loop glue for virtio-blk: the queue's ioeventfd and the activation eventfd.

use event_manager::{EventOps, Events};

use super::VirtioBlock;
use crate::devices::virtio::{watch, DeviceEventHandler};

const QUEUE: u32 = 0;
const ACTIVATE: u32 = 1;

impl DeviceEventHandler for VirtioBlock {
    fn init_events(&mut self, ops: &mut EventOps) {
        watch(ops, &self.queue_evts[0], QUEUE, "virtio-blk queue");
        watch(ops, &self.activate_evt, ACTIVATE, "virtio-blk activation");
    }

    fn process_event(&mut self, events: Events, _ops: &mut EventOps) {
        let evt = match events.data() {
            QUEUE => &self.queue_evts[0],
            ACTIVATE => &self.activate_evt,
            _ => return,
        };
        let _ = evt.read();
        self.process_queue();
    }
}
