//! virtio-fs (device type 26) over vhost-user: the guest's FUSE requests are served by
//! `virtiofsd`, a separate, self-sandboxing process that maps guest RAM from the memfd and
//! processes the queues itself; husk-vmm never touches the shared directory.
//!
//! [`device`] holds the config space, features and activation; [`backend`] is the vhost-user
//! frontend (the protocol session with virtiofsd); [`event_handler`] is the event-loop glue
//! (interrupt forwarding, activation and reset on the event loop). There is no queue handler:
//! the backend is the handler.

pub mod backend;
pub mod device;
pub mod event_handler;

pub use backend::{BackendError, FsBackend};
pub use device::{FsError, VirtioFs};

#[cfg(test)]
mod tests;
