//! The control socket server: one thread per connection, each request forwarded to the agent
//! for the container it names. The sandbox holds a table of containers: its own (created at
//! start-up) and a pod's later ones (`add_container`), each with its status, OOM count, exec
//! numbering and exit status; a later container's init has a waiter thread that records its
//! exit and answers its `wait` callers.
//!
//! Owns: the meaning of each control request, the container table and every container's
//! status transitions after creation. The wire format is `control`'s.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::agent::{AgentClient, AgentError};
use super::oom::OomCount;
use super::stdio;
use crate::control::{self, Envelope, Request, Response};
use crate::state::{write_atomic, Status};

/// Exit status recorded for a container whose sandbox went down before its init exited.
pub const EXIT_SANDBOX_DOWN: i32 = 255;

/// One container of the sandbox.
pub struct Container {
    /// Container id.
    pub id: String,
    /// `<root>/<id>`: its `status` and `exit_status` are written there.
    pub dir: PathBuf,
    /// Current status (also written to `<dir>/status`).
    status: Mutex<Status>,
    /// OOM kills so far (`events`).
    pub oom: Arc<OomCount>,
    exec_seq: AtomicU64,
    /// The init's exit status, once recorded.
    exit: Mutex<Option<i32>>,
    exited: Condvar,
}

impl Container {
    fn new(id: String, dir: PathBuf) -> Container {
        Container {
            id,
            dir,
            status: Mutex::new(Status::Creating),
            oom: Arc::new(OomCount::default()),
            exec_seq: AtomicU64::new(0),
            exit: Mutex::new(None),
            exited: Condvar::new(),
        }
    }

    /// Records a status transition.
    pub fn set_status(&self, s: Status) {
        let mut g = self.status.lock().unwrap_or_else(|e| e.into_inner());
        *g = s;
        if let Err(e) = write_atomic(&self.dir.join("status"), s.as_str().as_bytes()) {
            tracing::warn!(container = %self.id, "recording status {}: {e}", s.as_str());
        }
        if s == Status::Stopped {
            self.oom.close();
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the init's exit: `<dir>/exit_status`, status stopped, `wait` callers answered.
    /// The first record wins (a later one, say the sandbox going down after the init's own
    /// exit, changes nothing); whether this one did.
    pub fn record_exit(&self, status: i32) -> bool {
        let mut g = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_some() {
            return false;
        }
        if let Err(e) = write_atomic(&self.dir.join("exit_status"), status.to_string().as_bytes()) {
            tracing::warn!(container = %self.id, "recording the exit status: {e}");
        }
        self.set_status(Status::Stopped);
        *g = Some(status);
        self.exited.notify_all();
        true
    }

    /// Waits until the init's exit is recorded (at most `timeout`; None: no limit).
    pub fn wait_exit(&self, timeout: Option<Duration>) -> Option<i32> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        while g.is_none() {
            g = match deadline {
                None => self.exited.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.exited
                        .wait_timeout(g, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        *g
    }
}

/// What every handler shares: the sandbox and its containers.
pub struct Shared {
    /// The sandbox's own container's id (the sandbox's id).
    pub id: String,
    /// `--root`: a container's state is `<root>/<id>`.
    pub root: PathBuf,
    /// `<root>/<id>` of the sandbox's own container.
    pub dir: PathBuf,
    /// Control-plane connection to the agent.
    pub agent: AgentClient,
    /// The caller's network namespace the sandbox's network was wired from, if it was.
    pub wired_netns: Option<PathBuf>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// The sandbox's own init exited: no containers are added any more.
    down: AtomicBool,
    /// `wait` answers not yet sent (the supervisor lets them go out before it exits).
    waiting: AtomicUsize,
}

impl Shared {
    /// Shared state of a sandbox whose own container `id` (state `<root>/<id>`) is being
    /// created.
    pub fn new(
        id: String,
        root: PathBuf,
        agent: AgentClient,
        wired_netns: Option<PathBuf>,
    ) -> Shared {
        let dir = root.join(&id);
        let own = Arc::new(Container::new(id.clone(), dir.clone()));
        Shared {
            containers: Mutex::new(HashMap::from([(id.clone(), own)])),
            id,
            root,
            dir,
            agent,
            wired_netns,
            down: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sandbox's own container.
    pub fn own(&self) -> Arc<Container> {
        match self.table().get(&self.id) {
            Some(c) => Arc::clone(c),
            // Never removed from the table; a fresh record keeps callers simple.
            None => Arc::new(Container::new(self.id.clone(), self.dir.clone())),
        }
    }

    /// The container a request names (None: the sandbox's own).
    pub fn container(&self, id: Option<&str>) -> Result<Arc<Container>, String> {
        let id = id.unwrap_or(&self.id);
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| format!("container {id} is not in sandbox {}", self.id))
    }

    /// Records a status transition of the sandbox's own container.
    pub fn set_status(&self, s: Status) {
        self.own().set_status(s);
    }

    /// The OOM count of container `id`, if the sandbox has it.
    pub fn oom_of(&self, id: &str) -> Option<Arc<OomCount>> {
        self.table().get(id).map(|c| Arc::clone(&c.oom))
    }

    /// The sandbox goes down (its own init exited): every other container whose init has not
    /// exited is recorded stopped with status 255 and its `wait` callers answered; no
    /// container is added any more. The ids of those containers.
    pub fn sandbox_down(&self) -> Vec<String> {
        self.down.store(true, Ordering::SeqCst);
        let others: Vec<Arc<Container>> = self
            .table()
            .values()
            .filter(|c| c.id != self.id)
            .cloned()
            .collect();
        let mut stopped = Vec::new();
        for c in others {
            if c.record_exit(EXIT_SANDBOX_DOWN) {
                tracing::info!(container = %c.id, "the sandbox went down: recorded stopped");
                stopped.push(c.id.clone());
            }
        }
        stopped
    }

    /// The ids of the containers other than the sandbox's own.
    pub fn pod_containers(&self) -> Vec<String> {
        self.table()
            .keys()
            .filter(|k| **k != self.id)
            .cloned()
            .collect()
    }

    /// Waits (at most `timeout`) until every `wait` answer has been sent.
    pub fn drain_waits(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.waiting.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Longest an `oom` request waits before answering with the count unchanged.
const OOM_WAIT: Duration = Duration::from_secs(10);

/// How long `remove_container` waits for the killed init's exit to be recorded.
const REMOVE_WAIT: Duration = Duration::from_secs(5);

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

fn handle(conn: UnixStream, shared: &Arc<Shared>) {
    let (env, fds): (Envelope, Vec<OwnedFd>) = match control::recv(&conn) {
        Ok(r) => r,
        Err(e) => {
            let _ = control::send(&conn, &Response::error(e), &[]);
            return;
        }
    };
    tracing::info!(container = ?env.container, req = ?env.request, "control request");
    let is_wait = matches!(env.request, Request::Wait);
    if is_wait {
        shared.waiting.fetch_add(1, Ordering::SeqCst);
    }
    let resp = match dispatch(env, fds, &conn, shared) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("control request failed: {e}");
            Response::error(e)
        }
    };
    let _ = control::send(&conn, &resp, &[]);
    if is_wait {
        shared.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

fn dispatch(
    env: Envelope,
    fds: Vec<OwnedFd>,
    conn: &UnixStream,
    s: &Arc<Shared>,
) -> Result<Response, String> {
    let ok = Response::default();
    let Envelope { container, request } = env;
    if let Request::AddContainer {
        id,
        spec_json,
        guest_root,
        bundle,
    } = request
    {
        if container.as_deref().is_some_and(|c| c != s.id) {
            return Err("add_container names the sandbox, not a container".into());
        }
        let add = AddContainer {
            id: &id,
            spec_json: &spec_json,
            guest_root: &guest_root,
            bundle: &bundle,
        };
        return add_container(s, add, fds).map(|()| ok);
    }
    let c = s.container(container.as_deref())?;
    match request {
        Request::AddContainer { .. } => unreachable!("handled above"),
        Request::Start => {
            match c.status() {
                Status::Created => {}
                Status::Stopped => return Err("cannot start a container that has stopped".into()),
                _ => return Err("cannot start an already running container".into()),
            }
            s.agent.start(&c.id).map_err(|e| e.to_string())?;
            c.set_status(Status::Running);
            Ok(ok)
        }
        Request::Kill { signal, all } => {
            if c.status() == Status::Stopped {
                return Err("container not running".into());
            }
            s.agent
                .signal(&c.id, "", signal, all)
                .map_err(|e| e.to_string())?;
            Ok(ok)
        }
        Request::KillExec { exec_id, signal } => {
            if c.status() == Status::Stopped {
                return Err("container not running".into());
            }
            if !exec_id.starts_with("exec-") {
                return Err(format!(
                    "exec_id {exec_id:?}: not an exec of this container"
                ));
            }
            s.agent
                .signal(&c.id, &exec_id, signal, false)
                .map_err(|e| e.to_string())?;
            Ok(ok)
        }
        Request::Ps => Ok(Response {
            pids: s.agent.ps(&c.id).map_err(|e| e.to_string())?,
            ..ok
        }),
        Request::Stats => Ok(Response {
            stats: Some(runc_stats(
                &s.agent.stats(&c.id).map_err(|e| e.to_string())?,
            )),
            ..ok
        }),
        Request::Pause => {
            if c.status() != Status::Running {
                return Err("container not running".into());
            }
            s.agent.pause(&c.id).map_err(|e| e.to_string())?;
            c.set_status(Status::Paused);
            Ok(ok)
        }
        Request::Resume => {
            if c.status() != Status::Paused {
                return Err("container not paused".into());
            }
            s.agent.resume(&c.id).map_err(|e| e.to_string())?;
            c.set_status(Status::Running);
            Ok(ok)
        }
        Request::Exec { process_json } => exec(s, &c, &process_json, fds, conn),
        Request::Update { resources_json } => {
            if c.status() == Status::Stopped {
                return Err("container not running".into());
            }
            s.agent
                .update(&c.id, &resources_json)
                .map_err(|e| e.to_string())?;
            Ok(ok)
        }
        Request::Oom { after } => {
            let (count, stopped) = c.oom.wait(after, OOM_WAIT);
            Ok(Response {
                oom_count: Some(count),
                stopped,
                ..ok
            })
        }
        Request::Wait => Ok(Response {
            status: c.wait_exit(None),
            ..ok
        }),
        Request::RemoveContainer { force } => remove_container(s, &c, force).map(|()| ok),
    }
}

/// An `add_container` request.
struct AddContainer<'a> {
    id: &'a str,
    spec_json: &'a str,
    guest_root: &'a str,
    bundle: &'a Path,
}

/// A container id as runc takes it (and as safe in a path under `--root`).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Creates a pod container in the sandbox's VM: the spec's namespaces and network mapped to
/// the sandbox's, the runtime-namespace hooks left to the host, the agent's CreateContainer
/// with the rootfs at `guest_root`; then its relay to `fds`, its init waiter and status
/// `created`.
fn add_container(s: &Arc<Shared>, add: AddContainer<'_>, fds: Vec<OwnedFd>) -> Result<(), String> {
    let AddContainer {
        id,
        spec_json,
        guest_root,
        bundle,
    } = add;
    if s.down.load(Ordering::SeqCst) || s.own().status() == Status::Stopped {
        return Err(format!("sandbox {} has stopped", s.id));
    }
    if !valid_id(id) {
        return Err(format!(
            "container id {id:?} must be 1-256 of [A-Za-z0-9_.-]"
        ));
    }
    if s.table().contains_key(id) {
        return Err(format!("container {id} already exists in sandbox {}", s.id));
    }
    let dir = s.root.join(id);
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    if !guest_root.starts_with('/') {
        return Err(format!(
            "guest_root {guest_root:?}: must be an absolute guest path"
        ));
    }
    let mut spec: serde_json::Value =
        serde_json::from_str(spec_json).map_err(|e| format!("spec_json: {e}"))?;
    if !spec.is_object() {
        return Err("spec_json: not a JSON object".into());
    }
    super::podspec::pod_spec(
        &mut spec,
        guest_root,
        std::process::id(),
        &s.id,
        s.wired_netns.as_deref(),
    );
    let terminal = spec
        .pointer("/process/terminal")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let (stdio, extra) = split_fds(fds)?;
    // Before the create, so a failure leaves nothing in the guest to undo.
    let waiter = s.agent.another().map_err(|e| e.to_string())?;
    s.agent
        .create_container(
            id,
            &spec.to_string(),
            Vec::new(),
            guest_root,
            bundle,
            &directions(&extra),
        )
        .map_err(|e| e.to_string())?;
    let c = Arc::new(Container::new(id.to_string(), dir));
    c.set_status(Status::Created);
    s.table().insert(id.to_string(), Arc::clone(&c));
    let relay = stdio::Relay::start(&s.agent, id, "", stdio, terminal, extra);
    let waited = Arc::clone(&c);
    let spawned = std::thread::Builder::new()
        .name("pod-init-wait".into())
        .spawn(move || {
            let status = waiter.wait(&waited.id, "");
            // The output first: a caller that exits with the status (the stand-in) has all
            // of it by then.
            relay.finish(Duration::from_secs(2));
            let status = status.unwrap_or_else(|e| {
                tracing::warn!(container = %waited.id, "waiting for init: {e}");
                EXIT_SANDBOX_DOWN
            });
            if waited.record_exit(status) {
                tracing::info!(container = %waited.id, status, "init exited");
            }
        });
    if let Err(e) = spawned {
        s.table().remove(id);
        let _ = s.agent.remove_container(id);
        return Err(format!("waiter thread: {e}"));
    }
    tracing::info!(container = id, "pod container created");
    Ok(())
}

/// Removes a pod container in the guest: a created or stopped one, a running or paused one
/// only with `force` (the agent kills it first).
fn remove_container(s: &Shared, c: &Arc<Container>, force: bool) -> Result<(), String> {
    if c.id == s.id {
        return Err(format!(
            "container {} is the sandbox's own: deleting it (husk delete) stops the sandbox",
            s.id
        ));
    }
    let status = c.status();
    if matches!(status, Status::Running | Status::Paused) && !force {
        return Err(format!(
            "cannot delete container {} that is not stopped: {}",
            c.id,
            status.as_str()
        ));
    }
    match s.agent.remove_container(&c.id) {
        Ok(()) => {}
        Err(AgentError::Rpc {
            code: ttrpc::Code::NOT_FOUND,
            ..
        }) => {}
        Err(e) => return Err(e.to_string()),
    }
    // The waiter records the killed init's status; a created container's init never ran.
    if c.wait_exit(Some(REMOVE_WAIT)).is_none() {
        c.record_exit(128 + libc::SIGKILL);
    }
    s.table().remove(&c.id);
    tracing::info!(container = %c.id, "pod container removed");
    Ok(())
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

/// A request's fds: stdin, stdout, stderr, then the process's extra fds 3, 4, ... (runc's
/// `--preserve-fds`), each classified (an fd a byte relay cannot stand in for is refused).
fn split_fds(fds: Vec<OwnedFd>) -> Result<([Option<File>; 3], stdio::ExtraFds), String> {
    let mut fds = fds.into_iter().map(File::from);
    let stdio = [fds.next(), fds.next(), fds.next()];
    let extra = stdio::classify_received(fds.collect())?;
    Ok((stdio, extra))
}

fn directions(extra: &stdio::ExtraFds) -> Vec<stdio::Direction> {
    extra.iter().map(|(_, d, _)| *d).collect()
}

/// Starts the process, answers `started` on `conn`, relays its stdio to `fds` (0, 1, 2; any
/// more are its extra fds 3, ...) and returns its exit status (the second answer).
fn exec(
    s: &Shared,
    c: &Container,
    process_json: &str,
    fds: Vec<OwnedFd>,
    conn: &UnixStream,
) -> Result<Response, String> {
    match c.status() {
        Status::Created | Status::Running => {}
        Status::Paused => return Err("cannot exec in a paused container".into()),
        _ => return Err("cannot exec in a stopped container".into()),
    }
    let process: serde_json::Value =
        serde_json::from_str(process_json).map_err(|e| format!("process: {e}"))?;
    let terminal = process["terminal"].as_bool().unwrap_or(false);
    let exec_id = format!("exec-{}", c.exec_seq.fetch_add(1, Ordering::Relaxed) + 1);
    let (stdio, extra) = split_fds(fds)?;
    let waiter = s.agent.another().map_err(|e| e.to_string())?;
    s.agent
        .exec(&c.id, &exec_id, process_json, &directions(&extra))
        .map_err(|e| e.to_string())?;
    let relay = stdio::Relay::start(&s.agent, &c.id, &exec_id, stdio, terminal, extra);
    let started = Response {
        started: true,
        exec_id: Some(exec_id.clone()),
        ..Default::default()
    };
    if control::send(conn, &started, &[]).is_err() {
        tracing::debug!(exec = %exec_id, "the exec caller left; the process runs on");
    }
    let status = waiter.wait(&c.id, &exec_id);
    relay.finish(Duration::from_secs(2));
    tracing::info!(container = %c.id, exec = %exec_id, ?status, "exec exited");
    Ok(Response {
        status: Some(status.map_err(|e| e.to_string())?),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_agent::protocol as pb;

    #[test]
    fn an_exit_is_recorded_once_and_answers_every_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(Container::new("c2".into(), dir.path().to_path_buf()));
        c.set_status(Status::Running);
        assert_eq!(c.wait_exit(Some(Duration::from_millis(10))), None);
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || c.wait_exit(None))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        assert!(c.record_exit(3));
        // The sandbox going down afterwards changes nothing.
        assert!(!c.record_exit(EXIT_SANDBOX_DOWN));
        for w in waiters {
            assert_eq!(w.join().unwrap(), Some(3));
        }
        assert_eq!(c.wait_exit(Some(Duration::ZERO)), Some(3));
        assert_eq!(c.status(), Status::Stopped);
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("exit_status"), "3");
        assert_eq!(read("status"), "stopped");
        assert_eq!(c.oom.wait(Some(0), Duration::from_secs(5)), (0, true));
    }

    #[test]
    fn container_ids_are_checked_before_they_name_a_directory() {
        assert!(valid_id("c-2_x.y"));
        for bad in ["", "../x", "a/b", ".x", "a b", &"x".repeat(257)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

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
