//! Devices the guest sees: the buses, COM1 (and [`capped_log`], the writer that keeps its log file
//! bounded), the i8042 reset line, the husk control page and the virtio-mmio devices.
//!
//! Devices never call KVM; interrupts go out through eventfds the VM registered as irqfds.

pub mod bus;
pub mod capped_log;
pub mod control;
pub mod legacy;
pub mod serial;
pub mod virtio;
