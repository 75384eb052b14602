//! What every device keeps for the transport's side of its life: the eventfds its queues and its
//! activation are signalled through, the features the driver accepted, and, from activation to
//! reset, the queues, the interrupt and whether a queue error stopped them. Also the event-loop
//! glue for those eventfds, and the whole glue for devices that have no other fd.
//!
//! Must not touch: request processing (the devices' handlers), the transport's registers.

use std::os::fd::RawFd;

use event_manager::{EventOps, Events};
use virtio_queue::Queue;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{watch, ActivateError, DeviceEventHandler, Interrupt, QueueError};
use crate::logging::ratelimited;
use crate::memory::GuestMemoryMmap;

/// A ready fd of a device, as [`DeviceQueues::take_event`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The driver notified queue `n`.
    Queue(usize),
    /// The transport activated the device.
    Activate,
    /// The fd registered with [`DeviceQueues::watch_backend`] is ready.
    Backend,
}

/// The queues of one device and what comes with them (see the module header).
pub struct DeviceQueues {
    name: &'static str,
    queue_evts: Vec<EventFd>,
    activate_evt: EventFd,
    mem: GuestMemoryMmap,
    acked: u64,
    queues: Vec<Queue>,
    interrupt: Option<Interrupt>,
    broken: bool,
}

impl DeviceQueues {
    /// `count` queues of the device `name` (as log lines call it) for a guest with memory `mem`.
    pub fn new(name: &'static str, count: usize, mem: GuestMemoryMmap) -> std::io::Result<Self> {
        let queue_evts = (0..count)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            name,
            queue_evts,
            activate_evt: EventFd::new(EFD_NONBLOCK)?,
            mem,
            acked: 0,
            queues: Vec::new(),
            interrupt: None,
            broken: false,
        })
    }

    /// The eventfd each queue is notified through, in queue order.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked
    }

    /// The driver accepted `features`.
    pub fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    /// Takes the queues (exactly one per queue eventfd) and the interrupt, and wakes the event
    /// loop to process whatever the driver queued already.
    pub fn activate(
        &mut self,
        queues: Vec<Queue>,
        interrupt: Interrupt,
    ) -> Result<(), ActivateError> {
        if queues.len() != self.queue_evts.len() {
            return Err(ActivateError::QueueCount {
                expected: self.queue_evts.len(),
                got: queues.len(),
            });
        }
        self.queues = queues;
        self.interrupt = Some(interrupt);
        self.broken = false;
        self.activate_evt.write(1).map_err(ActivateError::Signal)
    }

    /// Drops the queues, the interrupt and the accepted features (device reset).
    pub fn reset(&mut self) {
        self.queues.clear();
        self.interrupt = None;
        self.broken = false;
        self.acked = 0;
    }

    /// Runs `work(index, queue, mem)` on the queues `order` names, in that order, if the device
    /// is active and no queue error stopped it. `work` returns whether the driver must be
    /// interrupted; the first error stops the remaining queues and, until the driver resets the
    /// device, all of them (used buffers from before the error are still signalled).
    pub fn process<F>(&mut self, order: &[usize], mut work: F)
    where
        F: FnMut(usize, &mut Queue, &GuestMemoryMmap) -> Result<bool, QueueError>,
    {
        if self.broken || self.queues.len() != self.queue_evts.len() {
            return;
        }
        let Some(interrupt) = self.interrupt.as_ref() else {
            return;
        };
        let mut notify = false;
        let mut result = Ok(());
        for &i in order {
            match work(i, &mut self.queues[i], &self.mem) {
                Ok(n) => notify |= n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if notify {
            interrupt.signal_used_queue();
        }
        if let Err(e) = result {
            let what = if self.queues.len() == 1 {
                "queue"
            } else {
                "queues"
            };
            ratelimited!(
                WARN,
                "{}: {what} stopped until the driver resets it: {e}",
                self.name
            );
            self.broken = true;
        }
    }

    /// Registers the queue eventfds (tagged with their index) and the activation eventfd (tagged
    /// with the queue count).
    pub fn watch(&self, ops: &mut EventOps) {
        for (i, evt) in self.queue_evts.iter().enumerate() {
            watch(ops, evt, i as u32, &format!("{} queue", self.name));
        }
        watch(
            ops,
            &self.activate_evt,
            self.activate_tag(),
            &format!("{} activation", self.name),
        );
    }

    /// Registers the device's backend fd (a TAP, the vsock muxer's epoll set) for `events`,
    /// tagged after the activation eventfd; `what` names it in the error log.
    pub fn watch_backend(&self, ops: &mut EventOps, fd: RawFd, events: EventSet, what: &str) {
        if let Err(e) = ops.add(Events::with_data_raw(fd, self.activate_tag() + 1, events)) {
            ratelimited!(ERROR, "cannot watch {what}: {e}");
        }
    }

    /// Names the fd tagged `data` and, for an eventfd, consumes its count; `None` for a tag that
    /// is not one of ours.
    pub fn take_event(&self, data: u32) -> Option<DeviceEvent> {
        let activate = self.activate_tag();
        if data < activate {
            let _ = self.queue_evts[data as usize].read();
            Some(DeviceEvent::Queue(data as usize))
        } else if data == activate {
            let _ = self.activate_evt.read();
            Some(DeviceEvent::Activate)
        } else if data == activate + 1 {
            Some(DeviceEvent::Backend)
        } else {
            None
        }
    }

    fn activate_tag(&self) -> u32 {
        self.queue_evts.len() as u32
    }
}

/// A device whose only fds are its queue and activation eventfds, every one of which means "run
/// the queues" (virtio-blk, virtio-rng). Implementing this is its whole event-loop glue.
pub trait QueueOnlyDevice: Send {
    /// The device's queues.
    fn device_queues(&self) -> &DeviceQueues;
    /// Processes the queues (through [`DeviceQueues::process`]).
    fn process_queues(&mut self);
}

impl<D: QueueOnlyDevice> DeviceEventHandler for D {
    fn init_events(&mut self, ops: &mut EventOps) {
        self.device_queues().watch(ops);
    }

    fn process_event(&mut self, events: Events, _ops: &mut EventOps) {
        if let Some(DeviceEvent::Queue(_) | DeviceEvent::Activate) =
            self.device_queues().take_event(events.data())
        {
            self.process_queues();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::mem;
    use virtio_queue::QueueT;

    fn irq() -> Interrupt {
        Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap())
    }

    fn queues(n: usize) -> Vec<Queue> {
        (0..n).map(|_| Queue::new(16).unwrap()).collect()
    }

    #[test]
    fn activation_needs_one_queue_per_eventfd() {
        let mut q = DeviceQueues::new("test", 1, mem()).unwrap();
        assert!(q.activate(vec![], irq()).is_err());
        assert!(q.activate(queues(2), irq()).is_err());
        q.ack_features(7);
        q.activate(queues(1), irq()).unwrap();
        assert_eq!(q.activate_evt.read().unwrap(), 1);
        q.reset();
        assert!(q.queues.is_empty());
        assert_eq!(q.acked_features(), 0);
    }

    #[test]
    fn a_queue_error_stops_the_queues_until_reset() {
        let mut q = DeviceQueues::new("test", 2, mem()).unwrap();
        let irq = irq();
        let mut ran = Vec::new();
        // Not active yet: nothing runs.
        q.process(&[0, 1], |i, _, _| {
            ran.push(i);
            Ok(true)
        });
        assert!(ran.is_empty());
        q.activate(queues(2), irq.clone()).unwrap();
        q.process(&[1, 0, 1], |i, _, _| {
            ran.push(i);
            if i == 0 {
                Err(QueueError::BadAvailIndex)
            } else {
                Ok(true)
            }
        });
        assert_eq!(ran, [1, 0]);
        // What was used before the error is still signalled.
        assert_eq!(irq.irqfd().read().unwrap(), 1);
        q.process(&[1], |i, _, _| {
            ran.push(i);
            Ok(true)
        });
        assert_eq!(ran, [1, 0]);
        q.reset();
        q.activate(queues(2), irq.clone()).unwrap();
        q.process(&[1], |i, _, _| {
            ran.push(i);
            Ok(false)
        });
        assert_eq!(ran, [1, 0, 1]);
        assert!(irq.irqfd().read().is_err());
    }

    #[test]
    fn events_are_named_by_tag_and_consumed() {
        let q = DeviceQueues::new("test", 2, mem()).unwrap();
        q.queue_events()[1].write(1).unwrap();
        assert_eq!(q.take_event(1), Some(DeviceEvent::Queue(1)));
        assert!(q.queue_events()[1].read().is_err());
        q.activate_evt.write(1).unwrap();
        assert_eq!(q.take_event(2), Some(DeviceEvent::Activate));
        assert!(q.activate_evt.read().is_err());
        assert_eq!(q.take_event(3), Some(DeviceEvent::Backend));
        assert_eq!(q.take_event(4), None);
    }
}
