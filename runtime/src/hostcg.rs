//! The sandbox's host cgroup: the supervisor and its VMM child run in the cgroup the spec names
//! in `linux.cgroupsPath`, limited to the VM's size, so the host's tools (`podman stats`,
//! `systemd-cgtop`) see what a container really costs and the VM cannot take more.
//!
//! - `linux.cgroupsPath` is a cgroupfs path (`/machine/abc`; a relative one is below husk's
//!   own cgroup) or systemd's `slice:prefix:name` (`machine.slice:libpod:abc` →
//!   `/machine.slice/libpod-abc.scope`; nested slices expand as systemd does, `a-b.slice` →
//!   `/a.slice/a-b.slice`), told apart by its shape. No path, no host cgroup.
//! - cgroup v2 (`cgroup2` on /sys/fs/cgroup): the leaf gets `memory.max`, `cpu.weight`,
//!   `cpu.max`; `+cpu +memory` are enabled in the ancestors' `cgroup.subtree_control`.
//!   v1 or hybrid: the leaf is made in the `cpu`, `cpuacct` and `memory` hierarchies
//!   (`memory.limit_in_bytes`, `cpu.shares`, `cpu.cfs_quota_us`/`cfs_period_us`), and in the
//!   unified hierarchy (`/sys/fs/cgroup/unified`) too, for placement only.
//! - The memory limit is the guest's memory plus `host_overhead_mib`; the CPU controls are
//!   the spec's `linux.resources.cpu` shares (weight on v2, converted as runc does), quota and
//!   period.
//!
//! `create` makes the cgroups before it spawns the supervisor, which joins them before it
//! runs any code (it writes `0` to each `cgroup.procs`, opened beforehand), so every process
//! of the sandbox (mkfs, the VMM) starts inside. The directories are listed in
//! `<root>/<id>/hostcg.json`; `delete` (or a failed `create`) removes them once the
//! supervisor is gone. Only the leaf is removed, as runc does.
//!
//! Owns: path mapping, finding the hierarchies, making/limiting/removing the leaf.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the directories are listed, in the container's state directory.
pub const HOSTCG_FILE: &str = "hostcg.json";

/// Errors placing the sandbox in its host cgroup.
#[derive(Debug, thiserror::Error)]
pub enum HostCgError {
    /// `linux.cgroupsPath` is malformed.
    #[error("config.json: linux.cgroupsPath: {0}")]
    Path(String),
    /// A cgroup file or directory could not be made, written or removed.
    #[error("host cgroup {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// This host has no cgroup hierarchy husk can use.
    #[error("linux.cgroupsPath: no cgroup hierarchy mounted (looked in /proc/self/mountinfo)")]
    NoHierarchy,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HostCgError + '_ {
    move |source| HostCgError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `linux.cgroupsPath` as a path below a hierarchy's root or below husk's own cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgPath {
    /// Below the hierarchy's root (`/machine/abc`, systemd's form).
    Absolute(PathBuf),
    /// Below the cgroup husk itself is in.
    Relative(PathBuf),
}

/// Maps `linux.cgroupsPath` (None when empty).
pub fn map_path(cgroups_path: &str) -> Result<Option<CgPath>, HostCgError> {
    let p = cgroups_path.trim();
    if p.is_empty() {
        return Ok(None);
    }
    let parts: Vec<&str> = p.split(':').collect();
    if !p.starts_with('/') && parts.len() == 3 {
        let (slice, prefix, name) = (parts[0], parts[1], parts[2]);
        if name.is_empty() || name.contains('/') {
            return Err(HostCgError::Path(format!(
                "{p:?}: the name after the second ':' must be a non-empty unit name"
            )));
        }
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        let mut path = expand_slice(slice)?;
        if name.ends_with(".slice") {
            // The container is a slice itself: systemd nests it by its name.
            path = expand_slice(name)?;
        } else if prefix.is_empty() {
            path.push(format!("{name}.scope"));
        } else {
            path.push(format!("{prefix}-{name}.scope"));
        }
        return Ok(Some(CgPath::Absolute(path)));
    }
    let path = PathBuf::from(p);
    let mut clean = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(HostCgError::Path(format!("{p:?} must not contain '..'")))
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(HostCgError::Path(format!(
            "{p:?} names the root cgroup; give a cgroup of the container's own"
        )));
    }
    Ok(Some(if p.starts_with('/') {
        CgPath::Absolute(clean)
    } else {
        CgPath::Relative(clean)
    }))
}

/// systemd's slice expansion: `a-b-c.slice` → `a.slice/a-b.slice/a-b-c.slice`; `-.slice` is
/// the root. Relative to the hierarchy's root.
fn expand_slice(slice: &str) -> Result<PathBuf, HostCgError> {
    let bad = || HostCgError::Path(format!("{slice:?} is not a valid systemd slice name"));
    let base = slice.strip_suffix(".slice").ok_or_else(bad)?;
    if base == "-" {
        return Ok(PathBuf::new());
    }
    if base.is_empty()
        || base.contains('/')
        || base.starts_with('-')
        || base.ends_with('-')
        || base.contains("--")
    {
        return Err(bad());
    }
    let mut path = PathBuf::new();
    let mut prefix = String::new();
    for part in base.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Ok(path)
}

/// What the sandbox's cgroup is limited to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes (guest memory plus the host overhead).
    pub memory: Option<u64>,
    /// `linux.resources.cpu.shares`.
    pub cpu_shares: Option<u64>,
    /// `linux.resources.cpu.quota` (µs per period; > 0).
    pub cpu_quota: Option<i64>,
    /// `linux.resources.cpu.period` (µs).
    pub cpu_period: Option<u64>,
}

impl Limits {
    /// The limits of a VM of `memory_mib` (plus `overhead_mib`) and the spec's CPU controls.
    pub fn from_spec(spec: &oci_spec::runtime::Spec, memory_mib: u64, overhead_mib: u64) -> Limits {
        let cpu = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.cpu().as_ref());
        Limits {
            memory: Some(
                memory_mib
                    .saturating_add(overhead_mib)
                    .saturating_mul(1 << 20),
            ),
            cpu_shares: cpu.and_then(|c| c.shares()).filter(|s| *s > 0),
            cpu_quota: cpu.and_then(|c| c.quota()).filter(|q| *q > 0),
            cpu_period: cpu.and_then(|c| c.period()).filter(|p| *p > 0),
        }
    }
}

/// runc's conversion of cgroup v1 shares (2..262144) to a v2 weight (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    /// Where it is mounted.
    mount: PathBuf,
    /// v1 controllers (empty for cgroup2).
    controllers: Vec<String>,
    /// cgroup2.
    v2: bool,
}

/// The hierarchies in `mountinfo` text (the first mount of each).
fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        let (Some(mount), Some(fstype)) = (fields.get(4), rfields.first()) else {
            continue;
        };
        let mount = PathBuf::from(unescape(mount));
        let h = match *fstype {
            "cgroup2" => Hierarchy {
                mount,
                controllers: Vec::new(),
                v2: true,
            },
            "cgroup" => Hierarchy {
                mount,
                controllers: rfields
                    .get(2)
                    .unwrap_or(&"")
                    .split(',')
                    .filter(|o| matches!(*o, "cpu" | "cpuacct" | "memory"))
                    .map(String::from)
                    .collect(),
                v2: false,
            },
            _ => continue,
        };
        if !h.v2 && h.controllers.is_empty() {
            continue;
        }
        let dup = out.iter().any(|o| {
            o.v2 == h.v2 && (o.mount == h.mount || (!h.v2 && o.controllers == h.controllers))
        });
        if !dup {
            out.push(h);
        }
    }
    out
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(n) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup husk is in, in hierarchy `h`, from `/proc/self/cgroup` text.
fn own_cgroup(proc_cgroup: &str, h: &Hierarchy) -> PathBuf {
    for line in proc_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or("/"));
        let matches = if h.v2 {
            ctrls.is_empty()
        } else {
            let mut a: Vec<&str> = ctrls.split(',').filter(|c| !c.is_empty()).collect();
            a.retain(|c| matches!(*c, "cpu" | "cpuacct" | "memory"));
            a.sort_unstable();
            let mut b: Vec<&str> = h.controllers.iter().map(String::as_str).collect();
            b.sort_unstable();
            !a.is_empty() && a == b
        };
        if matches {
            return PathBuf::from(path.trim_start_matches('/'));
        }
    }
    PathBuf::new()
}

/// The leaf directories for `path` on this host, each with whether limits go there.
fn leaves(path: &CgPath, hs: &[Hierarchy], proc_cgroup: &str) -> Vec<(Hierarchy, PathBuf)> {
    hs.iter()
        .map(|h| {
            let below = match path {
                CgPath::Absolute(p) => h.mount.join(p),
                CgPath::Relative(p) => h.mount.join(own_cgroup(proc_cgroup, h)).join(p),
            };
            (h.clone(), below)
        })
        .collect()
}

/// A made (or joined) host cgroup: its directories, and each `cgroup.procs` open for the
/// supervisor to join with.
#[derive(Debug)]
pub struct HostCgroup {
    /// The leaf directories, one per hierarchy.
    pub dirs: Vec<PathBuf>,
    procs: Vec<File>,
}

impl HostCgroup {
    /// The open `cgroup.procs` descriptors (for [`join_self`] in the child).
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

/// Moves the calling process into each cgroup by writing `0` to its open `cgroup.procs`.
/// Async-signal-safe (a `pre_exec` closure calls it between fork and exec).
pub fn join_self(fds: &[RawFd]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: writes one byte from a static buffer to a descriptor the caller owns.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes the leaf for `cgroups_path` in every usable hierarchy and applies `limits`. Returns
/// the cgroup and warnings (a controller this host lacks there). On error, what it made is
/// removed again.
pub fn create(
    cgroups_path: &str,
    limits: &Limits,
) -> Result<Option<(HostCgroup, Vec<String>)>, HostCgError> {
    let Some(path) = map_path(cgroups_path)? else {
        return Ok(None);
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io(Path::new("/proc/self/mountinfo")))?;
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let hs = hierarchies(&mountinfo);
    if hs.is_empty() {
        return Err(HostCgError::NoHierarchy);
    }
    let pure_v2 = hs.iter().all(|h| h.v2);
    let mut made = HostCgroup {
        dirs: Vec::new(),
        procs: Vec::new(),
    };
    let mut warnings = Vec::new();
    let result = (|| {
        for (h, dir) in leaves(&path, &hs, &proc_cgroup) {
            if h.v2 {
                make_v2(&h.mount, &dir, pure_v2, &mut warnings)?;
            } else {
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            }
            made.dirs.push(dir.clone());
            if h.v2 && pure_v2 {
                limit_v2(&dir, limits, &mut warnings)?;
            } else if !h.v2 {
                limit_v1(&dir, &h.controllers, limits)?;
            }
            let procs = dir.join("cgroup.procs");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(io(&procs))?;
            made.procs.push(f);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(Some((made, warnings))),
        Err(e) => {
            let _ = remove(&made.dirs, Duration::ZERO);
            Err(e)
        }
    }
}

/// Makes `dir` below the cgroup2 mount, enabling cpu and memory for its children along the
/// way (when `controllers`; a hybrid's unified hierarchy has none to enable).
fn make_v2(
    mount: &Path,
    dir: &Path,
    controllers: bool,
    warnings: &mut Vec<String>,
) -> Result<(), HostCgError> {
    let rel = dir.strip_prefix(mount).unwrap_or(dir);
    let mut at = mount.to_path_buf();
    for c in rel.components() {
        if controllers {
            enable_controllers(&at, warnings);
        }
        at.push(c);
        match std::fs::create_dir(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&at)(e)),
        }
    }
    Ok(())
}

/// `+cpu` and `+memory` in `dir`'s `cgroup.subtree_control`, where available.
fn enable_controllers(dir: &Path, warnings: &mut Vec<String>) {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in ["cpu", "memory"] {
        if enabled.split_whitespace().any(|e| e == c) {
            continue;
        }
        if !available.split_whitespace().any(|a| a == c) {
            continue;
        }
        let f = dir.join("cgroup.subtree_control");
        if let Err(e) = std::fs::write(&f, format!("+{c}")) {
            warnings.push(format!("host cgroup: enabling {c} in {}: {e}", f.display()));
        }
    }
}

/// Writes `value` to `dir/file`.
fn write(dir: &Path, file: &str, value: &str) -> Result<(), HostCgError> {
    let p = dir.join(file);
    std::fs::write(&p, value).map_err(|source| HostCgError::Io {
        path: PathBuf::from(format!("{} ({value})", p.display())),
        source,
    })
}

/// Like [`write`], but a file the hierarchy lacks (controller not enabled) is a warning.
fn write_or_warn(
    dir: &Path,
    file: &str,
    value: &str,
    warnings: &mut Vec<String>,
) -> Result<(), HostCgError> {
    if !dir.join(file).exists() {
        warnings.push(format!(
            "host cgroup {}: no {file} (controller not enabled there); not limited",
            dir.display()
        ));
        return Ok(());
    }
    write(dir, file, value)
}

fn limit_v2(dir: &Path, l: &Limits, warnings: &mut Vec<String>) -> Result<(), HostCgError> {
    if let Some(m) = l.memory {
        write_or_warn(dir, "memory.max", &m.to_string(), warnings)?;
    }
    if let Some(s) = l.cpu_shares {
        write_or_warn(
            dir,
            "cpu.weight",
            &shares_to_weight(s).to_string(),
            warnings,
        )?;
    }
    if l.cpu_quota.is_some() || l.cpu_period.is_some() {
        let quota = l.cpu_quota.map_or("max".to_string(), |q| q.to_string());
        let period = l.cpu_period.unwrap_or(100_000);
        write_or_warn(dir, "cpu.max", &format!("{quota} {period}"), warnings)?;
    }
    Ok(())
}

fn limit_v1(dir: &Path, controllers: &[String], l: &Limits) -> Result<(), HostCgError> {
    let has = |c: &str| controllers.iter().any(|x| x == c);
    if has("memory") {
        if let Some(m) = l.memory {
            write(dir, "memory.limit_in_bytes", &m.to_string())?;
        }
    }
    if has("cpu") {
        if let Some(s) = l.cpu_shares {
            write(dir, "cpu.shares", &s.to_string())?;
        }
        if let Some(p) = l.cpu_period {
            write(dir, "cpu.cfs_period_us", &p.to_string())?;
        }
        if let Some(q) = l.cpu_quota {
            write(dir, "cpu.cfs_quota_us", &q.to_string())?;
        }
    }
    Ok(())
}

/// `husk update`'s CPU controls for a made host cgroup (its directories as [`load`] lists
/// them): shares (weight on v2), quota (`-1` for none) and period, each only when given; a
/// quota or period alone keeps the other's current value, as runc's update does. A directory
/// without the cpu controller (the hybrid's unified leaf, the v1 memory leaf) is skipped. The
/// memory limit stays: the VM's memory is fixed when it is made, and the host limit is that
/// plus the host overhead. Returns how many directories were written.
pub fn update_cpu(
    dirs: &[PathBuf],
    shares: Option<u64>,
    quota: Option<i64>,
    period: Option<u64>,
) -> Result<usize, HostCgError> {
    let mut written = 0;
    for d in dirs {
        if d.join("cpu.max").exists() {
            if let Some(s) = shares.filter(|s| *s > 0) {
                write(d, "cpu.weight", &shares_to_weight(s).to_string())?;
            }
            if quota.is_some() || period.is_some() {
                let p = d.join("cpu.max");
                let now = std::fs::read_to_string(&p).map_err(io(&p))?;
                let mut it = now.split_whitespace();
                let (old_quota, old_period) = (it.next().unwrap_or("max"), it.next());
                let quota = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    Some(_) => "max".to_string(),
                    None => old_quota.to_string(),
                };
                let period = period
                    .filter(|p| *p > 0)
                    .map(|p| p.to_string())
                    .or(old_period.map(str::to_string))
                    .unwrap_or_else(|| "100000".into());
                write(d, "cpu.max", &format!("{quota} {period}"))?;
            }
        } else if d.join("cpu.cfs_quota_us").exists() {
            if let Some(s) = shares.filter(|s| *s > 0) {
                write(d, "cpu.shares", &s.to_string())?;
            }
            if let Some(p) = period.filter(|p| *p > 0) {
                write(d, "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = quota {
                write(d, "cpu.cfs_quota_us", &q.max(-1).to_string())?;
            }
        } else {
            continue;
        }
        written += 1;
    }
    Ok(written)
}

/// Removes the leaf directories, retrying while their processes are still exiting (the VMM
/// dies with the supervisor, a moment later) for up to `patience`. A cgroup still busy after
/// a moment is emptied with `cgroup.kill` (cgroup v2, Linux 5.14+), as runc's `delete --force`
/// kills what is left in a container's cgroup: only the sandbox's own host processes live
/// there (supervisor, VMM, virtiofsd, stand-ins, a dead shim's `husk events` watchers). The
/// first that will not go is the error; missing ones are fine.
pub fn remove(dirs: &[PathBuf], patience: Duration) -> Result<(), HostCgError> {
    let deadline = Instant::now() + patience;
    let mut first = None;
    for d in dirs {
        let kill_at = Instant::now() + KILL_AFTER;
        let mut killed = false;
        loop {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    if !killed && Instant::now() >= kill_at {
                        killed = true;
                        match std::fs::write(d.join("cgroup.kill"), "1") {
                            Ok(()) => tracing::info!("{}: busy, cgroup.kill written", d.display()),
                            Err(e) => tracing::debug!("{}: cgroup.kill: {e}", d.display()),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    first.get_or_insert(io(d)(e));
                    break;
                }
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// How long a busy cgroup may empty by itself before `remove` kills what is left in it.
const KILL_AFTER: Duration = Duration::from_millis(500);

/// Lists the directories in the container's state directory.
pub fn save(state_dir: &Path, cg: &HostCgroup) -> Result<(), HostCgError> {
    let path = state_dir.join(HOSTCG_FILE);
    let json = serde_json::to_vec(&cg.dirs).unwrap_or_default();
    crate::state::write_atomic(&path, &json).map_err(|e| HostCgError::Io {
        path,
        source: std::io::Error::other(e.to_string()),
    })
}

/// The directories `create` listed (none when there is no file).
pub fn load(state_dir: &Path) -> Vec<PathBuf> {
    std::fs::read(state_dir.join(HOSTCG_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_writes_cpu_controls_where_the_cpu_controller_is() {
        let t = tempfile::tempdir().unwrap();
        let (v2, v1, unified) = (t.path().join("v2"), t.path().join("v1"), t.path().join("u"));
        for d in [&v2, &v1, &unified] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(v2.join("cpu.max"), "max 100000\n").unwrap();
        std::fs::write(v2.join("cpu.weight"), "100\n").unwrap();
        for f in ["cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us"] {
            std::fs::write(v1.join(f), "0").unwrap();
        }
        let dirs = [v2.clone(), v1.clone(), unified.clone()];
        let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();

        // A quota alone keeps the period; shares become a weight on v2.
        assert_eq!(
            update_cpu(&dirs, Some(1024), Some(50_000), None).unwrap(),
            2
        );
        assert_eq!(read(&v2, "cpu.max"), "50000 100000");
        assert_eq!(read(&v2, "cpu.weight"), shares_to_weight(1024).to_string());
        assert_eq!(read(&v1, "cpu.shares"), "1024");
        assert_eq!(read(&v1, "cpu.cfs_quota_us"), "50000");
        assert_eq!(
            read(&v1, "cpu.cfs_period_us"),
            "0",
            "period not given: untouched"
        );
        assert_eq!(
            std::fs::read_dir(&unified).unwrap().count(),
            0,
            "no cpu files made"
        );

        // A period alone keeps the quota; -1 lifts the quota.
        update_cpu(&dirs, None, None, Some(20_000)).unwrap();
        assert_eq!(read(&v2, "cpu.max"), "50000 20000");
        update_cpu(&dirs, None, Some(-1), None).unwrap();
        assert_eq!(read(&v2, "cpu.max"), "max 20000");
        assert_eq!(read(&v1, "cpu.cfs_quota_us"), "-1");
        assert_eq!(read(&v1, "cpu.cfs_period_us"), "20000");
    }

    fn abs(p: &str) -> Option<CgPath> {
        Some(CgPath::Absolute(p.into()))
    }

    #[test]
    fn cgroupfs_paths_map_below_the_root_or_our_own_cgroup() {
        assert_eq!(map_path("/machine/abc").unwrap(), abs("machine/abc"));
        assert_eq!(map_path("//machine/./abc/").unwrap(), abs("machine/abc"));
        assert_eq!(
            map_path("libpod/abc").unwrap(),
            Some(CgPath::Relative("libpod/abc".into()))
        );
        assert_eq!(map_path("").unwrap(), None);
        for bad in ["/machine/../etc", "/", "a/../../b"] {
            let e = map_path(bad).unwrap_err().to_string();
            assert!(e.starts_with("config.json: linux.cgroupsPath: "), "{e}");
        }
    }

    #[test]
    fn systemd_paths_map_to_slices_and_scopes() {
        assert_eq!(
            map_path("machine.slice:libpod:abc").unwrap(),
            abs("machine.slice/libpod-abc.scope")
        );
        assert_eq!(
            map_path("system.slice:husk:c1").unwrap(),
            abs("system.slice/husk-c1.scope")
        );
        assert_eq!(
            map_path("user-1000.slice:podman:x").unwrap(),
            abs("user.slice/user-1000.slice/podman-x.scope")
        );
        assert_eq!(
            map_path("a-b-c.slice::x").unwrap(),
            abs("a.slice/a-b.slice/a-b-c.slice/x.scope")
        );
        assert_eq!(
            map_path(":husk:c1").unwrap(),
            abs("system.slice/husk-c1.scope")
        );
        assert_eq!(map_path("-.slice:p:n").unwrap(), abs("p-n.scope"));
        assert_eq!(
            map_path("machine.slice:p:pod-x.slice").unwrap(),
            abs("pod.slice/pod-x.slice")
        );
        for bad in [
            "machine:libpod:abc",
            "a--b.slice:p:n",
            "machine.slice:p:",
            "-a.slice:p:n",
        ] {
            let e = map_path(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("config.json: linux.cgroupsPath: "),
                "{bad}: {e}"
            );
        }
    }

    const HYBRID: &str = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";

    #[test]
    fn hybrid_hosts_use_cpu_cpuacct_memory_and_unified() {
        let hs = hierarchies(HYBRID);
        let mounts: Vec<_> = hs.iter().map(|h| h.mount.display().to_string()).collect();
        assert_eq!(
            mounts,
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/memory"
            ]
        );
        let own = "0::/user.slice\n4:cpu,cpuacct:/me\n6:memory:/mem/me\n";
        let l = leaves(&CgPath::Relative("c".into()), &hs, own);
        let dirs: Vec<_> = l.iter().map(|(_, d)| d.display().to_string()).collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/unified/user.slice/c",
                "/sys/fs/cgroup/cpu,cpuacct/me/c",
                "/sys/fs/cgroup/memory/mem/me/c"
            ]
        );
        let l = leaves(&CgPath::Absolute("machine/abc".into()), &hs, own);
        assert_eq!(l[2].1, PathBuf::from("/sys/fs/cgroup/memory/machine/abc"));
    }

    #[test]
    fn separate_cpu_and_cpuacct_hierarchies_are_both_used() {
        let text = "\
1 0 0:1 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
2 0 0:2 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
3 0 0:3 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
4 0 0:4 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        assert_eq!(hierarchies(text).len(), 4);
        let v2 = "1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let hs = hierarchies(v2);
        assert!(hs.len() == 1 && hs[0].v2);
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn limits_come_from_the_vm_size_and_the_spec() {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"resources": {"cpu": {"shares": 512, "quota": 50000, "period": 100000}}}
        }))
        .unwrap();
        let l = Limits::from_spec(&spec, 256, 128);
        assert_eq!(l.memory, Some(384 << 20));
        assert_eq!(l.cpu_shares, Some(512));
        assert_eq!((l.cpu_quota, l.cpu_period), (Some(50000), Some(100000)));
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10000);
    }

    #[test]
    fn limits_are_written_as_each_version_names_them() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for f in ["memory.max", "cpu.weight", "cpu.max"] {
            std::fs::write(d.join(f), "").unwrap();
        }
        let l = Limits {
            memory: Some(1 << 30),
            cpu_shares: Some(1024),
            cpu_quota: Some(150_000),
            cpu_period: None,
        };
        let mut w = Vec::new();
        limit_v2(d, &l, &mut w).unwrap();
        assert!(w.is_empty(), "{w:?}");
        let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read("memory.max"), "1073741824");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "150000 100000");
        limit_v1(d, &["memory".into(), "cpu".into()], &l).unwrap();
        assert_eq!(read("memory.limit_in_bytes"), "1073741824");
        assert_eq!(read("cpu.shares"), "1024");
        assert_eq!(read("cpu.cfs_quota_us"), "150000");
        // A controller that is not enabled is a warning, not a failure.
        let e = tempfile::tempdir().unwrap();
        let mut w = Vec::new();
        limit_v2(e.path(), &l, &mut w).unwrap();
        assert_eq!(w.len(), 3, "{w:?}");
    }

    #[test]
    fn remove_takes_the_leaves_and_tolerates_missing_ones() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        std::fs::create_dir(&a).unwrap();
        remove(&[a.clone(), t.path().join("gone")], Duration::ZERO).unwrap();
        assert!(!a.exists());
        let full = t.path().join("full");
        std::fs::create_dir_all(full.join("x")).unwrap();
        assert!(remove(std::slice::from_ref(&full), Duration::from_millis(50)).is_err());
    }
}
