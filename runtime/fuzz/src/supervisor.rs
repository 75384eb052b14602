//! `runtime/src/supervisor`, without its `mod.rs` (which boots VMs).

#[path = "../../src/supervisor/agent.rs"]
pub mod agent;
#[path = "../../src/supervisor/oom.rs"]
pub mod oom;
#[path = "../../src/supervisor/podspec.rs"]
pub mod podspec;
#[path = "../../src/supervisor/server.rs"]
pub mod server;
#[path = "../../src/supervisor/stdio.rs"]
pub mod stdio;
