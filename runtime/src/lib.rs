//! husk: the runc-compatible CLI over KVM microVMs, as a library: the `husk` binary and the
//! containerd shim (`containerd-shim-husk-v2`) are both thin `main`s over it.
//!
//! Layout: `cli` (one module per verb) over `state` (the root directory, status, locks),
//! `bundle` (config.json checks), `control` (the supervisor's socket protocol), `rootfs`
//! (what kind of rootfs a bundle has), `sockpath` (socket paths of any length), `config`
//! (/etc/husk/config.toml), `supervisor` (the per-sandbox process that holds the VM) and
//! `shim` (the containerd shim, which runs the husk binary's verbs as runc's shim runs runc).
//! `anyhow` only in the verbs.

pub mod bundle;
pub mod cli;
pub mod config;
pub mod control;
pub mod hooks;
pub mod hostcg;
pub mod logger;
pub mod net;
pub mod perms;
pub mod rootfs;
pub mod shim;
pub mod sockpath;
pub mod state;
pub mod supervisor;
pub mod timefmt;
pub mod tty;
