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
            wire::AF_INET
        } else {
            wire::AF_INET6
        },
        dest: Some(dest),
        gateway: None,
        oif,
        source: Some(src.parse().unwrap()),
        scope: wire::RT_SCOPE_LINK,
        protocol: wire::RTPROT_KERNEL,
        priority: 0,
        table: wire::RT_TABLE_MAIN,
        kind: wire::RTN_UNICAST,
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
        scope: wire::RT_SCOPE_UNIVERSE,
        protocol: wire::RTPROT_STATIC,
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
            wire::RT_SCOPE_LINK,
            2,
            wire::RTPROT_STATIC
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
            wire::RT_SCOPE_UNIVERSE,
            0,
            wire::AF_INET
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
        protocol: wire::RTPROT_STATIC,
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
        (wire::AF_INET6, wire::RT_SCOPE_UNIVERSE, 2)
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
