//! husk's host configuration: `/etc/husk/config.toml` (or `$HUSK_CONFIG`), then the
//! environment (`HUSK_KERNEL`, `HUSK_INITRD`, `HUSK_VIRTIOFSD`), then defaults found in the build caches; per
//! container, the annotations `io.husk.vcpus` and `io.husk.memory_mib`, within the host's
//! `max_vcpus` and `max_memory_mib`.
//!
//! The file is TOML (every key optional; unknown keys are errors that name them):
//!
//! ```toml
//! kernel = "/var/cache/husk/kernel/build-.../vmlinux"
//! initrd = "/usr/lib/husk/initramfs.cpio"   # or: initramfs = ...
//! virtiofsd = "/usr/libexec/virtiofsd"  # default: searched (supervisor::virtiofsd)
//! vcpus = 1
//! memory_mib = 256
//! max_vcpus = 8          # default: the host's CPUs
//! max_memory_mib = 16384
//! log_level = "info"
//! boot_timeout_s = 120
//! guest_overhead_mib = 128  # added to linux.resources.memory.limit for the guest's size
//! host_overhead_mib = 128   # added to the guest's memory for the host cgroup's limit
//! ```
//!
//! A container's VM is sized from its spec ([`HuskConfig::for_container`]): vCPUs from
//! `linux.resources.cpu.cpus` (the CPUs in the list) or `quota`/`period` (rounded up; the
//! smaller of the two when both are set), memory from `linux.resources.memory.limit` plus
//! `guest_overhead_mib`; never below `vcpus`/`memory_mib`, clamped to the host's maxima; the
//! `io.husk.*` annotations override that.
//!
//! A Kubernetes pod's VM (the sandbox container's spec) is sized for the whole pod when the
//! CRI annotations containerd 1.7+ puts on the sandbox spec are there (1.6 sets none):
//! `io.kubernetes.cri.sandbox-cpu-quota` / `-cpu-period` (the pod's containers' CPU limits
//! together) and `io.kubernetes.cri.sandbox-memory` (their memory limits, bytes), by the same
//! rules as `linux.resources` ([`HuskConfig::with_pod_annotations`]); the larger of the two
//! sizings wins, and `io.husk.*` still overrides.
//!
//! Owns: reading and checking the settings. Does not boot anything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or a key is unknown or of the wrong type.
    #[error("{path}: line {line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong (starting with the key, where there is one).
        message: String,
    },
    /// A value is out of range.
    #[error("{path}: {key}: {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A spec field used to size the VM is malformed.
    #[error("config.json: {field}: {message}")]
    Spec {
        /// The field (`linux.resources.cpu.cpus`).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An annotation value is malformed or beyond the host's limit.
    #[error("annotations.{key}: {message}")]
    Annotation {
        /// The annotation.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Everything the supervisor needs to know about the host's guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuskConfig {
    /// Guest kernel (uncompressed vmlinux).
    pub kernel: Option<PathBuf>,
    /// Agent initramfs.
    pub initrd: Option<PathBuf>,
    /// The virtio-fs backend (none: searched for when a sandbox starts).
    pub virtiofsd: Option<PathBuf>,
    /// vCPUs per sandbox.
    pub vcpus: u8,
    /// Guest memory per sandbox.
    pub memory_mib: u64,
    /// Most vCPUs a container may ask for (`io.husk.vcpus`).
    pub max_vcpus: u8,
    /// Most guest memory a container may ask for (`io.husk.memory_mib`).
    pub max_memory_mib: u64,
    /// Supervisor log filter.
    pub log_level: String,
    /// Seconds to wait for the agent after boot.
    pub boot_timeout_s: u64,
    /// MiB added to the spec's memory limit for the guest kernel and agent.
    pub guest_overhead_mib: u64,
    /// MiB added to the guest's memory for the host cgroup's limit (VMM, supervisor).
    pub host_overhead_mib: u64,
}

/// The pod's containers' CPU quota together (µs per period), on a CRI sandbox spec.
pub const CRI_SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// The period of [`CRI_SANDBOX_CPU_QUOTA`] (µs).
pub const CRI_SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
/// The pod's containers' memory limits together (bytes), on a CRI sandbox spec.
pub const CRI_SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";

/// Default `max_memory_mib`.
pub const DEFAULT_MAX_MEMORY_MIB: u64 = 16384;
/// Default `guest_overhead_mib` and `host_overhead_mib`.
pub const DEFAULT_OVERHEAD_MIB: u64 = 128;
/// The VMM's smallest guest.
const MIN_MEMORY_MIB: u64 = 64;

/// Default `max_vcpus`: the host's CPUs (32 when unknown), within the VMM's limit.
fn default_max_vcpus() -> u8 {
    let cpus = std::thread::available_parallelism().map_or(32, |n| n.get());
    u8::try_from(cpus)
        .unwrap_or(u8::MAX)
        .min(husk_vmm::layout::MAX_VCPUS)
}

impl Default for HuskConfig {
    fn default() -> Self {
        HuskConfig {
            kernel: None,
            initrd: None,
            virtiofsd: None,
            vcpus: 1,
            memory_mib: 256,
            max_vcpus: default_max_vcpus(),
            max_memory_mib: DEFAULT_MAX_MEMORY_MIB,
            log_level: "info".into(),
            boot_timeout_s: 120,
            guest_overhead_mib: DEFAULT_OVERHEAD_MIB,
            host_overhead_mib: DEFAULT_OVERHEAD_MIB,
        }
    }
}

/// The file as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    kernel: Option<PathBuf>,
    #[serde(alias = "initramfs")]
    initrd: Option<PathBuf>,
    virtiofsd: Option<PathBuf>,
    vcpus: Option<u8>,
    memory_mib: Option<u64>,
    max_vcpus: Option<u8>,
    max_memory_mib: Option<u64>,
    log_level: Option<String>,
    boot_timeout_s: Option<u64>,
    guest_overhead_mib: Option<u64>,
    host_overhead_mib: Option<u64>,
}

const DEFAULT_FILE: &str = "/etc/husk/config.toml";

impl HuskConfig {
    /// File, then environment, then cache defaults.
    pub fn load() -> Result<HuskConfig, ConfigError> {
        let path = std::env::var_os("HUSK_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_FILE.into());
        let mut cfg = match std::fs::read_to_string(&path) {
            Ok(text) => HuskConfig::parse(&path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HuskConfig::default(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        if let Some(k) = std::env::var_os("HUSK_KERNEL").filter(|v| !v.is_empty()) {
            cfg.kernel = Some(k.into());
        }
        if let Some(i) = std::env::var_os("HUSK_INITRD").filter(|v| !v.is_empty()) {
            cfg.initrd = Some(i.into());
        }
        if let Some(v) = std::env::var_os("HUSK_VIRTIOFSD").filter(|v| !v.is_empty()) {
            cfg.virtiofsd = Some(v.into());
        }
        if cfg.kernel.is_none() {
            cfg.kernel = default_kernel();
        }
        if cfg.initrd.is_none() {
            cfg.initrd = default_initrd();
        }
        Ok(cfg)
    }

    /// Parses and checks the file's text (`path` is for messages).
    pub fn parse(path: &Path, text: &str) -> Result<HuskConfig, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| syntax(path, text, &e))?;
        let d = HuskConfig::default();
        let cfg = HuskConfig {
            kernel: file.kernel,
            initrd: file.initrd,
            virtiofsd: file.virtiofsd,
            vcpus: file.vcpus.unwrap_or(d.vcpus),
            memory_mib: file.memory_mib.unwrap_or(d.memory_mib),
            max_vcpus: file.max_vcpus.unwrap_or(d.max_vcpus),
            max_memory_mib: file.max_memory_mib.unwrap_or(d.max_memory_mib),
            log_level: file.log_level.unwrap_or(d.log_level),
            boot_timeout_s: file.boot_timeout_s.unwrap_or(d.boot_timeout_s),
            guest_overhead_mib: file.guest_overhead_mib.unwrap_or(d.guest_overhead_mib),
            host_overhead_mib: file.host_overhead_mib.unwrap_or(d.host_overhead_mib),
        };
        let bad = |key: &'static str, message: String| {
            Err(ConfigError::Value {
                path: path.to_path_buf(),
                key,
                message,
            })
        };
        if cfg.max_vcpus == 0 || cfg.max_vcpus > husk_vmm::layout::MAX_VCPUS {
            return bad(
                "max_vcpus",
                format!(
                    "{} is out of range 1..={}",
                    cfg.max_vcpus,
                    husk_vmm::layout::MAX_VCPUS
                ),
            );
        }
        if cfg.max_memory_mib < MIN_MEMORY_MIB {
            return bad(
                "max_memory_mib",
                format!("{} is less than {MIN_MEMORY_MIB}", cfg.max_memory_mib),
            );
        }
        if cfg.vcpus == 0 || cfg.vcpus > cfg.max_vcpus {
            return bad(
                "vcpus",
                format!(
                    "{} is out of range 1..={} (max_vcpus)",
                    cfg.vcpus, cfg.max_vcpus
                ),
            );
        }
        if !(MIN_MEMORY_MIB..=cfg.max_memory_mib).contains(&cfg.memory_mib) {
            return bad(
                "memory_mib",
                format!(
                    "{} is out of range {MIN_MEMORY_MIB}..={} (max_memory_mib)",
                    cfg.memory_mib, cfg.max_memory_mib
                ),
            );
        }
        Ok(cfg)
    }

    /// One container's settings: sized from its spec's resources and (a pod's sandbox) the
    /// CRI pod annotations, then its `io.husk.*` annotations.
    pub fn for_container(self, spec: &oci_spec::runtime::Spec) -> Result<HuskConfig, ConfigError> {
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        let annotations = spec.annotations().clone().unwrap_or_default();
        self.with_resources(resources)?
            .with_pod_annotations(&annotations)?
            .with_annotations(&annotations)
    }

    /// Sizes a pod's VM from the CRI sandbox annotations (containerd 1.7+:
    /// [`CRI_SANDBOX_CPU_QUOTA`], [`CRI_SANDBOX_CPU_PERIOD`], [`CRI_SANDBOX_MEMORY`]), by
    /// `linux.resources`' rules: vCPUs `quota / period` rounded up (period 100000 µs when
    /// absent or 0), memory the limit plus `guest_overhead_mib`; each never below what is
    /// already chosen, within the maxima. A quota or limit of 0 or below means unlimited:
    /// nothing changes. Absent annotations (containerd 1.6) change nothing.
    pub fn with_pod_annotations(
        mut self,
        annotations: &HashMap<String, String>,
    ) -> Result<HuskConfig, ConfigError> {
        fn parse<T: std::str::FromStr>(
            annotations: &HashMap<String, String>,
            key: &str,
        ) -> Result<Option<T>, ConfigError> {
            annotations
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse::<T>().map_err(|_| ConfigError::Annotation {
                        key: key.into(),
                        message: format!("{v:?} is not a number"),
                    })
                })
                .transpose()
        }
        let quota: Option<i64> = parse(annotations, CRI_SANDBOX_CPU_QUOTA)?;
        let period: Option<u64> = parse(annotations, CRI_SANDBOX_CPU_PERIOD)?;
        let memory: Option<i64> = parse(annotations, CRI_SANDBOX_MEMORY)?;
        if let Some(q) = quota.filter(|q| *q > 0) {
            let period = period.filter(|p| *p > 0).unwrap_or(100_000);
            let n = q.unsigned_abs().div_ceil(period);
            let n = u8::try_from(n.min(u64::from(self.max_vcpus))).unwrap_or(self.max_vcpus);
            self.vcpus = self.vcpus.max(n);
        }
        if let Some(limit) = memory.filter(|m| *m > 0) {
            let mib = limit
                .unsigned_abs()
                .div_ceil(1 << 20)
                .saturating_add(self.guest_overhead_mib);
            self.memory_mib = self.memory_mib.max(mib.min(self.max_memory_mib));
        }
        Ok(self)
    }

    /// Sizes the VM from `linux.resources`: never below the defaults, within the maxima.
    pub fn with_resources(
        mut self,
        res: Option<&oci_spec::runtime::LinuxResources>,
    ) -> Result<HuskConfig, ConfigError> {
        let Some(res) = res else { return Ok(self) };
        if let Some(cpu) = res.cpu() {
            let from_set = match cpu.cpus().as_deref().map(str::trim) {
                Some(list) if !list.is_empty() => {
                    Some(count_cpus(list).map_err(|message| ConfigError::Spec {
                        field: "linux.resources.cpu.cpus",
                        message,
                    })?)
                }
                _ => None,
            };
            let from_quota = match cpu.quota() {
                Some(q) if q > 0 => {
                    let period = cpu.period().filter(|p| *p > 0).unwrap_or(100_000);
                    Some(q.unsigned_abs().div_ceil(period))
                }
                _ => None,
            };
            let want = match (from_set, from_quota) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(n) = want {
                let n = u8::try_from(n.min(u64::from(self.max_vcpus))).unwrap_or(self.max_vcpus);
                self.vcpus = self.vcpus.max(n);
            }
        }
        if let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) {
            if limit > 0 {
                let mib = limit
                    .unsigned_abs()
                    .div_ceil(1 << 20)
                    .saturating_add(self.guest_overhead_mib);
                self.memory_mib = self.memory_mib.max(mib.min(self.max_memory_mib));
            }
        }
        Ok(self)
    }

    /// Applies `io.husk.*` annotations of one container, within the host's limits.
    pub fn with_annotations(
        mut self,
        annotations: &HashMap<String, String>,
    ) -> Result<HuskConfig, ConfigError> {
        let num = |key: &str, v: &str, min: u64, max: u64, limit: &str| {
            let err = |message: String| ConfigError::Annotation {
                key: key.into(),
                message,
            };
            let n = v
                .parse::<u64>()
                .map_err(|_| err(format!("{v:?} is not a number")))?;
            if n < min {
                return Err(err(format!("{n} is less than {min}")));
            }
            if n > max {
                return Err(err(format!(
                    "{n} is more than this host allows ({limit} = {max} in {DEFAULT_FILE})"
                )));
            }
            Ok(n)
        };
        if let Some(v) = annotations.get("io.husk.vcpus") {
            let n = num("io.husk.vcpus", v, 1, self.max_vcpus.into(), "max_vcpus")?;
            self.vcpus = u8::try_from(n).unwrap_or(self.max_vcpus);
        }
        if let Some(v) = annotations.get("io.husk.memory_mib") {
            self.memory_mib = num(
                "io.husk.memory_mib",
                v,
                MIN_MEMORY_MIB,
                self.max_memory_mib,
                "max_memory_mib",
            )?;
        }
        Ok(self)
    }
}

/// How many CPUs a cpuset list (`0-3,8,10-11`) names.
pub fn count_cpus(list: &str) -> Result<u64, String> {
    let mut seen = std::collections::BTreeSet::new();
    for part in list.split(',').map(str::trim) {
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{list:?}: {part:?} is not a CPU number or range"))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if lo > hi || hi >= 4096 {
            return Err(format!("{list:?}: {part:?} is not a valid range"));
        }
        seen.extend(lo..=hi);
    }
    Ok(seen.len() as u64)
}

/// A TOML error as one line (the supervisor reports errors on one line): the line number,
/// the key the error is at and the parser's message.
fn syntax(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let start = e.span().map_or(0, |s| s.start).min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    let message = e.message().trim().replace('\n', " ");
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('#') && !message.contains(*k));
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        message: match key {
            Some(k) => format!("{k}: {message}"),
            None => message,
        },
    }
}

fn cache_dir() -> PathBuf {
    std::env::var_os("HUSK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/husk".into())
}

/// The most recently built kernel in `$HUSK_CACHE/kernel/build-*/vmlinux`.
fn default_kernel() -> Option<PathBuf> {
    let dir = cache_dir().join("kernel");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("build-"))
        .map(|e| e.path().join("vmlinux"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
}

/// `target/guest-image/initramfs.cpio` next to this binary's target directory, or the
/// installed one.
fn default_initrd() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut candidates = Vec::new();
    if let Some(target) = exe.parent().and_then(Path::parent) {
        candidates.push(target.join("guest-image/initramfs.cpio"));
    }
    candidates.push("/usr/lib/husk/initramfs.cpio".into());
    candidates.push(cache_dir().join("initramfs.cpio"));
    candidates.into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml() {
        let c = HuskConfig::parse(
            Path::new("c.toml"),
            "# husk\nkernel = \"/k\"\nvcpus = 2 # two\nmemory_mib=512\n\nlog_level = \"debug\"\n",
        )
        .unwrap();
        assert_eq!(c.kernel, Some(PathBuf::from("/k")));
        assert_eq!(c.vcpus, 2);
        assert_eq!(c.memory_mib, 512);
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.max_memory_mib, DEFAULT_MAX_MEMORY_MIB);
        assert_eq!(c.boot_timeout_s, 120);
    }

    #[test]
    fn quoted_values_keep_a_hash() {
        let c = HuskConfig::parse(
            Path::new("c.toml"),
            "kernel = \"/boot/a #1/vmlinux\" # the kernel\ninitramfs = '/x #2'\n\
             virtiofsd = '/opt/v #3'",
        )
        .unwrap();
        assert_eq!(c.virtiofsd, Some(PathBuf::from("/opt/v #3")));
        assert_eq!(c.kernel, Some(PathBuf::from("/boot/a #1/vmlinux")));
        assert_eq!(c.initrd, Some(PathBuf::from("/x #2")));
    }

    #[test]
    fn any_valid_toml_layout_is_read() {
        // Comments anywhere, blank lines, indentation, CRLF, literal strings, digit separators.
        let text = "\r\n# host limits\r\n  max_memory_mib = 32_768   # 32 GiB\r\n\
                    max_vcpus = 4\r\n\r\n   # per sandbox\r\nvcpus = 4\r\n\
                    memory_mib = 1_024\r\nlog_level = 'warn'\r\nboot_timeout_s = 30";
        let c = HuskConfig::parse(Path::new("c.toml"), text).unwrap();
        assert_eq!(c.max_memory_mib, 32768);
        assert_eq!((c.vcpus, c.max_vcpus), (4, 4));
        assert_eq!(c.memory_mib, 1024);
        assert_eq!(c.log_level, "warn");
        assert_eq!(c.boot_timeout_s, 30);
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = HuskConfig::parse(Path::new("c.toml"), "vcpus = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml: line 1: vcpus: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = HuskConfig::parse(Path::new("c.toml"), "\nbogus = 1")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.toml: line 2: unknown field `bogus`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = HuskConfig::parse(Path::new("c.toml"), "[vm]\nvcpus = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1: unknown field `vm`"), "{e}");
        let e = HuskConfig::parse(Path::new("c.toml"), "vcpus = 300")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml: line 1: vcpus: "), "{e}");
        let e = HuskConfig::parse(Path::new("c.toml"), "max_vcpus = 2\nvcpus = 3")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "c.toml: vcpus: 3 is out of range 1..=2 (max_vcpus)");
    }

    fn spec(
        resources: serde_json::Value,
        annotations: serde_json::Value,
    ) -> oci_spec::runtime::Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"resources": resources},
            "annotations": annotations,
        }))
        .unwrap()
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpus("0-1"), Ok(2));
        assert_eq!(count_cpus("0"), Ok(1));
        assert_eq!(count_cpus("0-3,8,10-11"), Ok(7));
        assert_eq!(count_cpus("1,1,0-1"), Ok(2));
        assert!(count_cpus("x").is_err());
        assert!(count_cpus("3-1").is_err());
        assert!(count_cpus("0-").is_err());
    }

    #[test]
    fn the_vm_is_sized_from_the_spec() {
        let host = HuskConfig {
            max_vcpus: 8,
            max_memory_mib: 4096,
            ..HuskConfig::default()
        };
        let size = |r: serde_json::Value| {
            let c = host
                .clone()
                .for_container(&spec(r, serde_json::json!({})))
                .unwrap();
            (c.vcpus, c.memory_mib)
        };
        assert_eq!(size(serde_json::json!({})), (1, 256), "the defaults");
        assert_eq!(size(serde_json::json!({"cpu": {"cpus": "0-1"}})).0, 2);
        assert_eq!(size(serde_json::json!({"cpu": {"cpus": "0,2-4"}})).0, 4);
        assert_eq!(
            size(serde_json::json!({"cpu": {"quota": 150000, "period": 100000}})).0,
            2,
            "quota/period rounded up"
        );
        assert_eq!(size(serde_json::json!({"cpu": {"quota": 250000}})).0, 3);
        assert_eq!(size(serde_json::json!({"cpu": {"quota": -1}})).0, 1);
        assert_eq!(
            size(serde_json::json!({"cpu": {"cpus": "0-3", "quota": 100000, "period": 100000}})).0,
            1,
            "the smaller of the two"
        );
        assert_eq!(
            size(serde_json::json!({"cpu": {"cpus": "0-63"}})).0,
            8,
            "max_vcpus"
        );
        assert_eq!(
            size(serde_json::json!({"memory": {"limit": 512 * 1024 * 1024}})).1,
            512 + DEFAULT_OVERHEAD_MIB
        );
        assert_eq!(
            size(serde_json::json!({"memory": {"limit": 512 * 1024 * 1024 + 1}})).1,
            513 + DEFAULT_OVERHEAD_MIB,
            "rounded up"
        );
        assert_eq!(
            size(serde_json::json!({"memory": {"limit": 16 * 1024 * 1024}})).1,
            256,
            "never below memory_mib"
        );
        assert_eq!(size(serde_json::json!({"memory": {"limit": -1}})).1, 256);
        assert_eq!(
            size(serde_json::json!({"memory": {"limit": 1_i64 << 40}})).1,
            4096,
            "max_memory_mib"
        );
        let e = host
            .clone()
            .for_container(&spec(
                serde_json::json!({"cpu": {"cpus": "0-x"}}),
                serde_json::json!({}),
            ))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config.json: linux.resources.cpu.cpus: "),
            "{e}"
        );
        // The annotations still win.
        let c = host
            .clone()
            .for_container(&spec(
                serde_json::json!({"cpu": {"cpus": "0-3"}, "memory": {"limit": 1_i64 << 30}}),
                serde_json::json!({"io.husk.vcpus": "1", "io.husk.memory_mib": "300"}),
            ))
            .unwrap();
        assert_eq!((c.vcpus, c.memory_mib), (1, 300));
        // A configured overhead.
        let c = HuskConfig::parse(
            Path::new("c.toml"),
            "guest_overhead_mib = 32\nhost_overhead_mib = 64",
        )
        .unwrap();
        assert_eq!((c.guest_overhead_mib, c.host_overhead_mib), (32, 64));
        let c = c
            .with_resources(
                spec(
                    serde_json::json!({"memory": {"limit": 1_i64 << 30}}),
                    serde_json::json!({}),
                )
                .linux()
                .as_ref()
                .unwrap()
                .resources()
                .as_ref(),
            )
            .unwrap();
        assert_eq!(c.memory_mib, 1024 + 32);
    }

    #[test]
    fn a_pods_vm_is_sized_from_the_cri_sandbox_annotations() {
        let host = HuskConfig {
            max_vcpus: 8,
            max_memory_mib: 4096,
            ..HuskConfig::default()
        };
        let size = |r: serde_json::Value, a: serde_json::Value| {
            host.clone()
                .for_container(&spec(r, a))
                .map(|c| (c.vcpus, c.memory_mib))
        };
        let none = serde_json::json!({});
        // containerd 1.6: no annotations, the defaults.
        assert_eq!(size(none.clone(), none.clone()).unwrap(), (1, 256));
        // Two containers limited to 1.5 and 1 CPUs, 512 and 256 MiB.
        let pod = serde_json::json!({
            "io.kubernetes.cri.sandbox-cpu-quota": "250000",
            "io.kubernetes.cri.sandbox-cpu-period": "100000",
            "io.kubernetes.cri.sandbox-memory": (768_u64 << 20).to_string(),
            "io.kubernetes.cri.sandbox-cpu-shares": "2",
        });
        assert_eq!(
            size(none.clone(), pod.clone()).unwrap(),
            (3, 768 + DEFAULT_OVERHEAD_MIB)
        );
        // Period absent or 0: 100 ms. Unlimited (0, -1): nothing changes.
        let a = |q: &str, p: &str, m: &str| {
            serde_json::json!({
                CRI_SANDBOX_CPU_QUOTA: q, CRI_SANDBOX_CPU_PERIOD: p, CRI_SANDBOX_MEMORY: m,
            })
        };
        assert_eq!(size(none.clone(), a("200000", "0", "0")).unwrap(), (2, 256));
        assert_eq!(
            size(none.clone(), a("-1", "100000", "-1")).unwrap(),
            (1, 256)
        );
        assert_eq!(
            size(none.clone(), a("50000", "", "1048576")).unwrap(),
            (1, 256),
            "never below the defaults"
        );
        // Within the maxima.
        assert_eq!(
            size(
                none.clone(),
                a("6400000", "100000", &(1_u64 << 40).to_string())
            )
            .unwrap(),
            (8, 4096)
        );
        // The larger of the pod's and the sandbox spec's own resources.
        assert_eq!(
            size(
                serde_json::json!({"cpu": {"cpus": "0-3"}, "memory": {"limit": 128 << 20}}),
                a("100000", "100000", &(1_u64 << 30).to_string())
            )
            .unwrap(),
            (4, 1024 + DEFAULT_OVERHEAD_MIB)
        );
        // io.husk.* still wins.
        let mut both = pod.clone();
        both["io.husk.vcpus"] = "1".into();
        both["io.husk.memory_mib"] = "300".into();
        assert_eq!(size(none.clone(), both).unwrap(), (1, 300));
        // A malformed value names its annotation.
        let e = size(none.clone(), a("lots", "100000", "0"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "annotations.io.kubernetes.cri.sandbox-cpu-quota: \"lots\" is not a number"
        );
        let e = size(none, a("0", "0", "1Gi")).unwrap_err().to_string();
        assert!(
            e.starts_with("annotations.io.kubernetes.cri.sandbox-memory: "),
            "{e}"
        );
    }

    #[test]
    fn annotations_override_within_the_host_limits() {
        let mut a = HashMap::new();
        a.insert("io.husk.memory_mib".to_string(), "1024".to_string());
        let c = HuskConfig::default().with_annotations(&a).unwrap();
        assert_eq!(c.memory_mib, 1024);
        a.insert("io.husk.vcpus".to_string(), "many".to_string());
        let e = HuskConfig::default()
            .with_annotations(&a)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("annotations.io.husk.vcpus:"), "{e}");

        let host = HuskConfig {
            max_vcpus: 4,
            max_memory_mib: 2048,
            ..HuskConfig::default()
        };
        let one = |k: &str, v: &str| {
            host.clone()
                .with_annotations(&HashMap::from([(k.to_string(), v.to_string())]))
        };
        assert_eq!(one("io.husk.vcpus", "4").unwrap().vcpus, 4);
        assert_eq!(one("io.husk.memory_mib", "2048").unwrap().memory_mib, 2048);
        for (k, v, want) in [
            (
                "io.husk.memory_mib",
                "1048576",
                "annotations.io.husk.memory_mib: 1048576 is more than this host allows \
                 (max_memory_mib = 2048 in /etc/husk/config.toml)",
            ),
            (
                "io.husk.vcpus",
                "5",
                "annotations.io.husk.vcpus: 5 is more than this host allows \
                 (max_vcpus = 4 in /etc/husk/config.toml)",
            ),
            (
                "io.husk.vcpus",
                "0",
                "annotations.io.husk.vcpus: 0 is less than 1",
            ),
            (
                "io.husk.vcpus",
                "99999999999999999999",
                "annotations.io.husk.vcpus: \"99999999999999999999\" is not a number",
            ),
            (
                "io.husk.memory_mib",
                "1",
                "annotations.io.husk.memory_mib: 1 is less than 64",
            ),
        ] {
            assert_eq!(one(k, v).unwrap_err().to_string(), want);
        }
    }
}
