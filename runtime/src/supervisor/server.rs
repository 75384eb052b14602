//! The control socket server: one thread per connection, each request forwarded to the agent.
//!
//! Owns: the meaning of each control request and the container's status transitions after
//! creation. The wire format is `control`'s.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::agent::AgentClient;
use super::oom::OomCount;
use super::stdio;
use crate::control::{self, Request, Response};
use crate::state::{write_atomic, Status};

/// What every handler shares.
pub struct Shared {
    /// Container id.
    pub id: String,
    /// `<root>/<id>`.
    pub dir: std::path::PathBuf,
    /// Control-plane connection to the agent.
    pub agent: AgentClient,
    /// Current status (also written to `<dir>/status`).
    pub status: Mutex<Status>,
    /// OOM kills so far (`events`).
    pub oom: Arc<OomCount>,
    exec_seq: AtomicU64,
}

impl Shared {
    /// Shared state for a created container.
    pub fn new(id: String, dir: std::path::PathBuf, agent: AgentClient) -> Shared {
        Shared {
            id,
            dir,
            agent,
            status: Mutex::new(Status::Creating),
            oom: Arc::new(OomCount::default()),
            exec_seq: AtomicU64::new(0),
        }
    }

    /// Records a status transition.
    pub fn set_status(&self, s: Status) {
        let mut g = self.status.lock().unwrap_or_else(|e| e.into_inner());
        *g = s;
        if let Err(e) = write_atomic(&self.dir.join("status"), s.as_str().as_bytes()) {
            tracing::warn!("recording status {}: {e}", s.as_str());
        }
        if s == Status::Stopped {
            self.oom.close();
        }
    }

    fn status(&self) -> Status {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Longest an `oom` request waits before answering with the count unchanged.
const OOM_WAIT: Duration = Duration::from_secs(10);

/// Serves `listener` until the process exits.
pub fn serve(listener: UnixListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let shared = Arc::clone(&shared);
        let _ = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || handle(conn, &shared));
    }
}

fn handle(conn: UnixStream, shared: &Shared) {
    let (req, fds): (Request, Vec<OwnedFd>) = match control::recv(&conn) {
        Ok(r) => r,
        Err(e) => {
            let _ = control::send(&conn, &Response::error(e), &[]);
            return;
        }
    };
    tracing::info!(?req, "control request");
    let resp = match dispatch(req, fds, &conn, shared) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("control request failed: {e}");
            Response::error(e)
        }
    };
    let _ = control::send(&conn, &resp, &[]);
}

fn dispatch(
    req: Request,
    fds: Vec<OwnedFd>,
    conn: &UnixStream,
    s: &Shared,
) -> Result<Response, String> {
    let ok = Response::default();
    match req {
        Request::Start => {
            match s.status() {
                Status::Created => {}
                Status::Stopped => return Err("cannot start a container that has stopped".into()),
                _ => return Err("cannot start an already running container".into()),
            }
            s.agent.start(&s.id).map_err(|e| e.to_string())?;
            s.set_status(Status::Running);
            Ok(ok)
        }
        Request::Kill { signal, all } => {
            if s.status() == Status::Stopped {
                return Err("container not running".into());
            }
            s.agent
                .signal(&s.id, "", signal, all)
                .map_err(|e| e.to_string())?;
            Ok(ok)
        }
        Request::Ps => Ok(Response {
            pids: s.agent.ps(&s.id).map_err(|e| e.to_string())?,
            ..ok
        }),
        Request::Stats => Ok(Response {
            stats: Some(runc_stats(
                &s.agent.stats(&s.id).map_err(|e| e.to_string())?,
            )),
            ..ok
        }),
        Request::Pause => {
            if s.status() != Status::Running {
                return Err("container not running".into());
            }
            s.agent.pause(&s.id).map_err(|e| e.to_string())?;
            s.set_status(Status::Paused);
            Ok(ok)
        }
        Request::Resume => {
            if s.status() != Status::Paused {
                return Err("container not paused".into());
            }
            s.agent.resume(&s.id).map_err(|e| e.to_string())?;
            s.set_status(Status::Running);
            Ok(ok)
        }
        Request::Exec { process_json } => exec(s, &process_json, fds, conn),
        Request::Update { resources_json } => {
            if s.status() == Status::Stopped {
                return Err("container not running".into());
            }
            s.agent
                .update(&s.id, &resources_json)
                .map_err(|e| e.to_string())?;
            Ok(ok)
        }
        Request::Oom { after } => {
            let (count, stopped) = s.oom.wait(after, OOM_WAIT);
            Ok(Response {
                oom_count: Some(count),
                stopped,
                ..ok
            })
        }
    }
}

/// Microseconds as nanoseconds; a guest's absurd counter saturates instead of overflowing.
fn usec_to_ns(usec: u64) -> u64 {
    usec.saturating_mul(1000)
}

/// The agent's stats in runc's `events` shape (times in ns). The numbers come from the guest,
/// so no arithmetic on them may panic or wrap.
pub fn runc_stats(st: &husk_agent::protocol::StatsContainerResponse) -> serde_json::Value {
    let cpu = st.cpu.as_ref().cloned().unwrap_or_default();
    let mem = st.memory.as_ref().cloned().unwrap_or_default();
    let pids = st.pids.as_ref().cloned().unwrap_or_default();
    let io = st.io.as_ref().cloned().unwrap_or_default();
    let raw: serde_json::Map<String, serde_json::Value> = mem
        .stat
        .iter()
        .map(|(k, v)| (k.clone(), (*v).into()))
        .collect();
    serde_json::json!({
        "cpu": {
            "usage": {
                "total": usec_to_ns(cpu.usage_usec),
                "kernel": usec_to_ns(cpu.system_usec),
                "user": usec_to_ns(cpu.user_usec),
            },
            "throttling": {
                "throttledPeriods": cpu.nr_throttled,
                "throttledTime": usec_to_ns(cpu.throttled_usec),
            },
        },
        "memory": {
            "usage": {
                "limit": mem.limit,
                "usage": mem.usage,
                "max": mem.max_usage,
                "failcnt": mem.oom_kill,
            },
            "raw": raw,
        },
        "pids": { "current": pids.current, "limit": pids.limit },
        "blkio": {
            "ioServiceBytesRecursive": [
                { "op": "Read", "value": io.read_bytes },
                { "op": "Write", "value": io.write_bytes },
            ],
            "ioServicedRecursive": [
                { "op": "Read", "value": io.read_ios },
                { "op": "Write", "value": io.write_ios },
            ],
        },
    })
}

/// Starts the process, answers `started` on `conn`, relays its stdio to `fds` (0, 1, 2) and
/// returns its exit status (the second answer).
fn exec(
    s: &Shared,
    process_json: &str,
    fds: Vec<OwnedFd>,
    conn: &UnixStream,
) -> Result<Response, String> {
    match s.status() {
        Status::Created | Status::Running => {}
        Status::Paused => return Err("cannot exec in a paused container".into()),
        _ => return Err("cannot exec in a stopped container".into()),
    }
    let process: serde_json::Value =
        serde_json::from_str(process_json).map_err(|e| format!("process: {e}"))?;
    let terminal = process["terminal"].as_bool().unwrap_or(false);
    let exec_id = format!("exec-{}", s.exec_seq.fetch_add(1, Ordering::Relaxed) + 1);
    let waiter = s.agent.another().map_err(|e| e.to_string())?;
    s.agent
        .exec(&s.id, &exec_id, process_json)
        .map_err(|e| e.to_string())?;
    let mut fds = fds.into_iter().map(File::from);
    let stdio = [fds.next(), fds.next(), fds.next()];
    let relay = stdio::Relay::start(&s.agent, &s.id, &exec_id, stdio, terminal);
    let started = Response {
        started: true,
        ..Default::default()
    };
    if control::send(conn, &started, &[]).is_err() {
        tracing::debug!(exec = %exec_id, "the exec caller left; the process runs on");
    }
    let status = waiter.wait(&s.id, &exec_id);
    relay.finish(Duration::from_secs(2));
    tracing::info!(exec = %exec_id, ?status, "exec exited");
    Ok(Response {
        status: Some(status.map_err(|e| e.to_string())?),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use husk_agent::protocol as pb;

    #[test]
    fn stats_from_the_guest_never_overflow() {
        let st = pb::StatsContainerResponse {
            cpu: Some(pb::CpuStats {
                usage_usec: u64::MAX,
                system_usec: u64::MAX / 1000 + 1,
                user_usec: 7,
                nr_throttled: u64::MAX,
                throttled_usec: u64::MAX,
                ..Default::default()
            })
            .into(),
            memory: Some(pb::MemoryStats {
                limit: u64::MAX,
                usage: u64::MAX,
                max_usage: u64::MAX,
                oom_kill: u64::MAX,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let j = super::runc_stats(&st);
        assert_eq!(j["cpu"]["usage"]["total"], u64::MAX);
        assert_eq!(j["cpu"]["usage"]["kernel"], u64::MAX);
        assert_eq!(j["cpu"]["usage"]["user"], 7000);
        assert_eq!(j["cpu"]["throttling"]["throttledTime"], u64::MAX);
        assert_eq!(j["cpu"]["throttling"]["throttledPeriods"], u64::MAX);
        assert_eq!(j["memory"]["usage"]["limit"], u64::MAX);
    }
}
