//! Event-loop glue for virtio-vsock: three queue eventfds, the activation eventfd and the
//! muxer's epoll fd (which stands for every host socket).

use event_manager::{EventOps, Events};

use super::device::{EVQ, RXQ, TXQ};
use super::VirtioVsock;
use crate::devices::virtio::{watch, DeviceEventHandler};

const ACTIVATE: u32 = 3;
const MUXER: u32 = 4;

impl DeviceEventHandler for VirtioVsock {
    fn init_events(&mut self, ops: &mut EventOps) {
        for (i, evt) in self.queue_evts.iter().enumerate() {
            watch(ops, evt, i as u32, "vsock queue");
        }
        watch(ops, &self.activate_evt, ACTIVATE, "vsock activation");
        let fd = self.handler.muxer.epoll_fd();
        if let Err(e) = ops.add(Events::with_data_raw(
            fd,
            MUXER,
            vmm_sys_util::epoll::EventSet::IN,
        )) {
            tracing::error!("cannot watch the vsock sockets: {e}");
        }
    }

    fn process_event(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            d if d == RXQ as u32 || d == TXQ as u32 || d == EVQ as u32 => {
                let _ = self.queue_evts[d as usize].read();
                self.process(d == TXQ as u32);
            }
            ACTIVATE => {
                let _ = self.activate_evt.read();
                self.process(true);
            }
            MUXER => {
                self.handler.muxer.process_host_events();
                self.process(false);
            }
            _ => {}
        }
    }
}
