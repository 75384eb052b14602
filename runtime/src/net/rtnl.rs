//! A synchronous rtnetlink socket: one request at a time, its replies matched by sequence
//! number. Dumps that the kernel marks `NLM_F_DUMP_INTR` (the table changed while it was read)
//! are read to the end and then retried, a few times.
//!
//! Owns: the netlink socket of one network namespace (the namespace is the one of the thread
//! that opened it, fixed for the socket's life).

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// How often an interrupted dump is repeated before giving up.
const DUMP_ATTEMPTS: usize = 5;

/// An rtnetlink socket.
pub(super) struct Rtnl {
    sock: Socket,
    seq: u32,
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub(super) fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { sock, seq: 0 })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Reads replies to `seq` until `on_msg` says the exchange is over; each message is handed
    /// over with its header flags.
    fn recv(
        &mut self,
        seq: u32,
        mut on_msg: impl FnMut(u16, NetlinkPayload<RouteNetlinkMessage>) -> io::Result<bool>,
    ) -> io::Result<()> {
        loop {
            let (buf, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off < buf.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..]).map_err(
                    |e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}")),
                )?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                off += len;
                if msg.header.sequence_number != seq {
                    continue;
                }
                if on_msg(msg.header.flags, msg.payload)? {
                    return Ok(());
                }
            }
        }
    }

    /// Sends a request that changes something and waits for the kernel's ack.
    pub(super) fn ack(&mut self, msg: RouteNetlinkMessage, extra_flags: u16) -> io::Result<()> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | extra_flags)?;
        self.recv(seq, |_, payload| match payload {
            NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
            NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => Ok(true),
            _ => Ok(false),
        })
    }

    /// Dumps a table; `make` builds the request (it is sent again if the dump is interrupted).
    pub(super) fn dump(
        &mut self,
        make: impl Fn() -> RouteNetlinkMessage,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.send(make(), NLM_F_REQUEST | NLM_F_DUMP)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            self.recv(seq, |flags, payload| {
                interrupted |= flags & NLM_F_DUMP_INTR != 0;
                match payload {
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        Ok(false)
                    }
                    NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
                    NetlinkPayload::Done(_) | NetlinkPayload::Error(_) => Ok(true),
                    _ => Ok(false),
                }
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            format!("the dump was interrupted by concurrent changes {DUMP_ATTEMPTS} times"),
        ))
    }
}
