//! The guest's network configuration: the NIC the runtime names (by name or MAC) gets its name,
//! MTU, addresses and up state, the main route table is replaced (multipath routes included)
//! and static neighbour entries are added, as UpdateInterface / UpdateRoutes / UpdateNeighbors
//! ask. All kernel effects go through the `Rtnetlink` seam (`syscall::netlink::LinuxRtnetlink`
//! builds and parses the rtnetlink messages with `netlink-packet-route`;
//! `fake::FakeRtnetlink` records them), so the decisions here are unit-tested without root.
//! Containers' own network namespaces are not touched: this is the agent's (the sandbox's)
//! namespace.

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
pub use netlink_packet_route::route::{RouteProtocol, RouteScope, RouteType};
pub use netlink_packet_route::AddressFamily;
pub use nix::errno::Errno;

/// The main routing table (RT_TABLE_MAIN).
pub const RT_TABLE_MAIN: u32 = 254;

/// An address with a prefix length (`10.0.0.2/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Parses an address and checks the prefix against its family; errors name `field`.
    pub fn parse(field: &str, addr: &str, prefix: u32) -> Result<IpNet, NetError> {
        let addr = parse_ip(&format!("{field}.address"), addr)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(invalid(
                format!("{field}.prefix"),
                format!("{prefix} is longer than {max}"),
            ));
        }
        Ok(IpNet {
            addr,
            prefix: prefix as u8,
        })
    }

    /// True when bits beyond the prefix are set (not a network address).
    pub fn has_host_bits(&self) -> bool {
        let bits = match self.addr {
            IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
            IpAddr::V6(a) => u128::from(a),
        };
        bits.checked_shl(u32::from(self.prefix)).unwrap_or(0) != 0
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A link as RTM_GETLINK reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
}

/// An address as RTM_GETADDR reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkAddress {
    pub index: u32,
    pub net: IpNet,
}

/// The parts of a link one RTM_NEWLINK changes; `None` leaves a part alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkChange {
    pub name: Option<String>,
    pub mtu: Option<u32>,
    pub up: Option<bool>,
}

/// A route as rtnetlink carries it (`struct rtmsg` plus attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub family: AddressFamily,
    /// `None`: a default route.
    pub dest: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    /// Output interface index; 0 when none is given.
    pub oif: u32,
    pub source: Option<IpAddr>,
    pub scope: RouteScope,
    pub protocol: RouteProtocol,
    pub priority: u32,
    pub table: u32,
    pub kind: RouteType,
    /// RTA_MULTIPATH: the next hops of a multipath route (then `gateway` and `oif` are unset).
    pub multipath: Vec<NextHopEntry>,
}

/// One next hop of a multipath route (`struct rtnexthop` plus its gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHopEntry {
    pub gateway: Option<IpAddr>,
    /// Output interface index; 0 when none is given.
    pub oif: u32,
    /// 1..=256 (rtnh_hops + 1).
    pub weight: u16,
}

/// A neighbour (ARP / NDP) entry as rtnetlink carries it (`struct ndmsg` plus attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourEntry {
    pub index: u32,
    pub addr: IpAddr,
    /// NDA_LLADDR; empty when the kernel has none (an incomplete entry).
    pub lladdr: Vec<u8>,
    pub state: NeighbourState,
    pub flags: NeighbourFlags,
}

/// A failed rtnetlink request: the request, the kernel's errno and, when the kernel gave one,
/// its extended-ack message ("Nexthop has invalid gateway").
#[derive(Debug, thiserror::Error)]
pub struct NetlinkError {
    pub op: &'static str,
    pub errno: Errno,
    pub message: Option<String>,
}

impl NetlinkError {
    pub fn new(op: &'static str, errno: Errno) -> Self {
        NetlinkError {
            op,
            errno,
            message: None,
        }
    }
}

impl std::fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.op, self.errno)?;
        if let Some(m) = &self.message {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

pub type NlResult<T> = std::result::Result<T, NetlinkError>;

/// What the agent asks of rtnetlink. Planning code takes `&dyn Rtnetlink`.
pub trait Rtnetlink {
    fn links(&self) -> NlResult<Vec<Link>>;
    fn addresses(&self) -> NlResult<Vec<LinkAddress>>;
    /// Every route of every table (callers filter).
    fn routes(&self) -> NlResult<Vec<RouteEntry>>;
    fn set_link(&self, index: u32, change: &LinkChange) -> NlResult<()>;
    /// Adds (failing if present) or deletes an address.
    fn address(&self, add: bool, index: u32, net: &IpNet) -> NlResult<()>;
    /// Adds (failing if present) or deletes a route of the main table.
    fn route(&self, add: bool, route: &RouteEntry) -> NlResult<()>;
    /// Every neighbour entry of every link (IPv4 and IPv6).
    fn neighbours(&self) -> NlResult<Vec<NeighbourEntry>>;
    /// Adds or replaces a neighbour entry (NLM_F_CREATE | NLM_F_REPLACE).
    fn set_neighbour(&self, n: &NeighbourEntry) -> NlResult<()>;
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: no interface {what}")]
    NoInterface { field: String, what: String },
    #[error("new_name: an interface named {0:?} exists")]
    NameTaken(String),
    /// A kernel refusal while making a change; `step` says which (and which request field).
    #[error("{step}: {source}")]
    Netlink {
        step: String,
        #[source]
        source: NetlinkError,
    },
}

impl From<NetlinkError> for NetError {
    fn from(source: NetlinkError) -> Self {
        NetError::Netlink {
            step: "reading the network state".into(),
            source,
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> NetError {
    NetError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn step(step: impl Into<String>) -> impl FnOnce(NetlinkError) -> NetError {
    let step = step.into();
    move |source| NetError::Netlink { step, source }
}

pub fn parse_ip(field: &str, s: &str) -> Result<IpAddr, NetError> {
    s.parse()
        .map_err(|_| invalid(field, format!("{s:?} is not an IPv4 or IPv6 address")))
}

/// `02:00:00:00:00:01` (either case).
/// (The `macaddr` crate parses, as in husk-vmm.)
pub fn parse_mac(field: &str, s: &str) -> Result<Vec<u8>, NetError> {
    s.parse::<macaddr::MacAddr6>()
        .map(|m| m.as_bytes().to_vec())
        .map_err(|_| {
            invalid(
                field,
                format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
            )
        })
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An interface name the kernel accepts: 1–15 bytes, no '/', ':' or whitespace, not "." / "..".
pub fn check_ifname(field: &str, s: &str) -> Result<(), NetError> {
    if s.is_empty() || s.len() > 15 {
        return Err(invalid(field, format!("{s:?} must be 1 to 15 bytes")));
    }
    if s == "." || s == ".." || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(invalid(
            field,
            format!("{s:?} is not a valid interface name"),
        ));
    }
    Ok(())
}

/// A validated UpdateInterface request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceUpdate {
    pub name: Option<String>,
    pub mac: Option<Vec<u8>>,
    pub new_name: Option<String>,
    pub mtu: Option<u32>,
    pub addresses: Vec<IpNet>,
    pub up: Option<bool>,
}

/// An interface as ListInterfaces / UpdateInterface report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub link: Link,
    pub addresses: Vec<IpNet>,
}

/// Route scope as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Universe with a gateway (and for IPv6), link without.
    Default,
    Universe,
    Link,
    Host,
}

/// One next hop of a multipath route of UpdateRoutes, or one ListRoutes reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub gateway: Option<IpAddr>,
    pub device: Option<String>,
    /// 1..=256.
    pub weight: u16,
}

/// A validated route of UpdateRoutes, or one ListRoutes reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `None`: default route.
    pub dest: Option<IpNet>,
    /// Unset for a multipath route (each next hop has its own).
    pub gateway: Option<IpAddr>,
    /// Unset for a multipath route.
    pub device: Option<String>,
    pub source: Option<IpAddr>,
    pub scope: Scope,
    /// Only for a default route without gateway, source or next hops: whether it is IPv6.
    pub ipv6_default: bool,
    /// A multipath route's next hops; empty for a single-path route.
    pub nexthops: Vec<NextHop>,
}

impl Route {
    /// Checks the families agree and the destination is a network address; errors name
    /// `routes[i].<field>` (`routes[i].nexthops[j].<field>` for a next hop).
    pub fn check(&self, field: &str) -> Result<(), NetError> {
        if let Some(d) = &self.dest {
            if d.has_host_bits() {
                return Err(invalid(
                    format!("{field}.destination"),
                    format!("{d} has host bits set beyond the prefix"),
                ));
            }
        }
        let v6 = self.family_is_v6();
        let mut addrs = vec![
            (format!("{field}.gateway"), self.gateway),
            (format!("{field}.source"), self.source),
        ];
        for (j, h) in self.nexthops.iter().enumerate() {
            addrs.push((format!("{field}.nexthops[{j}].gateway"), h.gateway));
        }
        for (name, a) in addrs {
            if let Some(a) = a {
                if a.is_ipv6() != v6 {
                    return Err(invalid(
                        name,
                        format!("{a} is not of the destination's address family"),
                    ));
                }
            }
        }
        if !self.nexthops.is_empty() {
            for (name, set) in [
                ("gateway", self.gateway.is_some()),
                ("device", self.device.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        format!("{field}.{name}"),
                        "a multipath route has it in each of its nexthops",
                    ));
                }
            }
            for (j, h) in self.nexthops.iter().enumerate() {
                if h.gateway.is_none() && h.device.is_none() {
                    return Err(invalid(
                        format!("{field}.nexthops[{j}].gateway"),
                        "a nexthop needs a gateway or a device",
                    ));
                }
                if !(1..=256).contains(&h.weight) {
                    return Err(invalid(
                        format!("{field}.nexthops[{j}].weight"),
                        format!("{} is outside 1..256", h.weight),
                    ));
                }
            }
        } else if self.dest.is_none() && self.gateway.is_none() && self.device.is_none() {
            return Err(invalid(
                format!("{field}.gateway"),
                "a default route needs a gateway or a device",
            ));
        }
        let has_gateway =
            self.gateway.is_some() || self.nexthops.iter().any(|h| h.gateway.is_some());
        if self.scope == Scope::Host && has_gateway {
            return Err(invalid(
                format!("{field}.scope"),
                "host scope with a gateway",
            ));
        }
        Ok(())
    }

    fn family_is_v6(&self) -> bool {
        let first_hop = self.nexthops.iter().find_map(|h| h.gateway);
        match (self.dest, self.gateway, self.source, first_hop) {
            (Some(d), _, _, _) => d.addr.is_ipv6(),
            (None, Some(g), _, _) => g.is_ipv6(),
            (None, None, Some(s), _) => s.is_ipv6(),
            (None, None, None, Some(h)) => h.is_ipv6(),
            (None, None, None, None) => self.ipv6_default,
        }
    }
}

/// A validated neighbour entry of UpdateNeighbors, or one ListNeighbors reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub addr: IpAddr,
    pub device: String,
    pub lladdr: Vec<u8>,
    pub state: NeighbourState,
    pub flags: NeighbourFlags,
}

/// The states UpdateNeighbors may set: the ones that say an entry is known, not the kernel's
/// transient resolution states (incomplete, delay, probe, failed).
pub fn settable_state(s: NeighbourState) -> bool {
    matches!(
        s,
        NeighbourState::Permanent
            | NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Noarp
    )
}

/// The flags UpdateNeighbors may set (the ones a static entry copied from another namespace
/// carries): router (IPv6) and externally learned.
pub fn settable_flags() -> NeighbourFlags {
    NeighbourFlags::Router | NeighbourFlags::ExtLearned
}
fn find_link<'a>(links: &'a [Link], u: &InterfaceUpdate) -> Result<&'a Link, NetError> {
    let found = links.iter().find(|l| {
        u.name.as_ref().is_none_or(|n| &l.name == n) && u.mac.as_ref().is_none_or(|m| &l.mac == m)
    });
    found.ok_or_else(|| {
        let mut what = Vec::new();
        if let Some(n) = &u.name {
            what.push(format!("named {n:?}"));
        }
        if let Some(m) = &u.mac {
            what.push(format!("with MAC {}", format_mac(m)));
        }
        NetError::NoInterface {
            field: if u.name.is_some() { "name" } else { "mac" }.into(),
            what: what.join(" "),
        }
    })
}

fn is_ipv6_link_local(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80)
}

/// UpdateInterface: rename (link down for it, then restored), MTU, addresses replaced (IPv6
/// link-local ones kept), then the up state. Returns the interface as it is afterwards.
pub fn update_interface(nl: &dyn Rtnetlink, u: &InterfaceUpdate) -> Result<Interface, NetError> {
    if u.name.is_none() && u.mac.is_none() {
        return Err(invalid("name", "give the interface's name or MAC"));
    }
    let links = nl.links()?;
    let link = find_link(&links, u)?.clone();
    let rename = u.new_name.clone().filter(|n| *n != link.name);
    if let Some(n) = &rename {
        if links.iter().any(|l| &l.name == n) {
            return Err(NetError::NameTaken(n.clone()));
        }
    }
    let mtu = u.mtu.filter(|m| *m != link.mtu);
    let mut up_now = link.up;
    if rename.is_some() && link.up {
        // The kernel refuses to rename a running link (EBUSY).
        let down = LinkChange {
            up: Some(false),
            ..Default::default()
        };
        nl.set_link(link.index, &down)
            .map_err(step(format!("taking {} down to rename it", link.name)))?;
        up_now = false;
    }
    if rename.is_some() || mtu.is_some() {
        let change = LinkChange {
            name: rename.clone(),
            mtu,
            up: None,
        };
        if let Err(e) = nl.set_link(link.index, &change) {
            if up_now != link.up {
                let _ = nl.set_link(
                    link.index,
                    &LinkChange {
                        up: Some(link.up),
                        ..Default::default()
                    },
                );
            }
            let field = if rename.is_some() { "new_name" } else { "mtu" };
            return Err(step(field)(e));
        }
    }

    let current: Vec<IpNet> = nl
        .addresses()?
        .into_iter()
        .filter(|a| a.index == link.index)
        .map(|a| a.net)
        .collect();
    for net in &current {
        if !u.addresses.contains(net) && !is_ipv6_link_local(&net.addr) {
            nl.address(false, link.index, net)
                .map_err(step(format!("removing address {net}")))?;
        }
    }
    for (i, net) in u.addresses.iter().enumerate() {
        if !current.contains(net) {
            nl.address(true, link.index, net)
                .map_err(step(format!("addresses[{i}] ({net})")))?;
        }
    }

    let want_up = u.up.unwrap_or(link.up);
    if want_up != up_now {
        let change = LinkChange {
            up: Some(want_up),
            ..Default::default()
        };
        nl.set_link(link.index, &change).map_err(step(if want_up {
            "state (up)"
        } else {
            "state (down)"
        }))?;
    }
    interface(nl, link.index)
}

fn interface(nl: &dyn Rtnetlink, index: u32) -> Result<Interface, NetError> {
    list_interfaces(nl)?
        .into_iter()
        .find(|i| i.link.index == index)
        .ok_or_else(|| NetError::NoInterface {
            field: "name".into(),
            what: format!("with index {index} (it went away)"),
        })
}

/// Every link with its addresses, in index order.
pub fn list_interfaces(nl: &dyn Rtnetlink) -> Result<Vec<Interface>, NetError> {
    let addrs = nl.addresses()?;
    let mut links = nl.links()?;
    links.sort_by_key(|l| l.index);
    Ok(links
        .into_iter()
        .map(|link| Interface {
            addresses: addrs
                .iter()
                .filter(|a| a.index == link.index)
                .map(|a| a.net)
                .collect(),
            link,
        })
        .collect())
}

fn main_unicast(r: &RouteEntry) -> bool {
    r.table == RT_TABLE_MAIN && r.kind == RouteType::Unicast
}

fn family_of(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

fn link_index(links: &[Link], name: &str, field: String) -> Result<u32, NetError> {
    links
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.index)
        .ok_or_else(|| NetError::NoInterface {
            field,
            what: format!("named {name:?}"),
        })
}

/// The rtnetlink form of a validated route; device names resolved against `links`.
fn entry_of(links: &[Link], r: &Route, field: &str) -> Result<RouteEntry, NetError> {
    r.check(field)?;
    let oif = match &r.device {
        Some(d) => link_index(links, d, format!("{field}.device"))?,
        None => 0,
    };
    let multipath = r
        .nexthops
        .iter()
        .enumerate()
        .map(|(j, h)| {
            let oif = match &h.device {
                Some(d) => link_index(links, d, format!("{field}.nexthops[{j}].device"))?,
                None => 0,
            };
            Ok(NextHopEntry {
                gateway: h.gateway,
                oif,
                weight: h.weight,
            })
        })
        .collect::<Result<Vec<_>, NetError>>()?;
    let v6 = r.family_is_v6();
    let has_gateway = r.gateway.is_some() || multipath.iter().any(|h| h.gateway.is_some());
    let scope = match r.scope {
        Scope::Universe => RouteScope::Universe,
        Scope::Link => RouteScope::Link,
        Scope::Host => RouteScope::Host,
        Scope::Default if has_gateway || v6 => RouteScope::Universe,
        Scope::Default => RouteScope::Link,
    };
    Ok(RouteEntry {
        family: family_of(v6),
        dest: r.dest,
        gateway: r.gateway,
        oif,
        source: r.source,
        scope,
        protocol: RouteProtocol::Static,
        priority: 0,
        table: RT_TABLE_MAIN,
        kind: RouteType::Unicast,
        multipath,
    })
}

/// Whether the next hops a route has are the ones asked for, in any order (the kernel may
/// list them in another); a requested hop without a device matches any.
fn same_hops(want: &[NextHopEntry], have: &[NextHopEntry]) -> bool {
    let same = |w: &NextHopEntry, h: &NextHopEntry| {
        w.gateway == h.gateway && (w.oif == 0 || w.oif == h.oif) && w.weight == h.weight
    };
    let mut used = vec![false; have.len()];
    want.len() == have.len()
        && want.iter().all(|w| {
            let found = have
                .iter()
                .enumerate()
                .position(|(k, h)| !used[k] && same(w, h));
            found.map(|k| used[k] = true).is_some()
        })
}

/// Whether an existing route is the one asked for. A request without a device or source
/// matches any; a kernel-made route matches a request without a source.
fn same_route(want: &RouteEntry, have: &RouteEntry) -> bool {
    want.family == have.family
        && want.dest == have.dest
        && want.gateway == have.gateway
        && (want.oif == 0 || want.oif == have.oif)
        && (want.source == have.source
            || (want.source.is_none() && have.protocol == RouteProtocol::Kernel))
        && same_hops(&want.multipath, &have.multipath)
}

/// UpdateRoutes: the main table's unicast routes become `routes`. Routes the kernel made
/// (protocol kernel: one per address prefix, IPv6 link-local) stay; other routes not asked
/// for (a multipath route whose next hops differ included) are deleted; missing ones are
/// added, those without a gateway first so that gateways are reachable. Every route is checked
/// before anything changes.
pub fn update_routes(nl: &dyn Rtnetlink, routes: &[Route]) -> Result<Vec<Route>, NetError> {
    let links = nl.links()?;
    let want = routes
        .iter()
        .enumerate()
        .map(|(i, r)| Ok((i, entry_of(&links, r, &format!("routes[{i}]"))?)))
        .collect::<Result<Vec<_>, NetError>>()?;
    let have: Vec<RouteEntry> = nl.routes()?.into_iter().filter(main_unicast).collect();
    let via_gateway =
        |r: &RouteEntry| r.gateway.is_some() || r.multipath.iter().any(|h| h.gateway.is_some());

    let mut stale: Vec<&RouteEntry> = have
        .iter()
        .filter(|h| h.protocol != RouteProtocol::Kernel)
        .filter(|h| !want.iter().any(|(_, w)| same_route(w, h)))
        .collect();
    stale.sort_by_key(|r| !via_gateway(r));
    for r in stale {
        nl.route(false, r)
            .map_err(step(format!("removing route {}", describe(&links, r))))?;
    }
    let mut missing: Vec<&(usize, RouteEntry)> = want
        .iter()
        .filter(|(_, w)| !have.iter().any(|h| same_route(w, h)))
        .collect();
    missing.sort_by_key(|(i, w)| (via_gateway(w), *i));
    for (i, w) in missing {
        nl.route(true, w)
            .map_err(step(format!("routes[{i}] ({})", describe(&links, w))))?;
    }
    list_routes(nl)
}

fn link_name(links: &[Link], index: u32) -> Option<String> {
    links
        .iter()
        .find(|l| l.index == index)
        .map(|l| l.name.clone())
}

/// `10.1.0.0/16 via 10.0.0.1 dev eth0`, `default nexthop via 10.0.0.1 dev eth0 weight 1
/// nexthop ...`, for messages.
fn describe(links: &[Link], r: &RouteEntry) -> String {
    let hop = |gateway: Option<IpAddr>, oif: u32| {
        let mut s = gateway.map_or(String::new(), |g| format!(" via {g}"));
        if let Some(name) = link_name(links, oif) {
            s += &format!(" dev {name}");
        }
        s
    };
    let mut s = r.dest.map_or("default".into(), |d| d.to_string());
    s += &hop(r.gateway, r.oif);
    for h in &r.multipath {
        s += &format!(" nexthop{} weight {}", hop(h.gateway, h.oif), h.weight);
    }
    if let Some(src) = r.source {
        s += &format!(" src {src}");
    }
    s
}

/// The main table's unicast routes, IPv4 then IPv6.
pub fn list_routes(nl: &dyn Rtnetlink) -> Result<Vec<Route>, NetError> {
    let links = nl.links()?;
    let mut routes: Vec<RouteEntry> = nl.routes()?.into_iter().filter(main_unicast).collect();
    routes.sort_by_key(|r| u8::from(r.family));
    Ok(routes
        .into_iter()
        .map(|r| Route {
            dest: r.dest.filter(|d| d.prefix != 0),
            gateway: r.gateway,
            device: link_name(&links, r.oif),
            source: r.source,
            scope: match r.scope {
                RouteScope::Universe => Scope::Universe,
                RouteScope::Link => Scope::Link,
                RouteScope::Host => Scope::Host,
                _ => Scope::Default,
            },
            ipv6_default: r.family == AddressFamily::Inet6,
            nexthops: r
                .multipath
                .iter()
                .map(|h| NextHop {
                    gateway: h.gateway,
                    device: link_name(&links, h.oif),
                    weight: h.weight,
                })
                .collect(),
        })
        .collect())
}

/// UpdateNeighbors: each entry is added, or replaces the entry the kernel has for its address
/// on its device. Every entry is checked (device names resolved) before anything changes.
pub fn update_neighbours(nl: &dyn Rtnetlink, list: &[Neighbour]) -> Result<(), NetError> {
    let links = nl.links()?;
    let entries = list
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let field = format!("neighbors[{i}]");
            if !settable_state(n.state) {
                return Err(invalid(
                    format!("{field}.state"),
                    format!("{:?} is not a state a static entry can have", n.state),
                ));
            }
            if !settable_flags().contains(n.flags) {
                return Err(invalid(
                    format!("{field}.flags"),
                    format!(
                        "{:#x} has flags other than router (0x80) and ext_learned (0x10)",
                        n.flags.bits()
                    ),
                ));
            }
            if n.lladdr.len() != 6 {
                return Err(invalid(
                    format!("{field}.lladdr"),
                    "a MAC address (6 bytes) is needed",
                ));
            }
            if n.addr.is_unspecified() || n.addr.is_multicast() {
                return Err(invalid(
                    format!("{field}.address"),
                    format!("{} is not a unicast address", n.addr),
                ));
            }
            let index = link_index(&links, &n.device, format!("{field}.device"))?;
            Ok(NeighbourEntry {
                index,
                addr: n.addr,
                lladdr: n.lladdr.clone(),
                state: n.state,
                flags: n.flags,
            })
        })
        .collect::<Result<Vec<_>, NetError>>()?;
    for (i, e) in entries.iter().enumerate() {
        nl.set_neighbour(e).map_err(step(format!(
            "neighbors[{i}] ({} lladdr {} dev {})",
            e.addr,
            format_mac(&e.lladdr),
            list[i].device
        )))?;
    }
    Ok(())
}

/// Every neighbour entry (IPv4 then IPv6), with device names.
pub fn list_neighbours(nl: &dyn Rtnetlink) -> Result<Vec<Neighbour>, NetError> {
    let links = nl.links()?;
    let mut list = nl.neighbours()?;
    list.sort_by_key(|n| (n.addr.is_ipv6(), n.index));
    Ok(list
        .into_iter()
        .map(|n| Neighbour {
            addr: n.addr,
            device: link_name(&links, n.index).unwrap_or_else(|| format!("#{}", n.index)),
            lladdr: n.lladdr,
            state: n.state,
            flags: n.flags,
        })
        .collect())
}
