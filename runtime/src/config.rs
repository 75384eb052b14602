//! husk's host configuration: `/etc/husk/config.toml` (or `$HUSK_CONFIG`), then the
//! environment (`HUSK_KERNEL`, `HUSK_INITRD`), then defaults found in the build caches; per
//! container, the annotations `io.husk.vcpus` and `io.husk.memory_mib`.
//!
//! The file is a flat TOML subset (`key = "string"` or `key = 123`, `#` comments), so no TOML
//! crate is needed:
//!
//! ```toml
//! kernel = "/var/cache/husk/kernel/build-.../vmlinux"
//! initrd = "/usr/lib/husk/initramfs.cpio"
//! vcpus = 1
//! memory_mib = 256
//! log_level = "info"
//! boot_timeout_s = 120
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    /// A line or value is malformed.
    #[error("{path}: line {line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An annotation value is malformed.
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
    /// vCPUs per sandbox.
    pub vcpus: u8,
    /// Guest memory per sandbox.
    pub memory_mib: u64,
    /// Supervisor log filter.
    pub log_level: String,
    /// Seconds to wait for the agent after boot.
    pub boot_timeout_s: u64,
}

impl Default for HuskConfig {
    fn default() -> Self {
        HuskConfig {
            kernel: None,
            initrd: None,
            vcpus: 1,
            memory_mib: 256,
            log_level: "info".into(),
            boot_timeout_s: 120,
        }
    }
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
        if cfg.kernel.is_none() {
            cfg.kernel = default_kernel();
        }
        if cfg.initrd.is_none() {
            cfg.initrd = default_initrd();
        }
        Ok(cfg)
    }

    /// Parses the flat TOML subset.
    pub fn parse(path: &Path, text: &str) -> Result<HuskConfig, ConfigError> {
        let mut cfg = HuskConfig::default();
        for (n, raw) in text.lines().enumerate() {
            let err = |message: String| ConfigError::Syntax {
                path: path.to_path_buf(),
                line: n + 1,
                message,
            };
            let line = raw.split(" #").next().unwrap_or("").trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| err("expected key = value".into()))?;
            let (key, value) = (key.trim(), value.trim());
            let string = || -> Result<String, ConfigError> {
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map(str::to_string)
                    .ok_or_else(|| err(format!("{key}: expected a quoted string")))
            };
            let number = || -> Result<u64, ConfigError> {
                value
                    .parse::<u64>()
                    .map_err(|_| err(format!("{key}: expected a number")))
            };
            match key {
                "kernel" => cfg.kernel = Some(string()?.into()),
                "initrd" | "initramfs" => cfg.initrd = Some(string()?.into()),
                "vcpus" => {
                    cfg.vcpus =
                        u8::try_from(number()?).map_err(|_| err("vcpus: out of range".into()))?
                }
                "memory_mib" => cfg.memory_mib = number()?,
                "log_level" => cfg.log_level = string()?,
                "boot_timeout_s" => cfg.boot_timeout_s = number()?,
                other => return Err(err(format!("unknown key {other:?}"))),
            }
        }
        Ok(cfg)
    }

    /// Applies `io.husk.*` annotations of one container.
    pub fn with_annotations(
        mut self,
        annotations: &HashMap<String, String>,
    ) -> Result<HuskConfig, ConfigError> {
        let num = |key: &str, v: &str| {
            v.parse::<u64>().map_err(|_| ConfigError::Annotation {
                key: key.into(),
                message: format!("{v:?} is not a number"),
            })
        };
        if let Some(v) = annotations.get("io.husk.vcpus") {
            self.vcpus =
                u8::try_from(num("io.husk.vcpus", v)?).map_err(|_| ConfigError::Annotation {
                    key: "io.husk.vcpus".into(),
                    message: format!("{v} is out of range"),
                })?;
        }
        if let Some(v) = annotations.get("io.husk.memory_mib") {
            self.memory_mib = num("io.husk.memory_mib", v)?;
        }
        Ok(self)
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
    fn parses_the_subset() {
        let c = HuskConfig::parse(
            Path::new("c.toml"),
            "# husk\nkernel = \"/k\"\nvcpus = 2 # two\nmemory_mib=512\n\nlog_level = \"debug\"\n",
        )
        .unwrap();
        assert_eq!(c.kernel, Some(PathBuf::from("/k")));
        assert_eq!(c.vcpus, 2);
        assert_eq!(c.memory_mib, 512);
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = HuskConfig::parse(Path::new("c.toml"), "vcpus = \"x\"")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "c.toml: line 1: vcpus: expected a number");
        let e = HuskConfig::parse(Path::new("c.toml"), "\nbogus = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: unknown key"), "{e}");
    }

    #[test]
    fn annotations_override() {
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
    }
}
