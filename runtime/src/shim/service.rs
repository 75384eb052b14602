//! The task service: containerd's Task API over husk verbs. One service per shim, serving
//! every container of its group (a CRI pod: the sandbox and its containers).
//!
//! Every container and exec has a host pid that exits with its status (the contract in
//! docs/containerd.md): the supervisor of a sandbox (or standalone) container, the stand-in
//! of a pod container or an exec. A watcher thread per pid waits for it through the reaper,
//! records the exit and publishes `TaskExit`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use containerd_shim::api::{self, Status};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::{ExitSignal, TtrpcContext, TtrpcResult};

use super::husk::{Husk, HuskError};
use super::io::{self, Paths, ProcIo};
use super::options::ShimOptions;
use super::publisher::Publisher;
use super::reaper::Exit;

/// The CRI annotation naming a container's kind (`sandbox` or `container`).
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The CRI annotation naming a container's pod sandbox.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// One process: a container's init or an exec.
#[derive(Default)]
struct Proc {
    pid: u32,
    status: Status,
    exit: Option<Exit>,
    /// Start is publishing TaskStart: an exit waits for it to be published first.
    starting: bool,
    exit_unpublished: bool,
    io: ProcIo,
    paths: Paths,
}

struct ExecProc {
    proc_: Proc,
    spec: Vec<u8>,
    /// The exec's id in the sandbox (`husk exec --exec-id-file`), for Kill.
    guest_id: Option<String>,
}

struct Container {
    bundle: PathBuf,
    /// The husk (binary, root, config) of the container: the runtime options of its create,
    /// or of its pod's sandbox.
    husk: Husk,
    /// The runtime options' IoUid/IoGid, for its execs' stdin pipes.
    io_owner: Option<(u32, u32)>,
    init: Proc,
    execs: HashMap<String, ExecProc>,
    rootfs_mounted: bool,
    /// The `husk events` process watching for OOM kills.
    oom_watch: Option<i32>,
}

#[derive(Default)]
struct State {
    containers: HashMap<String, Container>,
    /// The container whose host cgroup the shim joined.
    joined_cgroup_of: Option<String>,
}

struct Shared {
    husk: Husk,
    namespace: String,
    publisher: Mutex<Publisher>,
    state: Mutex<State>,
    changed: Condvar,
    exit: Arc<ExitSignal>,
    /// The shim's own cgroup (v2) when it started, to go back to before a delete.
    own_cgroup: Option<PathBuf>,
}

/// The Task service.
#[derive(Clone)]
pub struct Service {
    s: Arc<Shared>,
}

fn err(code: Code, msg: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.to_string()))
}

fn husk_err(e: HuskError) -> ttrpc::Error {
    err(Code::UNKNOWN, e)
}

fn not_found(id: &str) -> ttrpc::Error {
    err(Code::NOT_FOUND, format!("container {id}: not found"))
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// The shim's cgroup v2 directory, from /proc/self/cgroup.
fn own_cgroup() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')))
}

fn join_cgroup(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
}

impl Service {
    /// A service running `husk`'s verbs, publishing to containerd in `namespace`.
    pub fn new(
        husk: Husk,
        namespace: String,
        publisher: Publisher,
        exit: Arc<ExitSignal>,
    ) -> Service {
        Service {
            s: Arc::new(Shared {
                husk,
                namespace,
                publisher: Mutex::new(publisher),
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                exit,
                own_cgroup: own_cgroup(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.s.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The husk (binary, root, config) serving container `id`.
    fn husk_of(&self, id: &str) -> TtrpcResult<Husk> {
        self.lock()
            .containers
            .get(id)
            .map(|c| c.husk.clone())
            .ok_or_else(|| not_found(id))
    }

    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let mut p = self.s.publisher.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = p.publish(topic, &self.s.namespace, event) {
            tracing::warn!("publishing {topic}: {e}");
        }
    }

    fn exit_event(cid: &str, exec_id: &str, pid: u32, exit: Exit) -> Box<TaskExit> {
        Box::new(TaskExit {
            container_id: cid.to_owned(),
            id: if exec_id.is_empty() { cid } else { exec_id }.to_owned(),
            pid,
            exit_status: exit.code as u32,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    /// Waits for `pid` in a thread and records its exit as `cid`/`exec_id`'s.
    fn watch(&self, cid: String, exec_id: String, pid: u32) {
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("exit-watch".into())
            .spawn(move || {
                let exit = me.s.husk.reaper.wait(pid as i32);
                me.on_exit(&cid, &exec_id, pid, exit);
            });
    }

    fn on_exit(&self, cid: &str, exec_id: &str, pid: u32, exit: Exit) {
        let mut publish = false;
        let mut kill_watch = None;
        {
            let mut st = self.lock();
            let Some(c) = st.containers.get_mut(cid) else {
                return;
            };
            let p = if exec_id.is_empty() {
                kill_watch = c.oom_watch.take();
                &mut c.init
            } else {
                match c.execs.get_mut(exec_id) {
                    Some(e) => &mut e.proc_,
                    None => return,
                }
            };
            if p.pid != pid || p.exit.is_some() {
                return;
            }
            p.exit = Some(exit);
            p.status = Status::STOPPED;
            if p.starting {
                p.exit_unpublished = true;
            } else {
                publish = true;
            }
        }
        self.s.changed.notify_all();
        if let Some(w) = kill_watch {
            // SAFETY: kill(2) of the `husk events` child this shim started.
            unsafe { libc::kill(w, libc::SIGKILL) };
        }
        tracing::info!("{cid} {exec_id}: pid {pid} exited with {}", exit.code);
        if publish {
            self.publish(
                topics::TASK_EXIT_EVENT_TOPIC,
                Self::exit_event(cid, exec_id, pid, exit),
            );
        }
    }

    /// Publishes TaskOOM for each `oom` event `husk events ID` prints.
    fn watch_oom(&self, husk: &Husk, cid: &str) -> Option<i32> {
        let (pid, out) = match husk.spawn_reader(&["events", "--interval", "60s", cid]) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("{cid}: no OOM events: {e}");
                return None;
            }
        };
        let me = self.clone();
        let cid = cid.to_owned();
        let _ = std::thread::Builder::new()
            .name("oom-watch".into())
            .spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                        continue;
                    };
                    if v["type"] == "oom" {
                        me.publish(
                            topics::TASK_OOM_EVENT_TOPIC,
                            Box::new(TaskOOM {
                                container_id: cid.clone(),
                                ..Default::default()
                            }),
                        );
                    }
                }
            });
        Some(pid)
    }

    fn mount_rootfs(&self, req: &api::CreateTaskRequest) -> Result<bool, ttrpc::Error> {
        if req.rootfs.is_empty() {
            return Ok(false);
        }
        let target = Path::new(&req.bundle).join("rootfs");
        std::fs::create_dir_all(&target)
            .map_err(|e| err(Code::INTERNAL, format!("{}: {e}", target.display())))?;
        for m in &req.rootfs {
            self.s.husk.reaper.kick();
            if let Err(e) = containerd_shim::mount::mount_rootfs(
                Some(m.type_.as_str()).filter(|t| !t.is_empty()),
                Some(m.source.as_str()).filter(|s| !s.is_empty()),
                &m.options,
                &target,
            ) {
                unmount_rootfs(Path::new(&req.bundle));
                return Err(err(
                    Code::INTERNAL,
                    format!(
                        "mounting the rootfs ({}) at {}: {e}",
                        m.type_,
                        target.display()
                    ),
                ));
            }
        }
        Ok(true)
    }

    /// Moves the shim into the host cgroup of the sandbox container `cid`, so that the pod's
    /// accounting sees it beside the supervisor, VMM and virtiofsd.
    fn join_sandbox_cgroup(&self, st: &mut State, husk: &Husk, cid: &str) {
        if st.joined_cgroup_of.is_some() {
            return;
        }
        let dirs = crate::hostcg::load(&husk.root.join(cid));
        let Some(dir) = dirs.first() else { return };
        match join_cgroup(dir) {
            Ok(()) => {
                tracing::info!("shim joined {}", dir.display());
                st.joined_cgroup_of = Some(cid.to_owned());
            }
            Err(e) => tracing::warn!("joining {}: {e}", dir.display()),
        }
    }

    /// Leaves the sandbox's cgroup before `husk delete` removes it.
    fn leave_cgroup(&self, st: &mut State, cid: &str) {
        if st.joined_cgroup_of.as_deref() != Some(cid) {
            return;
        }
        if let Some(own) = &self.s.own_cgroup {
            if let Err(e) = join_cgroup(own) {
                tracing::warn!("returning to {}: {e}", own.display());
            }
        }
        st.joined_cgroup_of = None;
    }

    fn start_exec(&self, cid: &str, exec_id: &str) -> TtrpcResult<u32> {
        let husk = self.husk_of(cid)?;
        let (bundle, spec, paths) = {
            let mut st = self.lock();
            let c = st.containers.get_mut(cid).ok_or_else(|| not_found(cid))?;
            let bundle = c.bundle.clone();
            let e = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| err(Code::NOT_FOUND, format!("exec {exec_id}: not found")))?;
            if e.proc_.status != Status::CREATED {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    format!("exec {exec_id} already started"),
                ));
            }
            e.proc_.starting = true;
            (bundle, e.spec.clone(), e.proc_.paths.clone())
        };
        let result = (|| {
            let spec_path = bundle.join(format!("exec-{exec_id}.json"));
            std::fs::write(&spec_path, &spec)
                .map_err(|e| err(Code::INTERNAL, format!("{}: {e}", spec_path.display())))?;
            let pid_path = bundle.join(format!("exec-{exec_id}.pid"));
            let id_path = bundle.join(format!("exec-{exec_id}.id"));
            let prepared = io::prepare(&paths).map_err(|e| err(Code::INTERNAL, e))?;
            let mut args: Vec<String> = vec!["exec".into(), "-d".into()];
            args.push("--pid-file".into());
            args.push(pid_path.display().to_string());
            args.push("--exec-id-file".into());
            args.push(id_path.display().to_string());
            args.push("--process".into());
            args.push(spec_path.display().to_string());
            if let Some(c) = &prepared.console {
                args.push("--console-socket".into());
                args.push(c.path().display().to_string());
            }
            args.push(cid.into());
            let (stdio, rest) = split(prepared);
            let r = husk.run_with(&args, stdio);
            let _ = std::fs::remove_file(&spec_path);
            r.map_err(husk_err)?;
            let pid = read_pid(&pid_path)?;
            let _ = std::fs::remove_file(&pid_path);
            let guest_id = std::fs::read_to_string(&id_path)
                .ok()
                .filter(|s| !s.is_empty());
            let _ = std::fs::remove_file(&id_path);
            let io = rest.finish().map_err(|e| err(Code::INTERNAL, e))?;
            Ok((pid, io, guest_id))
        })();
        let mut st = self.lock();
        let Some(e) = st
            .containers
            .get_mut(cid)
            .and_then(|c| c.execs.get_mut(exec_id))
        else {
            return Err(err(Code::NOT_FOUND, format!("exec {exec_id}: not found")));
        };
        e.proc_.starting = false;
        let (pid, io, guest_id) = match result {
            Ok(x) => x,
            Err(er) => {
                e.proc_.status = Status::STOPPED;
                e.proc_.exit = Some(Exit {
                    code: 255,
                    at: SystemTime::now(),
                });
                drop(st);
                self.s.changed.notify_all();
                return Err(er);
            }
        };
        e.proc_.pid = pid;
        e.proc_.io = io;
        e.guest_id = guest_id;
        e.proc_.status = Status::RUNNING;
        drop(st);
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Box::new(TaskExecStarted {
                container_id: cid.to_owned(),
                exec_id: exec_id.to_owned(),
                pid,
                ..Default::default()
            }),
        );
        self.watch(cid.to_owned(), exec_id.to_owned(), pid);
        Ok(pid)
    }

    fn proc_view<T>(&self, id: &str, exec_id: &str, f: impl FnOnce(&Proc) -> T) -> TtrpcResult<T> {
        let st = self.lock();
        let c = st.containers.get(id).ok_or_else(|| not_found(id))?;
        if exec_id.is_empty() {
            return Ok(f(&c.init));
        }
        let e = c
            .execs
            .get(exec_id)
            .ok_or_else(|| err(Code::NOT_FOUND, format!("exec {exec_id}: not found")))?;
        Ok(f(&e.proc_))
    }
}

/// husk's status for a container whose sandbox went down without its init's status.
const LOST: i32 = 255;

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Service {
    /// Before `husk delete` removes them: the ends of the supervisor's and the guest console's
    /// logs of a container whose sandbox was lost, into the shim's log (containerd's).
    fn log_sandbox_logs(&self, husk: &Husk, id: &str) {
        let dir = husk.root.join(id);
        for f in ["supervisor.log", "console.log"] {
            tracing::warn!("{id}: sandbox lost; {f}:\n{}", tail(&dir.join(f), 25));
        }
    }
}

/// Splits what `io::prepare` made into the verb's stdio and the rest.
fn split(p: io::Prepared) -> (super::husk::Stdio3, io::Prepared) {
    let mut p = p;
    let stdio = std::mem::replace(&mut p.stdio, super::husk::Stdio3::null());
    (stdio, p)
}

fn read_pid(path: &Path) -> TtrpcResult<u32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| err(Code::INTERNAL, format!("no pid in {}", path.display())))
}

/// Unmounts everything at `<bundle>/rootfs` (lazily: a mount still busy goes when freed).
pub fn unmount_rootfs(bundle: &Path) {
    let target = bundle.join("rootfs");
    for _ in 0..16 {
        if nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
}

impl Service {
    /// The husk a new container's verbs use: the shim's defaults changed by the task's runtime
    /// options (decoded and checked here, before anything is made), or for a pod container
    /// its sandbox's (the VM is the sandbox's); its own options, if any, must agree. Its
    /// verbs log to `<bundle>/husk.log`.
    fn husk_for(
        &self,
        req: &api::CreateTaskRequest,
        bundle: &Path,
        sandbox: Option<&str>,
    ) -> TtrpcResult<(Husk, ShimOptions)> {
        let opts = ShimOptions::decode(req.options.as_ref())
            .and_then(ShimOptions::validate)
            .map_err(|e| err(Code::INVALID_ARGUMENT, e))?;
        let mut husk = self.s.husk.clone();
        husk.log = bundle.join("husk.log");
        if let Some(b) = &opts.binary {
            husk.bin = b.clone();
        }
        if let Some(r) = &opts.root {
            husk.root = super::root_for(Some(r), &self.s.namespace);
        }
        husk.config = opts.config.clone();
        let pod = sandbox.and_then(|sb| {
            self.lock()
                .containers
                .get(sb)
                .map(|c| (sb.to_owned(), c.husk.clone()))
        });
        if let Some((sb, pod)) = pod {
            if opts != ShimOptions::default() {
                let differs = [
                    ("BinaryName", husk.bin != pod.bin),
                    ("Root", husk.root != pod.root),
                    ("ConfigPath", husk.config != pod.config),
                ]
                .into_iter()
                .find(|(_, d)| *d);
                if let Some((option, _)) = differs {
                    return Err(err(
                        Code::INVALID_ARGUMENT,
                        format!(
                            "runtime option {option} of {}: differs from its pod sandbox                              {sb}'s, whose VM it joins",
                            req.id
                        ),
                    ));
                }
            }
            husk = Husk {
                log: husk.log,
                ..pod
            };
        }
        tracing::debug!(
            "{}: {} --root {}{}",
            req.id,
            husk.bin.display(),
            husk.root.display(),
            husk.config
                .as_ref()
                .map(|c| format!(" (HUSK_CONFIG={})", c.display()))
                .unwrap_or_default()
        );
        Ok((husk, opts))
    }
}

/// The spec's annotations and whether it is a pod container (its sandbox's id).
fn pod_sandbox_of(bundle: &Path) -> Option<String> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
    let a = &spec["annotations"];
    if a[CONTAINER_TYPE] == "container" {
        return a[SANDBOX_ID].as_str().map(str::to_owned);
    }
    None
}

impl containerd_shim::Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let id = req.id.clone();
        if !req.checkpoint.is_empty() {
            return Err(err(
                Code::UNIMPLEMENTED,
                "checkpoint/restore is not supported by husk",
            ));
        }
        if self.lock().containers.contains_key(&id) {
            return Err(err(Code::ALREADY_EXISTS, format!("container {id} exists")));
        }
        let bundle = PathBuf::from(&req.bundle);
        let sandbox = pod_sandbox_of(&bundle);
        let (husk, opts) = self.husk_for(&req, &bundle, sandbox.as_deref())?;
        std::fs::create_dir_all(&husk.root).map_err(|e| {
            let what = if opts.root.is_some() {
                "runtime option Root: "
            } else {
                ""
            };
            err(
                Code::INTERNAL,
                format!("{what}husk root {}: {e}", husk.root.display()),
            )
        })?;
        super::write_record(&bundle, &husk);
        let mounted = self.mount_rootfs(&req)?;
        let paths = Paths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            owner: opts.io_owner,
        };
        let pid_path = bundle.join("init.pid");
        let result = (|| {
            let prepared = io::prepare(&paths).map_err(|e| err(Code::INTERNAL, e))?;
            let mut args: Vec<String> = vec!["create".into(), "--bundle".into()];
            args.push(bundle.display().to_string());
            args.push("--pid-file".into());
            args.push(pid_path.display().to_string());
            if let Some(c) = &prepared.console {
                args.push("--console-socket".into());
                args.push(c.path().display().to_string());
            }
            if let Some(sb) = &sandbox {
                args.push("--sandbox".into());
                args.push(sb.clone());
            }
            args.push(id.clone());
            let (stdio, rest) = split(prepared);
            husk.run_with(&args, stdio).map_err(husk_err)?;
            let pid = read_pid(&pid_path)?;
            let io = rest.finish().map_err(|e| err(Code::INTERNAL, e))?;
            Ok((pid, io))
        })();
        let (pid, io) = match result {
            Ok(x) => x,
            Err(e) => {
                if mounted {
                    unmount_rootfs(&bundle);
                }
                return Err(e);
            }
        };
        tracing::info!("created {id}: pid {pid}");
        if sandbox.is_none() {
            // Before the OOM watcher starts: it is one of the pod's host processes too.
            let mut st = self.lock();
            self.join_sandbox_cgroup(&mut st, &husk, &id);
        }
        let oom_watch = self.watch_oom(&husk, &id);
        {
            let mut st = self.lock();
            st.containers.insert(
                id.clone(),
                Container {
                    bundle: bundle.clone(),
                    husk,
                    io_owner: opts.io_owner,
                    init: Proc {
                        pid,
                        status: Status::CREATED,
                        io,
                        paths: paths.clone(),
                        ..Default::default()
                    },
                    execs: HashMap::new(),
                    rootfs_mounted: mounted,
                    oom_watch,
                },
            );
        }
        self.watch(id.clone(), String::new(), pid);
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: id,
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                pid,
                ..Default::default()
            }),
        );
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        if !req.exec_id.is_empty() {
            let pid = self.start_exec(&req.id, &req.exec_id)?;
            return Ok(api::StartResponse {
                pid,
                ..Default::default()
            });
        }
        let pid = {
            let mut st = self.lock();
            let c = st
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            if c.init.status != Status::CREATED {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is not created", req.id),
                ));
            }
            c.init.starting = true;
            c.init.pid
        };
        let r = self
            .husk_of(&req.id)?
            .output(&["start", req.id.as_str()], None);
        let exit_to_publish = {
            let mut st = self.lock();
            let Some(c) = st.containers.get_mut(&req.id) else {
                return Err(not_found(&req.id));
            };
            c.init.starting = false;
            if r.is_ok() && c.init.exit.is_none() {
                c.init.status = Status::RUNNING;
            }
            let pending = std::mem::take(&mut c.init.exit_unpublished);
            pending.then_some(c.init.exit).flatten()
        };
        r.map_err(husk_err)?;
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            }),
        );
        if let Some(exit) = exit_to_publish {
            self.publish(
                topics::TASK_EXIT_EVENT_TOPIC,
                Self::exit_event(&req.id, "", pid, exit),
            );
        }
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let mut st = self.lock();
            let c = st
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            let Some(e) = c.execs.get(&req.exec_id) else {
                return Err(err(
                    Code::NOT_FOUND,
                    format!("exec {}: not found", req.exec_id),
                ));
            };
            if e.proc_.status == Status::RUNNING {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} is still running", req.exec_id),
                ));
            }
            let e = c.execs.remove(&req.exec_id).map(|e| e.proc_);
            let e = e.unwrap_or_default();
            let exit = e.exit.unwrap_or(Exit {
                code: 0,
                at: SystemTime::now(),
            });
            return Ok(api::DeleteResponse {
                pid: e.pid,
                exit_status: exit.code as u32,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            });
        }
        let (bundle, mounted, pid, watch) = {
            let mut st = self.lock();
            self.leave_cgroup(&mut st, &req.id);
            let c = st
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            (
                c.bundle.clone(),
                c.rootfs_mounted,
                c.init.pid,
                c.oom_watch.take(),
            )
        };
        if let Some(w) = watch {
            // SAFETY: kill(2) of the `husk events` child this shim started.
            unsafe { libc::kill(w, libc::SIGKILL) };
        }
        let lost = self
            .proc_view(&req.id, "", |p| p.exit.map(|e| e.code))
            .ok()
            .flatten()
            == Some(LOST);
        if lost {
            self.log_sandbox_logs(&self.husk_of(&req.id)?, &req.id);
        }
        self.husk_of(&req.id)?
            .output(&["delete", "--force", req.id.as_str()], None)
            .map_err(husk_err)?;
        if mounted {
            unmount_rootfs(&bundle);
        }
        let c = self.lock().containers.remove(&req.id);
        self.s.changed.notify_all();
        let exit = c.and_then(|c| c.init.exit).unwrap_or(Exit {
            code: 137,
            at: SystemTime::now(),
        });
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                pid,
                exit_status: exit.code as u32,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            }),
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: exit.code as u32,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        {
            let mut st = self.lock();
            let c = st
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            if c.init.status == Status::STOPPED {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is stopped", req.id),
                ));
            }
            if c.execs.contains_key(&req.exec_id) {
                return Err(err(
                    Code::ALREADY_EXISTS,
                    format!("exec {} exists", req.exec_id),
                ));
            }
            let spec = req
                .spec
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default();
            let owner = c.io_owner;
            c.execs.insert(
                req.exec_id.clone(),
                ExecProc {
                    proc_: Proc {
                        status: Status::CREATED,
                        paths: Paths {
                            stdin: req.stdin.clone(),
                            stdout: req.stdout.clone(),
                            stderr: req.stderr.clone(),
                            terminal: req.terminal,
                            owner,
                        },
                        ..Default::default()
                    },
                    spec,
                    guest_id: None,
                },
            );
        }
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        );
        Ok(api::Empty::new())
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        self.proc_view(&req.id, &req.exec_id, |p| {
            p.io.resize(req.width, req.height)
        })?
        .map_err(|e| err(Code::FAILED_PRECONDITION, format!("resize: {e}")))?;
        Ok(api::Empty::new())
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let bundle = {
            let st = self.lock();
            st.containers
                .get(&req.id)
                .map(|c| c.bundle.display().to_string())
                .ok_or_else(|| not_found(&req.id))?
        };
        self.proc_view(&req.id, &req.exec_id, |p| api::StateResponse {
            id: req.id.clone(),
            bundle,
            pid: p.pid,
            status: p.status.into(),
            stdin: p.paths.stdin.clone(),
            stdout: p.paths.stdout.clone(),
            stderr: p.paths.stderr.clone(),
            terminal: p.paths.terminal,
            exit_status: p.exit.map(|e| e.code as u32).unwrap_or(0),
            exited_at: p.exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        self.proc_view(&req.id, "", |_| ())?;
        let out = self
            .husk_of(&req.id)?
            .output(&["ps", "--format", "json", req.id.as_str()], None)
            .map_err(husk_err)?;
        let pids: Vec<u32> = serde_json::from_str(out.trim())
            .map_err(|e| err(Code::INTERNAL, format!("husk ps: {e}")))?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| containerd_shim::protos::types::task::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.proc_view(&req.id, "", |_| ())?;
        self.husk_of(&req.id)?
            .output(&["pause", req.id.as_str()], None)
            .map_err(husk_err)?;
        if let Some(c) = self.lock().containers.get_mut(&req.id) {
            if c.init.status == Status::RUNNING {
                c.init.status = Status::PAUSED;
            }
        }
        self.publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            Box::new(TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            }),
        );
        Ok(api::Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.proc_view(&req.id, "", |_| ())?;
        self.husk_of(&req.id)?
            .output(&["resume", req.id.as_str()], None)
            .map_err(husk_err)?;
        if let Some(c) = self.lock().containers.get_mut(&req.id) {
            if c.init.status == Status::PAUSED {
                c.init.status = Status::RUNNING;
            }
        }
        self.publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            Box::new(TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            }),
        );
        Ok(api::Empty::new())
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(err(
            Code::UNIMPLEMENTED,
            "checkpoint is not supported by husk: a microVM sandbox cannot be checkpointed yet",
        ))
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let stopped = self.proc_view(&req.id, &req.exec_id, |p| p.status == Status::STOPPED)?;
        if stopped {
            return Err(err(Code::NOT_FOUND, "process already finished"));
        }
        if !req.exec_id.is_empty() {
            // The process is in the VM: husk signals it by the id its exec was given there.
            let guest_id = {
                let st = self.lock();
                st.containers
                    .get(&req.id)
                    .and_then(|c| c.execs.get(&req.exec_id))
                    .and_then(|e| e.guest_id.clone())
            };
            let guest_id = guest_id.ok_or_else(|| {
                err(
                    Code::FAILED_PRECONDITION,
                    format!("exec {}: not started", req.exec_id),
                )
            })?;
            let sig = req.signal.to_string();
            self.husk_of(&req.id)?
                .output(
                    &[
                        "kill",
                        "--exec",
                        guest_id.as_str(),
                        req.id.as_str(),
                        sig.as_str(),
                    ],
                    None,
                )
                .map_err(husk_err)?;
            return Ok(api::Empty::new());
        }
        let sig = req.signal.to_string();
        let mut args = vec!["kill"];
        if req.all {
            args.push("--all");
        }
        args.push(&req.id);
        args.push(&sig);
        match self.husk_of(&req.id)?.output(&args, None) {
            Ok(_) => Ok(api::Empty::new()),
            Err(e) => {
                // It may have stopped meanwhile.
                let stopped = self.proc_view(&req.id, "", |p| p.status == Status::STOPPED)?;
                if stopped || e.to_string().contains("not running") {
                    return Err(err(Code::NOT_FOUND, "process already finished"));
                }
                Err(husk_err(e))
            }
        }
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        self.proc_view(&req.id, &req.exec_id, |p| p.io.close_stdin())?;
        Ok(api::Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        self.proc_view(&req.id, "", |_| ())?;
        let Some(res) = req.resources.as_ref() else {
            return Ok(api::Empty::new());
        };
        self.husk_of(&req.id)?
            .output(&["update", "-r", "-", req.id.as_str()], Some(&res.value))
            .map_err(husk_err)?;
        Ok(api::Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let mut st = self.lock();
        loop {
            let c = st
                .containers
                .get(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            let p = if req.exec_id.is_empty() {
                &c.init
            } else {
                &c.execs
                    .get(&req.exec_id)
                    .ok_or_else(|| {
                        err(Code::NOT_FOUND, format!("exec {}: not found", req.exec_id))
                    })?
                    .proc_
            };
            if let Some(e) = p.exit {
                return Ok(api::WaitResponse {
                    exit_status: e.code as u32,
                    exited_at: Some(timestamp(e.at)).into(),
                    ..Default::default()
                });
            }
            st = self.s.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        self.proc_view(&req.id, "", |_| ())?;
        let out = self
            .husk_of(&req.id)?
            .output(&["events", "--stats", req.id.as_str()], None)
            .map_err(husk_err)?;
        let ev: serde_json::Value = serde_json::from_str(out.trim())
            .map_err(|e| err(Code::INTERNAL, format!("husk events --stats: {e}")))?;
        let m = super::stats::metrics(&ev["data"]);
        let any = containerd_shim::util::convert_to_any(Box::new(m))
            .map_err(|e| err(Code::INTERNAL, e))?;
        Ok(api::StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.proc_view(&req.id, "", |p| p.pid).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if self.lock().containers.is_empty() {
            tracing::info!("no containers left: shutting down");
            self.s.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
