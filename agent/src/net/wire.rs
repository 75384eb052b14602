//! rtnetlink message encoding and decoding (RFC 3549; `linux/rtnetlink.h`): the request bytes
//! for the few messages the agent sends and the parsing of the link / address / route dumps it
//! reads back. Pure byte work, no sockets: unit-tested against hand-checked layouts.

use std::net::IpAddr;

use super::{IpNet, Link, LinkAddress, LinkChange, RouteEntry};

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;
pub const RTM_GETROUTE: u16 = 26;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;

pub const IFF_UP: u32 = 0x1;
pub const AF_UNSPEC: u8 = 0;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
pub const RT_TABLE_MAIN: u32 = 254;
pub const RTN_UNICAST: u8 = 1;
pub const RTPROT_KERNEL: u8 = 2;
/// What the agent marks its routes with ("installed by admin").
pub const RTPROT_STATIC: u8 = 4;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;

const HDR: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request being built: header, fixed family struct, attributes.
struct Msg(Vec<u8>);

impl Msg {
    fn new(ty: u16, flags: u16, seq: u32) -> Msg {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        Msg(b)
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Msg {
        self.0.extend_from_slice(b);
        self
    }
    fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Msg {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.0.resize(align4(self.0.len()), 0);
        self
    }
    fn finish(&mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        std::mem::take(&mut self.0)
    }
}

fn ip_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

pub fn family_of(a: &IpAddr) -> u8 {
    if a.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

/// A dump request (RTM_GETLINK / RTM_GETADDR / RTM_GETROUTE) for every family.
pub fn dump_request(ty: u16, seq: u32) -> Vec<u8> {
    let mut m = Msg::new(ty, NLM_F_DUMP, seq);
    match ty {
        // struct ifinfomsg
        RTM_GETLINK => m.bytes(&[0u8; 16]),
        // struct ifaddrmsg
        RTM_GETADDR => m.bytes(&[0u8; 8]),
        // struct rtmsg
        _ => m.bytes(&[0u8; 12]),
    };
    m.finish()
}

/// RTM_NEWLINK on an existing link: name, MTU and IFF_UP as `change` says.
pub fn set_link(index: u32, change: &LinkChange, seq: u32) -> Vec<u8> {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK, seq);
    let (flags, mask) = match change.up {
        Some(true) => (IFF_UP, IFF_UP),
        Some(false) => (0, IFF_UP),
        None => (0, 0),
    };
    m.bytes(&[AF_UNSPEC, 0])
        .bytes(&0u16.to_ne_bytes())
        .bytes(&(index as i32).to_ne_bytes())
        .bytes(&flags.to_ne_bytes())
        .bytes(&mask.to_ne_bytes());
    if let Some(name) = &change.name {
        let mut z = name.as_bytes().to_vec();
        z.push(0);
        m.attr(IFLA_IFNAME, &z);
    }
    if let Some(mtu) = change.mtu {
        m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    }
    m.finish()
}

/// RTM_NEWADDR (add, failing if present) or RTM_DELADDR of `net` on link `index`.
pub fn address(add: bool, index: u32, net: &IpNet, seq: u32) -> Vec<u8> {
    let (ty, flags) = if add {
        (RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
    } else {
        (RTM_DELADDR, NLM_F_ACK)
    };
    let mut m = Msg::new(ty, flags, seq);
    let scope = if net.addr.is_loopback() {
        RT_SCOPE_HOST
    } else {
        RT_SCOPE_UNIVERSE
    };
    m.bytes(&[family_of(&net.addr), net.prefix, 0, scope])
        .bytes(&index.to_ne_bytes());
    let a = ip_bytes(&net.addr);
    if net.addr.is_ipv4() {
        m.attr(IFA_LOCAL, &a);
    }
    m.attr(IFA_ADDRESS, &a);
    m.finish()
}

/// RTM_NEWROUTE (add, failing if present) or RTM_DELROUTE in the main table.
pub fn route(add: bool, r: &RouteEntry, seq: u32) -> Vec<u8> {
    let (ty, flags) = if add {
        (RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
    } else {
        (RTM_DELROUTE, NLM_F_ACK)
    };
    let mut m = Msg::new(ty, flags, seq);
    let dst_len = r.dest.map_or(0, |d| d.prefix);
    m.bytes(&[
        r.family,
        dst_len,
        0,
        0,
        RT_TABLE_MAIN as u8,
        r.protocol,
        r.scope,
        RTN_UNICAST,
    ])
    .bytes(&0u32.to_ne_bytes());
    m.attr(RTA_TABLE, &RT_TABLE_MAIN.to_ne_bytes());
    if let Some(d) = &r.dest {
        m.attr(RTA_DST, &ip_bytes(&d.addr));
    }
    if let Some(g) = &r.gateway {
        m.attr(RTA_GATEWAY, &ip_bytes(g));
    }
    if r.oif != 0 {
        m.attr(RTA_OIF, &r.oif.to_ne_bytes());
    }
    if let Some(s) = &r.source {
        m.attr(RTA_PREFSRC, &ip_bytes(s));
    }
    if r.priority != 0 {
        m.attr(RTA_PRIORITY, &r.priority.to_ne_bytes());
    }
    m.finish()
}

/// One message read back from the kernel.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a datagram into its netlink messages; `None` on a malformed length.
pub fn split(mut buf: &[u8]) -> Option<Vec<Reply<'_>>> {
    let mut out = Vec::new();
    while buf.len() >= HDR {
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < HDR || len > buf.len() {
            return None;
        }
        out.push(Reply {
            ty: u16::from_ne_bytes(buf[4..6].try_into().ok()?),
            flags: u16::from_ne_bytes(buf[6..8].try_into().ok()?),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            payload: &buf[HDR..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Some(out)
}

/// The errno of an NLMSG_ERROR payload (0 is an acknowledgement).
pub fn error_code(payload: &[u8]) -> Option<i32> {
    Some(-i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?))
}

/// Attributes (type, payload) after a fixed header of `skip` bytes.
fn attrs(payload: &[u8], skip: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut b = payload.get(skip..).unwrap_or(&[]);
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff; // strip NLA_F_NESTED/BYTEORDER
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(0..4)?.try_into().ok()?))
}

fn ip_of(family: u8, b: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(b.get(0..4)?).ok()?)),
        AF_INET6 => Some(IpAddr::from(<[u8; 16]>::try_from(b.get(0..16)?).ok()?)),
        _ => None,
    }
}

/// An RTM_NEWLINK from a dump.
pub fn parse_link(p: &[u8]) -> Option<Link> {
    let index = u32::from_ne_bytes(p.get(4..8)?.try_into().ok()?);
    let flags = u32_of(p.get(8..12)?)?;
    let mut link = Link {
        index,
        name: String::new(),
        mac: Vec::new(),
        mtu: 0,
        up: flags & IFF_UP != 0,
    };
    for (ty, v) in attrs(p, 16) {
        match ty {
            IFLA_IFNAME => {
                link.name =
                    String::from_utf8_lossy(v.split(|c| *c == 0).next().unwrap_or(&[])).into_owned()
            }
            IFLA_ADDRESS => link.mac = v.to_vec(),
            IFLA_MTU => link.mtu = u32_of(v)?,
            _ => {}
        }
    }
    Some(link)
}

/// An RTM_NEWADDR from a dump (IFA_LOCAL, the local address, wins over IFA_ADDRESS, which is
/// the peer on point-to-point links).
pub fn parse_address(p: &[u8]) -> Option<LinkAddress> {
    let (family, prefix) = (*p.first()?, *p.get(1)?);
    let index = u32_of(p.get(4..8)?)?;
    let mut local = None;
    let mut address = None;
    for (ty, v) in attrs(p, 8) {
        match ty {
            IFA_LOCAL => local = ip_of(family, v),
            IFA_ADDRESS => address = ip_of(family, v),
            _ => {}
        }
    }
    Some(LinkAddress {
        index,
        net: IpNet {
            addr: local.or(address)?,
            prefix,
        },
    })
}

/// An RTM_NEWROUTE from a dump; `None` for families other than IPv4/IPv6.
pub fn parse_route(p: &[u8]) -> Option<RouteEntry> {
    let family = *p.first()?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    let dst_len = *p.get(1)?;
    let mut r = RouteEntry {
        family,
        dest: None,
        gateway: None,
        oif: 0,
        source: None,
        scope: *p.get(6)?,
        protocol: *p.get(5)?,
        priority: 0,
        table: u32::from(*p.get(4)?),
        kind: *p.get(7)?,
    };
    for (ty, v) in attrs(p, 12) {
        match ty {
            RTA_DST => {
                r.dest = ip_of(family, v).map(|addr| IpNet {
                    addr,
                    prefix: dst_len,
                })
            }
            RTA_GATEWAY => r.gateway = ip_of(family, v),
            RTA_OIF => r.oif = u32_of(v)?,
            RTA_PREFSRC => r.source = ip_of(family, v),
            RTA_PRIORITY => r.priority = u32_of(v)?,
            RTA_TABLE => r.table = u32_of(v)?,
            _ => {}
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str, prefix: u8) -> IpNet {
        IpNet {
            addr: s.parse().unwrap(),
            prefix,
        }
    }

    #[test]
    fn set_link_carries_name_mtu_and_up_mask() {
        let change = LinkChange {
            name: Some("eth0".into()),
            mtu: Some(1400),
            up: Some(true),
        };
        let b = set_link(3, &change, 9);
        let msgs = split(&b).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].ty, RTM_NEWLINK);
        assert_eq!(msgs[0].flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(msgs[0].seq, 9);
        let link = parse_link(msgs[0].payload).unwrap();
        assert_eq!(
            (link.index, link.name.as_str(), link.mtu, link.up),
            (3, "eth0", 1400, true)
        );
        // change mask = IFF_UP
        assert_eq!(u32_of(&msgs[0].payload[12..16]), Some(IFF_UP));
        // "eth0\0" padded to 8: 4 + 5 = 9 -> 12; mtu 8. 16 + 16 + 12 + 8.
        assert_eq!(b.len(), 52);

        let down = set_link(
            3,
            &LinkChange {
                up: Some(false),
                ..Default::default()
            },
            1,
        );
        let p = split(&down).unwrap()[0].payload.to_vec();
        assert_eq!(
            (u32_of(&p[8..12]), u32_of(&p[12..16])),
            (Some(0), Some(IFF_UP))
        );
    }

    #[test]
    fn ipv4_address_has_local_and_address_ipv6_only_address() {
        let b = address(true, 2, &net("10.0.0.2", 24), 1);
        let m = &split(&b).unwrap()[0];
        assert_eq!(m.ty, RTM_NEWADDR);
        assert_eq!(
            m.flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(&m.payload[0..4], &[AF_INET, 24, 0, RT_SCOPE_UNIVERSE]);
        let kinds: Vec<u16> = attrs(m.payload, 8).iter().map(|a| a.0).collect();
        assert_eq!(kinds, [IFA_LOCAL, IFA_ADDRESS]);
        assert_eq!(parse_address(m.payload).unwrap().net, net("10.0.0.2", 24));

        let b = address(false, 2, &net("fd00::2", 64), 1);
        let m = &split(&b).unwrap()[0];
        assert_eq!(m.ty, RTM_DELADDR);
        let kinds: Vec<u16> = attrs(m.payload, 8).iter().map(|a| a.0).collect();
        assert_eq!(kinds, [IFA_ADDRESS]);
        assert_eq!(parse_address(m.payload).unwrap().net, net("fd00::2", 64));
    }

    #[test]
    fn route_round_trips() {
        let r = RouteEntry {
            family: AF_INET,
            dest: Some(net("10.1.0.0", 16)),
            gateway: Some("10.0.0.1".parse().unwrap()),
            oif: 4,
            source: Some("10.0.0.2".parse().unwrap()),
            scope: RT_SCOPE_UNIVERSE,
            protocol: RTPROT_STATIC,
            priority: 0,
            table: RT_TABLE_MAIN,
            kind: RTN_UNICAST,
        };
        let b = route(true, &r, 5);
        let m = &split(&b).unwrap()[0];
        assert_eq!(m.ty, RTM_NEWROUTE);
        assert_eq!(parse_route(m.payload).unwrap(), r);

        let default = RouteEntry {
            dest: None,
            source: None,
            ..r.clone()
        };
        let b = route(false, &default, 6);
        let m = &split(&b).unwrap()[0];
        assert_eq!(m.ty, RTM_DELROUTE);
        assert_eq!(m.payload[1], 0, "dst_len 0 for a default route");
        assert_eq!(parse_route(m.payload).unwrap(), default);
    }

    #[test]
    fn split_reads_several_messages_and_errors() {
        let mut b = dump_request(RTM_GETLINK, 1);
        assert_eq!(b.len(), 32);
        // An NLMSG_ERROR carrying -EEXIST (17) followed by NLMSG_DONE.
        let mut err = Msg::new(NLMSG_ERROR, 0, 2);
        err.bytes(&(-17i32).to_ne_bytes());
        b.extend(err.finish());
        b.extend(Msg::new(NLMSG_DONE, NLM_F_MULTI, 2).finish());
        let msgs = split(&b).unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.ty).collect::<Vec<_>>(),
            [RTM_GETLINK, NLMSG_ERROR, NLMSG_DONE]
        );
        assert_eq!(error_code(msgs[1].payload), Some(17));
        // A length running past the buffer is refused.
        let mut bad = dump_request(RTM_GETADDR, 1);
        bad[0] = 200;
        assert!(split(&bad).is_none());
    }
}
