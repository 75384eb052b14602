//! husk-agent: the guest's PID 1 and the ttrpc server the runtime talks to.
//!
//! Layout: `protocol` (generated wire types and the client the runtime links), `rpc` (thin
//! handlers) over `sandbox` / `container` (domain), which use `spec`, `namespaces`, `mounts`,
//! `cgroup`, `process`, `spawn` and, in the cloned child, `init`; `net` configures the guest's
//! NIC and routes over rtnetlink. All kernel effects of mount
//! and namespace setup go through `syscall::Syscall`. `pid1` holds guest-only boot duties.
//! `client` is host-side: the hybrid-vsock handshake and signal names the agent's clients share.

pub mod protocol;

pub mod caps;
pub mod cgroup;
pub mod client;
pub mod container;
pub mod convert;
pub mod hooks;
pub mod init;
pub mod logbuf;
pub mod mounts;
pub mod namespaces;
pub mod net;
pub mod oom;
pub mod pid1;
pub mod process;
pub mod reaper;
pub mod rpc;
pub mod sandbox;
pub mod seccomp;
pub mod spawn;
pub mod spec;
pub mod stage;
pub mod storage;
pub mod syscall;
pub mod user;
