//! Container state on the host: `<root>/<id>/` holds `state.json` (what `husk state` reports),
//! `status` (written by the supervisor at each transition), `exit_status`, the control socket,
//! the rootfs image and the supervisor's logs. A `flock` on the directory serializes husk calls
//! that change a container. A pod container (`husk create --sandbox`) has a directory of its
//! own too, whose record names its sandbox; the sandbox's supervisor writes its `status`.
//!
//! Owns: the layout of the root directory and the status a caller sees. Does not talk to the
//! supervisor (see `control`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::perms;

/// OCI version husk reports (runc 1.1's).
pub const OCI_VERSION: &str = "1.0.2-dev";

/// Errors reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No such container.
    #[error("container does not exist")]
    NotFound,
    /// The id is taken.
    #[error("container with id exists: {0}")]
    Exists(String),
    /// The id is not a valid container id.
    #[error(
        "invalid container id {0:?}: use letters, digits, '-', '_', '.', not starting with '.'"
    )]
    BadId(String),
    /// I/O on the state directory.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// state.json is corrupt.
    #[error("{path}: {source}")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A container's status as runc names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `husk create` is still booting the sandbox.
    Creating,
    /// Created, init waiting for `start`.
    Created,
    /// Init running.
    Running,
    /// Frozen.
    Paused,
    /// Init exited (or the supervisor is gone).
    Stopped,
}

impl Status {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        Some(match s.trim() {
            "creating" => Status::Creating,
            "created" => Status::Created,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "stopped" => Status::Stopped,
            _ => return None,
        })
    }
}

/// What `create` records; the rest of the state comes from the supervisor and /proc.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Container id.
    pub id: String,
    /// Supervisor pid (0 until it is ready).
    pub pid: i32,
    /// The supervisor's start time (field 22 of /proc/pid/stat), against pid reuse.
    pub pid_start: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Host rootfs path.
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    /// The spec's annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// For a pod container (`create --sandbox`): the id of the sandbox container whose VM it
    /// runs in; its `pid` is then a host stand-in that exits with the container's status,
    /// and every verb goes to the sandbox's control socket naming this container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

impl Record {
    /// The control socket that serves this container and the container to name there: the
    /// sandbox's socket with this id for a pod container, its own socket and none otherwise.
    pub fn control(&self, root: &Root) -> (PathBuf, Option<String>) {
        match &self.sandbox {
            Some(s) => (
                root.container_dir(s).join("control.sock"),
                Some(self.id.clone()),
            ),
            None => (root.container_dir(&self.id).join("control.sock"), None),
        }
    }
}

/// runc's `state` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateJson {
    /// OCI version.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Supervisor pid, 0 when stopped.
    pub pid: i32,
    /// Status name.
    pub status: String,
    /// Bundle path.
    pub bundle: PathBuf,
    /// Rootfs path.
    pub rootfs: PathBuf,
    /// Creation time.
    pub created: String,
    /// Owner's user name.
    pub owner: String,
    /// Annotations (omitted when empty, like runc).
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
}

/// The state root (`--root`).
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

/// An exclusive `flock` on a container directory, released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Root {
    /// The root at `dir` (created on first use).
    pub fn new(dir: PathBuf) -> Root {
        Root { dir }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `<root>/<id>`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Checks an id like runc does (no path tricks).
    pub fn check_id(id: &str) -> Result<(), StateError> {
        let ok = !id.is_empty()
            && id.len() <= 1024
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
        if ok {
            Ok(())
        } else {
            Err(StateError::BadId(id.into()))
        }
    }

    /// Makes `<root>/<id>` (failing if it exists) and locks it.
    pub fn create_dir(&self, id: &str) -> Result<(PathBuf, Lock), StateError> {
        Root::check_id(id)?;
        perms::dir_builder(true)
            .create(&self.dir)
            .map_err(io(&self.dir))?;
        let dir = self.container_dir(id);
        match perms::dir_builder(false).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.into()))
            }
            Err(e) => return Err(io(&dir)(e)),
        }
        let lock = lock_dir(&dir)?;
        Ok((dir, lock))
    }

    /// Locks an existing container; fails if it does not exist (also after waiting for a
    /// `delete` that removed it).
    pub fn lock(&self, id: &str) -> Result<Lock, StateError> {
        Root::check_id(id)?;
        let dir = self.container_dir(id);
        let lock = match lock_dir(&dir) {
            Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound)
            }
            other => other?,
        };
        if !dir.join("state.json").exists() {
            return Err(StateError::NotFound);
        }
        Ok(lock)
    }

    /// Writes state.json atomically.
    pub fn write_record(&self, rec: &Record) -> Result<(), StateError> {
        let dir = self.container_dir(&rec.id);
        let text = serde_json::to_string_pretty(rec).expect("serializable");
        write_atomic(&dir.join("state.json"), text.as_bytes())
    }

    /// Reads state.json.
    pub fn read_record(&self, id: &str) -> Result<Record, StateError> {
        Root::check_id(id)?;
        let path = self.container_dir(id).join("state.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StateError::NotFound),
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_str(&text).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Ids of all containers, sorted.
    pub fn ids(&self) -> Result<Vec<String>, StateError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("state.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The status a caller sees: the supervisor's last word while it lives, else stopped.
    pub fn status(&self, rec: &Record) -> Status {
        if rec.pid == 0 {
            return Status::Creating;
        }
        if !process_alive(rec.pid, rec.pid_start) {
            return Status::Stopped;
        }
        std::fs::read_to_string(self.container_dir(&rec.id).join("status"))
            .ok()
            .and_then(|s| Status::parse(&s))
            .unwrap_or(Status::Running)
    }

    /// The full `state` answer.
    pub fn state(&self, id: &str) -> Result<StateJson, StateError> {
        let rec = self.read_record(id)?;
        let status = self.status(&rec);
        let owner = std::fs::metadata(self.container_dir(id))
            .map(|m| user_name(m.uid()))
            .unwrap_or_default();
        Ok(StateJson {
            oci_version: OCI_VERSION.into(),
            id: rec.id,
            pid: if status == Status::Stopped {
                0
            } else {
                rec.pid
            },
            status: status.as_str().into(),
            bundle: rec.bundle,
            rootfs: rec.rootfs,
            created: rec.created,
            owner,
            annotations: rec.annotations,
        })
    }

    /// Removes a container's state directory. The caller first undoes what lives outside it
    /// or must not be descended through (`cli::delete::remove_state`: the network wiring, the
    /// virtio-fs share's stubs).
    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let dir = self.container_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&dir)(e)),
        }
    }
}

fn lock_dir(dir: &Path) -> Result<Lock, StateError> {
    let file = File::open(dir).map_err(io(dir))?;
    nix::fcntl::flock(file.as_raw_fd(), nix::fcntl::FlockArg::LockExclusive)
        .map_err(|e| io(dir)(std::io::Error::from(e)))?;
    Ok(Lock { _file: file })
}

/// Writes a private (0600) file atomically: see [`write_atomic_mode`].
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    write_atomic_mode(path, data, perms::FILE_MODE)
}

/// Writes `path` with `mode` through a temporary file that nobody else can have planted
/// (`O_EXCL`, random name, in the same directory), synced before it is renamed over `path`;
/// the directory is synced after. A symlink at `path` is replaced, never followed.
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    let file = tmp.as_file_mut();
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(data))
        .and_then(|()| file.sync_all())
        .map_err(io(path))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    // The rename is durable once the directory is; a failure here loses nothing written.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Field 22 (starttime) of /proc/<pid>/stat.
pub fn process_start_time(pid: i32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The fields of a /proc/<pid>/stat line after the command name, which may contain spaces
/// and parentheses: they resume after the last ')'. Field 3 (state) is the first.
fn stat_fields(stat: &str) -> Option<impl Iterator<Item = &str>> {
    Some(stat.get(stat.rfind(')')? + 2..)?.split(' '))
}

/// Field 22 (starttime) of a /proc/<pid>/stat line.
fn parse_start_time(stat: &str) -> Option<u64> {
    stat_fields(stat)?.nth(19)?.parse().ok()
}

/// Whether `pid` is alive (not a zombie) and is the process that started at `start`: a pid
/// that was recycled for another process has another start time.
pub fn process_alive(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_is(&stat, start),
        Err(_) => false,
    }
}

/// Whether a /proc/<pid>/stat line is of a live process that started at `start`.
fn stat_is(stat: &str, start: u64) -> bool {
    let zombie = stat_fields(stat)
        .and_then(|mut f| f.next())
        .is_none_or(|s| s == "Z" || s == "X");
    !zombie && parse_start_time(stat) == Some(start)
}

/// A user name from /etc/passwd, or the uid as text.
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id: u32 = f.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for good in ["a", "abc-1.2_x", "0123456789abcdef"] {
            Root::check_id(good).unwrap();
        }
        for bad in ["", ".x", "a/b", "..", "a b"] {
            assert!(Root::check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn racing_creates_and_locks_are_serialized() {
        let tmp = std::env::temp_dir().join(format!("husk-race-test-{}", std::process::id()));
        let root = Root::new(tmp.clone());
        let wins: usize = (0..8)
            .map(|_| {
                let r = root.clone();
                std::thread::spawn(move || r.create_dir("same").is_ok())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(wins, 1);
        std::fs::write(root.container_dir("same").join("state.json"), "{}").unwrap();
        let held = root.lock("same").unwrap();
        let r = root.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let got = r.lock("same");
            tx.send(()).unwrap();
            got.is_ok()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "second lock must wait");
        root.remove("same").unwrap();
        drop(held);
        assert!(
            !waiter.join().unwrap(),
            "a lock taken after delete finds no container"
        );
        std::fs::remove_dir_all(tmp).unwrap();
    }

    /// Everything husk creates under its root is private even when its caller's umask is 000
    /// (and before `main`'s own umask of 077): the root and container directories 0700,
    /// state files, logs and sockets 0600.
    #[test]
    fn everything_under_the_root_is_private_under_umask_000() {
        use crate::perms::tests::{mode, with_open_umask};
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::new(tmp.path().join("root"));
        with_open_umask(|| {
            let (dir, _lock) = root.create_dir("c").unwrap();
            let me = std::process::id() as i32;
            root.write_record(&Record {
                id: "c".into(),
                pid: me,
                pid_start: 0,
                bundle: "/b".into(),
                rootfs: "/b/rootfs".into(),
                created: String::new(),
                annotations: HashMap::new(),
                sandbox: None,
            })
            .unwrap();
            write_atomic(&dir.join("status"), b"created").unwrap();
            write_atomic(&dir.join("status"), b"running").unwrap();
            crate::perms::append_file(&dir.join("supervisor.log")).unwrap();
            crate::perms::append_file(&dir.join("timings.json")).unwrap();
            crate::perms::append_file(&dir.join("console.log")).unwrap();
            let _l = crate::sockpath::bind(&dir.join("control.sock")).unwrap();
            assert_eq!(mode(root.path()), 0o700);
            assert_eq!(mode(&dir), 0o700);
            for f in [
                "state.json",
                "status",
                "supervisor.log",
                "timings.json",
                "console.log",
                "control.sock",
            ] {
                assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
            }
            // Nothing else was left behind (no temporary files).
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(names.len(), 6, "{names:?}");
        });
    }

    #[test]
    fn write_atomic_replaces_a_planted_symlink_without_following_it() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::write(&target, "untouched").unwrap();
        let path = tmp.path().join("status");
        // The old fixed temporary name, and the file itself.
        std::os::unix::fs::symlink(&target, tmp.path().join("status.tmp")).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_atomic(&path, b"running").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "running");
    }

    #[test]
    fn liveness_is_pid_and_start_time() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).unwrap();
        assert!(process_alive(me, start));
        // The same pid recycled for a process that started at another time.
        assert!(!process_alive(me, start + 1));
        assert!(!process_alive(0, start));
        assert!(!process_alive(-1, start));
        assert!(!process_alive(i32::MAX, start));
        // A zombie is not alive.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let cstart = process_start_time(pid).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid, cstart) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!process_alive(pid, cstart), "a zombie");
        assert!(
            process_start_time(pid).is_some(),
            "still a zombie, not reaped"
        );
        child.wait().unwrap();
        assert!(!process_alive(pid, cstart), "reaped");
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        // Field 22 is the 20th after the state; command names may hold ") " and spaces.
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20 21";
        for comm in ["sleep", "a b", "x) (y", ") S 1 2"] {
            let line = format!("77 ({comm}) {tail}");
            assert_eq!(parse_start_time(&line), Some(4242), "{comm}");
            assert!(stat_is(&line, 4242));
            assert!(!stat_is(&line, 4243));
        }
        let zombie = format!("77 (z) Z{}", &tail[1..]);
        assert!(!stat_is(&zombie, 4242));
        assert_eq!(parse_start_time("garbage"), None);
        assert!(!stat_is("77 (x)", 4242));
    }

    #[test]
    fn a_pod_containers_record_names_its_sandbox_and_its_socket() {
        let root = Root::new("/r".into());
        // A record written before pods existed reads as a sandbox's own container.
        let old = r#"{"id":"c","pid":1,"pid_start":2,"bundle":"/b","rootfs":"/b/rootfs",
            "created":"","annotations":{}}"#;
        let rec: Record = serde_json::from_str(old).unwrap();
        assert_eq!(rec.sandbox, None);
        assert!(!serde_json::to_string(&rec).unwrap().contains("sandbox"));
        assert_eq!(
            rec.control(&root),
            (PathBuf::from("/r/c/control.sock"), None)
        );
        let pod = Record {
            id: "c2".into(),
            sandbox: Some("c".into()),
            ..rec
        };
        let back: Record = serde_json::from_str(&serde_json::to_string(&pod).unwrap()).unwrap();
        assert_eq!(back.sandbox.as_deref(), Some("c"));
        assert_eq!(
            back.control(&root),
            (PathBuf::from("/r/c/control.sock"), Some("c2".into()))
        );
    }

    #[test]
    fn create_lock_read_remove() {
        let tmp = std::env::temp_dir().join(format!("husk-state-test-{}", std::process::id()));
        let root = Root::new(tmp.clone());
        let (dir, lock) = root.create_dir("c1").unwrap();
        assert!(matches!(root.create_dir("c1"), Err(StateError::Exists(_))));
        let me = std::process::id() as i32;
        let rec = Record {
            id: "c1".into(),
            pid: me,
            pid_start: process_start_time(me).unwrap(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2019-05-21T08:35:51Z".into(),
            annotations: HashMap::new(),
            sandbox: None,
        };
        root.write_record(&rec).unwrap();
        drop(lock);
        std::fs::write(dir.join("status"), "created").unwrap();
        let s = root.state("c1").unwrap();
        assert_eq!(s.status, "created");
        assert_eq!(s.pid, me);
        let dead = Record {
            pid_start: rec.pid_start + 1,
            ..rec.clone()
        };
        assert_eq!(root.status(&dead), Status::Stopped);
        assert_eq!(root.ids().unwrap(), vec!["c1".to_string()]);
        let _l = root.lock("c1").unwrap();
        root.remove("c1").unwrap();
        assert!(matches!(root.lock("c1"), Err(StateError::NotFound)));
        std::fs::remove_dir_all(tmp).unwrap();
    }
}
