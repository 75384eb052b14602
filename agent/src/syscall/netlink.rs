//! `LinuxRtnetlink`: the real `net::Rtnetlink`, a NETLINK_ROUTE socket (`netlink-sys`) in the
//! calling thread's network namespace. Requests are built and replies parsed with
//! `netlink-packet-route` (`netlink_msg`); every change is acknowledged (NLM_F_ACK) before the
//! next is sent, and a refusal carries the kernel's errno and its extended-ack message. A dump
//! the kernel marks NLM_F_DUMP_INTR (the table changed while it was being read) is read to its
//! end and asked again, up to `DUMP_ATTEMPTS` times.
//!
//! The socket sits behind `Transport`, so that the exchange (sequence numbers, acks, errors,
//! interrupted dumps) is unit-tested against a scripted kernel without root.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK,
    NLM_F_ACK_TLVS, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

#[path = "netlink_msg.rs"]
mod msg;

use crate::net::{
    IpNet, Link, LinkAddress, LinkChange, NeighbourEntry, NetlinkError, NlResult, RouteEntry,
    Rtnetlink,
};

/// A reply that does not come within this long is an error (ETIMEDOUT), not a hang.
const REPLY_TIMEOUT_SECS: i64 = 5;

/// How often a dump is asked for while the kernel keeps reporting it interrupted.
pub const DUMP_ATTEMPTS: usize = 10;

/// NLMSGERR_ATTR_MSG: the extended-ack attribute with the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Datagrams to and from the kernel.
pub trait Transport {
    fn send(&self, datagram: &[u8]) -> io::Result<()>;
    /// The next datagram (one or more netlink messages).
    fn recv(&self) -> io::Result<Vec<u8>>;
}

/// The NETLINK_ROUTE socket.
pub struct NlSocket(Socket);

impl NlSocket {
    /// Opens, binds (the kernel picks the port id) and connects to the kernel; asks for
    /// extended acks without the request echoed back; sets the reply timeout.
    pub fn open() -> io::Result<NlSocket> {
        let mut s = Socket::new(NETLINK_ROUTE)?;
        s.bind_auto()?;
        s.connect(&SocketAddr::new(0, 0))?;
        // Both are hints: an old kernel without them still works, with less detail.
        let _ = s.set_ext_ack(true);
        let _ = s.set_cap_ack(true);
        setsockopt(
            s.as_raw_fd(),
            sockopt::ReceiveTimeout,
            &TimeVal::new(REPLY_TIMEOUT_SECS, 0),
        )
        .map_err(io::Error::from)?;
        Ok(NlSocket(s))
    }
}

impl Transport for NlSocket {
    fn send(&self, datagram: &[u8]) -> io::Result<()> {
        self.0.send(datagram, 0).map(|_| ())
    }

    fn recv(&self) -> io::Result<Vec<u8>> {
        loop {
            match self.0.recv_from_full() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map(|(buf, _)| buf),
            }
        }
    }
}

/// rtnetlink over a `Transport`.
pub struct NetlinkRoute<T> {
    transport: T,
    seq: Cell<u32>,
}

/// The real one.
pub type LinuxRtnetlink = NetlinkRoute<NlSocket>;

impl LinuxRtnetlink {
    pub fn open() -> NlResult<Self> {
        let s = NlSocket::open().map_err(|e| io_error("netlink socket", &e))?;
        Ok(NetlinkRoute::with_transport(s))
    }
}

fn io_error(op: &'static str, e: &io::Error) -> NetlinkError {
    let errno = match e.raw_os_error() {
        Some(n) => Errno::from_i32(n),
        // SO_RCVTIMEO expired.
        None if e.kind() == io::ErrorKind::WouldBlock => Errno::ETIMEDOUT,
        None => Errno::EIO,
    };
    let errno = if errno == Errno::EAGAIN {
        Errno::ETIMEDOUT
    } else {
        errno
    };
    NetlinkError::new(op, errno)
}

/// What one reply message of a request was.
enum Reply {
    Message(RouteNetlinkMessage),
    /// NLMSG_DONE or the acknowledgement: the request is over.
    Done,
}

impl<T: Transport> NetlinkRoute<T> {
    pub fn with_transport(transport: T) -> Self {
        NetlinkRoute {
            transport,
            seq: Cell::new(0),
        }
    }

    fn send(&self, op: &'static str, payload: RouteNetlinkMessage, flags: u16) -> NlResult<u32> {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let mut m = NetlinkMessage::from(payload);
        m.header.flags = NLM_F_REQUEST | flags;
        m.header.sequence_number = seq;
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        self.transport.send(&buf).map_err(|e| io_error(op, &e))?;
        Ok(seq)
    }

    /// Reads the replies of request `seq` until it is over; hands each message to `each`.
    /// Returns whether any reply carried NLM_F_DUMP_INTR.
    fn replies(
        &self,
        op: &'static str,
        seq: u32,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> NlResult<bool> {
        let mut interrupted = false;
        loop {
            let datagram = self.transport.recv().map_err(|e| io_error(op, &e))?;
            let mut rest = &datagram[..];
            while !rest.is_empty() {
                let buf = NetlinkBuffer::new_checked(rest)
                    .map_err(|_| NetlinkError::new(op, Errno::EBADMSG))?;
                let len = buf.length() as usize;
                let (this, next) = rest.split_at(len);
                rest = next.get(len.next_multiple_of(4) - len..).unwrap_or(&[]);
                if buf.sequence_number() != seq {
                    // A late reply to an earlier request that timed out.
                    continue;
                }
                interrupted |= buf.flags() & NLM_F_DUMP_INTR != 0;
                match parse(op, this)? {
                    Some(Reply::Message(m)) => each(m),
                    Some(Reply::Done) => return Ok(interrupted),
                    None => {}
                }
            }
        }
    }

    /// Sends a change and waits for its acknowledgement. `flags` besides NLM_F_REQUEST and
    /// NLM_F_ACK (NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE).
    pub fn request(
        &self,
        op: &'static str,
        payload: RouteNetlinkMessage,
        flags: u16,
    ) -> NlResult<()> {
        let seq = self.send(op, payload, flags | NLM_F_ACK)?;
        self.replies(op, seq, |_| {})?;
        Ok(())
    }

    /// A dump, asked again while the kernel says it was interrupted; `keep` picks (and
    /// converts) the messages wanted.
    fn dump<V>(
        &self,
        op: &'static str,
        request: impl Fn() -> RouteNetlinkMessage,
        keep: impl Fn(RouteNetlinkMessage) -> Option<V>,
    ) -> NlResult<Vec<V>> {
        for attempt in 1..=DUMP_ATTEMPTS {
            let seq = self.send(op, request(), NLM_F_DUMP)?;
            let mut out = Vec::new();
            let interrupted = self.replies(op, seq, |m| out.extend(keep(m)))?;
            if !interrupted {
                return Ok(out);
            }
            tracing::debug!(
                op,
                attempt,
                "dump interrupted by a concurrent change; again"
            );
        }
        Err(NetlinkError {
            op,
            errno: Errno::EAGAIN,
            message: Some(format!(
                "the dump was interrupted by concurrent changes {DUMP_ATTEMPTS} times"
            )),
        })
    }
}

/// One reply message: `None` for one to skip (NOOP, or a message of a kind this crate cannot
/// parse, logged), the end of the request, or a refusal as an error.
fn parse(op: &'static str, bytes: &[u8]) -> NlResult<Option<Reply>> {
    let m = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(op, "skipping a reply that does not parse: {e}");
            return Ok(None);
        }
    };
    let header: NetlinkHeader = m.header;
    Ok(match m.payload {
        NetlinkPayload::Done(_) => Some(Reply::Done),
        NetlinkPayload::Error(e) => match e.code {
            None => Some(Reply::Done),
            Some(code) => {
                let message = if header.flags & NLM_F_ACK_TLVS != 0 {
                    ext_ack_message(&e.header)
                } else {
                    None
                };
                return Err(NetlinkError {
                    op,
                    errno: Errno::from_i32(-code.get()),
                    message,
                });
            }
        },
        NetlinkPayload::InnerMessage(m) => Some(Reply::Message(m)),
        NetlinkPayload::Overrun(_) => return Err(NetlinkError::new(op, Errno::ENOBUFS)),
        _ => None,
    })
}

/// NLMSGERR_ATTR_MSG from an NLMSG_ERROR payload after the error code: with NETLINK_CAP_ACK
/// the request's header (16 bytes) and then the extended-ack attributes.
fn ext_ack_message(after_code: &[u8]) -> Option<String> {
    let tlvs = after_code.get(16..)?;
    NlasIterator::new(tlvs)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let v = nla.value();
            let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        })
        .filter(|s| !s.is_empty())
}

impl<T: Transport> Rtnetlink for NetlinkRoute<T> {
    fn links(&self) -> NlResult<Vec<Link>> {
        self.dump("RTM_GETLINK", msg::get_links, msg::link)
    }

    fn addresses(&self) -> NlResult<Vec<LinkAddress>> {
        self.dump("RTM_GETADDR", msg::get_addresses, msg::address)
    }

    fn routes(&self) -> NlResult<Vec<RouteEntry>> {
        self.dump("RTM_GETROUTE", msg::get_routes, msg::route)
    }

    fn set_link(&self, index: u32, change: &LinkChange) -> NlResult<()> {
        self.request("RTM_NEWLINK", msg::set_link(index, change), 0)
    }

    fn address(&self, add: bool, index: u32, net: &IpNet) -> NlResult<()> {
        if add {
            let m = msg::address_change(true, index, net);
            self.request("RTM_NEWADDR", m, NLM_F_CREATE | NLM_F_EXCL)
        } else {
            self.request("RTM_DELADDR", msg::address_change(false, index, net), 0)
        }
    }

    fn route(&self, add: bool, route: &RouteEntry) -> NlResult<()> {
        if add {
            let m = msg::route_change(true, route);
            self.request("RTM_NEWROUTE", m, NLM_F_CREATE | NLM_F_EXCL)
        } else {
            self.request("RTM_DELROUTE", msg::route_change(false, route), 0)
        }
    }

    fn neighbours(&self) -> NlResult<Vec<NeighbourEntry>> {
        self.dump("RTM_GETNEIGH", msg::get_neighbours, msg::neighbour)
    }

    fn set_neighbour(&self, n: &NeighbourEntry) -> NlResult<()> {
        let m = msg::set_neighbour(n);
        self.request("RTM_NEWNEIGH", m, NLM_F_CREATE | NLM_F_REPLACE)
    }
}

#[cfg(test)]
#[path = "netlink_tests.rs"]
mod tests;
