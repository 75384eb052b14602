//! The real rtnetlink implementation (`LinuxRtnetlink`, `netlink-packet-route` over
//! `netlink-sys`), as root, in a fresh network namespace of one test thread
//! (`unshare(CLONE_NEWNET)`): a veth pair made with the crate, then MTU, addresses, routes
//! (IPv4 and IPv6 multipath included) and permanent neighbours set through `net::` and read
//! back, by the agent's own dumps and, where `ip` is installed, by `ip` in that namespace. The
//! host's network is never touched.

use std::net::IpAddr;
use std::process::Command;

use husk_agent::net::{
    self, IpNet, Neighbour, NeighbourFlags, NeighbourState, NetError, NextHop, Route, Rtnetlink,
    Scope,
};
use husk_agent::syscall::netlink::LinuxRtnetlink;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;

/// Runs `f` on a thread of its own in a new network namespace; `None` (after saying why) if
/// that is impossible here.
fn in_fresh_netns(f: impl FnOnce(&LinuxRtnetlink, Ip) + Send + 'static) -> Option<()> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: needs root (a network namespace)");
        return None;
    }
    let t = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let ns = format!(
            "/proc/{}/task/{}/ns/net",
            std::process::id(),
            nix::unistd::gettid()
        );
        let nl = LinuxRtnetlink::open().unwrap();
        f(&nl, Ip { ns });
    });
    t.join().map_err(std::panic::resume_unwind).ok()
}

/// `ip` in the test thread's namespace, for a second opinion; `None` if `ip` is missing.
struct Ip {
    ns: String,
}

impl Ip {
    fn run(&self, args: &str) -> Option<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns))
            .arg("ip")
            .args(args.split_whitespace())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn veth(nl: &LinuxRtnetlink, name: &str, peer: &str) {
    let mut p = LinkMessage::default();
    p.attributes.push(LinkAttribute::IfName(peer.into()));
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.into()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
    ]));
    nl.request(
        "RTM_NEWLINK",
        RouteNetlinkMessage::NewLink(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .expect("creating a veth pair");
}

fn net(a: &str, prefix: u8) -> IpNet {
    IpNet {
        addr: a.parse().unwrap(),
        prefix,
    }
}

fn ip(a: &str) -> Option<IpAddr> {
    Some(a.parse().unwrap())
}

fn hop(gw: &str, dev: &str, weight: u16) -> NextHop {
    NextHop {
        gateway: ip(gw),
        device: Some(dev.into()),
        weight,
    }
}

fn route(dest: Option<IpNet>, gw: Option<&str>, dev: Option<&str>, hops: Vec<NextHop>) -> Route {
    Route {
        dest,
        gateway: gw.and_then(ip),
        device: dev.map(Into::into),
        source: None,
        scope: Scope::Default,
        ipv6_default: false,
        nexthops: hops,
    }
}

/// `eth0` (was v0), MTU 1400, 10.1.0.2/24 + fd00:1::2/64, up; its peer v1 up.
fn set_up_eth0(nl: &LinuxRtnetlink) {
    veth(nl, "v0", "v1");
    let up = |name: &str, u: net::InterfaceUpdate| {
        net::update_interface(
            nl,
            &net::InterfaceUpdate {
                name: Some(name.into()),
                up: Some(true),
                ..u
            },
        )
        .unwrap()
    };
    up("v1", Default::default());
    let i = up(
        "v0",
        net::InterfaceUpdate {
            new_name: Some("eth0".into()),
            mtu: Some(1400),
            addresses: vec![net("10.1.0.2", 24), net("fd00:1::2", 64)],
            ..Default::default()
        },
    );
    assert_eq!(
        (i.link.name.as_str(), i.link.mtu, i.link.up),
        ("eth0", 1400, true)
    );
    assert!(i.addresses.contains(&net("10.1.0.2", 24)));
    assert!(i.addresses.contains(&net("fd00:1::2", 64)));
}

#[test]
fn interface_routes_with_multipath_and_neighbours_in_a_fresh_netns() {
    in_fresh_netns(|nl, ipcmd| {
        set_up_eth0(nl);
        let names: Vec<String> = net::list_interfaces(nl)
            .unwrap()
            .into_iter()
            .map(|i| i.link.name)
            .collect();
        assert_eq!(names, ["lo", "v1", "eth0"]);
        if let Some(link) = ipcmd.run("-o link show dev eth0") {
            assert!(link.contains("mtu 1400") && link.contains(",UP"), "{link}");
        }

        // Routes: a default route, an IPv4 multipath route, an IPv6 multipath route.
        let v4_multi = route(
            Some(net("10.9.0.0", 16)),
            None,
            None,
            vec![hop("10.1.0.1", "eth0", 1), hop("10.1.0.5", "eth0", 3)],
        );
        let mut v6_multi = route(
            Some(net("fd00:9::", 64)),
            None,
            None,
            vec![hop("fe80::1", "eth0", 1), hop("fe80::2", "eth0", 2)],
        );
        let want = vec![
            route(None, Some("10.1.0.1"), None, vec![]),
            v4_multi.clone(),
            v6_multi.clone(),
        ];
        let now = net::update_routes(nl, &want).unwrap();
        let find = |list: &[Route], d: &str| {
            list.iter()
                .find(|r| {
                    r.dest
                        .is_some_and(|x| x.addr == d.parse::<IpAddr>().unwrap())
                })
                .cloned()
                .unwrap_or_else(|| panic!("no route to {d}: {list:?}"))
        };
        let got = find(&now, "10.9.0.0");
        assert_eq!(got.nexthops, v4_multi.nexthops, "{now:?}");
        assert_eq!((got.gateway, &got.device), (None, &None));
        let got6 = find(&now, "fd00:9::");
        let mut hops6 = got6.nexthops.clone();
        hops6.sort_by_key(|h| h.gateway);
        assert_eq!(hops6, v6_multi.nexthops, "{now:?}");
        assert!(now.iter().any(|r| r.dest.is_none()
            && r.gateway == ip("10.1.0.1")
            && r.device.as_deref() == Some("eth0")));
        if let Some(table) = ipcmd.run("-4 route show") {
            assert!(table.contains("10.9.0.0/16 proto static"), "{table}");
            assert!(
                table.contains("nexthop via 10.1.0.1 dev eth0 weight 1"),
                "{table}"
            );
            assert!(
                table.contains("nexthop via 10.1.0.5 dev eth0 weight 3"),
                "{table}"
            );
        }
        if let Some(table) = ipcmd.run("-6 route show") {
            assert!(
                table.contains("nexthop via fe80::2 dev eth0 weight 2"),
                "{table}"
            );
        }

        // The same request again is no change (no EEXIST); other weights replace the route.
        let again = net::update_routes(nl, &want).unwrap();
        assert_eq!(again.len(), now.len());
        v6_multi.nexthops[1].weight = 5;
        let want = vec![
            route(None, Some("10.1.0.1"), None, vec![]),
            v6_multi.clone(),
        ];
        let now = net::update_routes(nl, &want).unwrap();
        assert!(
            !now.iter().any(|r| r.dest == Some(net("10.9.0.0", 16))),
            "{now:?}"
        );
        let got6 = find(&now, "fd00:9::");
        assert!(got6.nexthops.iter().any(|h| h.weight == 5), "{now:?}");
        assert_eq!(got6.nexthops.len(), 2, "{now:?}");

        // The kernel's refusal names the route and carries errno (and its own message).
        let unreachable = route(
            Some(net("10.50.0.0", 16)),
            Some("10.77.0.1"),
            Some("eth0"),
            vec![],
        );
        let e = net::update_routes(nl, &[unreachable]).unwrap_err();
        let NetError::Netlink { step, source } = &e else {
            panic!("{e}")
        };
        assert_eq!(step, "routes[0] (10.50.0.0/16 via 10.77.0.1 dev eth0)");
        assert_eq!(source.errno, Errno::ENETUNREACH, "{e}");
        eprintln!("kernel refusal as reported: {e}");

        // Neighbours: a permanent IPv4 entry and an IPv6 router, then one replaced.
        let mut n4 = Neighbour {
            addr: "10.1.0.7".parse().unwrap(),
            device: "eth0".into(),
            lladdr: vec![2, 0, 0, 0, 0, 7],
            state: NeighbourState::Permanent,
            flags: NeighbourFlags::empty(),
        };
        let n6 = Neighbour {
            addr: "fd00:1::1".parse().unwrap(),
            flags: NeighbourFlags::Router,
            lladdr: vec![2, 0, 0, 0, 0, 1],
            ..n4.clone()
        };
        net::update_neighbours(nl, &[n4.clone(), n6.clone()]).unwrap();
        n4.lladdr = vec![2, 0, 0, 0, 0, 8];
        net::update_neighbours(nl, std::slice::from_ref(&n4)).unwrap();
        let list = net::list_neighbours(nl).unwrap();
        assert!(list.contains(&n4), "{list:?}");
        assert!(list.contains(&n6), "{list:?}");
        if let Some(neigh) = ipcmd.run("neigh show dev eth0") {
            assert!(
                neigh.contains("10.1.0.7 lladdr 02:00:00:00:00:08 PERMANENT"),
                "{neigh}"
            );
            assert!(
                neigh.contains("fd00:1::1 lladdr 02:00:00:00:00:01 router PERMANENT"),
                "{neigh}"
            );
        }
        let bad = Neighbour {
            device: "nope0".into(),
            ..n4
        };
        let e = net::update_neighbours(nl, &[bad]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "neighbors[0].device: no interface named \"nope0\""
        );
        // Nothing but `net::` and the crate touched the namespace: the dumps agree.
        assert!(nl.neighbours().unwrap().len() >= 2);
    });
}
