//! Conversions between wire messages (`protocol`) and domain types. Nothing else.

use std::collections::HashMap;

use crate::cgroup::Cgroup;
use crate::net::{self, NetError};
use crate::protocol as pb;
use crate::storage::{Storage, StorageError};

/// The request's storages, validated (errors name `storages[i].<field>`).
pub fn storages(list: &[pb::Storage]) -> Result<Vec<Storage>, StorageError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| Storage::from_pb("storages", i, s))
        .collect()
}

fn clamp_max(v: Option<u64>) -> u64 {
    match v {
        Some(u64::MAX) | None => 0,
        Some(v) => v,
    }
}

/// Stats of a container's cgroup; absent controllers leave their message unset.
pub fn stats(cg: &Cgroup) -> pb::StatsContainerResponse {
    let mut r = pb::StatsContainerResponse::new();
    let cpu = cg.read_flat("cpu.stat");
    let get = |m: &HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    r.cpu = protobuf::MessageField::some(pb::CpuStats {
        usage_usec: get(&cpu, "usage_usec"),
        user_usec: get(&cpu, "user_usec"),
        system_usec: get(&cpu, "system_usec"),
        nr_throttled: get(&cpu, "nr_throttled"),
        throttled_usec: get(&cpu, "throttled_usec"),
        ..Default::default()
    });
    if let Some(usage) = cg.read_value("memory.current") {
        let events = cg.read_flat("memory.events");
        r.memory = protobuf::MessageField::some(pb::MemoryStats {
            usage,
            limit: clamp_max(cg.read_value("memory.max")),
            max_usage: cg.read_value("memory.peak").unwrap_or(0),
            oom_kill: get(&events, "oom_kill"),
            stat: cg.read_flat("memory.stat"),
            ..Default::default()
        });
    }
    if let Some(current) = cg.read_value("pids.current") {
        r.pids = protobuf::MessageField::some(pb::PidsStats {
            current,
            limit: clamp_max(cg.read_value("pids.max")),
            ..Default::default()
        });
    }
    if cg.path().join("io.stat").exists() {
        let (rb, wb, ri, wi) = cg.io_totals();
        r.io = protobuf::MessageField::some(pb::IoStats {
            read_bytes: rb,
            write_bytes: wb,
            read_ios: ri,
            write_ios: wi,
            ..Default::default()
        });
    }
    r
}

/// Guest details from /proc.
pub fn guest_details() -> pb::GuestDetailsResponse {
    let mem_total_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    pb::GuestDetailsResponse {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        mem_total_bytes,
        online_cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        ..Default::default()
    }
}

/// A validated UpdateInterface request (errors name the request field).
pub fn interface_update(
    req: &pb::UpdateInterfaceRequest,
) -> Result<net::InterfaceUpdate, NetError> {
    let name = (!req.name.is_empty()).then(|| req.name.clone());
    if let Some(n) = &name {
        net::check_ifname("name", n)?;
    }
    let mac = (!req.mac.is_empty())
        .then(|| net::parse_mac("mac", &req.mac))
        .transpose()?;
    let new_name = (!req.new_name.is_empty()).then(|| req.new_name.clone());
    if let Some(n) = &new_name {
        net::check_ifname("new_name", n)?;
    }
    if req.mtu != 0 && !(68..=65535).contains(&req.mtu) {
        return Err(NetError::Invalid {
            field: "mtu".into(),
            reason: format!("{} is outside 68..65535", req.mtu),
        });
    }
    let addresses = req
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| net::IpNet::parse(&format!("addresses[{i}]"), &a.address, a.prefix))
        .collect::<Result<Vec<_>, _>>()?;
    let up = match req.state.enum_value() {
        Ok(pb::LinkState::LINK_STATE_UNCHANGED) => None,
        Ok(pb::LinkState::LINK_STATE_UP) => Some(true),
        Ok(pb::LinkState::LINK_STATE_DOWN) => Some(false),
        Err(v) => {
            return Err(NetError::Invalid {
                field: "state".into(),
                reason: format!("unknown link state {v}"),
            })
        }
    };
    Ok(net::InterfaceUpdate {
        name,
        mac,
        new_name,
        mtu: (req.mtu != 0).then_some(req.mtu),
        addresses,
        up,
    })
}

pub fn interface(i: &net::Interface) -> pb::Interface {
    pb::Interface {
        name: i.link.name.clone(),
        mac: net::format_mac(&i.link.mac),
        mtu: i.link.mtu,
        addresses: i
            .addresses
            .iter()
            .map(|a| pb::IpAddress {
                address: a.addr.to_string(),
                prefix: a.prefix.into(),
                ..Default::default()
            })
            .collect(),
        up: i.link.up,
        index: i.link.index,
        ..Default::default()
    }
}

/// Validated UpdateRoutes routes (errors name `routes[i].<field>`).
pub fn routes(list: &[pb::Route]) -> Result<Vec<net::Route>, NetError> {
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let f = format!("routes[{i}]");
            let dest = match r.destination.as_str() {
                "" | "default" if r.prefix == 0 => None,
                "" | "default" => {
                    return Err(NetError::Invalid {
                        field: format!("{f}.prefix"),
                        reason: format!("{} given for a default route", r.prefix),
                    })
                }
                d => Some(net::IpNet::parse(&f, d, r.prefix)?),
            };
            // 0.0.0.0/0 and ::/0 are default routes too.
            let ipv6_default = dest.is_some_and(|d| d.addr.is_ipv6());
            let dest = dest.filter(|d| d.prefix != 0);
            let opt_ip = |name: &str, s: &str| {
                (!s.is_empty())
                    .then(|| net::parse_ip(&format!("{f}.{name}"), s))
                    .transpose()
            };
            let device = (!r.device.is_empty()).then(|| r.device.clone());
            if let Some(d) = &device {
                net::check_ifname(&format!("{f}.device"), d)?;
            }
            let scope = match r.scope.enum_value() {
                Ok(pb::RouteScope::ROUTE_SCOPE_DEFAULT) => net::Scope::Default,
                Ok(pb::RouteScope::ROUTE_SCOPE_UNIVERSE) => net::Scope::Universe,
                Ok(pb::RouteScope::ROUTE_SCOPE_LINK) => net::Scope::Link,
                Ok(pb::RouteScope::ROUTE_SCOPE_HOST) => net::Scope::Host,
                Err(v) => {
                    return Err(NetError::Invalid {
                        field: format!("{f}.scope"),
                        reason: format!("unknown scope {v}"),
                    })
                }
            };
            let nexthops = r
                .nexthops
                .iter()
                .enumerate()
                .map(|(j, h)| nexthop(&format!("{f}.nexthops[{j}]"), h))
                .collect::<Result<Vec<_>, _>>()?;
            let route = net::Route {
                dest,
                gateway: opt_ip("gateway", &r.gateway)?,
                device,
                source: opt_ip("source", &r.source)?,
                scope,
                ipv6_default,
                nexthops,
            };
            route.check(&f)?;
            Ok(route)
        })
        .collect()
}

/// One next hop of a multipath route (errors name `<f>.<field>`).
fn nexthop(f: &str, h: &pb::NextHop) -> Result<net::NextHop, NetError> {
    let gateway = (!h.gateway.is_empty())
        .then(|| net::parse_ip(&format!("{f}.gateway"), &h.gateway))
        .transpose()?;
    let device = (!h.device.is_empty()).then(|| h.device.clone());
    if let Some(d) = &device {
        net::check_ifname(&format!("{f}.device"), d)?;
    }
    let weight = match h.weight {
        0 => 1,
        w @ 1..=256 => w as u16,
        w => {
            return Err(NetError::Invalid {
                field: format!("{f}.weight"),
                reason: format!("{w} is outside 1..256"),
            })
        }
    };
    Ok(net::NextHop {
        gateway,
        device,
        weight,
    })
}

pub fn route(r: &net::Route) -> pb::Route {
    let scope = match r.scope {
        net::Scope::Default => pb::RouteScope::ROUTE_SCOPE_DEFAULT,
        net::Scope::Universe => pb::RouteScope::ROUTE_SCOPE_UNIVERSE,
        net::Scope::Link => pb::RouteScope::ROUTE_SCOPE_LINK,
        net::Scope::Host => pb::RouteScope::ROUTE_SCOPE_HOST,
    };
    pb::Route {
        destination: r.dest.map_or("default".into(), |d| d.addr.to_string()),
        prefix: r.dest.map_or(0, |d| d.prefix.into()),
        gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
        device: r.device.clone().unwrap_or_default(),
        source: r.source.map(|s| s.to_string()).unwrap_or_default(),
        scope: scope.into(),
        nexthops: r
            .nexthops
            .iter()
            .map(|h| pb::NextHop {
                gateway: h.gateway.map(|g| g.to_string()).unwrap_or_default(),
                device: h.device.clone().unwrap_or_default(),
                weight: h.weight.into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn neighbour_state(s: pb::NeighborState) -> net::NeighbourState {
    use net::NeighbourState as N;
    use pb::NeighborState as P;
    match s {
        P::NEIGHBOR_STATE_PERMANENT => N::Permanent,
        P::NEIGHBOR_STATE_REACHABLE => N::Reachable,
        P::NEIGHBOR_STATE_STALE => N::Stale,
        P::NEIGHBOR_STATE_NOARP => N::Noarp,
        P::NEIGHBOR_STATE_INCOMPLETE => N::Incomplete,
        P::NEIGHBOR_STATE_DELAY => N::Delay,
        P::NEIGHBOR_STATE_PROBE => N::Probe,
        P::NEIGHBOR_STATE_FAILED => N::Failed,
        P::NEIGHBOR_STATE_NONE => N::None,
    }
}

/// Validated UpdateNeighbors entries (errors name `neighbors[i].<field>`; the state, flags and
/// device are checked by `net::update_neighbours`).
pub fn neighbours(list: &[pb::Neighbor]) -> Result<Vec<net::Neighbour>, NetError> {
    list.iter()
        .enumerate()
        .map(|(i, n)| {
            let f = format!("neighbors[{i}]");
            if n.address.is_empty() {
                return Err(NetError::Invalid {
                    field: format!("{f}.address"),
                    reason: "required".into(),
                });
            }
            let addr = net::parse_ip(&format!("{f}.address"), &n.address)?;
            net::check_ifname(&format!("{f}.device"), &n.device)?;
            let lladdr = net::parse_mac(&format!("{f}.lladdr"), &n.lladdr)?;
            let state = n.state.enum_value().map_err(|v| NetError::Invalid {
                field: format!("{f}.state"),
                reason: format!("unknown state {v}"),
            })?;
            let flags = u8::try_from(n.flags).map_err(|_| NetError::Invalid {
                field: format!("{f}.flags"),
                reason: format!("{:#x} is not an 8-bit NTF_* set", n.flags),
            })?;
            Ok(net::Neighbour {
                addr,
                device: n.device.clone(),
                lladdr,
                state: neighbour_state(state),
                flags: net::NeighbourFlags::from_bits_retain(flags),
            })
        })
        .collect()
}

pub fn neighbour(n: &net::Neighbour) -> pb::Neighbor {
    use net::NeighbourState as N;
    use pb::NeighborState as P;
    let state = match n.state {
        N::Permanent => P::NEIGHBOR_STATE_PERMANENT,
        N::Reachable => P::NEIGHBOR_STATE_REACHABLE,
        N::Stale => P::NEIGHBOR_STATE_STALE,
        N::Noarp => P::NEIGHBOR_STATE_NOARP,
        N::Incomplete => P::NEIGHBOR_STATE_INCOMPLETE,
        N::Delay => P::NEIGHBOR_STATE_DELAY,
        N::Probe => P::NEIGHBOR_STATE_PROBE,
        N::Failed => P::NEIGHBOR_STATE_FAILED,
        _ => P::NEIGHBOR_STATE_NONE,
    };
    pb::Neighbor {
        address: n.addr.to_string(),
        device: n.device.clone(),
        lladdr: net::format_mac(&n.lladdr),
        state: state.into(),
        flags: n.flags.bits().into(),
        ..Default::default()
    }
}
