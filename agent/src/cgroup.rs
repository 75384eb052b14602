//! cgroup v2 for containers: creating a container's cgroup under the agent's cgroup root
//! (the guest's /sys/fs/cgroup, or a configured directory in host mode), translating OCI
//! resources into v2 interface files and the device program (`devices`, loaded by `bpf`),
//! freezing, stats, listing and killing. Never touches cgroup v1 or anything outside its root.

pub mod bpf;
pub mod devices;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use self::bpf::{BpfError, CgroupDir};
use self::devices::DeviceError;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{field}: the {controller} controller is not available in cgroup2 at {root}")]
    Unavailable {
        field: &'static str,
        controller: &'static str,
        root: PathBuf,
    },
    #[error("linux.cgroupsPath: {0:?} may not contain '..'")]
    BadPath(PathBuf),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("cgroup {path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {0}: timed out waiting for the freezer")]
    FreezeTimeout(PathBuf),
    #[error("linux.resources.devices: {0}")]
    DeviceProgram(#[from] BpfError),
}

impl From<DeviceError> for CgroupError {
    fn from(e: DeviceError) -> Self {
        CgroupError::Invalid {
            field: "linux.resources.devices",
            reason: e.to_string(),
        }
    }
}

type Result<T> = std::result::Result<T, CgroupError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One interface-file write derived from the spec, with the spec field it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub file: String,
    pub value: String,
    pub field: &'static str,
    pub controller: &'static str,
}

fn w(file: &str, value: impl ToString, field: &'static str, controller: &'static str) -> Write {
    Write {
        file: file.into(),
        value: value.to_string(),
        field,
        controller,
    }
}

fn limit(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// cpu.weight from cgroup v1 shares (the conversion runc and crun use).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// Translates OCI resources into cgroup v2 writes. Pure, so it is unit-tested.
pub fn resource_writes(res: &LinuxResources) -> Result<Vec<Write>> {
    let mut out = Vec::new();
    if let Some(m) = res.memory() {
        if let Some(l) = m.limit() {
            out.push(w(
                "memory.max",
                limit(l),
                "linux.resources.memory.limit",
                "memory",
            ));
        }
        if let Some(r) = m.reservation() {
            out.push(w(
                "memory.low",
                limit(r),
                "linux.resources.memory.reservation",
                "memory",
            ));
        }
        if let Some(s) = m.swap() {
            // v1 "swap" is memory+swap; v2 limits swap alone.
            let v = match (s, m.limit()) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l >= 0 => {
                    if s < l {
                        return Err(CgroupError::Invalid {
                            field: "linux.resources.memory.swap",
                            reason: format!("{s} is below memory.limit {l}"),
                        });
                    }
                    (s - l).to_string()
                }
                (s, _) => s.to_string(),
            };
            out.push(w(
                "memory.swap.max",
                v,
                "linux.resources.memory.swap",
                "memory",
            ));
        }
    }
    if let Some(c) = res.cpu() {
        if let Some(s) = c.shares().filter(|s| *s > 0) {
            out.push(w(
                "cpu.weight",
                shares_to_weight(s),
                "linux.resources.cpu.shares",
                "cpu",
            ));
        }
        if c.quota().is_some() || c.period().is_some() {
            let quota = c
                .quota()
                .filter(|q| *q > 0)
                .map(|q| q.to_string())
                .unwrap_or("max".into());
            let period = c.period().unwrap_or(100_000);
            out.push(w(
                "cpu.max",
                format!("{quota} {period}"),
                "linux.resources.cpu.quota",
                "cpu",
            ));
        }
        if let Some(cpus) = c.cpus().as_ref().filter(|s| !s.is_empty()) {
            out.push(w("cpuset.cpus", cpus, "linux.resources.cpu.cpus", "cpuset"));
        }
        if let Some(mems) = c.mems().as_ref().filter(|s| !s.is_empty()) {
            out.push(w("cpuset.mems", mems, "linux.resources.cpu.mems", "cpuset"));
        }
    }
    if let Some(p) = res.pids() {
        out.push(w(
            "pids.max",
            limit(if p.limit() > 0 { p.limit() } else { -1 }),
            "linux.resources.pids.limit",
            "pids",
        ));
    }
    if let Some(b) = res.block_io() {
        if let Some(weight) = b.weight() {
            // v1 blkio weight 10..1000 -> v2 io.weight 1..10000.
            let v = 1 + (u64::from(weight).saturating_sub(10) * 9999) / 990;
            out.push(w(
                "io.weight",
                format!("default {v}"),
                "linux.resources.blockIO.weight",
                "io",
            ));
        }
    }
    for h in res.hugepage_limits().iter().flatten() {
        let file = format!("hugetlb.{}.max", h.page_size());
        out.push(w(
            &file,
            h.limit(),
            "linux.resources.hugepageLimits",
            "hugetlb",
        ));
    }
    if let Some(u) = res.unified() {
        let mut keys: Vec<_> = u.keys().collect();
        keys.sort();
        for k in keys {
            if k.contains('/') || k.starts_with("cgroup.") {
                return Err(CgroupError::Invalid {
                    field: "linux.resources.unified",
                    reason: format!("{k:?} is not a controller interface file"),
                });
            }
            let controller = match k.split('.').next().unwrap_or("") {
                "memory" => "memory",
                "cpu" => "cpu",
                "cpuset" => "cpuset",
                "pids" => "pids",
                "io" => "io",
                "hugetlb" => "hugetlb",
                _ => "",
            };
            out.push(w(k, &u[k], "linux.resources.unified", controller));
        }
    }
    Ok(out)
}

/// Where container cgroups live.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    root: PathBuf,
}

/// Finds the cgroup2 mount point in /proc/self/mountinfo.
pub fn find_cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(pre.split_whitespace().nth(4)?))
    })
}

impl CgroupRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupRoot { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Controllers the root can hand to its children.
    pub fn available(&self) -> HashSet<String> {
        fs::read_to_string(self.root.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// The cgroup directory for a spec's cgroupsPath (systemd "slice:prefix:name" accepted).
    pub fn resolve(&self, cgroups_path: Option<&Path>, container_id: &str) -> Result<PathBuf> {
        let rel = match cgroups_path
            .and_then(Path::to_str)
            .filter(|s| !s.is_empty())
        {
            None => PathBuf::from(format!("husk/{container_id}")),
            Some(s) => match s.split(':').collect::<Vec<_>>()[..] {
                [slice, prefix, name] => PathBuf::from(format!("{slice}/{prefix}-{name}.scope")),
                _ => PathBuf::from(s),
            },
        };
        let mut out = self.root.clone();
        for c in rel.components() {
            match c {
                Component::Normal(p) => out.push(p),
                Component::RootDir | Component::CurDir => {}
                _ => return Err(CgroupError::BadPath(rel)),
            }
        }
        if out == self.root {
            return Err(CgroupError::BadPath(rel));
        }
        Ok(out)
    }

    /// Creates the cgroup at `path` (under the root), delegating every available controller
    /// down to it.
    pub fn create(&self, path: &Path) -> Result<Cgroup> {
        let available = self.available();
        let wanted: Vec<&str> = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb"]
            .into_iter()
            .filter(|c| available.contains(*c))
            .collect();
        let rel = path
            .strip_prefix(&self.root)
            .map_err(|_| CgroupError::BadPath(path.into()))?;
        let mut dir = self.root.clone();
        for c in rel.components() {
            if !wanted.is_empty() {
                let ctl = dir.join("cgroup.subtree_control");
                let line: Vec<String> = wanted.iter().map(|c| format!("+{c}")).collect();
                fs::write(&ctl, line.join(" ")).map_err(io(&ctl))?;
            }
            dir.push(c);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&dir)(e)),
            }
        }
        let cg = Cgroup {
            path: dir,
            root: self.root.clone(),
            available,
            device_programs: Arc::default(),
        };
        // Deny by default (runc's default list only) until the spec's rules replace it.
        if let Err(e) = cg.set_devices(&[]) {
            let _ = cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: PathBuf,
    root: PathBuf,
    available: HashSet<String>,
    /// The device programs this agent attached to the cgroup (normally one; two for a moment
    /// while `set_devices` replaces it). Dropped with the cgroup.
    device_programs: Arc<Mutex<Vec<OwnedFd>>>,
}

impl Cgroup {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the resources' interface files and, when `res` has `devices`, replaces the
    /// device program (an absent list leaves the current one).
    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        // Refuse bad rules before anything changes.
        if let Some(list) = res.devices() {
            devices::effective_rules(list)?;
        }
        for wr in resource_writes(res)? {
            if !wr.controller.is_empty() && !self.available.contains(wr.controller) {
                return Err(CgroupError::Unavailable {
                    field: wr.field,
                    controller: wr.controller,
                    root: self.root.clone(),
                });
            }
            let file = self.path.join(&wr.file);
            write_existing(&file, &wr.value).map_err(|e| CgroupError::Invalid {
                field: wr.field,
                reason: format!("writing {:?} to {}: {e}", wr.value, file.display()),
            })?;
        }
        if let Some(list) = res.devices() {
            self.set_devices(list)?;
        }
        Ok(())
    }

    /// Makes the device program enforce `spec_rules` followed by runc's default allow list:
    /// loads the new program, attaches it next to the old one (BPF_F_ALLOW_MULTI: for that
    /// moment both must allow), then detaches the old one, as runc does. On failure the old
    /// program stays.
    pub fn set_devices(&self, spec_rules: &[LinuxDeviceCgroup]) -> Result<()> {
        let rules = devices::effective_rules(spec_rules)?;
        let prog = devices::program(&rules)?;
        let fd = bpf::load(&prog)?;
        let dir = CgroupDir::open(&self.path)?;
        let mut attached = self
            .device_programs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        dir.attach(&fd)?;
        for old in attached.drain(..) {
            if let Err(e) = dir.detach(&old) {
                // Still attached: it only ever denies more, so the container stays walled.
                tracing::warn!("replacing the device program: {e}");
            }
        }
        attached.push(fd);
        tracing::debug!(
            cgroup = %self.path.display(),
            rules = rules.len(),
            insns = prog.len(),
            "device program attached"
        );
        Ok(())
    }

    /// The ids of the device programs attached to this cgroup (for tests and diagnostics).
    pub fn device_program_ids(&self) -> Result<Vec<u32>> {
        Ok(CgroupDir::open(&self.path)?.attached()?)
    }

    pub fn add(&self, pid: i32) -> Result<()> {
        let f = self.path.join("cgroup.procs");
        fs::write(&f, pid.to_string()).map_err(io(&f))
    }

    pub fn procs(&self) -> Result<Vec<i32>> {
        let f = self.path.join("cgroup.procs");
        let text = fs::read_to_string(&f).map_err(io(&f))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Freezes or thaws and waits until the kernel reports the new state.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let f = self.path.join("cgroup.freeze");
        fs::write(&f, if frozen { "1" } else { "0" }).map_err(io(&f))?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        let events = self.path.join("cgroup.events");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = fs::read_to_string(&events).map_err(io(&events))?;
            if text.lines().any(|l| l == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::FreezeTimeout(self.path.clone()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Flat "key value" files (cpu.stat, memory.stat, memory.events).
    pub fn read_flat(&self, file: &str) -> HashMap<String, u64> {
        fs::read_to_string(self.path.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// A single-value file; "max" reads as u64::MAX, absent as None.
    pub fn read_value(&self, file: &str) -> Option<u64> {
        let s = fs::read_to_string(self.path.join(file)).ok()?;
        let s = s.trim();
        if s == "max" {
            Some(u64::MAX)
        } else {
            s.parse().ok()
        }
    }

    /// io.stat summed over devices: (rbytes, wbytes, rios, wios).
    pub fn io_totals(&self) -> (u64, u64, u64, u64) {
        let text = fs::read_to_string(self.path.join("io.stat")).unwrap_or_default();
        let mut t = (0, 0, 0, 0);
        for l in text.lines() {
            for kv in l.split_whitespace().skip(1) {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => t.0 += v,
                    "wbytes" => t.1 += v,
                    "rios" => t.2 += v,
                    "wios" => t.3 += v,
                    _ => {}
                }
            }
        }
        t
    }

    /// Removes the cgroup once its processes are gone (retries while the kernel still
    /// reports it busy).
    pub fn destroy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                    let _ = fs::write(self.path.join("cgroup.kill"), "1");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(io(&self.path)(e)),
            }
        }
        // The kernel detached the programs with the cgroup; close ours.
        self.device_programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }
}

/// Writes an interface file that must already exist. Never O_CREAT: cgroupfs answers an
/// attempt to create a file with EACCES, which hid the truth ("no such file": this kernel or
/// controller has no such interface file).
fn write_existing(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    #[test]
    fn translates_memory_cpu_pids() {
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .swap(128 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(20).build().unwrap())
            .build()
            .unwrap();
        let writes: Vec<(String, String)> = resource_writes(&res)
            .unwrap()
            .into_iter()
            .map(|w| (w.file, w.value))
            .collect();
        assert!(writes.contains(&("memory.max".into(), (64u64 << 20).to_string())));
        assert!(writes.contains(&("memory.swap.max".into(), (64u64 << 20).to_string())));
        assert!(writes.contains(&("cpu.weight".into(), "39".into())));
        assert!(writes.contains(&("cpu.max".into(), "50000 100000".into())));
        assert!(writes.contains(&("pids.max".into(), "20".into())));
    }

    #[test]
    fn swap_below_limit_names_the_field() {
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(100)
                    .swap(50)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let err = resource_writes(&res).unwrap_err().to_string();
        assert!(err.starts_with("linux.resources.memory.swap"), "{err}");
    }

    #[test]
    fn resolves_paths_under_root_only() {
        let root = CgroupRoot::new("/cg");
        assert_eq!(
            root.resolve(None, "c1").unwrap(),
            PathBuf::from("/cg/husk/c1")
        );
        assert_eq!(
            root.resolve(Some(Path::new("/a/b")), "c1").unwrap(),
            PathBuf::from("/cg/a/b")
        );
        assert_eq!(
            root.resolve(Some(Path::new("machine.slice:libpod:abc")), "c1")
                .unwrap(),
            PathBuf::from("/cg/machine.slice/libpod-abc.scope")
        );
        assert!(root.resolve(Some(Path::new("/a/../../etc")), "c1").is_err());
        assert!(root.resolve(Some(Path::new("/")), "c1").is_err());
    }

    /// Runs `script` with `$CG` set to the cgroup's procs file, in a shell that first moves
    /// itself into the cgroup; stdout and stderr together.
    fn in_cgroup(cg: &Cgroup, script: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > \"$CG\" || exit 99; {script}"))
            .env("CG", cg.path().join("cgroup.procs"))
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Loads, attaches, enforces and replaces a real device program on this host's cgroup2
    /// (the same code the guest runs). Skips, saying why, without root, cgroup2 or bpf(2).
    #[test]
    fn device_program_is_enforced_and_replaced_on_this_host() {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIPPED: needs root (bpf(2), cgroup2)");
            return;
        }
        let Some(cg2) = find_cgroup2_mount() else {
            println!("SKIPPED: no cgroup2 mount on this host");
            return;
        };
        let root = CgroupRoot::new(cg2.join(format!("husk-devtest-{}", std::process::id())));
        fs::create_dir_all(root.path()).unwrap();
        let cleanup = |root: &CgroupRoot| {
            let _ = fs::remove_dir(root.path().join("husk"));
            let _ = fs::remove_dir(root.path());
        };
        let path = root.resolve(None, "dev").unwrap();
        let cg = match root.create(&path) {
            Ok(cg) => cg,
            Err(CgroupError::DeviceProgram(e))
                if matches!(
                    &e,
                    bpf::BpfError::Load { source, .. } | bpf::BpfError::Cgroup { source, .. }
                    if matches!(source.raw_os_error(), Some(libc::EPERM | libc::ENOSYS))
                ) =>
            {
                cleanup(&root);
                println!("SKIPPED: this kernel refuses cgroup device programs: {e}");
                return;
            }
            Err(e) => {
                cleanup(&root);
                panic!("creating a cgroup with the default device program: {e}");
            }
        };
        let ids = cg.device_program_ids().unwrap();
        assert_eq!(ids.len(), 1, "one program attached at create: {ids:?}");

        // The default program: the standard nodes open; /dev/kmsg, a loop disk and a /dev/mem
        // node made inside the cgroup (mknod is allowed) do not.
        let nodes = std::env::temp_dir().join(format!("husk-devtest-{}", std::process::id()));
        fs::create_dir_all(&nodes).unwrap();
        let out = in_cgroup(
            &cg,
            &format!(
                "head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; \
                 mknod {n}/mem c 1 1 && echo mknod-ok; \
                 (exec 3<{n}/mem) && echo mem-opened; (exec 3</dev/kmsg) && echo kmsg-opened; \
                 (exec 3</dev/loop0) && echo loop-opened; true",
                n = nodes.display()
            ),
        );
        let _ = fs::remove_dir_all(&nodes);
        assert!(out.contains("4\n") && out.contains("null-ok"), "{out}");
        assert!(out.contains("mknod-ok"), "{out}");
        for dev in ["mem", "kmsg", "loop"] {
            assert!(
                !out.contains(&format!("{dev}-opened")),
                "{dev} opened: {out}"
            );
        }
        assert_eq!(out.matches("Operation not permitted").count(), 3, "{out}");

        // An update allowing /dev/kmsg (c 1:11 r) replaces the program.
        let res: LinuxResources = serde_json::from_str(
            r#"{"devices": [{"allow": false, "access": "rwm"},
                            {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"}]}"#,
        )
        .unwrap();
        cg.apply(&res).unwrap();
        let after = cg.device_program_ids().unwrap();
        assert_eq!(after.len(), 1, "the old program was detached: {after:?}");
        assert_ne!(after, ids, "a new program replaced the old one");
        let out = in_cgroup(
            &cg,
            "(exec 3</dev/kmsg) && echo kmsg-opened; (exec 3>/dev/kmsg) && echo kmsg-write; \
             (exec 3</dev/loop0) && echo loop-opened; true",
        );
        assert!(out.contains("kmsg-opened"), "{out}");
        assert!(!out.contains("kmsg-write"), "write was not granted: {out}");
        assert!(!out.contains("loop-opened"), "{out}");

        // Resources without devices leave the program alone; bad rules are refused naming
        // the field and change nothing.
        cg.apply(&LinuxResources::default()).unwrap();
        assert_eq!(cg.device_program_ids().unwrap(), after);
        let bad: LinuxResources =
            serde_json::from_str(r#"{"devices": [{"allow": true, "access": "rwx"}]}"#).unwrap();
        let err = cg.apply(&bad).unwrap_err();
        assert!(matches!(err, CgroupError::Invalid { .. }), "{err}");
        assert!(
            err.to_string().starts_with("linux.resources.devices: "),
            "{err}"
        );
        assert_eq!(cg.device_program_ids().unwrap(), after);

        cg.destroy().unwrap();
        cleanup(&root);
        assert!(!root.path().exists());
    }
}
