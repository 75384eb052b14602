//! The host side of a sandbox's network (src/net), for real: network namespaces and veth
//! pairs made with ip(8), `inspect_and_wire` against them, tc's own dump of the qdiscs and
//! mirred filters, frames through the TAP fd both ways, and teardown (also after the fds were
//! closed, the `kill -9` case). Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN for setns); prints
//! SKIP and passes without it.
//!
//! The module is compiled into this test by path (the husk crate is a binary, with no library
//! to link against).

#[allow(dead_code)]
#[path = "../src/net/mod.rs"]
mod net;

use std::io::{Read, Write};
use std::net::{IpAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on each ip/tc command.
const CMD_TIMEOUT: Duration = Duration::from_secs(10);

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: not root; the network wiring test needs CAP_NET_ADMIN and setns");
        return false;
    }
    true
}

/// Runs a command with a deadline; returns (success, stdout, stderr).
fn run(prog: &str, args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), out, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{prog} {args:?}: still running after {CMD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command that must succeed; returns its stdout.
fn must(prog: &str, args: &[&str]) -> String {
    let (ok, out, err) = run(prog, args);
    assert!(ok, "{prog} {}: {err}", args.join(" "));
    out
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("husknw{}{tag}", std::process::id());
        // A leftover of an earlier, killed run of this test with the same pid.
        let _ = run("ip", &["netns", "del", &name]);
        must("ip", &["netns", "add", &name]);
        let ns = Self(name);
        ns.ip("link set lo up");
        ns
    }
    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
    /// `ip -n NS ARGS...`, the arguments split at white space.
    fn ip(&self, args: &str) -> String {
        let mut a = vec!["-n", &self.0];
        a.extend(args.split_whitespace());
        must("ip", &a)
    }
    /// `tc -n NS ARGS...`, the arguments split at white space.
    fn tc(&self, args: &str) -> String {
        let mut a = vec!["-n", &self.0];
        a.extend(args.split_whitespace());
        must("tc", &a)
    }
    fn has_link(&self, name: &str) -> bool {
        run("ip", &["-n", &self.0, "link", "show", "dev", name]).0
    }
    fn link_json(&self, name: &str) -> serde_json::Value {
        let out = self.ip(&format!("-j link show dev {name}"));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
    }
    /// Runs `f` on a thread inside this namespace (sockets it makes stay in it).
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.path()).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(file.as_raw_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

/// The container namespace "c" (veth eth0 with addresses, routes and neighbours, a second
/// veth eth1 left down, and links that must not be wired) and the peer namespace "p" with the
/// other ends.
fn setup(tag: &str) -> (Netns, Netns) {
    let c = Netns::new(&format!("{tag}c"));
    let p = Netns::new(&format!("{tag}p"));
    let pn = &p.0;
    c.ip(&format!(
        "link add eth0 address 02:aa:00:00:00:01 mtu 1400 type veth \
         peer name peer0 address 02:bb:00:00:00:01 mtu 1400 netns {pn}"
    ));
    c.ip(&format!(
        "link add eth1 address 02:aa:00:00:00:11 type veth peer name peer1 netns {pn}"
    ));
    // Not wired: a TUN (no Ethernet), a bridge and the veth end enslaved to it.
    c.ip("tuntap add tun0 mode tun");
    c.ip("link add br0 type bridge");
    c.ip(&format!("link add vb0 type veth peer name vb1 netns {pn}"));
    c.ip("link set vb0 master br0");
    c.ip("link set br0 up");
    c.ip("addr add 10.55.0.1/24 dev br0");
    c.ip("addr add 10.77.0.2/24 dev eth0");
    c.ip("addr add fd77::2/64 dev eth0 nodad");
    c.ip("link set eth0 up");
    c.ip("route add default via 10.77.0.1 dev eth0");
    c.ip("route add 10.99.0.0/16 via 10.77.0.1 dev eth0 metric 5");
    c.ip(
        "route add 10.98.0.0/16 nexthop via 10.77.0.1 dev eth0 weight 1 \
         nexthop via 10.77.0.3 dev eth0 weight 2",
    );
    c.ip("route add 10.66.0.0/16 dev eth0 scope link");
    c.ip("route add 10.56.0.0/16 via 10.55.0.9 dev br0");
    c.ip("-6 route add default via fd77::1 dev eth0");
    c.ip("neigh add 10.77.0.9 lladdr 02:00:00:00:00:09 dev eth0 nud permanent");
    c.ip("neigh add fd77::9 lladdr 02:00:00:00:00:19 dev eth0 nud permanent");
    p.ip("addr add 10.77.0.1/24 dev peer0");
    p.ip("link set peer0 up");
    p.ip("link set peer1 up");
    (c, p)
}

fn net(s: &str) -> net::IpNet {
    let (a, p) = s.split_once('/').unwrap();
    net::IpNet {
        address: a.parse().unwrap(),
        prefix: p.parse().unwrap(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An IPv4/UDP frame with the 12-byte virtio-net header in front, as the guest's virtio-net
/// would hand it to the VMM.
fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut iph = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    iph[2..4].copy_from_slice(&total.to_be_bytes());
    iph.extend_from_slice(&src);
    iph.extend_from_slice(&dst);
    let sum = iph
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let csum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    iph[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&iph);
    f.extend_from_slice(&4444u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    f.extend_from_slice(payload);
    f
}

/// Reads frames from the (non-blocking) TAP fd until one carries `payload` in a UDP datagram
/// to `dport`, or 5 s pass.
fn tap_receives(fd: BorrowedFd<'_>, dport: u16, payload: &[u8]) -> bool {
    let mut file = std::fs::File::from(fd.try_clone_to_owned().unwrap());
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match file.read(&mut buf) {
            Ok(n) => {
                let eth = &buf[12..n];
                // IPv4, UDP, destination port, payload at the end.
                if eth.len() >= 42
                    && eth[12..14] == [0x08, 0x00]
                    && eth[23] == 17
                    && eth[36..38] == dport.to_be_bytes()
                    && eth.ends_with(payload)
                {
                    return true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("reading the TAP: {e}"),
        }
    }
    false
}

fn mac_bytes(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

#[test]
fn wires_inspects_carries_frames_and_tears_down() {
    if !root() {
        return;
    }
    let (c, p) = setup("a");
    let id = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    let wired = net::inspect_and_wire(&c.path(), id).expect("inspect_and_wire");

    // --- What was inspected.
    let names: Vec<&str> = wired
        .interfaces
        .iter()
        .map(|i| i.config.name.as_str())
        .collect();
    assert_eq!(names, ["eth0", "eth1"], "{wired:#?}");
    let eth0 = &wired.interfaces[0].config;
    assert_eq!(eth0.tap, "husk0a1b2c3d_0");
    assert_eq!(eth0.mac, "02:aa:00:00:00:01");
    assert_eq!(eth0.mtu, 1400);
    assert!(eth0.up);
    assert_eq!(eth0.kind, "veth");
    assert_eq!(
        eth0.addresses,
        [net("10.77.0.2/24"), net("fd77::2/64")],
        "link-local left out"
    );
    let eth1 = &wired.interfaces[1].config;
    assert_eq!(
        (eth1.tap.as_str(), eth1.up, eth1.mtu),
        ("husk0a1b2c3d_1", false, 1500)
    );
    assert!(eth1.addresses.is_empty());
    let skipped: Vec<(&str, &str)> = wired
        .skipped
        .iter()
        .map(|s| (s.name.as_str(), s.reason.as_str()))
        .collect();
    assert!(
        skipped
            .iter()
            .any(|(n, r)| *n == "tun0" && r.contains("not an Ethernet")),
        "{skipped:?}"
    );
    assert!(skipped.contains(&("br0", "a bridge")), "{skipped:?}");
    assert!(
        skipped
            .iter()
            .any(|(n, r)| *n == "vb0" && r.contains("enslaved")),
        "{skipped:?}"
    );

    let route = |dest: &str| wired.routes.iter().find(|r| r.destination == net(dest));
    let default = route("0.0.0.0/0").expect("IPv4 default route");
    assert_eq!(default.gateway, Some(ip("10.77.0.1")));
    assert_eq!(default.device.as_deref(), Some("eth0"));
    assert_eq!(default.scope, net::Scope::Universe);
    assert_eq!(route("10.99.0.0/16").unwrap().metric, Some(5));
    let multi = route("10.98.0.0/16").expect("multipath route");
    assert_eq!(multi.device, None);
    let hops: Vec<(Option<IpAddr>, &str, u16)> = multi
        .nexthops
        .iter()
        .map(|h| (h.gateway, h.device.as_str(), h.weight))
        .collect();
    assert_eq!(
        hops,
        [
            (Some(ip("10.77.0.1")), "eth0", 1),
            (Some(ip("10.77.0.3")), "eth0", 2)
        ]
    );
    let v6 = route("::/0").expect("IPv6 default route");
    assert_eq!(v6.gateway, Some(ip("fd77::1")));
    assert!(
        route("10.77.0.0/24").is_none(),
        "kernel prefix routes are left out"
    );
    assert!(
        route("10.56.0.0/16").is_none(),
        "routes over unwired links are left out"
    );
    let direct = route("10.66.0.0/16").expect("direct route");
    assert_eq!((direct.gateway, direct.scope), (None, net::Scope::Link));
    assert_eq!(
        wired.routes[0], *direct,
        "directly connected routes come first"
    );
    assert_eq!(wired.routes.len(), 5, "{:#?}", wired.routes);
    let neigh: Vec<(IpAddr, &str, &str, bool)> = wired
        .neighbours
        .iter()
        .map(|n| (n.address, n.mac.as_str(), n.device.as_str(), n.permanent))
        .collect();
    assert!(
        neigh.contains(&(ip("10.77.0.9"), "02:00:00:00:00:09", "eth0", true)),
        "{neigh:?}"
    );
    assert!(
        neigh.contains(&(ip("fd77::9"), "02:00:00:00:00:19", "eth0", true)),
        "{neigh:?}"
    );

    // --- What the kernel now has (tc's own dump).
    for (iface, tap) in [("eth0", "husk0a1b2c3d_0"), ("eth1", "husk0a1b2c3d_1")] {
        for (from, to) in [(iface, tap), (tap, iface)] {
            let q = c.tc(&format!("qdisc show dev {from} ingress"));
            assert!(q.contains("qdisc ingress ffff:"), "{from}: {q}");
            let f = c.tc(&format!("filter show dev {from} ingress"));
            assert!(
                f.contains("u32")
                    && f.contains(&format!("mirred (Egress Redirect to device {to})")),
                "{from}: {f}"
            );
        }
        let j = c.link_json(tap);
        assert_eq!(j["mtu"], c.link_json(iface)["mtu"], "{tap} MTU");
        assert!(
            j["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{tap} is up: {j}"
        );
        assert!(
            j["linkinfo"].is_null() || j["linkinfo"]["info_kind"] == "tun",
            "{j}"
        );
    }

    // --- A second sandbox cannot wire the same interfaces, and leaves nothing behind.
    let e = net::inspect_and_wire(&c.path(), "ffff0000").expect_err("second wiring");
    assert!(
        e.to_string()
            .starts_with("eth0: already has an ingress qdisc"),
        "{e}"
    );
    assert!(
        !c.has_link("huskffff0000_0") && !c.has_link("huskffff0000_1"),
        "the failed wiring's TAPs are gone"
    );

    // --- Frames: guest -> TAP fd -> eth0 -> peer0, and peer0 -> eth0 -> TAP fd.
    let rx = p.enter(|| {
        let s = UdpSocket::bind("10.77.0.1:5555").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    });
    let peer_mac = mac_bytes("02:bb:00:00:00:01");
    let eth0_mac = mac_bytes("02:aa:00:00:00:01");
    let frame = udp_frame(
        peer_mac,
        eth0_mac,
        [10, 77, 0, 2],
        [10, 77, 0, 1],
        5555,
        b"from-the-guest",
    );
    let tap_fd = wired.interfaces[0].tap_fd.as_fd();
    std::fs::File::from(tap_fd.try_clone_to_owned().unwrap())
        .write_all(&frame)
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = rx
        .recv_from(&mut buf)
        .expect("the frame written to the TAP reaches the peer");
    assert_eq!(&buf[..n], b"from-the-guest");
    assert_eq!(from.ip(), ip("10.77.0.2"));

    p.ip("neigh add 10.77.0.2 lladdr 02:aa:00:00:00:01 dev peer0 nud permanent");
    p.enter(|| {
        let s = UdpSocket::bind("10.77.0.1:0").unwrap();
        s.send_to(b"from-the-peer", "10.77.0.2:6666").unwrap();
    });
    assert!(
        tap_receives(tap_fd, 6666, b"from-the-peer"),
        "the peer's datagram comes out of the TAP fd"
    );

    // --- Teardown while the fds are still open, then again (idempotent).
    net::teardown(&c.path(), &wired.names()).expect("teardown");
    for (iface, tap) in [("eth0", "husk0a1b2c3d_0"), ("eth1", "husk0a1b2c3d_1")] {
        assert!(!c.has_link(tap), "{tap} deleted");
        let q = c.tc(&format!("qdisc show dev {iface} ingress"));
        assert!(q.trim().is_empty(), "{iface}: {q}");
    }
    net::teardown(&c.path(), &wired.names()).expect("second teardown");
    drop(wired);
    assert!(
        c.has_link("eth0") && c.has_link("eth1"),
        "the caller's interfaces stay"
    );
}

#[test]
fn teardown_after_the_fds_closed_and_with_foreign_or_missing_state() {
    if !root() {
        return;
    }
    let (c, _p) = setup("b");
    let wired = net::inspect_and_wire(&c.path(), "kill9").expect("inspect_and_wire");
    let names = wired.names();
    assert_eq!(names.links[0].tap, "huskkill9_0");
    // The supervisor and the VMM die (kill -9): the kernel closes the fds.
    drop(wired);
    assert!(
        !c.has_link("huskkill9_0"),
        "a non-persistent TAP goes with its last fd"
    );
    let q = c.tc("qdisc show dev eth0 ingress");
    assert!(
        q.contains("ingress"),
        "the veth's qdisc outlives the TAP: {q}"
    );
    net::teardown(&c.path(), &names).expect("teardown after kill -9");
    assert!(c.tc("qdisc show dev eth0 ingress").trim().is_empty());
    assert!(c.tc("qdisc show dev eth1 ingress").trim().is_empty());

    // Someone else's ingress redirect on eth0 (to a link that exists) is left alone, and
    // wiring refuses to share it.
    c.tc("qdisc add dev eth0 ingress");
    c.tc(
        "filter add dev eth0 parent ffff: protocol all u32 match u8 0 0 \
         action mirred egress redirect dev eth1",
    );
    net::teardown(&c.path(), &names).expect("teardown with a foreign qdisc");
    assert!(c.tc("qdisc show dev eth0 ingress").contains("ingress"));
    let e = net::inspect_and_wire(&c.path(), "other").expect_err("eth0 is taken");
    assert!(
        matches!(&e, net::NetError::IngressInUse { iface } if iface == "eth0"),
        "{e}"
    );

    // The namespace itself gone (the caller deleted it first): nothing to do.
    let path = c.path();
    drop(c);
    net::teardown(&path, &names).expect("teardown without the namespace");
    // Not a namespace at all: a clear error naming the path.
    let e = net::inspect_and_wire(Path::new("/proc/self/status"), "x").expect_err("not a netns");
    assert!(
        e.to_string().contains("/proc/self/status: cannot enter"),
        "{e}"
    );
}
