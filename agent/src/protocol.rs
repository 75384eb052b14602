//! The wire protocol, generated at build time from `protos/agent.proto`: message types
//! (`agent`), the ttrpc client `AgentServiceClient` and the server trait `AgentService`
//! (`agent_ttrpc`). The runtime links this module as its client; nothing here knows about
//! containers.

/// Protobuf messages.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    trivial_casts,
    unused_attributes,
    unused_mut,
    unused_results,
    unknown_lints
)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/protocol/agent.rs"));
}

/// ttrpc client, server trait and service registration.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    trivial_casts,
    unused_imports,
    unused_results,
    unknown_lints
)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/protocol/agent_ttrpc.rs"));
}

pub use agent::*;
pub use agent_ttrpc::{create_agent_service, AgentService, AgentServiceClient};
