//! virtio-vsock in user space (no vhost-vsock on husk's hosts), with Firecracker's hybrid
//! convention on the host: one Unix socket per VM.
//!
//! [`packet`] is the wire header, [`connection`] one stream's flow control, [`muxer`] the host
//! sockets and fair scheduling, [`handler`] the queues, [`device`] features/config/activation
//! and [`event_handler`] the event-loop glue.

pub mod connection;
pub mod device;
pub mod event_handler;
pub mod handler;
pub mod muxer;
pub mod packet;

pub use device::{VirtioVsock, VsockError};

#[cfg(test)]
mod tests;
