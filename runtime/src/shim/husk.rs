//! Running the `husk` binary's verbs, as containerd-shim-runc-v2 runs runc's: each verb is a
//! child of the shim with a private `--root` and `--log` (JSON lines), waited for through the
//! shim's reaper. A failed verb's error is its last `error` log line (husk also prints it on
//! stderr, which may be the container's).

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::reaper::Reaper;

/// A verb that failed.
#[derive(Debug, thiserror::Error)]
pub enum HuskError {
    /// The binary could not be started.
    #[error("starting {bin}: {source}")]
    Spawn {
        /// The husk binary.
        bin: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The verb exited non-zero.
    #[error("husk {verb}: {msg}")]
    Failed {
        /// The verb.
        verb: String,
        /// Its error message (or exit status).
        msg: String,
    },
    /// Reading its output.
    #[error("husk {verb}: reading its output: {source}")]
    Output {
        /// The verb.
        verb: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Finds the `husk` binary: beside this executable, else on PATH.
pub fn find_binary() -> PathBuf {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let beside = dir.join("husk");
        if beside.is_file() {
            return beside;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let c = d.join("husk");
            if c.is_file() {
                return c;
            }
        }
    }
    PathBuf::from("husk")
}

/// The stdio a verb gets.
pub struct Stdio3 {
    /// Its stdin.
    pub stdin: Stdio,
    /// Its stdout.
    pub stdout: Stdio,
    /// Its stderr.
    pub stderr: Stdio,
}

impl Stdio3 {
    /// /dev/null for all three.
    pub fn null() -> Stdio3 {
        Stdio3 {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

/// One husk installation and state root.
#[derive(Clone)]
pub struct Husk {
    /// The binary.
    pub bin: PathBuf,
    /// `--root`.
    pub root: PathBuf,
    /// `--log` (JSON lines).
    pub log: PathBuf,
    /// husk's host configuration (`HUSK_CONFIG` of every verb; the runtime option
    /// `ConfigPath`), else the shim's environment's.
    pub config: Option<PathBuf>,
    /// Waits for the verbs.
    pub reaper: Arc<Reaper>,
}

impl Husk {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        if let Some(cfg) = &self.config {
            c.env("HUSK_CONFIG", cfg);
        }
        c
    }

    /// The last error husk logged since `from` (a byte offset in the log).
    fn last_error(&self, from: u64) -> Option<String> {
        let text = std::fs::read(&self.log).ok()?;
        let text = String::from_utf8_lossy(text.get(from as usize..)?).into_owned();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "error")
            .filter_map(|v| v["msg"].as_str().map(str::to_owned))
            .next_back()
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// Starts `husk ARGS` with the given stdio and tells the reaper a child is coming.
    fn spawn<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<std::process::Child, HuskError> {
        let child = self
            .command()
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| HuskError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        self.reaper.kick();
        Ok(child)
    }

    /// Waits for `child` (a verb started with the log at `from` bytes); a non-zero exit is an
    /// error with the last error husk logged since, else `fallback` (its exit code).
    fn finish(
        &self,
        child: &std::process::Child,
        verb: String,
        from: u64,
        fallback: impl FnOnce(i32) -> String,
    ) -> Result<(), HuskError> {
        let exit = self.reaper.wait(child.id() as i32);
        if exit.code != 0 {
            let msg = self.last_error(from).unwrap_or_else(|| fallback(exit.code));
            return Err(HuskError::Failed { verb, msg });
        }
        Ok(())
    }

    /// Runs `husk ARGS` with `stdio` and waits for it; Ok when it exits 0.
    pub fn run_with<S: AsRef<OsStr>>(&self, args: &[S], stdio: Stdio3) -> Result<(), HuskError> {
        let from = self.log_len();
        let child = self.spawn(args, stdio.stdin, stdio.stdout, stdio.stderr)?;
        self.finish(&child, verb_of(args), from, |code| {
            format!("exit status {code}")
        })
    }

    /// Runs `husk ARGS` (stdin from `input`, else /dev/null) and returns its stdout.
    pub fn output<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: Option<&[u8]>,
    ) -> Result<String, HuskError> {
        let from = self.log_len();
        let stdin = if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = self.spawn(args, stdin, Stdio::piped(), Stdio::piped())?;
        if let (Some(data), Some(mut w)) = (input, child.stdin.take()) {
            use std::io::Write;
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
        }
        let mut err_pipe = child.stderr.take();
        let errs = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = err_pipe.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let mut out = String::new();
        let read = child
            .stdout
            .take()
            .map(|mut o| o.read_to_string(&mut out))
            .transpose();
        let stderr = errs.join().unwrap_or_default();
        self.finish(&child, verb_of(args), from, |code| {
            let s = stderr.trim();
            if s.is_empty() {
                format!("exit status {code}")
            } else {
                s.to_owned()
            }
        })?;
        read.map_err(|source| HuskError::Output {
            verb: verb_of(args),
            source,
        })?;
        Ok(out)
    }

    /// Starts `husk ARGS` with stdout piped, not waiting (a long-running `events`); its pid
    /// and stdout.
    pub fn spawn_reader<S: AsRef<OsStr>>(
        &self,
        args: &[S],
    ) -> Result<(i32, std::process::ChildStdout), HuskError> {
        let mut child = self.spawn(args, Stdio::null(), Stdio::piped(), Stdio::null())?;
        let out = child.stdout.take().ok_or_else(|| HuskError::Output {
            verb: verb_of(args),
            source: std::io::ErrorKind::BrokenPipe.into(),
        })?;
        Ok((child.id() as i32, out))
    }
}

fn verb_of<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.first()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .unwrap_or_default()
}
