//! Changing a network namespace: the TAPs, the tc ingress qdiscs and redirect filters, and
//! their removal.
//!
//! Owns: the order of the wiring steps, undoing them when one fails, and deciding at teardown
//! which ingress qdiscs are ours to remove.

use std::collections::HashMap;
use std::io;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoKind, LinkAttribute, LinkFlags, LinkMessage,
};
use netlink_packet_route::tc::{TcMessage, TcMirrorActionType};
use netlink_packet_route::RouteNetlinkMessage;

use super::inspect::{
    dump_addresses, dump_links, dump_neighbours, dump_routes, mac_string, skip_reason,
};
use super::rtnl::Rtnl;
use super::{
    link_err, tap, tap_name, tc, HostInterface, NetError, Skipped, Wired, WiredInterface,
    WiredNames, MAX_LINKS,
};

/// Sets the TAP up with the interface's MTU, without IPv6 autoconfiguration (no link-local
/// address, no router solicitations from the host into the guest).
fn set_tap_up(nl: &mut Rtnl, tap: &str, index: u32, mtu: u32) -> Result<(), NetError> {
    let mut gen = LinkMessage::default();
    gen.header.index = index;
    gen.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    if let Err(e) = nl.ack(RouteNetlinkMessage::SetLink(gen), 0) {
        // No IPv6 in this kernel or namespace: nothing to turn off.
        tracing::debug!(tap, error = %e, "cannot turn off IPv6 address generation");
    }
    let mut up = LinkMessage::default();
    up.header.index = index;
    up.header.flags = LinkFlags::Up;
    up.header.change_mask = LinkFlags::Up;
    up.attributes.push(LinkAttribute::Mtu(mtu));
    nl.ack(RouteNetlinkMessage::SetLink(up), 0)
        .map_err(link_err(tap, format!("setting the TAP up with MTU {mtu}")))
}

fn add_ingress(nl: &mut Rtnl, iface: &str, index: u32) -> Result<(), NetError> {
    match nl.ack(
        RouteNetlinkMessage::NewQueueDiscipline(tc::ingress_qdisc(index)),
        NLM_F_CREATE | NLM_F_EXCL,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Err(NetError::IngressInUse {
            iface: iface.to_owned(),
        }),
        r => r.map_err(link_err(iface, "adding ingress qdisc")),
    }
}

fn del_ingress(nl: &mut Rtnl, iface: &str, index: u32) -> Result<(), NetError> {
    match nl.ack(
        RouteNetlinkMessage::DelQueueDiscipline(tc::ingress_qdisc(index)),
        0,
    ) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) => Ok(()),
        r => r.map_err(link_err(iface, "removing ingress qdisc")),
    }
}

fn add_redirect(
    nl: &mut Rtnl,
    from: &str,
    from_index: u32,
    to: &str,
    to_index: u32,
) -> Result<(), NetError> {
    nl.ack(
        RouteNetlinkMessage::NewTrafficFilter(tc::redirect_filter(from_index, to_index)),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(link_err(
        from,
        format!("adding u32 filter redirecting to {to}"),
    ))
}

/// What one wiring step added, undone if a later step fails.
struct Undo<'a> {
    nl: &'a mut Rtnl,
    qdiscs: Vec<(String, u32)>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for (iface, index) in self.qdiscs.drain(..).rev() {
            if let Err(e) = del_ingress(self.nl, &iface, index) {
                tracing::warn!(error = %e, "undoing a failed wiring");
            }
        }
    }
}

pub(super) fn wire(nl: &mut Rtnl, id: &str) -> Result<Wired, NetError> {
    let links = dump_links(nl)?;
    let mut skipped = Vec::new();
    let mut chosen = Vec::new();
    for link in &links {
        match skip_reason(link) {
            Some(reason) => {
                if reason != "loopback" {
                    tracing::info!(link = %link.name, %reason, "network: not wiring");
                    skipped.push(Skipped {
                        name: link.name.clone(),
                        reason,
                    });
                }
            }
            None => chosen.push(link),
        }
    }
    if chosen.len() > MAX_LINKS {
        return Err(NetError::TooManyInterfaces {
            count: chosen.len(),
        });
    }
    let wired_names: HashMap<u32, String> =
        chosen.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut addresses = dump_addresses(nl)?;
    let routes = dump_routes(nl, &wired_names)?;
    let neighbours = dump_neighbours(nl, &wired_names)?;

    // TAPs first (their fds keep them alive; dropping them on error removes them), then one
    // more link dump for their indices.
    let mut taps = Vec::new();
    for (n, link) in chosen.iter().enumerate() {
        let name = tap_name(id, n);
        let fd =
            tap::create(&name).map_err(link_err(&link.name, format!("creating TAP {name}")))?;
        taps.push((name, fd));
    }
    let index_of: HashMap<String, u32> = dump_links(nl)?
        .into_iter()
        .map(|l| (l.name, l.index))
        .collect();

    let mut undo = Undo {
        nl,
        qdiscs: Vec::new(),
        armed: true,
    };
    let mut interfaces = Vec::new();
    for (link, (tap, fd)) in chosen.iter().zip(taps) {
        let tap_index = *index_of.get(&tap).ok_or_else(|| NetError::Link {
            iface: tap.clone(),
            step: "finding the new TAP".into(),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        })?;
        set_tap_up(undo.nl, &tap, tap_index, link.mtu)?;
        add_ingress(undo.nl, &link.name, link.index)?;
        undo.qdiscs.push((link.name.clone(), link.index));
        add_ingress(undo.nl, &tap, tap_index)?;
        add_redirect(undo.nl, &link.name, link.index, &tap, tap_index)?;
        add_redirect(undo.nl, &tap, tap_index, &link.name, link.index)?;
        tracing::info!(interface = %link.name, %tap, "network: wired");
        interfaces.push(WiredInterface {
            tap_fd: fd,
            config: HostInterface {
                name: link.name.clone(),
                tap,
                mac: mac_string(link.mac.as_deref().unwrap_or_default()),
                mtu: link.mtu,
                up: link.flags.contains(LinkFlags::Up),
                kind: link
                    .kind
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                addresses: addresses.remove(&link.index).unwrap_or_default(),
            },
        });
    }
    undo.armed = false;
    Ok(Wired {
        interfaces,
        routes,
        neighbours,
        skipped,
    })
}

pub(super) fn unwire(nl: &mut Rtnl, names: &WiredNames) -> Result<(), NetError> {
    for l in dump_links(nl)? {
        if !names.links.iter().any(|n| n.tap == l.name) {
            continue;
        }
        if l.kind != Some(InfoKind::Tun) {
            tracing::warn!(
                link = %l.name,
                "network teardown: a link with our TAP's name is not a TAP; left alone"
            );
            continue;
        }
        let mut msg = LinkMessage::default();
        msg.header.index = l.index;
        match nl.ack(RouteNetlinkMessage::DelLink(msg), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
            r => r.map_err(link_err(&l.name, "deleting TAP"))?,
        }
    }
    // After our TAPs are gone, every redirect of ours points at a missing link.
    let links = dump_links(nl)?;
    let exists: HashMap<u32, &str> = links.iter().map(|l| (l.index, l.name.as_str())).collect();
    let qdiscs = nl
        .dump(|| RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()))
        .map_err(|source| NetError::Netlink {
            step: "dumping qdiscs",
            source,
        })?;
    for n in &names.links {
        let Some(link) = links.iter().find(|l| l.name == n.interface) else {
            continue;
        };
        let has_ingress = qdiscs.iter().any(|m| {
            matches!(m, RouteNetlinkMessage::NewQueueDiscipline(q)
                if tc::is_ingress_qdisc(q, link.index))
        });
        if !has_ingress {
            continue;
        }
        let filters = nl
            .dump(|| {
                let mut m = TcMessage::with_index(link.index as i32);
                m.header.parent = tc::INGRESS_HANDLE;
                RouteNetlinkMessage::GetTrafficFilter(m)
            })
            .map_err(link_err(&link.name, "dumping ingress filters"))?;
        let foreign: Vec<&str> = filters
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficFilter(f) => Some(tc::redirect_targets(f)),
                _ => None,
            })
            .flatten()
            .filter(|(_, kind)| *kind == TcMirrorActionType::EgressRedir)
            .filter_map(|(target, _)| exists.get(&target).copied())
            .collect();
        if !foreign.is_empty() {
            tracing::warn!(
                interface = %link.name,
                targets = ?foreign,
                "network teardown: the ingress qdisc redirects to links that are not ours; \
                 left alone"
            );
            continue;
        }
        del_ingress(nl, &link.name, link.index)?;
    }
    Ok(())
}
