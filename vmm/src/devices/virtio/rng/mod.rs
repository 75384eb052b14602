//! virtio-rng: entropy from the host's `/dev/urandom`, so the guest's crng does not stall boot.
//!
//! [`device`] holds features and activation; [`handler`] fills request buffers;
//! [`event_handler`] is the event-loop glue.

pub mod device;
pub mod event_handler;
pub mod handler;

pub use device::{RngError, VirtioRng};
