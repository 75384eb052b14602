//! The sandbox's virtiofsd: the vhost-user backend that serves the share (`share`) to the
//! guest's virtio-fs device. It runs outside the VMM's jail, so host file access stays out of
//! the VMM process, and sandboxes itself: `--sandbox namespace` (its own mount, PID and
//! network namespaces, the share as its root), `--seccomp kill`, its capabilities dropped.
//!
//! The supervisor binds the listening socket itself (`<state>/vfs.sock`, 0600, any path
//! length) and hands it over with `--fd`: no pid file beside it, nothing to wait for (the
//! VMM's connect is queued until virtiofsd accepts). The VMM connects when it builds the VM.
//! virtiofsd gets `PR_SET_PDEATHSIG` SIGKILL, and its namespace child gets SIGTERM when it
//! dies (virtiofsd's own parent-death signal): neither outlives a `kill -9` of the
//! supervisor. It also exits by itself when the VMM disconnects.
//!
//! Cache mode `auto`: the guest caches data and attributes and revalidates them after 1 s
//! and on open (close-to-open consistency), so a file changed on the host (`podman cp` into a
//! running container, a volume two sandboxes share) is seen at the next open. `always` would
//! keep stale entries for a day; `never` gives up the guest's page cache and with it shared
//! mmap of the container's files.
//!
//! Owns: finding the binary, starting and stopping it. Does not set up the share.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The listening socket, relative to the container's state directory (no longer than
/// `control.sock`, the longest name `sockpath` makes room for).
pub const SOCKET: &str = "vfs.sock";

/// Where virtiofsd is looked for after the configuration and `HUSK_VIRTIOFSD`: distribution
/// packages, then `/usr/local/bin`, then `PATH`, then `cargo install`'s directory. Only the
/// Rust virtiofsd (1.x) is taken: QEMU's older C one (Debian 12's qemu-system-common ships it
/// as /usr/lib/qemu/virtiofsd) has other options (no `--fd`, `--sandbox`, `--announce-submounts`).
const PACKAGED: [&str; 3] = [
    "/usr/libexec/virtiofsd",
    "/usr/lib/qemu/virtiofsd",
    "/usr/local/bin/virtiofsd",
];
const CARGO_INSTALLED: &str = "/root/.cargo/bin/virtiofsd";

/// Errors finding or starting virtiofsd.
#[derive(Debug, thiserror::Error)]
pub enum VirtiofsdError {
    /// Not installed.
    #[error(
        "virtiofsd not found (looked in {looked}); install it (`cargo install virtiofsd`, which \
         needs libseccomp-dev and libcap-ng-dev, or the distribution's virtiofsd package) or \
         name it with virtiofsd in /etc/husk/config.toml or HUSK_VIRTIOFSD"
    )]
    NotFound {
        /// The places searched.
        looked: String,
    },
    /// The configured binary is not an executable file.
    #[error(
        "virtiofsd {0} (from /etc/husk/config.toml or HUSK_VIRTIOFSD) is not an executable file"
    )]
    NotExecutable(PathBuf),
    /// The binary is not the Rust virtiofsd.
    #[error(
        "{path} is not the Rust virtiofsd (its --version says {version:?}); QEMU's C virtiofsd \
         lacks the options husk uses: install the Rust one (`cargo install virtiofsd`, or the \
         distribution's virtiofsd package) or name it with virtiofsd in /etc/husk/config.toml \
         or HUSK_VIRTIOFSD"
    )]
    Unsupported {
        /// The binary.
        path: PathBuf,
        /// The first line of its `--version`.
        version: String,
    },
    /// Binding the socket or spawning the process.
    #[error("starting virtiofsd: {what}: {source}")]
    Start {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

fn executable(p: &Path) -> bool {
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first line of `bin --version`, if it is the Rust virtiofsd's (`virtiofsd 1.14.0`; the
/// C one says `virtiofsd version 7.2.22 ...`).
fn check_version(bin: &Path) -> Result<(), VirtiofsdError> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|source| VirtiofsdError::Start {
            what: format!("{} --version", bin.display()),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("").trim();
    let rust = first
        .strip_prefix("virtiofsd ")
        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()));
    if rust {
        Ok(())
    } else {
        Err(VirtiofsdError::Unsupported {
            path: bin.to_path_buf(),
            version: first.to_string(),
        })
    }
}

/// The virtiofsd binary: `configured` (the config key or `HUSK_VIRTIOFSD`) if given, else the
/// first Rust virtiofsd of the search list.
pub fn find(configured: Option<&Path>) -> Result<PathBuf, VirtiofsdError> {
    if let Some(p) = configured {
        if !executable(p) {
            return Err(VirtiofsdError::NotExecutable(p.to_path_buf()));
        }
        check_version(p)?;
        return Ok(p.to_path_buf());
    }
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("virtiofsd"))
                .collect()
        })
        .unwrap_or_default();
    let candidates: Vec<PathBuf> = PACKAGED
        .iter()
        .map(PathBuf::from)
        .chain(path_dirs)
        .chain([PathBuf::from(CARGO_INSTALLED)])
        .collect();
    let mut unsupported = None;
    for p in candidates.iter().filter(|p| executable(p)) {
        match check_version(p) {
            Ok(()) => return Ok(p.clone()),
            Err(e) => {
                tracing::debug!("{e}");
                unsupported.get_or_insert(e);
            }
        }
    }
    Err(unsupported.unwrap_or_else(|| VirtiofsdError::NotFound {
        looked: [PACKAGED.join(", ").as_str(), "PATH", CARGO_INSTALLED].join(", "),
    }))
}

/// A running virtiofsd.
#[derive(Debug)]
pub struct Virtiofsd {
    child: Option<Child>,
}

impl Virtiofsd {
    /// Starts `bin` serving `shared_dir` on `<state_dir>/`[`SOCKET`], its stderr appended to
    /// `log`.
    pub fn spawn(
        bin: &Path,
        shared_dir: &Path,
        state_dir: &Path,
        log: File,
    ) -> Result<Virtiofsd, VirtiofsdError> {
        let err = |what: String| move |source| VirtiofsdError::Start { what, source };
        let sock = state_dir.join(SOCKET);
        let _ = std::fs::remove_file(&sock);
        let listener = crate::sockpath::bind(&sock).map_err(err(sock.display().to_string()))?;
        let fd = listener.as_raw_fd();
        // Raising the limit needs CAP_SYS_RESOURCE, which husk's root may lack: virtiofsd
        // gets the hard limit it can set itself (its default asks for up to a million).
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_err(|e| err("getrlimit(RLIMIT_NOFILE)".into())(e.into()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--fd")
            .arg(fd.to_string())
            .arg("--shared-dir")
            .arg(shared_dir)
            .args([
                "--sandbox",
                "namespace",
                "--seccomp",
                "kill",
                "--announce-submounts",
                "--cache",
                "auto",
                "--rlimit-nofile",
            ])
            .arg(hard.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl and fcntl are async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                // virtiofsd goes with the supervisor, whatever kills it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The listening socket is inherited (only by this child).
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(err(bin.display().to_string()))?;
        drop(listener);
        tracing::info!(pid = child.id(), bin = %bin.display(), "virtiofsd started");
        Ok(Virtiofsd { child: Some(child) })
    }

    /// How virtiofsd ended, if it has (to explain a VMM that could not connect).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `grace` for virtiofsd to exit (it does when the VMM disconnects), then
    /// SIGTERM (its namespace child follows), and SIGKILL 2 s later; reaps it.
    pub fn stop(mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let exited = |child: &mut Child, limit: Duration| {
            let deadline = Instant::now() + limit;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return Some(status),
                    Err(_) => return None,
                    Ok(None) if Instant::now() >= deadline => return None,
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        };
        let mut status = exited(&mut child, grace);
        if status.is_none() {
            tracing::debug!(pid = child.id(), "virtiofsd still running; SIGTERM");
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            status = exited(&mut child, Duration::from_secs(2));
        }
        if status.is_none() {
            tracing::warn!(pid = child.id(), "virtiofsd ignored SIGTERM; killing it");
            let _ = child.kill();
            status = child.wait().ok();
        }
        tracing::info!("virtiofsd ended: {status:?}");
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_binary_must_be_the_rust_virtiofsd() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("virtiofsd");
        std::fs::write(&p, "#!/bin/sh\necho virtiofsd 1.14.0\n").unwrap();
        let e = find(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("is not an executable file"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find(Some(&p)).unwrap(), p);
        let c = t.path().join("qemu-virtiofsd");
        std::fs::write(&c, "#!/bin/sh\necho virtiofsd version 7.2.22 '(Debian)'\n").unwrap();
        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = find(Some(&c)).unwrap_err().to_string();
        assert!(
            e.contains("not the Rust virtiofsd") && e.contains("7.2.22"),
            "{e}"
        );
        let e = find(Some(&t.path().join("missing")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn the_not_found_error_says_how_to_install_it() {
        let e = VirtiofsdError::NotFound { looked: "x".into() }.to_string();
        assert!(e.contains("cargo install virtiofsd"), "{e}");
        assert!(e.contains("HUSK_VIRTIOFSD"), "{e}");
    }
}
