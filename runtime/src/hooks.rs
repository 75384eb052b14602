//! OCI lifecycle hooks that run on the host, in the runtime's namespaces: `prestart`
//! (deprecated, still used), `createRuntime`, `poststart` and `poststop`. Each gets the
//! container's state JSON on stdin, runs `path` with `args` (`args[0]` is argv0) and exactly
//! `env`, in the bundle directory, and is killed after `timeout` seconds.
//!
//! Who runs them: always a `husk` CLI process, never the supervisor (whose seccomp filter
//! forbids execve once the container is created): `create` runs prestart and createRuntime
//! once the guest created the container (a failure destroys it), `start` (and `run`) runs
//! poststart after the process started, `delete` (and `run`'s removal) runs poststop;
//! poststart and poststop failures are warnings. `create` saves the hooks in
//! `<root>/<id>/hooks.json`, so the later verbs need not read the bundle again.
//!
//! The container-namespace hooks (`createContainer`, `startContainer`) run in the guest: the
//! agent's init stage runs them in the container's namespaces (agent/src/hooks.rs).
//!
//! Owns: running one kind of hook and saving/loading the hooks. Does not decide when.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};
use serde::Serialize;

/// Where `create` saves the hooks, in the container's state directory.
pub const HOOKS_FILE: &str = "hooks.json";

/// Most bytes of a failed hook's output quoted in its error.
const OUTPUT_QUOTED: usize = 4096;

/// Errors running hooks.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The hook could not be started.
    #[error("hooks.{kind}[{index}] ({path}): cannot run it: {source}")]
    Spawn {
        /// `prestart`, `createRuntime`, ...
        kind: Kind,
        /// Its index in that list.
        index: usize,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The hook failed or ran past its timeout.
    #[error("hooks.{kind}[{index}] ({path}): {why}{output}")]
    Failed {
        /// `prestart`, `createRuntime`, ...
        kind: Kind,
        /// Its index in that list.
        index: usize,
        /// Its path.
        path: PathBuf,
        /// Exit status or timeout.
        why: String,
        /// `: ` and its stderr/stdout, when it wrote any.
        output: String,
    },
    /// hooks.json could not be written or read.
    #[error("{path}: {message}")]
    Saved {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The kinds of hooks that run on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Deprecated by the spec, still used (podman, nvidia): during create.
    Prestart,
    /// During create, after prestart.
    CreateRuntime,
    /// After the process started.
    Poststart,
    /// After the container was deleted.
    Poststop,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        })
    }
}

impl Kind {
    fn list(self, hooks: &Hooks) -> &[Hook] {
        let l = match self {
            Kind::Prestart => hooks.prestart(),
            Kind::CreateRuntime => hooks.create_runtime(),
            Kind::Poststart => hooks.poststart(),
            Kind::Poststop => hooks.poststop(),
        };
        l.as_deref().unwrap_or(&[])
    }
}

/// The state the spec hands every hook on stdin.
#[derive(Debug, Clone, Serialize)]
pub struct HookState {
    /// The spec version husk reports.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// `creating`, `created`, `running` or `stopped`.
    pub status: String,
    /// The container's host pid (the supervisor's), 0 when there is none.
    #[serde(skip_serializing_if = "is_zero")]
    pub pid: i32,
    /// Absolute bundle directory.
    pub bundle: PathBuf,
    /// The spec's annotations.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

impl HookState {
    /// The state of the container `rec` describes, with `status`.
    pub fn of(rec: &crate::state::Record, status: crate::state::Status) -> HookState {
        HookState {
            oci_version: crate::state::OCI_VERSION.into(),
            id: rec.id.clone(),
            status: status.as_str().into(),
            pid: rec.pid,
            bundle: rec.bundle.clone(),
            annotations: rec.annotations.clone(),
        }
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Runs every hook of `kind` in order; stops at the first failure and returns it.
pub fn run(kind: Kind, hooks: &Hooks, state: &HookState) -> Result<(), HookError> {
    let json = serde_json::to_vec(state).unwrap_or_default();
    for (index, hook) in kind.list(hooks).iter().enumerate() {
        run_one(kind, index, hook, &json, &state.bundle)?;
    }
    Ok(())
}

/// Runs every hook of `kind`; a failure is returned as a warning and the rest still run (the
/// spec's poststart/poststop rule).
pub fn run_all(kind: Kind, hooks: &Hooks, state: &HookState) -> Vec<HookError> {
    let json = serde_json::to_vec(state).unwrap_or_default();
    kind.list(hooks)
        .iter()
        .enumerate()
        .filter_map(|(index, hook)| run_one(kind, index, hook, &json, &state.bundle).err())
        .collect()
}

fn run_one(
    kind: Kind,
    index: usize,
    hook: &Hook,
    state: &[u8],
    bundle: &Path,
) -> Result<(), HookError> {
    let path = hook.path().clone();
    let args = hook.args().as_deref().unwrap_or(&[]);
    let mut cmd = Command::new(&path);
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
    if bundle.is_dir() {
        cmd.current_dir(bundle);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        kind,
        index,
        path: path.clone(),
        source,
    })?;
    // The hook may never read its stdin: feed it from a thread and ignore EPIPE.
    let feeder = child.stdin.take().map(|mut stdin| {
        let state = state.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&state);
        })
    });
    let reader = |r: Option<Box<dyn Read + Send>>| {
        r.map(|mut r| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.by_ref().take(1 << 20).read_to_end(&mut buf);
                // Drain the rest so the hook never blocks on a full pipe.
                let _ = std::io::copy(&mut r, &mut std::io::sink());
                buf
            })
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let (status, timed_out) =
        husk_agent::hooks::wait_with_timeout(&mut child, hook.timeout(), |c| {
            let _ = c.kill();
        });
    if let Some(f) = feeder {
        let _ = f.join();
    }
    // A hook that left a background child holding its pipes must not hold us: only wait for
    // the output while the pipes are still being read, at most a second past its exit.
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        let h = h?;
        let until = Instant::now() + Duration::from_secs(1);
        while !h.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        h.is_finished().then(|| h.join().ok()).flatten()
    };
    let (out, err) = (collect(out), collect(err));
    let why = match status {
        Ok(s) if s.success() && !timed_out => return Ok(()),
        _ if timed_out => format!(
            "timed out after {} s (killed)",
            hook.timeout().unwrap_or_default()
        ),
        Ok(s) => describe(s),
        Err(e) => format!("waiting for it: {e}"),
    };
    let mut text = String::new();
    for b in [err, out].into_iter().flatten() {
        let s = String::from_utf8_lossy(&b);
        let s = s.trim();
        if !s.is_empty() {
            if !text.is_empty() {
                text.push_str(" / ");
            }
            text.push_str(s);
        }
    }
    if text.len() > OUTPUT_QUOTED {
        let mut cut = OUTPUT_QUOTED;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    Err(HookError::Failed {
        kind,
        index,
        path,
        why,
        output: if text.is_empty() {
            String::new()
        } else {
            format!(": {}", text.replace('\n', " "))
        },
    })
}

fn describe(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        _ => "failed".into(),
    }
}

/// Whether any host-side hook is set (so `create` saves them).
pub fn any(hooks: &Hooks) -> bool {
    [
        Kind::Prestart,
        Kind::CreateRuntime,
        Kind::Poststart,
        Kind::Poststop,
    ]
    .into_iter()
    .any(|k| !k.list(hooks).is_empty())
}

/// Saves the hooks in the container's directory (private, atomically).
pub fn save(dir: &Path, hooks: &Hooks) -> Result<(), HookError> {
    let path = dir.join(HOOKS_FILE);
    let json = serde_json::to_vec(hooks).map_err(|e| HookError::Saved {
        path: path.clone(),
        message: e.to_string(),
    })?;
    crate::state::write_atomic(&path, &json).map_err(|e| HookError::Saved {
        path,
        message: e.to_string(),
    })
}

/// The hooks `create` saved (none when there is no file).
pub fn load(dir: &Path) -> Result<Option<Hooks>, HookError> {
    let path = dir.join(HOOKS_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| HookError::Saved {
                path,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HookError::Saved {
            path,
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(kind: &str, list: serde_json::Value) -> Hooks {
        serde_json::from_value(serde_json::json!({ kind: list })).unwrap()
    }

    fn state(bundle: &Path) -> HookState {
        HookState {
            oci_version: "1.0.2-dev".into(),
            id: "c1".into(),
            status: "creating".into(),
            pid: 4242,
            bundle: bundle.to_path_buf(),
            annotations: HashMap::from([("a".to_string(), "b".to_string())]),
        }
    }

    #[test]
    fn a_hook_gets_the_state_on_stdin_its_args_env_and_the_bundle_as_cwd() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let script = format!(
            "cat > {o}.json; tr '\\0' '\\n' < /proc/$$/cmdline > {o}.argv; env > {o}.env; pwd > {o}.cwd",
            o = out.display()
        );
        let h = hooks(
            "createRuntime",
            serde_json::json!([{
                "path": "/bin/sh",
                "args": ["my-argv0", "-c", script, "first"],
                "env": ["FOO=bar=baz", "PATH=/usr/bin:/bin"],
            }]),
        );
        run(Kind::CreateRuntime, &h, &state(t.path())).unwrap();
        let read =
            |ext: &str| std::fs::read_to_string(t.path().join(format!("out.{ext}"))).unwrap();
        let argv: Vec<String> = read("argv").lines().map(String::from).collect();
        assert_eq!(argv[0], "my-argv0", "args[0] is argv0");
        assert_eq!(argv[1], "-c");
        assert_eq!(argv[3], "first");
        let env = read("env");
        assert!(env.lines().any(|l| l == "FOO=bar=baz"), "{env}");
        assert!(env.lines().any(|l| l == "PATH=/usr/bin:/bin"), "{env}");
        for l in env.lines() {
            let key = l.split('=').next().unwrap_or("");
            assert!(
                ["FOO", "PATH", "PWD", "OLDPWD", "SHLVL", "_"].contains(&key),
                "only the hook's env (and what sh sets): {env}"
            );
        }
        let cwd = std::fs::canonicalize(t.path()).unwrap();
        assert_eq!(
            read("cwd").trim(),
            cwd.to_str().unwrap(),
            "the bundle is the cwd"
        );
        let got: serde_json::Value =
            serde_json::from_slice(&std::fs::read(t.path().join("out.json")).unwrap()).unwrap();
        assert_eq!(got["ociVersion"], "1.0.2-dev");
        assert_eq!(got["id"], "c1");
        assert_eq!(got["status"], "creating");
        assert_eq!(got["pid"], 4242);
        assert_eq!(got["bundle"], t.path().to_str().unwrap());
        assert_eq!(got["annotations"]["a"], "b");
    }

    #[test]
    fn a_failing_hook_names_itself_and_quotes_its_output() {
        let t = tempfile::tempdir().unwrap();
        let h = hooks(
            "prestart",
            serde_json::json!([
                {"path": "/bin/true"},
                {"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 3"]},
                {"path": "/bin/sh", "args": ["sh", "-c", "touch never"]},
            ]),
        );
        let e = run(Kind::Prestart, &h, &state(t.path()))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "hooks.prestart[1] (/bin/sh): exit status 3: broken");
        assert!(!t.path().join("never").exists(), "later hooks do not run");
        let h = hooks(
            "prestart",
            serde_json::json!([{"path": "/nonexistent/hook"}]),
        );
        let e = run(Kind::Prestart, &h, &state(t.path()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("hooks.prestart[0] (/nonexistent/hook): cannot run it:"),
            "{e}"
        );
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_and_fails() {
        let t = tempfile::tempdir().unwrap();
        let h = hooks(
            "createRuntime",
            serde_json::json!([{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]),
        );
        let t0 = Instant::now();
        let e = run(Kind::CreateRuntime, &h, &state(t.path()))
            .unwrap_err()
            .to_string();
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert_eq!(
            e,
            "hooks.createRuntime[0] (/bin/sleep): timed out after 1 s (killed)"
        );
    }

    #[test]
    fn poststop_failures_are_collected_and_the_rest_still_run() {
        let t = tempfile::tempdir().unwrap();
        let h = hooks(
            "poststop",
            serde_json::json!([
                {"path": "/bin/false"},
                {"path": "/bin/sh", "args": ["sh", "-c", "touch ran"]},
            ]),
        );
        let errs = run_all(Kind::Poststop, &h, &state(t.path()));
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "hooks.poststop[0] (/bin/false): exit status 1"
        );
        assert!(t.path().join("ran").exists());
    }

    #[test]
    fn hooks_round_trip_through_the_state_directory() {
        let t = tempfile::tempdir().unwrap();
        assert!(load(t.path()).unwrap().is_none());
        let h = hooks(
            "poststop",
            serde_json::json!([{"path": "/bin/true", "timeout": 5}]),
        );
        assert!(any(&h));
        assert!(!any(&Hooks::default()));
        save(t.path(), &h).unwrap();
        let back = load(t.path()).unwrap().unwrap();
        assert_eq!(back.poststop().as_ref().unwrap()[0].timeout(), Some(5));
    }
}
