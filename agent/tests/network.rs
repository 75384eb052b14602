//! Host mode, as root: the agent runs in a network namespace of its own (`unshare --net`) with
//! a TAP link made there, and UpdateInterface / UpdateRoutes really change what `ip` sees in
//! that namespace; bad requests are refused naming the field. The test host's own network is
//! never touched.

mod common;

use std::process::Command;

use husk_agent::protocol as pb;
use ttrpc::Code;

use common::{ctx, Agent};

fn why_not() -> Option<String> {
    if let Some(why) = common::skip_reason() {
        return Some(why);
    }
    for tool in ["ip", "unshare", "nsenter"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} missing"));
        }
    }
    None
}

/// Runs `ip ARGS` in the agent's network namespace; panics on failure.
fn ip(agent: &Agent, args: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", agent.pid()))
        .arg("ip")
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn addr(a: &str, prefix: u32) -> pb::IpAddress {
    pb::IpAddress {
        address: a.into(),
        prefix,
        ..Default::default()
    }
}

fn route(dest: &str, prefix: u32, gw: &str, dev: &str, src: &str) -> pb::Route {
    pb::Route {
        destination: dest.into(),
        prefix,
        gateway: gw.into(),
        device: dev.into(),
        source: src.into(),
        ..Default::default()
    }
}

fn code_and_message(e: ttrpc::Error) -> (Code, String) {
    match e {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not a status: {other}"),
    }
}

/// A namespace with a TAP `t0` and an agent in it; `None` (after saying why) if impossible.
fn agent_in_netns() -> Option<Agent> {
    if let Some(why) = why_not() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let agent = Agent::start_under(&["unshare", "--net"]);
    let tap = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", agent.pid()))
        .args(["ip", "tuntap", "add", "dev", "t0", "mode", "tap"])
        .output()
        .unwrap();
    if !tap.status.success() {
        eprintln!(
            "SKIPPED: cannot make a TAP: {}",
            String::from_utf8_lossy(&tap.stderr)
        );
        return None;
    }
    Some(agent)
}

#[test]
fn interface_and_routes_really_change_in_the_agents_netns() {
    let Some(agent) = agent_in_netns() else {
        return;
    };
    let list = agent
        .client
        .list_interfaces(ctx(), &pb::Empty::new())
        .unwrap();
    let names: Vec<&str> = list.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["lo", "t0"], "a fresh namespace: {list:?}");
    let mac = list.interfaces[1].mac.clone();
    assert_eq!(mac.len(), 17);

    // Found by MAC: renamed, MTU, two addresses, up.
    let req = pb::UpdateInterfaceRequest {
        mac: mac.to_uppercase(),
        new_name: "eth0".into(),
        mtu: 1400,
        addresses: vec![addr("10.99.0.2", 24), addr("fd00:99::2", 64)],
        state: pb::LinkState::LINK_STATE_UP.into(),
        ..Default::default()
    };
    let i = agent.client.update_interface(ctx(), &req).unwrap();
    assert_eq!((i.name.as_str(), i.mtu, i.up), ("eth0", 1400, true));
    let link = ip(&agent, "-o link show dev eth0");
    assert!(link.contains("mtu 1400") && link.contains(",UP"), "{link}");
    assert!(link.contains(&mac), "{link}");
    let addrs = ip(&agent, "-o addr show dev eth0");
    assert!(addrs.contains("inet 10.99.0.2/24"), "{addrs}");
    assert!(addrs.contains("inet6 fd00:99::2/64"), "{addrs}");

    // Routes: a default route and one with a source; the kernel's prefix route stays.
    let req = pb::UpdateRoutesRequest {
        routes: vec![
            route("default", 0, "10.99.0.1", "", ""),
            route("10.123.0.0", 16, "10.99.0.1", "eth0", "10.99.0.2"),
        ],
        ..Default::default()
    };
    let now = agent.client.update_routes(ctx(), &req).unwrap();
    assert!(now
        .routes
        .iter()
        .any(|r| r.destination == "default" && r.gateway == "10.99.0.1" && r.device == "eth0"));
    let table = ip(&agent, "-4 route show");
    assert!(
        table.contains("default via 10.99.0.1 dev eth0 proto static"),
        "{table}"
    );
    assert!(
        table.contains("10.123.0.0/16 via 10.99.0.1 dev eth0 proto static src 10.99.0.2"),
        "{table}"
    );
    assert!(
        table.contains("10.99.0.0/24 dev eth0 proto kernel"),
        "{table}"
    );

    // Replaced: only a link route left besides the kernel's; the same request twice is fine.
    let req = pb::UpdateRoutesRequest {
        routes: vec![route("10.50.0.0", 24, "", "eth0", "")],
        ..Default::default()
    };
    agent.client.update_routes(ctx(), &req).unwrap();
    agent.client.update_routes(ctx(), &req).unwrap();
    let table = ip(&agent, "-4 route show");
    assert!(!table.contains("default"), "{table}");
    assert!(!table.contains("10.123.0.0"), "{table}");
    assert!(
        table.contains("10.50.0.0/24 dev eth0 proto static scope link"),
        "{table}"
    );
    let listed = agent.client.list_routes(ctx(), &pb::Empty::new()).unwrap();
    assert!(listed.routes.iter().any(|r| r.destination == "10.50.0.0"
        && r.prefix == 24
        && r.scope.enum_value() == Ok(pb::RouteScope::ROUTE_SCOPE_LINK)));

    // Addresses replaced, link down, by name.
    let req = pb::UpdateInterfaceRequest {
        name: "eth0".into(),
        addresses: vec![addr("10.99.0.3", 24)],
        state: pb::LinkState::LINK_STATE_DOWN.into(),
        ..Default::default()
    };
    agent.client.update_interface(ctx(), &req).unwrap();
    let addrs = ip(&agent, "-o addr show dev eth0");
    assert!(addrs.contains("inet 10.99.0.3/24"), "{addrs}");
    assert!(
        !addrs.contains("10.99.0.2") && !addrs.contains("fd00:99::2"),
        "{addrs}"
    );
    assert!(!ip(&agent, "-o link show dev eth0").contains(",UP"));
}

#[test]
fn bad_network_requests_name_the_field() {
    let Some(agent) = agent_in_netns() else {
        return;
    };
    let update = |req: pb::UpdateInterfaceRequest| {
        code_and_message(agent.client.update_interface(ctx(), &req).unwrap_err())
    };
    let (code, msg) = update(pb::UpdateInterfaceRequest {
        name: "nope0".into(),
        ..Default::default()
    });
    assert_eq!(
        (code, msg.as_str()),
        (Code::NOT_FOUND, "name: no interface named \"nope0\"")
    );
    let (code, msg) = update(pb::UpdateInterfaceRequest {
        name: "t0".into(),
        addresses: vec![addr("10.0.0.2", 24), addr("10.0.0.3", 33)],
        ..Default::default()
    });
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(msg.starts_with("addresses[1].prefix: "), "{msg}");
    let (code, msg) = update(pb::UpdateInterfaceRequest {
        mac: "02:00:00:00:00".into(),
        ..Default::default()
    });
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(msg.starts_with("mac: "), "{msg}");
    let (code, msg) = update(pb::UpdateInterfaceRequest {
        name: "t0".into(),
        mtu: 20,
        ..Default::default()
    });
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(msg.starts_with("mtu: "), "{msg}");
    let (code, _) = update(pb::UpdateInterfaceRequest {
        name: "t0".into(),
        new_name: "lo".into(),
        ..Default::default()
    });
    assert_eq!(code, Code::ALREADY_EXISTS);

    let routes = |routes: Vec<pb::Route>| {
        let req = pb::UpdateRoutesRequest {
            routes,
            ..Default::default()
        };
        code_and_message(agent.client.update_routes(ctx(), &req).unwrap_err())
    };
    let (code, msg) = routes(vec![route("default", 0, "10.7.0.1", "nope0", "")]);
    assert_eq!(code, Code::NOT_FOUND);
    assert!(msg.starts_with("routes[0].device: "), "{msg}");
    let (code, msg) = routes(vec![route("10.1.2.3", 16, "", "t0", "")]);
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(msg.starts_with("routes[0].destination: "), "{msg}");
    // The kernel's refusal: no route reaches the gateway.
    let (code, msg) = routes(vec![route("default", 0, "10.7.0.1", "t0", "")]);
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(
        msg.starts_with("routes[0] (default via 10.7.0.1 dev t0): "),
        "{msg}"
    );
    // Nothing was changed by any of them.
    assert_eq!(ip(&agent, "-4 route show"), "");
    assert!(!ip(&agent, "-o addr show dev t0").contains("inet "));
}
