//! Devices the guest sees: the buses, COM1, the i8042 reset line, the husk control page and the
//! virtio-mmio devices.
//!
//! Devices never call KVM; interrupts go out through eventfds the VM registered as irqfds.

pub mod bus;
pub mod control;
pub mod legacy;
pub mod serial;
pub mod virtio;
