//! The runtime modules the fuzz targets drive, compiled from `runtime/src` as they are: the
//! control socket's wire format (`control`) and the supervisor's side of the agent (`supervisor`:
//! `agent` for `AgentError`, `server` for the stats conversion). The others are here only
//! because those name them (`crate::sockpath`, `crate::state`, `crate::perms`, `crate::tty`,
//! `super::oom`, ...).
//!
//! Owns nothing: if a runtime module gains a dependency on another one, add it here.

#![allow(dead_code)]

#[path = "../../src/control.rs"]
pub mod control;
#[path = "../../src/perms.rs"]
pub mod perms;
#[path = "../../src/sockpath.rs"]
pub mod sockpath;
#[path = "../../src/state.rs"]
pub mod state;
#[path = "../../src/tty.rs"]
pub mod tty;

pub mod supervisor;
