//! `containerd-shim-husk-v2`: containerd's runtime v2 shim for husk, on containerd's
//! rust-extensions (`containerd-shim`, synchronous API). It drives the `husk` binary the way
//! containerd-shim-runc-v2 drives runc (see docs/containerd.md):
//!
//! - `start` (containerd runs it in the bundle): one shim per group, the group being the
//!   CRI pod (annotation `io.kubernetes.cri.sandbox-id`) or else the container. If the
//!   group's shim already listens, its address is the answer; else a new shim process is
//!   started to serve the socket and its address printed (containerd 1.6 reads a bare address
//!   from stdout).
//! - serving (`-socket`): a subreaper with a reaper thread (`reaper`), the Task service
//!   (`service`) registered as both `containerd.task.v2.Task` (containerd 1.6/1.7) and
//!   `containerd.task.v3.Task` (containerd 2), and an event publisher to containerd
//!   (`publisher`, which reconnects after containerd restarts).
//! - `delete` (containerd's cleanup after a shim died, e.g. `kill -9`): `husk delete --force`
//!   of the container, the rootfs unmounted, a SIGKILL-style status (137).
//!
//! Its husk state root is private: `$HUSK_SHIM_ROOT`, else `/run/husk-shim/<namespace>`;
//! containerd's runtime options (`options`: husk's config file, binary, root, the shim's
//! cgroup) change that per container and pod. What a container's verbs use is recorded in
//! `<bundle>/husk-shim.json` for `delete`.

pub mod husk;
pub mod io;
pub mod options;
pub mod publisher;
pub mod reaper;
pub mod service;
pub mod stats;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::shim_ttrpc::create_task;
use containerd_shim::protos::ttrpc::Server;
use containerd_shim::{DeleteResponse, ExitSignal, Flags};
use serde::{Deserialize, Serialize};

use self::husk::Husk;
use self::reaper::Reaper;

/// containerd's name for this runtime.
pub const RUNTIME_ID: &str = "io.containerd.husk.v2";
/// Environment: the husk state root (default `/run/husk-shim/<namespace>`).
pub const ROOT_ENV: &str = "HUSK_SHIM_ROOT";
/// The file in the bundle recording which husk the shim used.
const RECORD: &str = "husk-shim.json";

/// Errors of the shim's own actions (not of Task requests).
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// Bad command line.
    #[error("{0}")]
    Args(String),
    /// An I/O step, named.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// containerd-shim's helpers.
    #[error("{0}")]
    Shim(#[from] containerd_shim::Error),
    /// The ttrpc server.
    #[error("ttrpc: {0}")]
    Ttrpc(#[from] containerd_shim::protos::ttrpc::Error),
    /// A husk verb.
    #[error("{0}")]
    Husk(#[from] husk::HuskError),
    /// containerd's event service.
    #[error("{0}")]
    Publish(#[from] publisher::PublishError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShimError {
    let what = what.into();
    move |source| ShimError::Io { what, source }
}

/// What `create` recorded in the bundle for `delete`.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    root: PathBuf,
    binary: PathBuf,
    /// `HUSK_CONFIG` of the verbs (the runtime option `ConfigPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<PathBuf>,
}

/// Records in `bundle` which husk serves its container, for `delete` after the shim died
/// (every container of a pod has its own bundle).
pub fn write_record(bundle: &Path, husk: &Husk) {
    let record = Record {
        root: husk.root.clone(),
        binary: husk.bin.clone(),
        config: husk.config.clone(),
    };
    if let Err(e) = std::fs::write(
        bundle.join(RECORD),
        serde_json::to_vec(&record).unwrap_or_default(),
    ) {
        tracing::warn!("{}: {e}", bundle.join(RECORD).display());
    }
}

/// husk's `--root` for `namespace`: `<base>/<namespace>` for the runtime option `Root`, else
/// the default.
pub fn root_for(base: Option<&Path>, namespace: &str) -> PathBuf {
    match base {
        Some(b) => b.join(namespace),
        None => default_root(namespace),
    }
}

fn default_root(namespace: &str) -> PathBuf {
    std::env::var_os(ROOT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("/run/husk-shim").join(namespace))
}

/// The group a container's shim serves: its pod sandbox, else itself.
fn grouping(bundle: &Path, id: &str) -> String {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|s| {
            s["annotations"][service::SANDBOX_ID]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| id.to_owned())
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// The shim's `main`: the exit status.
pub fn main() -> i32 {
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{RUNTIME_ID}: {e}");
            return 1;
        }
    };
    if flags.version {
        println!("containerd-shim-husk-v2:");
        println!("  Version: {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let r = if flags.namespace.is_empty() {
        Err(ShimError::Args("-namespace is required".into()))
    } else {
        match flags.action.as_str() {
            "start" => start(&flags),
            "delete" => delete(&flags),
            _ => serve(&flags),
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{RUNTIME_ID}: {e}");
            1
        }
    }
}

/// `start`: prints the address of the group's shim, starting one if needed.
fn start(flags: &Flags) -> Result<(), ShimError> {
    let bundle = std::env::current_dir().map_err(io_err("the bundle (working directory)"))?;
    let group = grouping(&bundle, &flags.id);
    let address = containerd_shim::socket_address(&flags.address, &flags.namespace, &group);
    let path = socket_path(&address).to_owned();
    let alive = UnixStream::connect(&path).is_ok();
    // The task's runtime options, as containerd gives them to `start` (a shim of the group
    // that is already serving got them with the group's first task). Only ShimCgroup acts
    // here; Create decodes them again and reports what is wrong.
    let opts = options::read_start_options(&mut std::io::stdin().lock()).unwrap_or_default();
    if !alive {
        if Path::new(&path).exists() {
            let _ = std::fs::remove_file(&path);
        }
        let exe = std::env::current_exe().map_err(io_err("finding this executable"))?;
        let mut cmd = Command::new(exe);
        cmd.current_dir(&bundle)
            .args(["-namespace", &flags.namespace, "-id", &flags.id])
            .args(["-address", &flags.address])
            .args(["-publish-binary", &flags.publish_binary])
            .args(["-socket", &address])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        if flags.debug {
            cmd.arg("-debug");
        }
        let mut child = cmd.spawn().map_err(io_err("starting the shim"))?;
        // The server closes its stdout once it listens.
        let mut sink = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_end(&mut sink);
        }
        if let Ok(Some(status)) = child.try_wait() {
            if !status.success() {
                return Err(ShimError::Args(format!(
                    "the shim exited ({status}) before serving {address}"
                )));
            }
        }
        if let Some(cg) = &opts.shim_cgroup {
            // As containerd-shim-runc-v2: the new shim goes into ShimCgroup (it must exist).
            if let Err(e) = containerd_shim::cgroup::add_task_to_cgroup(cg, child.id()) {
                // SAFETY: kill(2) of the shim process this call just started.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
                let _ = std::fs::remove_file(&path);
                return Err(ShimError::Args(format!(
                    "runtime option ShimCgroup {cg:?}: moving the shim there: {e}"
                )));
            }
        }
        if let Err(e) = containerd_shim::cgroup::adjust_oom_score(child.id()) {
            tracing::warn!("oom score of the shim: {e}");
        }
    }
    containerd_shim::util::write_address(&address)?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|()| out.flush())
        .map_err(io_err("writing the address"))?;
    Ok(())
}

/// Logs to containerd's `log` FIFO in the bundle (never blocking), else to `shim.log`.
fn init_logging(debug: bool) {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log")
        .or_else(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open("shim.log")
        });
    let Ok(file) = file else { return };
    let level = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUSK_SHIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
}

/// Sets the process as a child subreaper.
fn set_subreaper() -> Result<(), ShimError> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r != 0 {
        return Err(ShimError::Io {
            what: "PR_SET_CHILD_SUBREAPER".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The Task service's methods under containerd 1.6/1.7's service name as well as 2.x's.
fn task_methods(
    svc: Arc<dyn containerd_shim::Task + Send + Sync>,
) -> HashMap<String, Box<dyn containerd_shim::protos::ttrpc::MethodHandler + Send + Sync>> {
    let mut all = create_task(Arc::clone(&svc));
    for (name, h) in create_task(svc) {
        if let Some(rest) = name.strip_prefix("/containerd.task.v3.Task/") {
            all.insert(format!("/containerd.task.v2.Task/{rest}"), h);
        }
    }
    all
}

/// Serves the Task API on `-socket` until Shutdown.
fn serve(flags: &Flags) -> Result<(), ShimError> {
    if flags.socket.is_empty() {
        return Err(ShimError::Args("-socket is required".into()));
    }
    set_subreaper()?;
    init_logging(flags.debug);
    let path = socket_path(&flags.socket).to_owned();
    if let Some(dir) = Path::new(&path).parent() {
        std::fs::create_dir_all(dir).map_err(io_err(format!("{}", dir.display())))?;
    }
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(&path).is_ok() {
                // Another shim of the group serves it already.
                return Ok(());
            }
            let _ = std::fs::remove_file(&path);
            UnixListener::bind(&path).map_err(io_err(format!("listening on {path}")))?
        }
        Err(e) => return Err(io_err(format!("listening on {path}"))(e)),
    };
    let reaper = Reaper::start().map_err(io_err("starting the reaper"))?;
    let cwd = std::env::current_dir().map_err(io_err("the working directory"))?;
    // The defaults; a task's runtime options change them for its container (and pod).
    let husk = Husk {
        bin: husk::find_binary(),
        root: default_root(&flags.namespace),
        log: cwd.join("husk.log"),
        config: None,
        reaper,
    };
    tracing::info!(
        "serving {} (defaults: {} --root {})",
        flags.socket,
        husk.bin.display(),
        husk.root.display()
    );
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .map_err(|_| ShimError::Args("TTRPC_ADDRESS is not set".into()))?;
    let publisher = publisher::Publisher::new(&ttrpc_address)?;
    let exit = Arc::new(ExitSignal::default());
    let svc = service::Service::new(husk, flags.namespace.clone(), publisher, Arc::clone(&exit));
    let mut server = Server::new()
        .add_listener(listener.into_raw_fd())?
        .register_service(task_methods(Arc::new(svc)))
        .set_thread_count_min(2)
        .set_thread_count_default(4)
        .set_thread_count_max(256);
    server.start()?;
    // The `start` process reads our stdout until it closes: we listen now.
    // SAFETY: dup2 of the process's own stderr over its stdout.
    unsafe { libc::dup2(2, 1) };
    exit.wait();
    tracing::info!("shutting down");
    server.shutdown();
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// `delete`: containerd cleans up after a shim that died.
fn delete(flags: &Flags) -> Result<(), ShimError> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(io_err("the bundle (working directory)"))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let rec: Option<Record> = std::fs::read(bundle.join(RECORD))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let (root, bin, config) = match rec {
        Some(r) => (r.root, r.binary, r.config),
        None => (default_root(&flags.namespace), husk::find_binary(), None),
    };
    let reaper = Reaper::start().map_err(io_err("starting the reaper"))?;
    let husk = Husk {
        bin,
        root,
        log: bundle.join("husk.log"),
        config,
        reaper,
    };
    if let Err(e) = husk.output(&["delete", "--force", flags.id.as_str()], None) {
        eprintln!("{RUNTIME_ID}: {e}");
    }
    service::unmount_rootfs(&bundle);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let resp = DeleteResponse {
        pid: 0,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(
            containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp {
                seconds: now.as_secs() as i64,
                nanos: now.subsec_nanos() as i32,
                ..Default::default()
            },
        )
        .into(),
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    resp.write_to_writer(&mut out)
        .map_err(|e| ShimError::Args(format!("writing the delete response: {e}")))?;
    out.flush().map_err(io_err("writing the delete response"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_is_the_pod_sandbox_else_the_container() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(grouping(t.path(), "c1"), "c1");
        std::fs::write(
            t.path().join("config.json"),
            r#"{"annotations": {"io.kubernetes.cri.sandbox-id": "pod1",
                "io.kubernetes.cri.container-type": "container"}}"#,
        )
        .unwrap();
        assert_eq!(grouping(t.path(), "c1"), "pod1");
    }

    struct Nop;
    impl containerd_shim::Task for Nop {}

    #[test]
    fn the_task_service_answers_to_v2_and_v3_names() {
        let m = task_methods(Arc::new(Nop));
        for verb in ["Create", "Start", "Delete", "Wait", "Stats", "Shutdown"] {
            assert!(
                m.contains_key(&format!("/containerd.task.v2.Task/{verb}")),
                "{verb}"
            );
            assert!(
                m.contains_key(&format!("/containerd.task.v3.Task/{verb}")),
                "{verb}"
            );
        }
    }
}
