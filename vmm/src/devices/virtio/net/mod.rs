//! virtio-net on a TAP: MAC from the configuration, no offloads, frames copied once each way.
//!
//! [`tap`] opens the TAP, [`handler`] moves frames, [`device`] holds features, config space and
//! activation, [`event_handler`] is the event-loop glue.

pub mod device;
pub mod event_handler;
pub mod handler;
pub mod tap;

pub use device::{NetError, VirtioNet};
