//! The sandbox's network: the caller's network namespace (podman, CNI, containerd put a veth
//! in it) wired into the microVM. `crate::net` does the host side (a TAP per interface, tc
//! mirred redirects both ways); this module decides when, records what `husk delete` must
//! undo, hands the guest the interfaces' MACs, addresses, MTUs, routes and neighbours through
//! the agent, and rewrites the spec so the container uses the guest namespace that holds them.
//!
//! - A `network` namespace with a `path`: wired; the container uses the sandbox's (guest's
//!   initial) network namespace, where the NICs are (its path becomes [`SANDBOX_NET`]).
//! - A `network` namespace without a path (`--network none`, runc's default spec): nothing is
//!   wired; the container gets a namespace of its own in the guest, loopback only.
//! - No `network` namespace (host network, `podman --network host`): a VM cannot share the
//!   host's network stack. husk does not refuse (Kata does): the container runs in the guest's
//!   own namespace, which has loopback only, and supervisor.log says so.
//!
//! Owns: the record `<state>/network.json` and the spec's network namespace entry.

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use husk_agent::protocol as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::agent::AgentClient;
use crate::net::{self, HostInterface, Neighbour, Route, Scope, Wired, WiredNames};

/// The record of what was wired, for `husk delete`.
pub const RECORD: &str = "network.json";

/// What `husk delete` needs to undo the wiring.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The caller's network namespace.
    pub netns: PathBuf,
    /// The interfaces and their TAPs.
    pub names: WiredNames,
}

/// How the spec asks for the container's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The caller's namespace, to be wired.
    Caller(PathBuf),
    /// A namespace of its own: loopback only.
    Private,
    /// No network namespace: the host's network, which a VM cannot share.
    Host,
}

/// Reads the spec's network namespace entry.
pub fn mode(spec: &Value) -> Mode {
    let entry = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .and_then(|nss| nss.iter().find(|ns| ns["type"] == "network"));
    match entry {
        None => Mode::Host,
        Some(ns) => match ns["path"].as_str() {
            Some(p) if !p.is_empty() => Mode::Caller(p.into()),
            _ => Mode::Private,
        },
    }
}

/// Wires the caller's namespace when the spec names one, and records it in `dir` first thing
/// after (so a failure later, or a `kill -9`, still leaves `delete` what to undo).
pub fn wire(spec: &Value, id: &str, dir: &Path) -> Result<Option<Wired>, String> {
    let netns = match mode(spec) {
        Mode::Caller(p) => p,
        Mode::Private => return Ok(None),
        Mode::Host => {
            tracing::warn!(
                "the spec has no network namespace (host network): a VM cannot share the \
                 host's network stack; the container gets the guest's, loopback only"
            );
            return Ok(None);
        }
    };
    let wired = net::inspect_and_wire(&netns, id).map_err(|e| e.to_string())?;
    for s in &wired.skipped {
        tracing::info!(link = %s.name, reason = %s.reason, "not wired");
    }
    let record = Record {
        netns: netns.clone(),
        names: wired.names(),
    };
    let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    if let Err(e) = crate::state::write_atomic(&dir.join(RECORD), &json) {
        let _ = net::teardown(&netns, &record.names);
        return Err(format!("{}: {e}", dir.join(RECORD).display()));
    }
    tracing::info!(
        netns = %netns.display(),
        interfaces = wired.interfaces.len(),
        routes = wired.routes.len(),
        neighbours = wired.neighbours.len(),
        "network namespace wired"
    );
    Ok(Some(wired))
}

/// What the guest must be told about the wired namespace, once the TAP fds went to the VMM.
#[derive(Debug, Clone, Default)]
pub struct GuestNet {
    /// The host interfaces, as the guest NICs must become.
    pub interfaces: Vec<HostInterface>,
    /// The namespace's routes.
    pub routes: Vec<Route>,
    /// Its permanent and reachable neighbours.
    pub neighbours: Vec<Neighbour>,
}

/// Splits the wiring into the TAP fds with their MACs (for the VMM) and what the guest is told.
pub fn split(wired: Wired) -> (Vec<(OwnedFd, String)>, GuestNet) {
    let mut taps = Vec::new();
    let mut interfaces = Vec::new();
    for w in wired.interfaces {
        taps.push((w.tap_fd, w.config.mac.clone()));
        interfaces.push(w.config);
    }
    let guest = GuestNet {
        interfaces,
        routes: wired.routes,
        neighbours: wired.neighbours,
    };
    (taps, guest)
}

/// Undoes the wiring recorded in `dir` (TAPs, ingress qdiscs and filters), if any; the
/// namespace itself is the caller's and stays. Removes the record once done.
pub fn teardown_recorded(dir: &Path) -> Result<(), String> {
    let path = dir.join(RECORD);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let record: Record =
        serde_json::from_slice(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    net::teardown(&record.netns, &record.names).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// The agent's name for the sandbox's network namespace: the guest's initial one (its PID
/// 1's), where the NICs are (`husk_agent::namespaces::SANDBOX_NET`).
pub const SANDBOX_NET: &str = "/proc/1/ns/net";

/// The spec the agent gets: with the caller's namespace wired, the container uses the guest's
/// initial network namespace (where the NICs are), so the entry's path becomes
/// [`SANDBOX_NET`] (the container has the caller's namespace as runc would join it: its
/// `net.*` sysctls apply there); a path-less entry stays (a private namespace in the guest).
pub fn map_spec(spec: &mut Value) {
    let Some(nss) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for ns in nss.iter_mut() {
        if ns["type"] == "network" && ns["path"].as_str().is_some_and(|p| !p.is_empty()) {
            ns["path"] = SANDBOX_NET.into();
        }
    }
}

/// Makes the guest's NICs what the host's interfaces were: each NIC (found by the MAC the VMM
/// gave it) gets the interface's name, MTU, addresses and up state; then the routes and the
/// neighbours. Errors name the interface or the step.
pub fn configure_guest(agent: &AgentClient, wired: &GuestNet) -> Result<(), String> {
    for c in &wired.interfaces {
        let req = pb::UpdateInterfaceRequest {
            mac: c.mac.clone(),
            new_name: c.name.clone(),
            mtu: c.mtu,
            addresses: c
                .addresses
                .iter()
                .map(|a| ip(a.address, a.prefix))
                .collect(),
            state: if c.up {
                pb::LinkState::LINK_STATE_UP
            } else {
                pb::LinkState::LINK_STATE_DOWN
            }
            .into(),
            ..Default::default()
        };
        agent
            .update_interface(&req)
            .map_err(|e| format!("guest interface {} ({}): {e}", c.name, c.mac))?;
    }
    if !wired.routes.is_empty() {
        agent
            .update_routes(routes(wired))
            .map_err(|e| format!("guest routes: {e}"))?;
    }
    if !wired.neighbours.is_empty() {
        agent
            .update_neighbors(neighbours(wired))
            .map_err(|e| format!("guest neighbours: {e}"))?;
    }
    Ok(())
}

fn ip(address: IpAddr, prefix: u8) -> pb::IpAddress {
    pb::IpAddress {
        address: address.to_string(),
        prefix: prefix.into(),
        ..Default::default()
    }
}

fn routes(wired: &GuestNet) -> Vec<pb::Route> {
    wired
        .routes
        .iter()
        .map(|r| {
            if r.onlink || r.metric.is_some() {
                tracing::debug!(
                    destination = %r.destination,
                    "the guest route drops onlink/metric (not in the agent protocol)"
                );
            }
            pb::Route {
                destination: if r.destination.prefix == 0 {
                    "default".into()
                } else {
                    r.destination.address.to_string()
                },
                prefix: r.destination.prefix.into(),
                gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                device: r.device.clone().unwrap_or_default(),
                source: r.source.map(|s| s.to_string()).unwrap_or_default(),
                scope: match r.scope {
                    Scope::Universe => pb::RouteScope::ROUTE_SCOPE_UNIVERSE,
                    Scope::Link => pb::RouteScope::ROUTE_SCOPE_LINK,
                    Scope::Host => pb::RouteScope::ROUTE_SCOPE_HOST,
                    Scope::Site | Scope::Nowhere => pb::RouteScope::ROUTE_SCOPE_DEFAULT,
                }
                .into(),
                nexthops: r
                    .nexthops
                    .iter()
                    .map(|h| pb::NextHop {
                        gateway: h.gateway.map(|g| g.to_string()).unwrap_or_default(),
                        device: h.device.clone(),
                        weight: h.weight.into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        })
        .collect()
}

fn neighbours(wired: &GuestNet) -> Vec<pb::Neighbor> {
    wired
        .neighbours
        .iter()
        .map(|n| pb::Neighbor {
            address: n.address.to_string(),
            device: n.device.clone(),
            lladdr: n.mac.clone(),
            state: if n.permanent {
                pb::NeighborState::NEIGHBOR_STATE_PERMANENT
            } else {
                pb::NeighborState::NEIGHBOR_STATE_REACHABLE
            }
            .into(),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_mode_follows_the_network_entry() {
        let with = |nss: Value| json!({"linux": {"namespaces": nss}});
        assert_eq!(
            mode(&with(
                json!([{"type": "network", "path": "/run/netns/cni-1"}])
            )),
            Mode::Caller("/run/netns/cni-1".into())
        );
        assert_eq!(mode(&with(json!([{"type": "network"}]))), Mode::Private);
        assert_eq!(
            mode(&with(json!([{"type": "network", "path": ""}]))),
            Mode::Private
        );
        assert_eq!(mode(&with(json!([{"type": "pid"}]))), Mode::Host);
        assert_eq!(mode(&json!({})), Mode::Host);
    }

    #[test]
    fn a_wired_network_entry_names_the_sandbox_namespace() {
        let mut spec = json!({"linux": {"namespaces": [
            {"type": "network", "path": "/run/netns/cni-1"},
            {"type": "ipc", "path": "/proc/1/ns/ipc"},
            {"type": "pid"}
        ]}});
        map_spec(&mut spec);
        assert_eq!(
            spec["linux"]["namespaces"],
            json!([
                {"type": "network", "path": SANDBOX_NET},
                {"type": "ipc", "path": "/proc/1/ns/ipc"},
                {"type": "pid"}
            ])
        );
        assert_eq!(SANDBOX_NET, husk_agent::namespaces::SANDBOX_NET);
        let mut private = json!({"linux": {"namespaces": [{"type": "network"}]}});
        map_spec(&mut private);
        assert_eq!(private["linux"]["namespaces"], json!([{"type": "network"}]));
    }

    #[test]
    fn no_record_means_nothing_to_undo() {
        let dir = tempfile::tempdir().unwrap();
        teardown_recorded(dir.path()).unwrap();
        std::fs::write(dir.path().join(RECORD), b"{").unwrap();
        let err = teardown_recorded(dir.path()).unwrap_err();
        assert!(err.contains(RECORD), "{err}");
    }
}
