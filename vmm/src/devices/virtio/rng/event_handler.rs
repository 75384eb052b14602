//! Event-loop glue for virtio-rng: the queue's ioeventfd and the activation eventfd, both of
//! which mean "process the queue" ([`QueueOnlyDevice`] does the rest).

use super::VirtioRng;
use crate::devices::virtio::queues::{DeviceQueues, QueueOnlyDevice};

impl QueueOnlyDevice for VirtioRng {
    fn device_queues(&self) -> &DeviceQueues {
        &self.queues
    }

    fn process_queues(&mut self) {
        self.queues
            .process(&[0], |_, queue, mem| self.handler.process_queue(queue, mem));
    }
}
