//! OCI hooks that run in the container's namespaces, i.e. in the guest: `createContainer` and
//! `startContainer`. The runtime-namespace hooks (prestart, createRuntime, poststart,
//! poststop) run on the host (the runtime's `hooks.rs`).
//!
//! Both kinds are run by the container's init stage (`init`), so they are in every namespace
//! and the cgroup of the container:
//!
//! - `createContainer`: once the mounts and devices are in place, before pivot_root, as the
//!   stage's (root) credentials. The hook is chrooted into the container's rootfs, so its
//!   `path` (and a script's interpreter) resolve there: the spec resolves it in the runtime
//!   namespace, but the host's binaries are not in the guest and could not run there anyway.
//! - `startContainer`: after `start`, after pivot_root and after the process' user,
//!   capabilities and cwd were applied, right before the exec (runc's order).
//!
//! Each gets the container state JSON on stdin, `args` (`args[0]` is argv0) and exactly `env`,
//! is its own process group, and is killed with its group after `timeout` seconds. Its
//! stdout and stderr are kept (in a memfd) and quoted when it fails. The first failure stops
//! the operation; the error names the hook.
//!
//! Owns: what the stage needs to run the hooks (`ContainerHooks`, sent in the stage config)
//! and running one kind. Does not decide when.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};
use serde::{Deserialize, Serialize};

/// The spec version in the state hooks get (what `husk state` reports).
pub const OCI_VERSION: &str = "1.0.2-dev";

/// Most bytes of a failed hook's output quoted in its error.
const OUTPUT_QUOTED: usize = 4096;

/// Errors running a hook; the message names it as `hooks.<kind>[<index>] (<path>)`.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The hook could not be started (missing path, not executable, bad chroot).
    #[error("hooks.{kind}[{index}] ({path}): cannot run it: {reason}")]
    Spawn {
        kind: Kind,
        index: usize,
        path: PathBuf,
        reason: String,
    },
    /// The hook exited non-zero, was killed, or ran past its timeout.
    #[error("hooks.{kind}[{index}] ({path}): {why}{output}")]
    Failed {
        kind: Kind,
        index: usize,
        path: PathBuf,
        /// Exit status or timeout.
        why: String,
        /// `: ` and its output, when it wrote any.
        output: String,
    },
}

/// The hooks that run in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// In the init stage, after the mounts, before pivot_root; state `creating`.
    CreateContainer,
    /// In the init stage, after start, before the exec; state `created`.
    StartContainer,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
        })
    }
}

impl Kind {
    /// The state's `status` while hooks of this kind run (runc's).
    fn status(self) -> &'static str {
        match self {
            Kind::CreateContainer => "creating",
            Kind::StartContainer => "created",
        }
    }
}

/// The state the spec hands every hook on stdin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    /// Set per kind when the hooks run.
    pub status: String,
    /// The container init's pid in the guest (the agent's pid namespace); the host has no
    /// process for it (`husk state` reports the supervisor's).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pid: i32,
    /// The bundle directory on the host, as the runtime passed it.
    pub bundle: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// What the init stage needs to run the guest hooks (part of the stage config).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerHooks {
    pub create_container: Vec<Hook>,
    pub start_container: Vec<Hook>,
    /// The state; `status` and `pid` are filled in when the hooks run.
    pub state: State,
}

impl ContainerHooks {
    /// The guest hooks of `spec`, None when it has none.
    pub fn from_spec(spec: &Spec, id: &str, bundle: &str) -> Option<ContainerHooks> {
        let hooks = spec.hooks().as_ref()?;
        let create_container = hooks.create_container().clone().unwrap_or_default();
        let start_container = hooks.start_container().clone().unwrap_or_default();
        if create_container.is_empty() && start_container.is_empty() {
            return None;
        }
        Some(ContainerHooks {
            create_container,
            start_container,
            state: State {
                oci_version: OCI_VERSION.into(),
                id: id.into(),
                status: String::new(),
                pid: 0,
                bundle: bundle.into(),
                annotations: spec.annotations().clone().unwrap_or_default(),
            },
        })
    }

    /// Runs every hook of `kind` in order (chrooted into `root` when given); stops at the
    /// first failure and returns it.
    pub fn run(&self, kind: Kind, root: Option<&Path>) -> Result<(), HookError> {
        let list = match kind {
            Kind::CreateContainer => &self.create_container,
            Kind::StartContainer => &self.start_container,
        };
        if list.is_empty() {
            return Ok(());
        }
        let state = State {
            status: kind.status().into(),
            ..self.state.clone()
        };
        let json = serde_json::to_vec(&state).unwrap_or_default();
        for (index, hook) in list.iter().enumerate() {
            run_one(kind, index, hook, &json, root)?;
        }
        Ok(())
    }
}

/// An anonymous in-memory file (close-on-exec; the child gets dups of it as stdio).
fn memfd(name: &str) -> std::io::Result<File> {
    let name = CString::new(name).expect("static name");
    // SAFETY: memfd_create reads the NUL-terminated name and returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn run_one(
    kind: Kind,
    index: usize,
    hook: &Hook,
    state: &[u8],
    root: Option<&Path>,
) -> Result<(), HookError> {
    let path = hook.path().clone();
    let spawn_err = |reason: String| HookError::Spawn {
        kind,
        index,
        path: path.clone(),
        reason,
    };
    let mut input = memfd("husk-hook-state").map_err(|e| spawn_err(e.to_string()))?;
    input
        .write_all(state)
        .and_then(|_| input.seek(SeekFrom::Start(0)).map(drop))
        .map_err(|e| spawn_err(e.to_string()))?;
    let mut output = memfd("husk-hook-output").map_err(|e| spawn_err(e.to_string()))?;
    let out2 = output.try_clone().map_err(|e| spawn_err(e.to_string()))?;
    let out3 = output.try_clone().map_err(|e| spawn_err(e.to_string()))?;

    let mut cmd = Command::new(&path);
    let args = hook.args().as_deref().unwrap_or(&[]);
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for e in hook.env().as_deref().unwrap_or(&[]) {
        match e.split_once('=') {
            Some((k, v)) => cmd.env(k, v),
            None => cmd.env(e, ""),
        };
    }
    cmd.stdin(Stdio::from(input))
        .stdout(Stdio::from(out2))
        .stderr(Stdio::from(out3))
        .process_group(0);
    if let Some(root) = root {
        let root = CString::new(root.as_os_str().as_bytes())
            .map_err(|_| spawn_err(format!("{} contains a NUL byte", root.display())))?;
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // async-signal-safe chroot and chdir calls on a string prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| spawn_err(e.to_string()))?;
    let (status, timed_out) = wait_with_timeout(&mut child, hook.timeout(), |c| {
        // The hook leads its own group: whatever it started goes with it.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let why = match status {
        Ok(s) if s.success() && !timed_out => return Ok(()),
        _ if timed_out => format!(
            "timed out after {} s (killed)",
            hook.timeout().unwrap_or_default()
        ),
        Ok(s) => describe(s),
        Err(e) => format!("waiting for it: {e}"),
    };
    let mut text = Vec::new();
    let _ = output.seek(SeekFrom::Start(0)).and_then(|_| {
        Read::by_ref(&mut output)
            .take(OUTPUT_QUOTED as u64)
            .read_to_end(&mut text)
    });
    Err(HookError::Failed {
        kind,
        index,
        path,
        why,
        output: quote(&text),
    })
}

/// `: <output>` on one line, or nothing when the hook wrote nothing.
fn quote(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.is_empty() {
        return String::new();
    }
    let mut s = s.replace('\n', " ");
    if bytes.len() >= OUTPUT_QUOTED {
        s.push_str("...");
    }
    format!(": {s}")
}

fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        _ => "failed".into(),
    }
}

/// Waits for a hook's process; past `timeout` seconds (a hook's `timeout`, none or 0: no
/// limit) calls `kill` on it and reaps it. Returns the wait's result and whether it timed out.
/// The host's hooks (runtime/src/hooks.rs) wait the same way.
pub fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Option<i64>,
    kill: impl FnOnce(&mut std::process::Child),
) -> (std::io::Result<std::process::ExitStatus>, bool) {
    let deadline = timeout
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t.unsigned_abs()));
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return (Ok(s), false),
            Ok(None) => {}
            Err(e) => return (Err(e), false),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            kill(child);
            return (child.wait(), true);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test (removed when dropped).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("husk-hooks-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn hooks(kind: Kind, list: serde_json::Value) -> ContainerHooks {
        let list: Vec<Hook> = serde_json::from_value(list).unwrap();
        let mut h = ContainerHooks {
            state: State {
                oci_version: OCI_VERSION.into(),
                id: "c1".into(),
                bundle: "/host/bundle".into(),
                pid: 42,
                annotations: HashMap::from([("a".to_string(), "b".to_string())]),
                ..State::default()
            },
            ..ContainerHooks::default()
        };
        match kind {
            Kind::CreateContainer => h.create_container = list,
            Kind::StartContainer => h.start_container = list,
        }
        h
    }

    #[test]
    fn from_spec_takes_the_guest_hooks_and_the_annotations() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "annotations": {"k": "v"},
            "hooks": {
                "prestart": [{"path": "/host/only"}],
                "startContainer": [{"path": "/bin/hook", "timeout": 3}]
            }
        }))
        .unwrap();
        let h = ContainerHooks::from_spec(&spec, "id1", "/b").unwrap();
        assert!(h.create_container.is_empty());
        assert_eq!(h.start_container.len(), 1);
        assert_eq!(h.state.id, "id1");
        assert_eq!(h.state.bundle, "/b");
        assert_eq!(h.state.annotations["k"], "v");
        let none: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "hooks": {"poststop": [{"path": "/x"}]}
        }))
        .unwrap();
        assert!(ContainerHooks::from_spec(&none, "id1", "/b").is_none());
    }

    #[test]
    fn a_hook_gets_the_state_on_stdin_its_args_and_exactly_its_env() {
        let t = TempDir::new("state");
        let o = t.path().join("out");
        let script = format!(
            "cat > {o}.json; tr '\\0' '\\n' < /proc/$$/cmdline > {o}.argv; env > {o}.env",
            o = o.display()
        );
        let h = hooks(
            Kind::StartContainer,
            serde_json::json!([{
                "path": "/bin/sh",
                "args": ["my-argv0", "-c", script, "first"],
                "env": ["FOO=bar=baz", "PATH=/usr/bin:/bin"],
            }]),
        );
        h.run(Kind::StartContainer, None).unwrap();
        let read = |ext: &str| std::fs::read_to_string(format!("{}.{ext}", o.display())).unwrap();
        let argv: Vec<String> = read("argv").lines().map(String::from).collect();
        assert_eq!(argv[0], "my-argv0", "args[0] is argv0");
        assert_eq!(argv[3], "first");
        let env = read("env");
        assert!(env.lines().any(|l| l == "FOO=bar=baz"), "{env}");
        for l in env.lines() {
            let key = l.split('=').next().unwrap_or("");
            assert!(
                ["FOO", "PATH", "PWD", "OLDPWD", "SHLVL", "_"].contains(&key),
                "only the hook's env (and what sh sets): {env}"
            );
        }
        let got: serde_json::Value = serde_json::from_str(&read("json")).unwrap();
        assert_eq!(got["ociVersion"], OCI_VERSION);
        assert_eq!(got["id"], "c1");
        assert_eq!(got["status"], "created");
        assert_eq!(got["pid"], 42);
        assert_eq!(got["bundle"], "/host/bundle");
        assert_eq!(got["annotations"]["a"], "b");

        let h = hooks(
            Kind::CreateContainer,
            serde_json::json!([{"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}.json", o.display())]}]),
        );
        h.run(Kind::CreateContainer, None).unwrap();
        let got: serde_json::Value = serde_json::from_str(&read("json")).unwrap();
        assert_eq!(got["status"], "creating");
    }

    #[test]
    fn a_failing_hook_names_itself_quotes_its_output_and_stops_the_rest() {
        let t = TempDir::new("fail");
        let never = t.path().join("never");
        let h = hooks(
            Kind::StartContainer,
            serde_json::json!([
                {"path": "/bin/true"},
                {"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; echo more; exit 3"]},
                {"path": "/bin/sh", "args": ["sh", "-c", format!("touch {}", never.display())]},
            ]),
        );
        let e = h.run(Kind::StartContainer, None).unwrap_err().to_string();
        assert_eq!(
            e,
            "hooks.startContainer[1] (/bin/sh): exit status 3: broken more"
        );
        assert!(!never.exists(), "later hooks do not run");
        let h = hooks(
            Kind::CreateContainer,
            serde_json::json!([{"path": "/nonexistent/hook"}]),
        );
        let e = h.run(Kind::CreateContainer, None).unwrap_err().to_string();
        assert!(
            e.starts_with("hooks.createContainer[0] (/nonexistent/hook): cannot run it:"),
            "{e}"
        );
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_with_its_children() {
        let t = TempDir::new("timeout");
        let pidfile = t.path().join("pid");
        let h = hooks(
            Kind::StartContainer,
            serde_json::json!([{
                "path": "/bin/sh",
                "args": ["sh", "-c", format!("sleep 30 & echo $! > {}; wait", pidfile.display())],
                "timeout": 1
            }]),
        );
        let t0 = Instant::now();
        let e = h.run(Kind::StartContainer, None).unwrap_err().to_string();
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert_eq!(
            e,
            "hooks.startContainer[0] (/bin/sh): timed out after 1 s (killed)"
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The sleep was in the hook's group; once killed it is a zombie or gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = st
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            if matches!(state, None | Some("Z") | Some("X")) {
                break;
            }
            assert!(Instant::now() < deadline, "the hook's child survived: {st}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn no_hooks_of_a_kind_is_a_no_op() {
        let h = hooks(Kind::StartContainer, serde_json::json!([]));
        h.run(Kind::StartContainer, None).unwrap();
        h.run(Kind::CreateContainer, Some(Path::new("/nonexistent")))
            .unwrap();
    }
}
