//! The rtnetlink exchange against a scripted kernel: what is sent (types, flags, attributes),
//! interrupted dumps asked again, refusals with errno and extended-ack text, late replies
//! skipped, multipath routes and neighbours through the crate's encoding both ways.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::num::NonZeroI32;

use netlink_packet_core::{
    DefaultNla, DoneMessage, Emitable, ErrorMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_MULTIPART, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::RouteAttribute;
use netlink_packet_route::RouteNetlinkMessage;

use super::*;
use crate::net::{
    AddressFamily, NeighbourFlags, NeighbourState, NextHopEntry, RouteProtocol, RouteScope,
    RouteType, RT_TABLE_MAIN,
};

type Msg = NetlinkMessage<RouteNetlinkMessage>;
/// The kernel's answer to the n-th request (0-based): the datagrams it sends back.
type Answer = Box<dyn Fn(usize, &Msg) -> Vec<Vec<u8>>>;

struct Kernel {
    sent: RefCell<Vec<Msg>>,
    queue: RefCell<VecDeque<Vec<u8>>>,
    answer: Answer,
}

impl Transport for &Kernel {
    fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let m = Msg::deserialize(datagram).expect("the request parses");
        assert_eq!(m.header.length as usize, datagram.len());
        let n = self.sent.borrow().len();
        self.queue.borrow_mut().extend((self.answer)(n, &m));
        self.sent.borrow_mut().push(m);
        Ok(())
    }

    fn recv(&self) -> io::Result<Vec<u8>> {
        self.queue
            .borrow_mut()
            .pop_front()
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
    }
}

fn kernel(answer: impl Fn(usize, &Msg) -> Vec<Vec<u8>> + 'static) -> Kernel {
    Kernel {
        sent: RefCell::default(),
        queue: RefCell::default(),
        answer: Box::new(answer),
    }
}

fn bytes(seq: u32, flags: u16, payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.sequence_number = seq;
    header.flags = flags;
    let mut m = NetlinkMessage::new(header, payload);
    m.finalize();
    let mut buf = vec![0; m.buffer_len()];
    m.serialize(&mut buf);
    buf
}

fn done(seq: u32, flags: u16) -> Vec<u8> {
    bytes(
        seq,
        NLM_F_MULTIPART | flags,
        NetlinkPayload::Done(DoneMessage::default()),
    )
}

fn ack(seq: u32) -> Vec<u8> {
    bytes(seq, 0, NetlinkPayload::Error(ErrorMessage::default()))
}

/// A refusal as a kernel with NETLINK_CAP_ACK and NETLINK_EXT_ACK sends it.
fn refusal(seq: u32, errno: i32, text: Option<&str>) -> Vec<u8> {
    let mut e = ErrorMessage::default();
    e.code = NonZeroI32::new(-errno);
    e.header = vec![0; 16];
    let mut flags = 0;
    if let Some(t) = text {
        let mut v = t.as_bytes().to_vec();
        v.push(0);
        let nla = DefaultNla::new(NLMSGERR_ATTR_MSG, v);
        let mut b = vec![0; nla.buffer_len()];
        nla.emit(&mut b);
        e.header.extend(b);
        flags = NLM_F_ACK_TLVS;
    }
    bytes(seq, flags, NetlinkPayload::Error(e))
}

fn link_reply(seq: u32, flags: u16, index: u32, name: &str) -> Vec<u8> {
    let mut l = LinkMessage::default();
    l.header.index = index;
    l.attributes.push(LinkAttribute::IfName(name.into()));
    l.attributes.push(LinkAttribute::Mtu(1500));
    l.attributes
        .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, index as u8]));
    bytes(
        seq,
        NLM_F_MULTIPART | flags,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)),
    )
}

#[test]
fn an_interrupted_dump_is_read_to_its_end_and_asked_again() {
    let k = kernel(|n, m| {
        let seq = m.header.sequence_number;
        if n == 0 {
            // The table changed mid-dump: the kernel flags the rest of it.
            vec![
                link_reply(seq, 0, 1, "lo"),
                [
                    link_reply(seq, NLM_F_DUMP_INTR, 2, "half-gone"),
                    done(seq, NLM_F_DUMP_INTR),
                ]
                .concat(),
            ]
        } else {
            vec![[
                link_reply(seq, 0, 1, "lo"),
                link_reply(seq, 0, 3, "eth0"),
                done(seq, 0),
            ]
            .concat()]
        }
    });
    let nl = NetlinkRoute::with_transport(&k);
    let links = nl.links().unwrap();
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["lo", "eth0"]);
    assert_eq!(links[1].mac, [2, 0, 0, 0, 0, 3]);
    let sent = k.sent.borrow();
    assert_eq!(sent.len(), 2);
    for m in sent.iter() {
        assert_eq!(m.header.flags, NLM_F_REQUEST | NLM_F_DUMP);
        assert!(matches!(
            m.payload,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(_))
        ));
    }
    assert_ne!(
        sent[0].header.sequence_number,
        sent[1].header.sequence_number
    );
}

#[test]
fn a_dump_interrupted_every_time_gives_up_after_the_bound() {
    let k = kernel(|_, m| vec![done(m.header.sequence_number, NLM_F_DUMP_INTR)]);
    let nl = NetlinkRoute::with_transport(&k);
    let e = nl.routes().unwrap_err();
    assert_eq!((e.op, e.errno), ("RTM_GETROUTE", Errno::EAGAIN));
    assert_eq!(
        e.to_string(),
        format!(
            "RTM_GETROUTE: EAGAIN: Try again (the dump was interrupted by \
             concurrent changes {DUMP_ATTEMPTS} times)"
        )
    );
    assert_eq!(k.sent.borrow().len(), DUMP_ATTEMPTS);
}

#[test]
fn a_refusal_carries_errno_and_the_kernels_message() {
    let k = kernel(|_, m| {
        vec![refusal(
            m.header.sequence_number,
            libc::EINVAL,
            Some("Multipath support not enabled in kernel"),
        )]
    });
    let nl = NetlinkRoute::with_transport(&k);
    let e = nl.route(true, &multipath_route()).unwrap_err();
    assert_eq!((e.op, e.errno), ("RTM_NEWROUTE", Errno::EINVAL));
    assert_eq!(
        e.message.as_deref(),
        Some("Multipath support not enabled in kernel")
    );
    let k = kernel(|_, m| vec![refusal(m.header.sequence_number, libc::ENODEV, None)]);
    let nl = NetlinkRoute::with_transport(&k);
    let e = nl.set_link(9, &LinkChange::default()).unwrap_err();
    assert_eq!(e.to_string(), "RTM_NEWLINK: ENODEV: No such device");
}

#[test]
fn late_replies_to_an_earlier_request_are_skipped() {
    let k = kernel(|_, m| {
        let seq = m.header.sequence_number;
        vec![refusal(seq.wrapping_sub(1), libc::EEXIST, None), ack(seq)]
    });
    let nl = NetlinkRoute::with_transport(&k);
    nl.set_link(
        2,
        &LinkChange {
            up: Some(true),
            ..Default::default()
        },
    )
    .unwrap();
    let sent = k.sent.borrow();
    assert_eq!(sent[0].header.flags, NLM_F_REQUEST | NLM_F_ACK);
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = &sent[0].payload else {
        panic!("{:?}", sent[0])
    };
    assert_eq!(l.header.index, 2);
    assert!(l.header.flags.contains(LinkFlags::Up) && l.header.change_mask.contains(LinkFlags::Up));
}

#[test]
fn no_reply_is_a_timeout() {
    let k = kernel(|_, _| vec![]);
    let nl = NetlinkRoute::with_transport(&k);
    let e = nl.links().unwrap_err();
    assert_eq!(e.errno, Errno::ETIMEDOUT);
}

fn multipath_route() -> RouteEntry {
    RouteEntry {
        family: AddressFamily::Inet6,
        dest: Some(IpNet {
            addr: "fd00:9::".parse().unwrap(),
            prefix: 64,
        }),
        gateway: None,
        oif: 0,
        source: None,
        scope: RouteScope::Universe,
        protocol: RouteProtocol::Static,
        priority: 0,
        table: RT_TABLE_MAIN,
        kind: RouteType::Unicast,
        multipath: vec![
            NextHopEntry {
                gateway: Some("fe80::1".parse().unwrap()),
                oif: 2,
                weight: 1,
            },
            NextHopEntry {
                gateway: Some("fe80::2".parse().unwrap()),
                oif: 3,
                weight: 5,
            },
        ],
    }
}

/// The kernel's dump of a route it was sent: the request's message as an RTM_NEWROUTE.
fn echo_route(m: &Msg) -> Vec<u8> {
    let NetlinkPayload::InnerMessage(
        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r),
    ) = &m.payload
    else {
        panic!("{m:?}")
    };
    bytes(
        m.header.sequence_number,
        NLM_F_MULTIPART,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r.clone())),
    )
}

#[test]
fn multipath_routes_go_out_as_rta_multipath_and_come_back() {
    let k = kernel(|_, m| vec![ack(m.header.sequence_number)]);
    let nl = NetlinkRoute::with_transport(&k);
    nl.route(true, &multipath_route()).unwrap();
    nl.route(false, &multipath_route()).unwrap();
    let sent = k.sent.borrow();
    assert_eq!(
        sent[0].header.flags,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    );
    assert_eq!(sent[1].header.flags, NLM_F_REQUEST | NLM_F_ACK);
    assert!(matches!(
        sent[1].payload,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(_))
    ));
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) = &sent[0].payload else {
        panic!()
    };
    let hops = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::MultiPath(h) => Some(h.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        hops.iter()
            .map(|h| (h.hops, h.interface_index))
            .collect::<Vec<_>>(),
        [(0, 2), (4, 3)]
    );

    // Read back: a dump holding that message parses into the same entry.
    let echoed = sent[0].clone();
    let k = kernel(move |_, m| {
        let seq = m.header.sequence_number;
        let mut reply = echo_route(&echoed);
        reply[8..12].copy_from_slice(&seq.to_ne_bytes());
        vec![[reply, done(seq, 0)].concat()]
    });
    let nl = NetlinkRoute::with_transport(&k);
    assert_eq!(nl.routes().unwrap(), [multipath_route()]);
}

#[test]
fn neighbours_are_replaced_and_read_back() {
    let entry = NeighbourEntry {
        index: 2,
        addr: "10.0.0.1".parse().unwrap(),
        lladdr: vec![2, 0, 0, 0, 0, 7],
        state: NeighbourState::Permanent,
        flags: NeighbourFlags::Router,
    };
    let k = kernel(|_, m| {
        let seq = m.header.sequence_number;
        match &m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                let reply = bytes(
                    seq,
                    NLM_F_MULTIPART,
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n.clone())),
                );
                // Answered with an ack; the message itself is kept for the dump below.
                NEIGH.with(|c| *c.borrow_mut() = Some(reply));
                vec![ack(seq)]
            }
            _ => {
                let mut reply = NEIGH.with(|c| c.borrow().clone()).unwrap();
                reply[8..12].copy_from_slice(&seq.to_ne_bytes());
                vec![[reply, done(seq, 0)].concat()]
            }
        }
    });
    let nl = NetlinkRoute::with_transport(&k);
    nl.set_neighbour(&entry).unwrap();
    assert_eq!(
        k.sent.borrow()[0].header.flags,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    );
    assert_eq!(nl.neighbours().unwrap(), [entry]);
}

thread_local! {
    static NEIGH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}
