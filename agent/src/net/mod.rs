//! The guest's network configuration: the NIC the runtime names (by name or MAC) gets its name,
//! MTU, addresses and up state, and the main route table is replaced, as UpdateInterface /
//! UpdateRoutes ask. All kernel effects go through the `Rtnetlink` seam (`LinuxRtnetlink` in
//! the syscall layer sends rtnetlink messages built by `wire`; `fake::FakeRtnetlink` records
//! them), so the decisions here are unit-tested without root. Containers' own network
//! namespaces are not touched: this is the agent's (the sandbox's) namespace.

pub mod wire;

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use nix::errno::Errno;

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
    pub family: u8,
    /// `None`: a default route.
    pub dest: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    /// Output interface index; 0 when none is given.
    pub oif: u32,
    pub source: Option<IpAddr>,
    pub scope: u8,
    pub protocol: u8,
    pub priority: u32,
    pub table: u32,
    /// rtm_type (RTN_UNICAST, ...).
    pub kind: u8,
}

/// A failed rtnetlink request.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {errno}")]
pub struct NetlinkError {
    pub op: &'static str,
    pub errno: Errno,
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

/// A validated route of UpdateRoutes, or one ListRoutes reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `None`: default route.
    pub dest: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    pub device: Option<String>,
    pub source: Option<IpAddr>,
    pub scope: Scope,
    /// Only for a default route without gateway or source: whether it is IPv6.
    pub ipv6_default: bool,
}

impl Route {
    /// Checks the families agree and the destination is a network address; errors name
    /// `routes[i].<field>`.
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
        for (name, a) in [("gateway", self.gateway), ("source", self.source)] {
            if let Some(a) = a {
                if a.is_ipv6() != v6 {
                    return Err(invalid(
                        format!("{field}.{name}"),
                        format!("{a} is not of the destination's address family"),
                    ));
                }
            }
        }
        if self.dest.is_none() && self.gateway.is_none() && self.device.is_none() {
            return Err(invalid(
                format!("{field}.gateway"),
                "a default route needs a gateway or a device",
            ));
        }
        if self.scope == Scope::Host && self.gateway.is_some() {
            return Err(invalid(
                format!("{field}.scope"),
                "host scope with a gateway",
            ));
        }
        Ok(())
    }

    fn family_is_v6(&self) -> bool {
        match (self.dest, self.gateway, self.source) {
            (Some(d), _, _) => d.addr.is_ipv6(),
            (None, Some(g), _) => g.is_ipv6(),
            (None, None, Some(s)) => s.is_ipv6(),
            (None, None, None) => self.ipv6_default,
        }
    }
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
    r.table == wire::RT_TABLE_MAIN && r.kind == wire::RTN_UNICAST
}

/// The rtnetlink form of a validated route; the device name resolved against `links`.
fn entry_of(links: &[Link], r: &Route, field: &str) -> Result<RouteEntry, NetError> {
    r.check(field)?;
    let oif = match &r.device {
        Some(d) => {
            links
                .iter()
                .find(|l| &l.name == d)
                .ok_or_else(|| NetError::NoInterface {
                    field: format!("{field}.device"),
                    what: format!("named {d:?}"),
                })?
                .index
        }
        None => 0,
    };
    let v6 = r.family_is_v6();
    let scope = match r.scope {
        Scope::Universe => wire::RT_SCOPE_UNIVERSE,
        Scope::Link => wire::RT_SCOPE_LINK,
        Scope::Host => wire::RT_SCOPE_HOST,
        Scope::Default if r.gateway.is_some() || v6 => wire::RT_SCOPE_UNIVERSE,
        Scope::Default => wire::RT_SCOPE_LINK,
    };
    Ok(RouteEntry {
        family: if v6 { wire::AF_INET6 } else { wire::AF_INET },
        dest: r.dest,
        gateway: r.gateway,
        oif,
        source: r.source,
        scope,
        protocol: wire::RTPROT_STATIC,
        priority: 0,
        table: wire::RT_TABLE_MAIN,
        kind: wire::RTN_UNICAST,
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
            || (want.source.is_none() && have.protocol == wire::RTPROT_KERNEL))
}

/// UpdateRoutes: the main table's unicast routes become `routes`. Routes the kernel made
/// (protocol kernel: one per address prefix, IPv6 link-local) stay; other routes not asked
/// for are deleted; missing ones are added, those without a gateway first so that gateways
/// are reachable. Every route is checked before anything changes.
pub fn update_routes(nl: &dyn Rtnetlink, routes: &[Route]) -> Result<Vec<Route>, NetError> {
    let links = nl.links()?;
    let want = routes
        .iter()
        .enumerate()
        .map(|(i, r)| Ok((i, entry_of(&links, r, &format!("routes[{i}]"))?)))
        .collect::<Result<Vec<_>, NetError>>()?;
    let have: Vec<RouteEntry> = nl.routes()?.into_iter().filter(main_unicast).collect();

    let mut stale: Vec<&RouteEntry> = have
        .iter()
        .filter(|h| h.protocol != wire::RTPROT_KERNEL)
        .filter(|h| !want.iter().any(|(_, w)| same_route(w, h)))
        .collect();
    stale.sort_by_key(|r| r.gateway.is_none());
    for r in stale {
        nl.route(false, r)
            .map_err(step(format!("removing route {}", describe(&links, r))))?;
    }
    let mut missing: Vec<&(usize, RouteEntry)> = want
        .iter()
        .filter(|(_, w)| !have.iter().any(|h| same_route(w, h)))
        .collect();
    missing.sort_by_key(|(i, w)| (w.gateway.is_some(), *i));
    for (i, w) in missing {
        nl.route(true, w)
            .map_err(step(format!("routes[{i}] ({})", describe(&links, w))))?;
    }
    list_routes(nl)
}

/// `10.1.0.0/16 via 10.0.0.1 dev eth0`, for messages.
fn describe(links: &[Link], r: &RouteEntry) -> String {
    let mut s = r.dest.map_or("default".into(), |d| d.to_string());
    if let Some(g) = r.gateway {
        s += &format!(" via {g}");
    }
    if let Some(l) = links.iter().find(|l| l.index == r.oif) {
        s += &format!(" dev {}", l.name);
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
    routes.sort_by_key(|r| r.family);
    Ok(routes
        .into_iter()
        .map(|r| Route {
            dest: r.dest.filter(|d| d.prefix != 0),
            gateway: r.gateway,
            device: links
                .iter()
                .find(|l| l.index == r.oif)
                .map(|l| l.name.clone()),
            source: r.source,
            scope: match r.scope {
                wire::RT_SCOPE_UNIVERSE => Scope::Universe,
                wire::RT_SCOPE_LINK => Scope::Link,
                wire::RT_SCOPE_HOST => Scope::Host,
                _ => Scope::Default,
            },
            ipv6_default: r.family == wire::AF_INET6,
        })
        .collect())
}
