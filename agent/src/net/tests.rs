//! Request → rtnetlink decisions, driven by the recording fake.

use super::fake::{FakeRtnetlink, NlCall};
use super::*;

const MAC: [u8; 6] = [2, 0, 0, 0, 0x77, 2];

fn net(s: &str, prefix: u8) -> IpNet {
    IpNet {
        addr: s.parse().unwrap(),
        prefix,
    }
}

fn nic(up: bool) -> FakeRtnetlink {
    FakeRtnetlink::new()
        .with_link(1, "lo", [0; 6], true)
        .with_link(2, "eth0", MAC, up)
}

fn kernel_route(dest: IpNet, oif: u32, src: &str) -> RouteEntry {
    RouteEntry {
        family: if dest.addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        },
        dest: Some(dest),
        gateway: None,
        oif,
        source: Some(src.parse().unwrap()),
        scope: RouteScope::Link,
        protocol: RouteProtocol::Kernel,
        priority: 0,
        table: RT_TABLE_MAIN,
        kind: RouteType::Unicast,
        multipath: vec![],
    }
}

fn route(dest: Option<IpNet>, gw: Option<&str>, dev: Option<&str>) -> Route {
    Route {
        dest,
        gateway: gw.map(|g| g.parse().unwrap()),
        device: dev.map(Into::into),
        source: None,
        scope: Scope::Default,
        ipv6_default: false,
        nexthops: vec![],
    }
}

#[test]
fn rename_of_an_up_link_goes_down_renames_and_comes_back_up() {
    let nl = nic(true);
    let u = InterfaceUpdate {
        mac: Some(MAC.to_vec()),
        new_name: Some("net0".into()),
        mtu: Some(1400),
        ..Default::default()
    };
    let i = update_interface(&nl, &u).unwrap();
    assert_eq!(
        (i.link.name.as_str(), i.link.mtu, i.link.up),
        ("net0", 1400, true)
    );
    let down = LinkChange {
        up: Some(false),
        ..Default::default()
    };
    let change = LinkChange {
        name: Some("net0".into()),
        mtu: Some(1400),
        up: None,
    };
    let up = LinkChange {
        up: Some(true),
        ..Default::default()
    };
    assert_eq!(
        nl.calls(),
        [
            NlCall::SetLink(2, down),
            NlCall::SetLink(2, change),
            NlCall::SetLink(2, up)
        ]
    );
}

#[test]
fn unchanged_values_send_nothing() {
    let nl = nic(true).with_address(2, "10.0.0.2", 24);
    let u = InterfaceUpdate {
        name: Some("eth0".into()),
        new_name: Some("eth0".into()),
        mtu: Some(1500),
        addresses: vec![net("10.0.0.2", 24)],
        up: Some(true),
        ..Default::default()
    };
    update_interface(&nl, &u).unwrap();
    assert_eq!(nl.calls(), []);
}

#[test]
fn addresses_are_replaced_keeping_ipv6_link_local_then_link_up() {
    let nl = nic(false)
        .with_address(2, "10.0.0.9", 24)
        .with_address(2, "fe80::1", 64)
        .with_address(1, "127.0.0.1", 8);
    let u = InterfaceUpdate {
        name: Some("eth0".into()),
        addresses: vec![net("10.0.0.2", 24), net("fd00::2", 64)],
        up: Some(true),
        ..Default::default()
    };
    let i = update_interface(&nl, &u).unwrap();
    assert_eq!(
        nl.calls(),
        [
            NlCall::DelAddress(2, net("10.0.0.9", 24)),
            NlCall::AddAddress(2, net("10.0.0.2", 24)),
            NlCall::AddAddress(2, net("fd00::2", 64)),
            NlCall::SetLink(
                2,
                LinkChange {
                    up: Some(true),
                    ..Default::default()
                }
            ),
        ]
    );
    assert_eq!(
        i.addresses,
        [net("fe80::1", 64), net("10.0.0.2", 24), net("fd00::2", 64)]
    );
}

#[test]
fn nic_is_found_by_name_and_mac_together() {
    let nl = nic(false);
    let u = InterfaceUpdate {
        name: Some("eth0".into()),
        mac: Some(vec![2, 0, 0, 0, 0, 9]),
        ..Default::default()
    };
    let e = update_interface(&nl, &u).unwrap_err();
    assert!(matches!(e, NetError::NoInterface { .. }));
    assert_eq!(
        e.to_string(),
        "name: no interface named \"eth0\" with MAC 02:00:00:00:00:09"
    );
    let e = update_interface(&nl, &InterfaceUpdate::default()).unwrap_err();
    assert!(matches!(e, NetError::Invalid { ref field, .. } if field == "name"));
    assert_eq!(nl.calls(), []);
}

#[test]
fn rename_to_a_taken_name_changes_nothing() {
    let nl = nic(true);
    let u = InterfaceUpdate {
        name: Some("eth0".into()),
        new_name: Some("lo".into()),
        ..Default::default()
    };
    assert!(matches!(
        update_interface(&nl, &u),
        Err(NetError::NameTaken(_))
    ));
    assert_eq!(nl.calls(), []);
}

#[test]
fn refused_take_down_stops_before_the_rename() {
    let nl = nic(true);
    let u = InterfaceUpdate {
        name: Some("eth0".into()),
        new_name: Some("net0".into()),
        ..Default::default()
    };
    nl.fail("set_link", Errno::EPERM);
    let e = update_interface(&nl, &u).unwrap_err();
    assert!(e.to_string().starts_with("taking eth0 down to rename it: "));
    assert!(matches!(e, NetError::Netlink { ref source, .. } if source.errno == Errno::EPERM));
    assert_eq!(nl.calls().len(), 1);
    assert_eq!(nl.links.borrow()[1].name, "eth0");
}

#[test]
fn address_failure_names_the_field() {
    let nl = nic(true);
    nl.fail("address", Errno::EINVAL);
    let u = InterfaceUpdate {
        name: Some("eth0".into()),
        addresses: vec![net("10.0.0.2", 24)],
        ..Default::default()
    };
    let e = update_interface(&nl, &u).unwrap_err();
    assert_eq!(
        e.to_string(),
        "addresses[0] (10.0.0.2/24): address: EINVAL: Invalid argument"
    );
}

#[test]
fn routes_replace_the_main_table_keeping_kernel_routes() {
    let stale = RouteEntry {
        dest: Some(net("10.9.0.0", 16)),
        gateway: Some("10.0.0.254".parse().unwrap()),
        source: None,
        scope: RouteScope::Universe,
        protocol: RouteProtocol::Static,
        ..kernel_route(net("10.9.0.0", 16), 2, "10.0.0.2")
    };
    let local_table = RouteEntry {
        table: 255,
        ..stale.clone()
    };
    let nl = nic(true)
        .with_route(kernel_route(net("10.0.0.0", 24), 2, "10.0.0.2"))
        .with_route(stale.clone())
        .with_route(local_table);
    let want = [
        route(None, Some("10.0.0.1"), None),
        route(Some(net("10.0.0.0", 24)), None, Some("eth0")),
        route(Some(net("10.5.0.0", 16)), None, Some("eth0")),
    ];
    let now = update_routes(&nl, &want).unwrap();
    let calls = nl.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0], NlCall::DelRoute(stale));
    // The link route first (gateways must be reachable), then the default route.
    let NlCall::AddRoute(a) = &calls[1] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        (a.dest, a.scope, a.oif, a.protocol),
        (
            Some(net("10.5.0.0", 16)),
            RouteScope::Link,
            2,
            RouteProtocol::Static
        )
    );
    let NlCall::AddRoute(d) = &calls[2] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        (d.dest, d.gateway, d.scope, d.oif, d.family),
        (
            None,
            Some("10.0.0.1".parse().unwrap()),
            RouteScope::Universe,
            0,
            AddressFamily::Inet
        )
    );
    assert_eq!(now.len(), 3, "the local table is not listed: {now:?}");
    // Asking again changes nothing.
    update_routes(&nl, &want).unwrap();
    assert_eq!(nl.calls().len(), 3);
}

#[test]
fn bad_routes_are_refused_before_any_change() {
    let nl = nic(true).with_route(RouteEntry {
        protocol: RouteProtocol::Static,
        ..kernel_route(net("10.9.0.0", 16), 2, "10.0.0.2")
    });
    let cases = [
        (
            route(Some(net("10.5.0.0", 16)), None, Some("eth9")),
            "routes[1].device: no interface named \"eth9\"",
        ),
        (
            route(Some(net("10.5.1.0", 16)), None, Some("eth0")),
            "routes[1].destination: 10.5.1.0/16 has host bits set beyond the prefix",
        ),
        (
            route(Some(net("10.5.0.0", 16)), Some("fd00::1"), None),
            "routes[1].gateway: fd00::1 is not of the destination's address family",
        ),
        (
            route(None, None, None),
            "routes[1].gateway: a default route needs a gateway or a device",
        ),
    ];
    for (bad, msg) in cases {
        let ok = route(None, Some("10.0.0.1"), None);
        let e = update_routes(&nl, &[ok, bad]).unwrap_err();
        assert_eq!(e.to_string(), msg);
    }
    assert_eq!(nl.calls(), []);
}

#[test]
fn route_add_failure_names_the_route() {
    let nl = nic(true);
    nl.fail("route", Errno::ENETUNREACH);
    let e = update_routes(&nl, &[route(None, Some("10.7.0.1"), Some("eth0"))]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "routes[0] (default via 10.7.0.1 dev eth0): route: ENETUNREACH: Network is unreachable"
    );
}

#[test]
fn ipv6_routes_are_universe_scope_and_listed_with_names() {
    let nl = nic(true).with_route(kernel_route(net("fe80::", 64), 2, "fe80::1"));
    let mut r = route(None, Some("fd00::1"), Some("eth0"));
    r.ipv6_default = true;
    let now = update_routes(&nl, &[r]).unwrap();
    let NlCall::AddRoute(a) = &nl.calls()[0] else {
        panic!()
    };
    assert_eq!(
        (a.family, a.scope, a.oif),
        (AddressFamily::Inet6, RouteScope::Universe, 2)
    );
    assert_eq!(now.len(), 2);
    assert!(now
        .iter()
        .all(|r| r.device.as_deref() == Some("eth0") && r.ipv6_default));
}

#[test]
fn parsing_names_fields() {
    assert_eq!(
        IpNet::parse("addresses[2]", "10.0.0.300", 24)
            .unwrap_err()
            .to_string(),
        "addresses[2].address: \"10.0.0.300\" is not an IPv4 or IPv6 address"
    );
    assert_eq!(IpNet::parse("a", "fd00::1", 128).unwrap().prefix, 128);
    assert!(IpNet::parse("a", "fd00::1", 129).is_err());
    assert_eq!(
        parse_mac("mac", "02:00:00:00:77:0A").unwrap(),
        [2, 0, 0, 0, 0x77, 10]
    );
    assert!(parse_mac("mac", "02:00:00:00:77").is_err());
    assert!(parse_mac("mac", "02:00:00:00:77:0g").is_err());
    assert_eq!(format_mac(&MAC), "02:00:00:00:77:02");
    assert!(check_ifname("new_name", "eth0").is_ok());
    assert!(check_ifname("new_name", "a-very-long-name0").is_err());
    assert!(check_ifname("new_name", "a/b").is_err());
    assert!(!net("10.0.0.0", 24).has_host_bits());
    assert!(net("10.0.0.1", 24).has_host_bits());
    assert!(!net("10.0.0.1", 32).has_host_bits());
    assert!(!net("0.0.0.0", 0).has_host_bits());
    assert!(net("fd00::1", 64).has_host_bits());
    assert!(!net("fd00::1", 128).has_host_bits());
}

fn hop(gw: &str, dev: Option<&str>, weight: u16) -> NextHop {
    NextHop {
        gateway: Some(gw.parse().unwrap()),
        device: dev.map(Into::into),
        weight,
    }
}

fn hop_entry(gw: &str, oif: u32, weight: u16) -> NextHopEntry {
    NextHopEntry {
        gateway: Some(gw.parse().unwrap()),
        oif,
        weight,
    }
}

/// A multipath route as the kernel dumps it: no gateway or device of its own.
fn multipath_entry(dest: IpNet, hops: Vec<NextHopEntry>) -> RouteEntry {
    RouteEntry {
        source: None,
        oif: 0,
        scope: RouteScope::Universe,
        protocol: RouteProtocol::Static,
        multipath: hops,
        ..kernel_route(dest, 0, "10.0.0.2")
    }
}

#[test]
fn multipath_routes_are_added_listed_and_kept_in_any_hop_order() {
    let nl = nic(true).with_link(3, "eth1", [2, 0, 0, 0, 0x77, 3], true);
    let mut want = route(Some(net("10.9.0.0", 16)), None, None);
    want.nexthops = vec![hop("10.0.0.1", Some("eth0"), 1), hop("10.1.0.1", None, 3)];
    let now = update_routes(&nl, std::slice::from_ref(&want)).unwrap();
    let calls = nl.calls();
    let [NlCall::AddRoute(a)] = &calls[..] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        (a.gateway, a.oif, a.scope, &a.multipath[..]),
        (
            None,
            0,
            RouteScope::Universe,
            &[hop_entry("10.0.0.1", 2, 1), hop_entry("10.1.0.1", 0, 3)][..]
        )
    );
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].nexthops, want.nexthops);

    // The kernel reports the hops in its own order and with the interface it resolved: the
    // same route, so nothing changes.
    let dumped = multipath_entry(
        net("10.9.0.0", 16),
        vec![hop_entry("10.1.0.1", 3, 3), hop_entry("10.0.0.1", 2, 1)],
    );
    let nl = nic(true)
        .with_link(3, "eth1", [2, 0, 0, 0, 0x77, 3], true)
        .with_route(dumped.clone());
    update_routes(&nl, std::slice::from_ref(&want)).unwrap();
    assert_eq!(nl.calls(), []);
    let listed = list_routes(&nl).unwrap();
    assert_eq!(
        listed[0].nexthops,
        [
            hop("10.1.0.1", Some("eth1"), 3),
            hop("10.0.0.1", Some("eth0"), 1)
        ]
    );
    assert_eq!((listed[0].gateway, &listed[0].device), (None, &None));

    // Another weight is another route: the old one goes, the new one comes.
    want.nexthops[1].weight = 2;
    update_routes(&nl, std::slice::from_ref(&want)).unwrap();
    let calls = nl.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], NlCall::DelRoute(dumped));
    assert!(matches!(&calls[1], NlCall::AddRoute(r) if r.multipath[1].weight == 2));
}

#[test]
fn a_multipath_route_not_asked_for_is_removed_and_single_path_is_not_multipath() {
    let dumped = multipath_entry(
        net("10.9.0.0", 16),
        vec![hop_entry("10.0.0.1", 2, 1), hop_entry("10.0.0.3", 2, 1)],
    );
    let nl = nic(true).with_route(dumped.clone());
    // Same destination, single path via one of the hops: not the same route.
    let single = route(Some(net("10.9.0.0", 16)), Some("10.0.0.1"), Some("eth0"));
    update_routes(&nl, &[single]).unwrap();
    let calls = nl.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], NlCall::DelRoute(dumped));
    assert!(matches!(&calls[1], NlCall::AddRoute(r) if r.multipath.is_empty()));
}

#[test]
fn bad_multipath_routes_name_the_hop_field() {
    let nl = nic(true);
    let with = |f: &dyn Fn(&mut Route)| {
        let mut r = route(Some(net("10.9.0.0", 16)), None, None);
        r.nexthops = vec![hop("10.0.0.1", None, 1), hop("10.0.0.3", None, 1)];
        f(&mut r);
        update_routes(&nl, &[r]).unwrap_err().to_string()
    };
    assert_eq!(
        with(&|r| r.nexthops[1].gateway = Some("fd00::1".parse().unwrap())),
        "routes[0].nexthops[1].gateway: fd00::1 is not of the destination's address family"
    );
    assert_eq!(
        with(&|r| r.nexthops[0].device = Some("eth9".into())),
        "routes[0].nexthops[0].device: no interface named \"eth9\""
    );
    assert_eq!(
        with(&|r| r.nexthops[1] = NextHop {
            gateway: None,
            device: None,
            weight: 1
        }),
        "routes[0].nexthops[1].gateway: a nexthop needs a gateway or a device"
    );
    assert_eq!(
        with(&|r| r.nexthops[0].weight = 0),
        "routes[0].nexthops[0].weight: 0 is outside 1..256"
    );
    assert_eq!(
        with(&|r| r.gateway = Some("10.0.0.1".parse().unwrap())),
        "routes[0].gateway: a multipath route has it in each of its nexthops"
    );
    // The family of a default multipath route comes from its hops.
    let mut r = route(None, None, None);
    r.nexthops = vec![hop("fd00::1", Some("eth0"), 1)];
    update_routes(&nl, &[r]).unwrap();
    assert!(matches!(&nl.calls()[..], [NlCall::AddRoute(a)] if a.family == AddressFamily::Inet6));
}

fn neighbour(addr: &str, dev: &str) -> Neighbour {
    Neighbour {
        addr: addr.parse().unwrap(),
        device: dev.into(),
        lladdr: vec![2, 0, 0, 0, 0, 7],
        state: NeighbourState::Permanent,
        flags: NeighbourFlags::empty(),
    }
}

#[test]
fn neighbours_are_set_and_listed_with_device_names() {
    let nl = nic(true);
    let mut router = neighbour("fd00::1", "eth0");
    router.flags = NeighbourFlags::Router;
    router.state = NeighbourState::Reachable;
    update_neighbours(&nl, &[neighbour("10.0.0.1", "eth0"), router.clone()]).unwrap();
    let calls = nl.calls();
    assert_eq!(calls.len(), 2);
    let NlCall::SetNeighbour(n) = &calls[0] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        (n.index, n.addr, n.state, &n.lladdr[..]),
        (
            2,
            "10.0.0.1".parse().unwrap(),
            NeighbourState::Permanent,
            &[2, 0, 0, 0, 0, 7][..]
        )
    );
    // Replacing: the same address on the same device gets the new lladdr.
    let mut moved = neighbour("10.0.0.1", "eth0");
    moved.lladdr = vec![2, 0, 0, 0, 0, 8];
    update_neighbours(&nl, std::slice::from_ref(&moved)).unwrap();
    assert_eq!(list_neighbours(&nl).unwrap(), [moved, router]);
}

#[test]
fn bad_neighbours_name_the_field_and_change_nothing() {
    let nl = nic(true);
    type Spoil<'a> = &'a dyn Fn(&mut Neighbour);
    let cases: [(Spoil, &str); 5] = [
        (
            &|n| n.device = "eth9".into(),
            "neighbors[1].device: no interface named \"eth9\"",
        ),
        (
            &|n| n.lladdr = vec![1, 2, 3],
            "neighbors[1].lladdr: a MAC address (6 bytes) is needed",
        ),
        (
            &|n| n.state = NeighbourState::Incomplete,
            "neighbors[1].state: Incomplete is not a state a static entry can have",
        ),
        (
            &|n| n.flags = NeighbourFlags::Proxy,
            "neighbors[1].flags: 0x8 has flags other than router (0x80) and ext_learned (0x10)",
        ),
        (
            &|n| n.addr = "224.0.0.1".parse().unwrap(),
            "neighbors[1].address: 224.0.0.1 is not a unicast address",
        ),
    ];
    for (spoil, msg) in cases {
        let mut bad = neighbour("10.0.0.9", "eth0");
        spoil(&mut bad);
        let e = update_neighbours(&nl, &[neighbour("10.0.0.1", "eth0"), bad]).unwrap_err();
        assert_eq!(e.to_string(), msg);
    }
    assert_eq!(nl.calls(), []);
    nl.fail("neighbour", Errno::EINVAL);
    let e = update_neighbours(&nl, &[neighbour("10.0.0.1", "eth0")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "neighbors[0] (10.0.0.1 lladdr 02:00:00:00:00:07 dev eth0): neighbour: EINVAL: Invalid argument"
    );
}

#[test]
fn netlink_errors_show_the_kernels_message() {
    let e = NetlinkError {
        op: "RTM_NEWROUTE",
        errno: Errno::EINVAL,
        message: Some("Multipath support not enabled in kernel".into()),
    };
    assert_eq!(
        e.to_string(),
        "RTM_NEWROUTE: EINVAL: Invalid argument (Multipath support not enabled in kernel)"
    );
}
