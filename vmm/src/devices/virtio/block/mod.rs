//! virtio-blk over a raw image file or block device: read, write, flush, GET_ID (the disk's
//! serial, how the agent finds a disk), discard and write-zeroes.
//!
//! [`device`] holds features, config space and activation; [`handler`] the pure request
//! processing; [`event_handler`] the event-loop glue.

pub mod device;
pub mod event_handler;
pub mod handler;

pub use device::{BlockError, VirtioBlock};
