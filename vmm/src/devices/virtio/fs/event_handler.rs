//! Event-loop glue for virtio-fs. The queues' kick eventfds are not here: KVM writes them and
//! the backend reads them. The loop watches the call eventfds (the backend used buffers: raise
//! the device's interrupt, so the interrupt status register says why), the state eventfd
//! (activation or reset: [`VirtioFs::sync_backend`]) and the backend's socket, for a hang-up.

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;

use super::device::NUM_QUEUES;
use super::VirtioFs;
use crate::devices::virtio::{watch, DeviceEventHandler};
use crate::logging::ratelimited;

const STATE: u32 = NUM_QUEUES as u32;
const SOCKET: u32 = STATE + 1;

impl DeviceEventHandler for VirtioFs {
    fn init_events(&mut self, ops: &mut EventOps) {
        for (i, evt) in self.call_evts.iter().enumerate() {
            watch(ops, evt, i as u32, "virtio-fs call eventfd");
        }
        watch(ops, &self.state_evt, STATE, "virtio-fs state eventfd");
        // Only the hang-up: replies are read synchronously by the requests that expect them.
        let events =
            Events::with_data_raw(self.backend.socket_fd(), SOCKET, EventSet::READ_HANG_UP);
        if let Err(e) = ops.add(events) {
            ratelimited!(ERROR, "cannot watch the virtio-fs socket: {e}");
        }
    }

    fn process_event(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            i if i < STATE => {
                let _ = self.call_evts[i as usize].read();
                if let Some(irq) = &self.interrupt {
                    irq.signal_used_queue();
                }
            }
            STATE => {
                let _ = self.state_evt.read();
                self.sync_backend();
            }
            SOCKET => {
                ratelimited!(
                    ERROR,
                    "virtio-fs: the backend (virtiofsd) closed its socket; the guest's file \
                     system stops here"
                );
                self.gone = true;
                let _ = ops.remove(events);
            }
            _ => {}
        }
    }
}
