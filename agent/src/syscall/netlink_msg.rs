//! The rtnetlink messages the agent sends and the parts of the dumps it reads, as
//! `netlink-packet-route` values: requests built from the `net` types, replies turned back into
//! them. No sockets here (`netlink` sends and receives).

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteNextHop,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::net::{
    IpNet, Link, LinkAddress, LinkChange, NeighbourEntry, NextHopEntry, RouteEntry, RT_TABLE_MAIN,
};

fn family_of(a: &IpAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn route_address(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(v) => RouteAddress::Inet(v),
        IpAddr::V6(v) => RouteAddress::Inet6(v),
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

/// RTM_GETLINK for every link.
pub fn get_links() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

/// RTM_GETADDR for every family.
pub fn get_addresses() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetAddress(AddressMessage::default())
}

/// RTM_GETROUTE for every family and table.
pub fn get_routes() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetRoute(RouteMessage::default())
}

/// RTM_GETNEIGH for every family.
pub fn get_neighbours() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default())
}

/// RTM_NEWLINK on an existing link: name, MTU and IFF_UP (with its change mask) as `change`
/// says.
pub fn set_link(index: u32, change: &LinkChange) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    if let Some(up) = change.up {
        m.header.change_mask = LinkFlags::Up;
        if up {
            m.header.flags = LinkFlags::Up;
        }
    }
    if let Some(name) = &change.name {
        m.attributes.push(LinkAttribute::IfName(name.clone()));
    }
    if let Some(mtu) = change.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    RouteNetlinkMessage::NewLink(m)
}

/// RTM_NEWADDR / RTM_DELADDR of `net` on link `index` (IFA_LOCAL and IFA_ADDRESS, as
/// iproute2 sends them).
pub fn address_change(add: bool, index: u32, net: &IpNet) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = family_of(&net.addr);
    m.header.prefix_len = net.prefix;
    m.header.index = index;
    m.header.scope = if net.addr.is_loopback() {
        AddressScope::Host
    } else {
        AddressScope::Universe
    };
    m.attributes.push(AddressAttribute::Local(net.addr));
    m.attributes.push(AddressAttribute::Address(net.addr));
    if add {
        RouteNetlinkMessage::NewAddress(m)
    } else {
        RouteNetlinkMessage::DelAddress(m)
    }
}

/// RTM_NEWROUTE / RTM_DELROUTE in the main table, with RTA_MULTIPATH for a multipath route.
pub fn route_change(add: bool, r: &RouteEntry) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = r.family;
    m.header.destination_prefix_length = r.dest.map_or(0, |d| d.prefix);
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = r.protocol;
    m.header.scope = r.scope;
    m.header.kind = r.kind;
    m.attributes.push(RouteAttribute::Table(RT_TABLE_MAIN));
    if let Some(d) = &r.dest {
        m.attributes
            .push(RouteAttribute::Destination(route_address(d.addr)));
    }
    if let Some(g) = r.gateway {
        m.attributes.push(RouteAttribute::Gateway(route_address(g)));
    }
    if r.oif != 0 {
        m.attributes.push(RouteAttribute::Oif(r.oif));
    }
    if let Some(s) = r.source {
        m.attributes
            .push(RouteAttribute::PrefSource(route_address(s)));
    }
    if r.priority != 0 {
        m.attributes.push(RouteAttribute::Priority(r.priority));
    }
    if !r.multipath.is_empty() {
        let hops = r
            .multipath
            .iter()
            .map(|h| {
                let mut nh = RouteNextHop::default();
                nh.hops = u8::try_from(h.weight.saturating_sub(1)).unwrap_or(u8::MAX);
                nh.interface_index = h.oif;
                if let Some(g) = h.gateway {
                    nh.attributes
                        .push(RouteAttribute::Gateway(route_address(g)));
                }
                nh
            })
            .collect();
        m.attributes.push(RouteAttribute::MultiPath(hops));
    }
    if add {
        RouteNetlinkMessage::NewRoute(m)
    } else {
        RouteNetlinkMessage::DelRoute(m)
    }
}

/// RTM_NEWNEIGH for one entry (sent with NLM_F_CREATE | NLM_F_REPLACE).
pub fn set_neighbour(n: &NeighbourEntry) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family_of(&n.addr);
    m.header.ifindex = n.index;
    m.header.state = n.state;
    m.header.flags = n.flags;
    m.attributes
        .push(NeighbourAttribute::Destination(match n.addr {
            IpAddr::V4(v) => NeighbourAddress::Inet(v),
            IpAddr::V6(v) => NeighbourAddress::Inet6(v),
        }));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(n.lladdr.clone()));
    RouteNetlinkMessage::NewNeighbour(m)
}

/// A link of an RTM_GETLINK dump.
pub fn link(m: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(m) = m else {
        return None;
    };
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: Vec::new(),
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
    };
    for a in m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(mac) => link.mac = mac,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            _ => {}
        }
    }
    Some(link)
}

/// An address of an RTM_GETADDR dump (IFA_LOCAL, the local address, wins over IFA_ADDRESS,
/// which is the peer on point-to-point links).
pub fn address(m: RouteNetlinkMessage) -> Option<LinkAddress> {
    let RouteNetlinkMessage::NewAddress(m) = m else {
        return None;
    };
    let mut local = None;
    let mut address = None;
    for a in m.attributes {
        match a {
            AddressAttribute::Local(a) => local = Some(a),
            AddressAttribute::Address(a) => address = Some(a),
            _ => {}
        }
    }
    Some(LinkAddress {
        index: m.header.index,
        net: IpNet {
            addr: local.or(address)?,
            prefix: m.header.prefix_len,
        },
    })
}

/// A route of an RTM_GETROUTE dump; `None` for families other than IPv4 / IPv6.
pub fn route(m: RouteNetlinkMessage) -> Option<RouteEntry> {
    let RouteNetlinkMessage::NewRoute(m) = m else {
        return None;
    };
    let family = m.header.address_family;
    if family != AddressFamily::Inet && family != AddressFamily::Inet6 {
        return None;
    }
    let mut r = RouteEntry {
        family,
        dest: None,
        gateway: None,
        oif: 0,
        source: None,
        scope: m.header.scope,
        protocol: m.header.protocol,
        priority: 0,
        table: u32::from(m.header.table),
        kind: m.header.kind,
        multipath: Vec::new(),
    };
    for a in m.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                r.dest = ip_of(&d).map(|addr| IpNet {
                    addr,
                    prefix: m.header.destination_prefix_length,
                })
            }
            RouteAttribute::Gateway(g) => r.gateway = ip_of(&g),
            RouteAttribute::Oif(i) => r.oif = i,
            RouteAttribute::PrefSource(s) => r.source = ip_of(&s),
            RouteAttribute::Priority(p) => r.priority = p,
            RouteAttribute::Table(t) => r.table = t,
            RouteAttribute::MultiPath(hops) => {
                r.multipath = hops
                    .into_iter()
                    .map(|h| NextHopEntry {
                        gateway: h.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(g) => ip_of(g),
                            _ => None,
                        }),
                        oif: h.interface_index,
                        weight: u16::from(h.hops) + 1,
                    })
                    .collect()
            }
            _ => {}
        }
    }
    Some(r)
}

/// An IPv4 / IPv6 entry of an RTM_GETNEIGH dump (proxy entries are not neighbours).
pub fn neighbour(m: RouteNetlinkMessage) -> Option<NeighbourEntry> {
    let RouteNetlinkMessage::NewNeighbour(m) = m else {
        return None;
    };
    if m.header.flags.contains(NeighbourFlags::Proxy) {
        return None;
    }
    let mut addr = None;
    let mut lladdr = Vec::new();
    for a in m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                addr = Some(IpAddr::V4(v))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                addr = Some(IpAddr::V6(v))
            }
            NeighbourAttribute::LinkLayerAddress(l) => lladdr = l,
            _ => {}
        }
    }
    Some(NeighbourEntry {
        index: m.header.ifindex,
        addr: addr?,
        lladdr,
        state: m.header.state,
        flags: m.header.flags,
    })
}
