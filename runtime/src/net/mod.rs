//! Host side of a sandbox's network (issue 10): inside the caller's network namespace (podman,
//! CNI and containerd create it and put a veth in it), each ethernet-like interface gets a TAP
//! for husk-vmm's virtio-net, and tc moves frames between the two — an ingress qdisc on each
//! with a match-all u32 filter whose `mirred egress redirect` action sends everything arriving
//! on one out of the other (Kata's `tcfilter`; no bridge, no iptables, any CNI plugin). The
//! namespace's addresses, routes and neighbours are read at the same time so the guest's NIC
//! can be configured to be the interface the caller set up. docs/networking.md has the model.
//!
//! All netlink is `netlink-packet-route` over a synchronous `netlink-sys` socket. The work runs
//! on a short-lived thread that has `setns(CLONE_NEWNET)`ed into the namespace: the netlink
//! socket and `/dev/net/tun` it opens belong to that namespace for good, the fds outlive the
//! thread, and the rest of the process never changes namespace.
//!
//! Owns: which links are wired, the TAP names, the wiring and its teardown. Not the guest side
//! (the agent) nor passing the fds to the VMM (the supervisor).

mod inspect;
mod rtnl;
mod tap;
mod tc;
mod wire;

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use rtnl::Rtnl;

/// At most this many interfaces are wired (the TAP name has room for two digits).
const MAX_LINKS: usize = 100;

/// Errors of the host-side network wiring; each names the namespace or interface and the step.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The namespace file could not be opened.
    #[error("network namespace {path}: cannot open: {source}")]
    OpenNetns {
        /// The namespace path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// `setns(CLONE_NEWNET)` refused the file.
    #[error("network namespace {path}: cannot enter: {source}")]
    EnterNetns {
        /// The namespace path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The namespace thread could not be started or died.
    #[error("network namespace {path}: worker thread: {message}")]
    Thread {
        /// The namespace path.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// A namespace-wide netlink step (opening the socket, a dump) failed.
    #[error("{step}: {source}")]
    Netlink {
        /// The step, e.g. "dumping routes".
        step: &'static str,
        /// The error.
        source: io::Error,
    },
    /// A step on one interface failed.
    #[error("{iface}: {step}: {source}")]
    Link {
        /// The interface (the namespace's, or the TAP's when the step is on the TAP).
        iface: String,
        /// The step, e.g. "adding ingress qdisc".
        step: String,
        /// The error.
        source: io::Error,
    },
    /// The interface already has an ingress qdisc: another sandbox (or tool) wired it.
    #[error(
        "{iface}: already has an ingress qdisc (wired by another sandbox, or by a tool such as \
         a CNI bandwidth plugin); husk will not share it"
    )]
    IngressInUse {
        /// The interface.
        iface: String,
    },
    /// More interfaces than TAP names.
    #[error("{count} interfaces to wire; at most {MAX_LINKS} are supported")]
    TooManyInterfaces {
        /// How many there were.
        count: usize,
    },
}

/// An address with its prefix length, e.g. 10.88.0.5/16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpNet {
    /// The address.
    pub address: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// One wired interface of the namespace, as the guest's NIC should look (agent's `Interface` /
/// `UpdateInterfaceRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInterface {
    /// Its name in the namespace ("eth0"); the guest NIC is renamed to it.
    pub name: String,
    /// The TAP wired to it.
    pub tap: String,
    /// Its MAC, lower case "aa:bb:cc:dd:ee:ff": the guest NIC's MAC (VMM `--net mac=`).
    pub mac: String,
    /// Its MTU, also set on the TAP.
    pub mtu: u32,
    /// Whether it is administratively up (IFF_UP).
    pub up: bool,
    /// Its link kind ("veth", "macvlan", "" for a physical NIC).
    pub kind: String,
    /// Its IPv4 and IPv6 addresses; IPv6 link-local ones left out (the guest makes its own).
    pub addresses: Vec<IpNet>,
}

/// The scope of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Global.
    Universe,
    /// Site.
    Site,
    /// Directly attached (no gateway).
    Link,
    /// This host.
    Host,
    /// Nowhere.
    Nowhere,
}

/// One next hop of a multipath route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextHop {
    /// The gateway, if any.
    pub gateway: Option<IpAddr>,
    /// The interface.
    pub device: String,
    /// The weight (`ip route ... weight N`), 1 or more.
    pub weight: u16,
    /// The gateway is on the link even if no prefix says so (`onlink`).
    pub onlink: bool,
}

/// A route of the namespace's main table (agent's `Route`). Routes the kernel made for an
/// address (protocol `kernel`) are left out: the guest kernel makes them again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination network; the unspecified address with prefix 0 for a default route.
    pub destination: IpNet,
    /// The gateway; `None` for a directly connected destination (or a multipath route).
    pub gateway: Option<IpAddr>,
    /// The interface; `None` only for a multipath route.
    pub device: Option<String>,
    /// The preferred source address.
    pub source: Option<IpAddr>,
    /// The scope.
    pub scope: Scope,
    /// The metric (`RTA_PRIORITY`), if set.
    pub metric: Option<u32>,
    /// The gateway is on the link even if no prefix says so (`onlink`).
    pub onlink: bool,
    /// The next hops of a multipath route (then `gateway` and `device` are `None`); empty
    /// otherwise.
    pub nexthops: Vec<NextHop>,
}

/// A neighbour entry (ARP / NDP) worth copying into the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    /// The neighbour's IP address.
    pub address: IpAddr,
    /// Its MAC, lower case.
    pub mac: String,
    /// The interface.
    pub device: String,
    /// `true` for a permanent (static) entry, `false` for a reachable (learnt) one.
    pub permanent: bool,
}

/// A link of the namespace that was not wired, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The link's name.
    pub name: String,
    /// Why it was skipped.
    pub reason: String,
}

/// One wired interface: the TAP's fd and what the guest NIC should be.
#[derive(Debug)]
pub struct WiredInterface {
    /// The TAP, opened `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, vnet header 12 bytes,
    /// non-blocking, close-on-exec: what husk-vmm's `--net fd=N` takes.
    pub tap_fd: OwnedFd,
    /// The interface.
    pub config: HostInterface,
}

/// The outcome of [`inspect_and_wire`].
#[derive(Debug)]
pub struct Wired {
    /// The wired interfaces, in the namespace's ifindex order.
    pub interfaces: Vec<WiredInterface>,
    /// The main table's routes over wired interfaces, directly connected ones first (in
    /// that order they can be added one by one).
    pub routes: Vec<Route>,
    /// Permanent and reachable neighbours on wired interfaces.
    pub neighbours: Vec<Neighbour>,
    /// Links left alone (loopback is not listed).
    pub skipped: Vec<Skipped>,
}

impl Wired {
    /// What [`teardown`] needs, for the container's state file.
    pub fn names(&self) -> WiredNames {
        WiredNames {
            links: self
                .interfaces
                .iter()
                .map(|i| WiredLinkNames {
                    interface: i.config.name.clone(),
                    tap: i.config.tap.clone(),
                })
                .collect(),
        }
    }
}

/// The names of one wired pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WiredLinkNames {
    /// The namespace's interface (its ingress qdisc is removed at teardown).
    pub interface: String,
    /// The TAP (deleted at teardown if it still exists).
    pub tap: String,
}

/// What [`teardown`] removes; saved in the container's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WiredNames {
    /// The wired pairs.
    pub links: Vec<WiredLinkNames>,
}

/// The TAP name of the `n`th wired interface of sandbox `id`: "husk" + the first 8 ASCII
/// alphanumerics of the id + "_" + n (at most 15 bytes, IFNAMSIZ).
pub fn tap_name(id: &str, n: usize) -> String {
    let short: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("husk{short}_{n}")
}

/// Runs `work` on a thread inside the network namespace at `path`.
fn in_netns<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    let ns = File::open(path).map_err(|source| NetError::OpenNetns {
        path: path.to_owned(),
        source,
    })?;
    let p = path.to_owned();
    let handle = std::thread::Builder::new()
        .name("husk-netns".into())
        .spawn(move || {
            // setns(CLONE_NEWNET) changes only this thread's namespace, which is allowed in a
            // multithreaded process (unlike CLONE_NEWUSER / CLONE_NEWNS); the thread ends
            // after `work`, so no other code runs in the namespace.
            nix::sched::setns(ns.as_raw_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                |e| NetError::EnterNetns {
                    path: p,
                    source: e.into(),
                },
            )?;
            drop(ns);
            work()
        })
        .map_err(|e| NetError::Thread {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    handle.join().map_err(|_| NetError::Thread {
        path: path.to_owned(),
        message: "panicked".into(),
    })?
}

/// Inspects the network namespace at `netns_path` and wires each ethernet-like interface to a
/// new TAP (named by [`tap_name`] from the sandbox `id`). On error nothing of this call is
/// left behind: its qdiscs are removed and its TAPs closed (so gone).
pub fn inspect_and_wire(netns_path: &Path, id: &str) -> Result<Wired, NetError> {
    let id = id.to_owned();
    in_netns(netns_path, move || {
        let mut nl = Rtnl::open().map_err(|source| NetError::Netlink {
            step: "opening an rtnetlink socket",
            source,
        })?;
        wire::wire(&mut nl, &id)
    })
}

/// Removes what [`inspect_and_wire`] set up: deletes the TAPs still present and the ingress
/// qdiscs (with their filters) of the interfaces. Idempotent: what is already gone — the
/// TAPs, the qdiscs, the interfaces, the namespace itself — is fine. An ingress qdisc with a
/// filter redirecting to a link that still exists (after our TAPs are deleted) belongs to
/// someone else and is left alone, with a warning.
pub fn teardown(netns_path: &Path, names: &WiredNames) -> Result<(), NetError> {
    if names.links.is_empty() {
        return Ok(());
    }
    let names = names.clone();
    match in_netns(netns_path, move || {
        let mut nl = Rtnl::open().map_err(|source| NetError::Netlink {
            step: "opening an rtnetlink socket",
            source,
        })?;
        wire::unwire(&mut nl, &names)
    }) {
        // The caller removed the namespace: everything in it is gone with it. A file that is
        // no longer a namespace (`ip netns del` unmounts before it unlinks) reads EINVAL.
        Err(NetError::OpenNetns { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(
                path = %netns_path.display(),
                "network namespace gone; nothing to tear down"
            );
            Ok(())
        }
        Err(NetError::EnterNetns { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
            tracing::debug!(
                path = %netns_path.display(),
                "no longer a network namespace; nothing to tear down"
            );
            Ok(())
        }
        r => r,
    }
}

fn link_err(iface: &str, step: impl Into<String>) -> impl FnOnce(io::Error) -> NetError {
    let (iface, step) = (iface.to_owned(), step.into());
    move |source| NetError::Link {
        iface,
        step,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_ifnamsiz_and_differ_per_sandbox() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(tap_name(id, 0), "husk01234567_0");
        assert!(tap_name(id, MAX_LINKS - 1).len() < libc::IFNAMSIZ);
        assert_eq!(tap_name("a-b.c", 3), "huskabc_3");
        assert_ne!(tap_name("abcdefgh1", 0), tap_name("bbcdefgh1", 0));
    }

    #[test]
    fn wired_names_round_trip_through_json() {
        let names = WiredNames {
            links: vec![WiredLinkNames {
                interface: "eth0".into(),
                tap: "huskabc_0".into(),
            }],
        };
        let s = serde_json::to_string(&names).unwrap();
        assert_eq!(serde_json::from_str::<WiredNames>(&s).unwrap(), names);
    }

    #[test]
    fn redirect_filter_names_its_target() {
        let f = tc::redirect_filter(3, 7);
        assert_eq!(
            tc::redirect_targets(&f),
            vec![(7, netlink_packet_route::tc::TcMirrorActionType::EgressRedir)]
        );
        assert_eq!(f.header.info >> 16, u32::from(tc::FILTER_PRIO));
    }
}
