//! `LinuxRtnetlink`: the real `net::Rtnetlink`, a NETLINK_ROUTE socket in the calling
//! process's network namespace. Requests are built and replies parsed by `net::wire`; every
//! change is acknowledged synchronously (NLM_F_ACK) before the next is sent.

use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use crate::net::wire::{self, Reply};
use crate::net::{
    IpNet, Link, LinkAddress, LinkChange, NetlinkError, NlResult, RouteEntry, Rtnetlink,
};

/// A reply that does not come within this long is an error (ETIMEDOUT), not a hang.
const REPLY_TIMEOUT_SECS: i64 = 5;

pub struct LinuxRtnetlink {
    fd: OwnedFd,
    seq: Cell<u32>,
}

impl LinuxRtnetlink {
    pub fn open() -> NlResult<Self> {
        let e = |errno| NetlinkError {
            op: "netlink socket",
            errno,
        };
        let raw = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(e)?;
        // SAFETY: socket(2) just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(e)?;
        setsockopt(
            fd.as_raw_fd(),
            sockopt::ReceiveTimeout,
            &TimeVal::new(REPLY_TIMEOUT_SECS, 0),
        )
        .map_err(e)?;
        Ok(LinuxRtnetlink {
            fd,
            seq: Cell::new(1),
        })
    }

    fn next_seq(&self) -> u32 {
        let s = self.seq.get().wrapping_add(1);
        self.seq.set(s);
        s
    }

    /// Sends `msg` and hands each reply of sequence `seq` to `each` until the request is done
    /// (NLMSG_DONE for a dump, the NLMSG_ERROR acknowledgement otherwise).
    fn exchange(
        &self,
        op: &'static str,
        msg: &[u8],
        seq: u32,
        mut each: impl FnMut(&Reply<'_>),
    ) -> NlResult<()> {
        let e = |errno| NetlinkError { op, errno };
        send(self.fd.as_raw_fd(), msg, MsgFlags::empty()).map_err(e)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Err(e(Errno::ETIMEDOUT)),
                Err(errno) => return Err(e(errno)),
            };
            let replies = wire::split(&buf[..n]).ok_or(e(Errno::EBADMSG))?;
            for r in replies.iter().filter(|r| r.seq == seq) {
                match r.ty {
                    wire::NLMSG_DONE => return Ok(()),
                    wire::NLMSG_ERROR => {
                        return match wire::error_code(r.payload) {
                            Some(0) => Ok(()),
                            Some(code) => Err(e(Errno::from_i32(code))),
                            None => Err(e(Errno::EBADMSG)),
                        };
                    }
                    _ => each(r),
                }
            }
        }
    }

    fn dump<T>(
        &self,
        op: &'static str,
        ty: u16,
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> NlResult<Vec<T>> {
        let seq = self.next_seq();
        let mut out = Vec::new();
        self.exchange(op, &wire::dump_request(ty, seq), seq, |r| {
            if let Some(v) = parse(r.payload) {
                out.push(v);
            }
        })?;
        Ok(out)
    }
}

impl Rtnetlink for LinuxRtnetlink {
    fn links(&self) -> NlResult<Vec<Link>> {
        self.dump("RTM_GETLINK", wire::RTM_GETLINK, wire::parse_link)
    }

    fn addresses(&self) -> NlResult<Vec<LinkAddress>> {
        self.dump("RTM_GETADDR", wire::RTM_GETADDR, wire::parse_address)
    }

    fn routes(&self) -> NlResult<Vec<RouteEntry>> {
        self.dump("RTM_GETROUTE", wire::RTM_GETROUTE, wire::parse_route)
    }

    fn set_link(&self, index: u32, change: &LinkChange) -> NlResult<()> {
        let seq = self.next_seq();
        self.exchange(
            "RTM_NEWLINK",
            &wire::set_link(index, change, seq),
            seq,
            |_| {},
        )
    }

    fn address(&self, add: bool, index: u32, net: &IpNet) -> NlResult<()> {
        let seq = self.next_seq();
        let op = if add { "RTM_NEWADDR" } else { "RTM_DELADDR" };
        self.exchange(op, &wire::address(add, index, net, seq), seq, |_| {})
    }

    fn route(&self, add: bool, route: &RouteEntry) -> NlResult<()> {
        let seq = self.next_seq();
        let op = if add { "RTM_NEWROUTE" } else { "RTM_DELROUTE" };
        self.exchange(op, &wire::route(add, route, seq), seq, |_| {})
    }
}
