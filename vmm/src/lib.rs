//! husk-vmm: the virtual machine monitor that boots husk's guests.
//!
//! It owns KVM, guest memory, the Linux boot protocol, vCPU threads and devices; it knows
//! nothing about containers. [`builder::run_vm`] runs one VM from a [`builder::VmConfig`].
//!
//! Layout: [`layout`] (addresses), [`memory`], [`boot`] (what is written before the first
//! `KVM_RUN`), [`vstate`] (the only KVM users), [`devices`], [`event_loop`], [`exit`],
//! [`host`] (can this host boot a stock kernel?), [`builder`] (the boot order), [`jail`] and
//! [`seccomp`] (what confines the VMM once its VM is built), [`logging`] (limits on the log
//! lines a guest can trigger).

pub mod boot;
pub mod builder;
pub mod devices;
pub mod event_loop;
pub mod exit;
pub mod host;
pub mod jail;
pub mod layout;
pub mod logging;
pub mod memory;
pub mod seccomp;
pub mod vstate;
