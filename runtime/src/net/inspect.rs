//! Reading a network namespace over rtnetlink: its links (and which of them are wired), their
//! addresses, the main table's routes and the neighbour entries worth copying into the guest.
//!
//! Owns: the link selection rule and the translation of rtnetlink dumps into the plain structs
//! of `net`. Changes nothing.

use std::collections::HashMap;
use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHopFlags, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::rtnl::Rtnl;
use super::{IpNet, Neighbour, NetError, NextHop, Route, Scope};

/// The main routing table.
const RT_TABLE_MAIN: u32 = 254;

/// A link as read from the dump.
pub(super) struct Link {
    pub(super) index: u32,
    pub(super) name: String,
    pub(super) flags: LinkFlags,
    pub(super) layer: LinkLayerType,
    pub(super) mac: Option<Vec<u8>>,
    pub(super) mtu: u32,
    pub(super) kind: Option<InfoKind>,
    pub(super) controller: Option<u32>,
}

pub(super) fn dump_links(nl: &mut Rtnl) -> Result<Vec<Link>, NetError> {
    let msgs = nl
        .dump(|| RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .map_err(|source| NetError::Netlink {
            step: "dumping links",
            source,
        })?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .map(|l| {
            let mut link = Link {
                index: l.header.index,
                name: String::new(),
                flags: l.header.flags,
                layer: l.header.link_layer_type,
                mac: None,
                mtu: 0,
                kind: None,
                controller: None,
            };
            for a in l.attributes {
                match a {
                    LinkAttribute::IfName(n) => link.name = n,
                    LinkAttribute::Address(m) => link.mac = Some(m),
                    LinkAttribute::Mtu(m) => link.mtu = m,
                    LinkAttribute::Controller(c) => link.controller = Some(c),
                    LinkAttribute::LinkInfo(infos) => {
                        for i in infos {
                            if let LinkInfo::Kind(k) = i {
                                link.kind = Some(k);
                            }
                        }
                    }
                    _ => {}
                }
            }
            link
        })
        .collect())
}

/// Why a link is not wired; `None` when it is. Wired: every non-loopback link with an
/// Ethernet link layer and a MAC (veth, macvlan, ipvlan, vlan, a physical NIC or VF moved into
/// the namespace), except TAP/TUN devices (ours, another sandbox's), bridges (the traffic
/// belongs to their ports, which are not wired either) and links enslaved to a controller.
pub(super) fn skip_reason(link: &Link) -> Option<String> {
    if link.flags.contains(LinkFlags::Loopback) || link.layer == LinkLayerType::Loopback {
        return Some("loopback".into());
    }
    if link.layer != LinkLayerType::Ether {
        return Some(format!("not an Ethernet link (link type {})", link.layer));
    }
    match &link.mac {
        Some(m) if m.len() == 6 && m.iter().any(|&b| b != 0) => {}
        _ => return Some("no MAC address".into()),
    }
    match &link.kind {
        Some(InfoKind::Tun) => return Some("a TAP/TUN device".into()),
        Some(InfoKind::Bridge) => return Some("a bridge".into()),
        Some(InfoKind::Other(k)) if k == "openvswitch" => return Some("an OVS bridge".into()),
        _ => {}
    }
    if let Some(c) = link.controller {
        return Some(format!("enslaved to link {c}"));
    }
    None
}

pub(super) fn mac_string(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn is_v6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
}

pub(super) fn dump_addresses(nl: &mut Rtnl) -> Result<HashMap<u32, Vec<IpNet>>, NetError> {
    let msgs = nl
        .dump(|| RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .map_err(|source| NetError::Netlink {
            step: "dumping addresses",
            source,
        })?;
    let mut out: HashMap<u32, Vec<IpNet>> = HashMap::new();
    for m in msgs {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        let (mut address, mut local) = (None, None);
        for attr in &a.attributes {
            match attr {
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Local(ip) => local = Some(*ip),
                _ => {}
            }
        }
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on a
        // point-to-point link); IPv6 sends only IFA_ADDRESS.
        let Some(ip) = local.or(address) else {
            continue;
        };
        if is_v6_link_local(&ip) {
            continue;
        }
        out.entry(a.header.index).or_default().push(IpNet {
            address: ip,
            prefix: a.header.prefix_len,
        });
    }
    Ok(out)
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn scope_of(s: RouteScope) -> Scope {
    match s {
        RouteScope::Site => Scope::Site,
        RouteScope::Link => Scope::Link,
        RouteScope::Host => Scope::Host,
        RouteScope::NoWhere => Scope::Nowhere,
        _ => Scope::Universe,
    }
}

pub(super) fn dump_routes(
    nl: &mut Rtnl,
    wired: &HashMap<u32, String>,
) -> Result<Vec<Route>, NetError> {
    let msgs = nl
        .dump(|| RouteNetlinkMessage::GetRoute(RouteMessage::default()))
        .map_err(|source| NetError::Netlink {
            step: "dumping routes",
            source,
        })?;
    let mut out = Vec::new();
    'routes: for m in msgs {
        let RouteNetlinkMessage::NewRoute(r) = m else {
            continue;
        };
        let h = &r.header;
        let unspecified = match h.address_family {
            AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            _ => continue,
        };
        let mut table = u32::from(h.table);
        let mut route = Route {
            destination: IpNet {
                address: unspecified,
                prefix: h.destination_prefix_length,
            },
            gateway: None,
            device: None,
            source: None,
            scope: scope_of(h.scope),
            metric: None,
            onlink: h.flags.contains(RouteFlags::Onlink),
            nexthops: Vec::new(),
        };
        let mut oif = None;
        let mut hops = Vec::new();
        for attr in &r.attributes {
            match attr {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(d) => {
                    if let Some(ip) = route_ip(d) {
                        route.destination.address = ip;
                    }
                }
                RouteAttribute::Gateway(g) => route.gateway = route_ip(g),
                RouteAttribute::PrefSource(s) => route.source = route_ip(s),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Priority(p) => route.metric = Some(*p),
                RouteAttribute::MultiPath(nh) => hops.clone_from(nh),
                _ => {}
            }
        }
        // Only unicast routes of the main table that someone added; the kernel's own
        // (protocol kernel: prefix routes of addresses, IPv6 link-local and multicast) are
        // made again by the guest's kernel.
        if table != RT_TABLE_MAIN
            || h.kind != RouteType::Unicast
            || h.protocol == RouteProtocol::Kernel
        {
            continue;
        }
        if let Some(i) = oif {
            match wired.get(&i) {
                Some(name) => route.device = Some(name.clone()),
                None => {
                    tracing::debug!(
                        destination = %route.destination,
                        ifindex = i,
                        "route over a link that is not wired: left out"
                    );
                    continue;
                }
            }
        }
        for hop in &hops {
            let Some(name) = wired.get(&hop.interface_index) else {
                tracing::debug!(
                    destination = %route.destination,
                    ifindex = hop.interface_index,
                    "multipath route over a link that is not wired: left out"
                );
                continue 'routes;
            };
            let gateway = hop.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(g) => route_ip(g),
                _ => None,
            });
            route.nexthops.push(NextHop {
                gateway,
                device: name.clone(),
                weight: u16::from(hop.hops) + 1,
                onlink: hop.flags.contains(RouteNextHopFlags::Onlink),
            });
        }
        if route.device.is_none() && route.nexthops.is_empty() {
            continue;
        }
        out.push(route);
    }
    // Directly connected routes first: a gateway route needs the route to its gateway.
    out.sort_by_key(|r| r.gateway.is_some() || !r.nexthops.is_empty());
    Ok(out)
}

pub(super) fn dump_neighbours(
    nl: &mut Rtnl,
    wired: &HashMap<u32, String>,
) -> Result<Vec<Neighbour>, NetError> {
    let msgs = nl
        .dump(|| RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()))
        .map_err(|source| NetError::Netlink {
            step: "dumping neighbours",
            source,
        })?;
    let mut out = Vec::new();
    for m in msgs {
        let RouteNetlinkMessage::NewNeighbour(n) = m else {
            continue;
        };
        let permanent = match n.header.state {
            NeighbourState::Permanent => true,
            NeighbourState::Reachable => false,
            _ => continue,
        };
        let Some(device) = wired.get(&n.header.ifindex) else {
            continue;
        };
        let (mut address, mut mac) = (None, None);
        for attr in &n.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    address = Some(IpAddr::V4(*a));
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    address = Some(IpAddr::V6(*a));
                }
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                    mac = Some(mac_string(l))
                }
                _ => {}
            }
        }
        if let (Some(address), Some(mac)) = (address, mac) {
            out.push(Neighbour {
                address,
                mac,
                device: device.clone(),
                permanent,
            });
        }
    }
    Ok(out)
}
