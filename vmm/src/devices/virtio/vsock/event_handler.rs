//! Event-loop glue for virtio-vsock: three queue eventfds, the activation eventfd and the
//! muxer's epoll fd (which stands for every host socket).

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;

use super::device::{RXQ, TXQ};
use super::VirtioVsock;
use crate::devices::virtio::queues::DeviceEvent;
use crate::devices::virtio::DeviceEventHandler;

impl DeviceEventHandler for VirtioVsock {
    fn init_events(&mut self, ops: &mut EventOps) {
        self.queues.watch(ops);
        let fd = self.handler.muxer.epoll_fd();
        self.queues
            .watch_backend(ops, fd, EventSet::IN, "the vsock sockets");
    }

    fn process_event(&mut self, events: Events, _ops: &mut EventOps) {
        match self.queues.take_event(events.data()) {
            // The event queue's notifications only run RX, like the muxer's.
            Some(DeviceEvent::Queue(TXQ) | DeviceEvent::Activate) => self.process(&[TXQ, RXQ]),
            Some(DeviceEvent::Queue(_)) => self.process(&[RXQ]),
            Some(DeviceEvent::Backend) => {
                self.handler.muxer.process_host_events();
                self.process(&[RXQ]);
            }
            None => {}
        }
    }
}
