//! Who may open a connection to the agent: the host, vsock CID 2 (`VMADDR_CID_HOST`), and
//! nobody else. AF_VSOCK ignores network namespaces, so without this check any process in the
//! guest, a container's included, that reached the agent's port could drive it. The guest
//! kernel has no vsock loopback transport (kernel-config), so today such a connection cannot
//! even be made; this is the agent's own wall should that ever change. A Unix-socket peer is
//! accepted: that listener exists only in host mode (tests), guarded by its file permissions.
//!
//! The check runs in ttrpc's accept loop (`ttrpc::AcceptHook`), before ttrpc reads a byte.
//! Rejections are logged, at most `LOG_PER_SECOND` lines a second plus one line counting the
//! ones left out, so a guest process cannot flood the log.

use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ttrpc::{AcceptHook, HookError, HookOutput};

/// The host's CID (`VMADDR_CID_HOST`).
pub const VMADDR_CID_HOST: u32 = 2;
/// Rejection log lines per second, at most.
pub const LOG_PER_SECOND: u32 = 3;

/// The other end of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Vsock {
        cid: u32,
        port: u32,
    },
    Unix,
    /// Any other address family.
    Other(libc::sa_family_t),
}

/// Reads a peer from the address `getpeername` filled in (`len` bytes of `addr`).
pub fn peer_from_sockaddr(addr: &libc::sockaddr_storage, len: usize) -> Peer {
    match i32::from(addr.ss_family) {
        libc::AF_VSOCK if len >= std::mem::size_of::<libc::sockaddr_vm>() => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr, and the
            // family says the kernel wrote a sockaddr_vm of at least that size.
            let vm =
                unsafe { &*(addr as *const libc::sockaddr_storage as *const libc::sockaddr_vm) };
            Peer::Vsock {
                cid: vm.svm_cid,
                port: vm.svm_port,
            }
        }
        libc::AF_UNIX => Peer::Unix,
        _ => Peer::Other(addr.ss_family),
    }
}

/// The peer of a connected socket.
pub fn peer_of(fd: RawFd) -> io::Result<Peer> {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` is writable for `len` bytes; getpeername writes at most that and the
    // length it used; `fd` is only read.
    let r = unsafe {
        libc::getpeername(
            fd,
            &mut addr as *mut libc::sockaddr_storage as *mut libc::sockaddr,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(peer_from_sockaddr(&addr, len as usize))
}

/// Whether a peer may talk to the agent.
pub fn allowed(peer: &Peer) -> bool {
    match peer {
        Peer::Vsock { cid, .. } => *cid == VMADDR_CID_HOST,
        Peer::Unix => true,
        Peer::Other(_) => false,
    }
}

/// Lets through at most `per_second` events per one-second window and counts the rest.
#[derive(Debug)]
pub struct RateLimit {
    per_second: u32,
    window: Option<Instant>,
    in_window: u32,
    dropped: u64,
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `dropped` events since the last logged one were not.
    Log {
        dropped: u64,
    },
    Quiet,
}

impl RateLimit {
    pub fn new(per_second: u32) -> Self {
        RateLimit {
            per_second,
            window: None,
            in_window: 0,
            dropped: 0,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let fresh = self
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1));
        if fresh {
            self.window = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= self.per_second {
            self.dropped += 1;
            return Verdict::Quiet;
        }
        self.in_window += 1;
        Verdict::Log {
            dropped: std::mem::take(&mut self.dropped),
        }
    }
}

/// The accept hook: host peers pass, everything else is closed unread and logged (limited).
#[derive(Debug)]
pub struct HostOnly {
    log: Mutex<RateLimit>,
}

impl Default for HostOnly {
    fn default() -> Self {
        HostOnly {
            log: Mutex::new(RateLimit::new(LOG_PER_SECOND)),
        }
    }
}

impl HostOnly {
    fn reject(&self, what: String) -> HookError {
        let verdict = self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(Instant::now());
        if let Verdict::Log { dropped } = verdict {
            if dropped > 0 {
                tracing::warn!("{dropped} more refused connections were not logged");
            }
            tracing::warn!("refused a connection from {what}: only the host (vsock CID 2) may talk to the agent");
        }
        HookError::Rejected(what)
    }
}

impl AcceptHook for HostOnly {
    fn on_accept(&self, fd: RawFd) -> Result<HookOutput, HookError> {
        match peer_of(fd) {
            Ok(p) if allowed(&p) => Ok(HookOutput {
                data: Default::default(),
                payload_transform: None,
            }),
            Ok(Peer::Vsock { cid, port }) => {
                Err(self.reject(format!("vsock CID {cid} port {port}")))
            }
            Ok(p) => Err(self.reject(format!("{p:?}"))),
            Err(e) => Err(self.reject(format!("an unknown peer ({e})"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn vsock(cid: u32) -> libc::sockaddr_storage {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_vm.
        let vm =
            unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_vm) };
        vm.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        vm.svm_cid = cid;
        vm.svm_port = 1024;
        ss
    }

    #[test]
    fn only_the_host_cid_passes() {
        let len = std::mem::size_of::<libc::sockaddr_vm>();
        for (cid, ok) in [
            (2, true),
            (0, false),
            (1, false),
            (3, false),
            (u32::MAX, false),
        ] {
            let p = peer_from_sockaddr(&vsock(cid), len);
            assert_eq!(p, Peer::Vsock { cid, port: 1024 });
            assert_eq!(allowed(&p), ok, "CID {cid}");
        }
        // A truncated vsock address is not taken for one.
        assert!(!allowed(&peer_from_sockaddr(&vsock(2), 4)));
    }

    #[test]
    fn hook_passes_unix_peers_and_refuses_others() {
        let hook = HostOnly::default();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(hook.on_accept(a.as_raw_fd()).is_ok());

        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(
            peer_of(s.as_raw_fd()).unwrap(),
            Peer::Other(libc::AF_INET as libc::sa_family_t)
        );
        assert!(matches!(
            hook.on_accept(s.as_raw_fd()),
            Err(HookError::Rejected(_))
        ));

        // Not a socket at all.
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(matches!(
            hook.on_accept(f.as_raw_fd()),
            Err(HookError::Rejected(_))
        ));
    }

    #[test]
    fn rejection_log_is_rate_limited() {
        let mut rl = RateLimit::new(3);
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..10)
            .map(|i| rl.check(t0 + Duration::from_millis(i * 10)))
            .collect();
        assert_eq!(
            verdicts.iter().filter(|v| **v != Verdict::Quiet).count(),
            3,
            "{verdicts:?}"
        );
        // The next window logs again and reports the 7 left out.
        assert_eq!(
            rl.check(t0 + Duration::from_millis(1000)),
            Verdict::Log { dropped: 7 }
        );
        assert_eq!(
            rl.check(t0 + Duration::from_millis(1001)),
            Verdict::Log { dropped: 0 }
        );
    }
}
