//! containerd's runtime options for a task (`CreateTaskRequest.options`, and the same `Any` on
//! the stdin of the shim's `start`), as runc's and Kata's shims take them:
//!
//! - `runtimeoptions.v1.Options` (`type_url`, `config_path`): what containerd 1.6's CRI plugin
//!   sends for a runtime type that is not runc's, from the runtime's `[... .options]` table
//!   (`ConfigPath = "..."`), and what `ctr run --runtime-config-path P` sends. `ConfigPath` is
//!   husk's host configuration (`HUSK_CONFIG`, default `/etc/husk/config.toml`): every husk
//!   verb of the container, and of its pod, runs with it.
//! - `containerd.runc.v1.Options` (runc's): `BinaryName` is the husk binary, `Root` the base of
//!   husk's `--root` (`<Root>/<namespace>`, as containerd-shim-runc-v2 does), `ShimCgroup` the
//!   cgroup the shim is started in, `IoUid`/`IoGid` the owner of the stdin pipe the shim makes;
//!   `SystemdCgroup` is accepted (husk maps a `slice:prefix:name` cgroupsPath itself);
//!   `NoPivotRoot`, `NoNewKeyring` and the CRIU paths are ignored with a warning (the guest
//!   always pivots; a microVM is not checkpointed).
//!
//! `runtimeoptions.v1.Options` is not among containerd-shim-protos' messages: [`RuntimeOptions`]
//! is that two-field message on the same `protobuf` crate (a hand-written `Message`
//! implementation, as protobuf-codegen would write it; no build step for two strings).

use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{self, CodedInputStream, CodedOutputStream, Message};
use containerd_shim::protos::shim::oci::Options as RuncOptions;
use serde::{Deserialize, Serialize};

/// The type URL of CRI's generic runtime options.
pub const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";
/// The type URL of runc's options (containerd 1.6 and later).
pub const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

/// Errors in a task's runtime options.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// A type the shim does not take.
    #[error(
        "runtime options: unknown type {0:?} (husk takes {RUNTIME_OPTIONS_TYPE} or \
         {RUNC_OPTIONS_TYPE})"
    )]
    UnknownType(String),
    /// The message does not decode.
    #[error("runtime options {type_url}: {source}")]
    Decode {
        /// The type URL.
        type_url: String,
        /// Why.
        source: protobuf::Error,
    },
    /// An option's value is unusable.
    #[error("runtime option {option} {value:?}: {message}")]
    Bad {
        /// The option, as containerd's config names it (`BinaryName`).
        option: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
}

fn bad(option: &'static str, value: &Path, message: impl Into<String>) -> OptionsError {
    OptionsError::Bad {
        option,
        value: value.display().to_string(),
        message: message.into(),
    }
}

/// CRI's `runtimeoptions.v1.Options` (containerd's `pkg/cri/runtimeoptions/v1/api.proto`):
/// `string type_url = 1; string config_path = 2;`.
#[derive(PartialEq, Clone, Default, Debug)]
pub struct RuntimeOptions {
    /// `type_url`: unused by containerd itself.
    pub type_url: String,
    /// `config_path`: the runtime's configuration file.
    pub config_path: String,
    special_fields: protobuf::SpecialFields,
}

impl Message for RuntimeOptions {
    const NAME: &'static str = "Options";

    fn is_initialized(&self) -> bool {
        true
    }

    fn merge_from(&mut self, is: &mut CodedInputStream<'_>) -> protobuf::Result<()> {
        while let Some(tag) = is.read_raw_tag_or_eof()? {
            match tag {
                10 => self.type_url = is.read_string()?,
                18 => self.config_path = is.read_string()?,
                tag => protobuf::rt::read_unknown_or_skip_group(
                    tag,
                    is,
                    self.special_fields.mut_unknown_fields(),
                )?,
            }
        }
        Ok(())
    }

    fn compute_size(&self) -> u64 {
        let mut size = 0;
        if !self.type_url.is_empty() {
            size += protobuf::rt::string_size(1, &self.type_url);
        }
        if !self.config_path.is_empty() {
            size += protobuf::rt::string_size(2, &self.config_path);
        }
        size += protobuf::rt::unknown_fields_size(self.special_fields.unknown_fields());
        self.special_fields.cached_size().set(size as u32);
        size
    }

    fn write_to_with_cached_sizes(&self, os: &mut CodedOutputStream<'_>) -> protobuf::Result<()> {
        if !self.type_url.is_empty() {
            os.write_string(1, &self.type_url)?;
        }
        if !self.config_path.is_empty() {
            os.write_string(2, &self.config_path)?;
        }
        os.write_unknown_fields(self.special_fields.unknown_fields())?;
        Ok(())
    }

    fn special_fields(&self) -> &protobuf::SpecialFields {
        &self.special_fields
    }

    fn mut_special_fields(&mut self) -> &mut protobuf::SpecialFields {
        &mut self.special_fields
    }

    fn new() -> RuntimeOptions {
        RuntimeOptions::default()
    }

    fn default_instance() -> &'static RuntimeOptions {
        static INSTANCE: std::sync::OnceLock<RuntimeOptions> = std::sync::OnceLock::new();
        INSTANCE.get_or_init(RuntimeOptions::default)
    }
}

/// What a task's runtime options ask of the shim; empty fields keep the shim's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimOptions {
    /// husk's host configuration file (`HUSK_CONFIG` of every verb).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// The husk binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// The base of husk's `--root` (`<base>/<namespace>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Owner (uid, gid) of the stdin pipe the shim makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_owner: Option<(u32, u32)>,
    /// The cgroup the shim is started in (applied at `start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim_cgroup: Option<String>,
}

fn nonempty(s: &str) -> Option<String> {
    Some(s.to_owned()).filter(|s| !s.is_empty())
}

/// The message name of a type URL (`types.googleapis.com/x.y.Z` or `x.y.Z`).
fn type_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

impl ShimOptions {
    /// Decodes a task's options (`None` or an empty `Any`: no options), logging what is
    /// accepted without effect and warning about what is ignored.
    pub fn decode(any: Option<&Any>) -> Result<ShimOptions, OptionsError> {
        let Some(any) = any.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
            return Ok(ShimOptions::default());
        };
        let decode_err = |source| OptionsError::Decode {
            type_url: any.type_url.clone(),
            source,
        };
        match type_name(&any.type_url) {
            RUNTIME_OPTIONS_TYPE => {
                let o = RuntimeOptions::parse_from_bytes(&any.value).map_err(decode_err)?;
                if !o.type_url.is_empty() {
                    tracing::debug!(
                        "runtime options: TypeUrl {:?} is not used by husk",
                        o.type_url
                    );
                }
                Ok(ShimOptions {
                    config: nonempty(&o.config_path).map(PathBuf::from),
                    ..Default::default()
                })
            }
            RUNC_OPTIONS_TYPE => {
                let o = RuncOptions::parse_from_bytes(&any.value).map_err(decode_err)?;
                Ok(ShimOptions::from_runc(&o))
            }
            _ => Err(OptionsError::UnknownType(any.type_url.clone())),
        }
    }

    fn from_runc(o: &RuncOptions) -> ShimOptions {
        if o.systemd_cgroup {
            tracing::debug!(
                "runtime option SystemdCgroup: accepted; husk maps a slice:prefix:name \
                 cgroupsPath to its host cgroup itself, no systemd needed"
            );
        }
        if o.no_pivot_root {
            tracing::warn!("runtime option NoPivotRoot ignored: the guest always pivots");
        }
        if o.no_new_keyring {
            tracing::warn!(
                "runtime option NoNewKeyring ignored: the container's keyring is the guest \
                 kernel's"
            );
        }
        // CriuPath: field 8 in containerd 1.6 (reserved since), so an unknown field here.
        let criu_path = o.special_fields.unknown_fields().get(8).is_some();
        if criu_path || !o.criu_image_path.is_empty() || !o.criu_work_path.is_empty() {
            tracing::warn!(
                "runtime options CriuPath/CriuImagePath/CriuWorkPath ignored: a microVM sandbox \
                 is not checkpointed"
            );
        }
        if !o.task_api_address.is_empty() || o.task_api_version != 0 {
            tracing::warn!(
                "runtime options TaskApiAddress/TaskApiVersion ignored: this shim serves the \
                 task API itself"
            );
        }
        let io_owner = (o.io_uid != 0 || o.io_gid != 0).then_some((o.io_uid, o.io_gid));
        if io_owner.is_some() {
            tracing::debug!(
                "runtime options IoUid/IoGid: the owner of the stdin pipe the shim makes; \
                 stdout/stderr are containerd's FIFOs as they are, and the container's \
                 processes use guest-side descriptors only"
            );
        }
        ShimOptions {
            config: None,
            binary: nonempty(&o.binary_name).map(PathBuf::from),
            root: nonempty(&o.root).map(PathBuf::from),
            io_owner,
            shim_cgroup: nonempty(&o.shim_cgroup),
        }
    }

    /// Checks the values before anything is made: the binary is an executable file (a bare
    /// name is looked up on PATH, as runc's shim does), `Root` is absolute, the configuration
    /// file reads and parses. Returns the options with the binary's path resolved.
    pub fn validate(mut self) -> Result<ShimOptions, OptionsError> {
        if let Some(b) = &self.binary {
            self.binary = Some(resolve_binary(b)?);
        }
        if let Some(r) = &self.root {
            if !r.is_absolute() {
                return Err(bad("Root", r, "not an absolute path"));
            }
        }
        if let Some(c) = &self.config {
            if !c.is_absolute() {
                return Err(bad("ConfigPath", c, "not an absolute path"));
            }
            let text =
                std::fs::read_to_string(c).map_err(|e| bad("ConfigPath", c, e.to_string()))?;
            crate::config::HuskConfig::parse(c, &text)
                .map_err(|e| bad("ConfigPath", c, e.to_string()))?;
        }
        Ok(self)
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `BinaryName`: a path (absolute, or relative to the bundle: not allowed, too surprising), or
/// a bare name found on PATH.
fn resolve_binary(b: &Path) -> Result<PathBuf, OptionsError> {
    if b.components().count() == 1 && !b.is_absolute() {
        let found = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(b))
                .find(|c| is_executable(c))
        });
        return found.ok_or_else(|| bad("BinaryName", b, "not found on PATH"));
    }
    if !b.is_absolute() {
        return Err(bad(
            "BinaryName",
            b,
            "neither an absolute path nor a name on PATH",
        ));
    }
    if !is_executable(b) {
        let why = match std::fs::metadata(b) {
            Err(e) => e.to_string(),
            Ok(m) if !m.is_file() => "not a file".into(),
            Ok(_) => "not executable".into(),
        };
        return Err(bad("BinaryName", b, why));
    }
    Ok(b.to_path_buf())
}

/// Reads the options containerd gives `start` on stdin (a marshalled `Any`; nothing when
/// the task has none).
pub fn read_start_options(input: &mut dyn std::io::Read) -> Result<ShimOptions, OptionsError> {
    let mut data = Vec::new();
    if input.read_to_end(&mut data).is_err() || data.is_empty() {
        return Ok(ShimOptions::default());
    }
    let any = Any::parse_from_bytes(&data).map_err(|source| OptionsError::Decode {
        type_url: "(start's stdin)".into(),
        source,
    })?;
    ShimOptions::decode(Some(&any))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn any_of(type_url: &str, m: &impl Message) -> Any {
        Any {
            type_url: type_url.into(),
            value: m.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn no_options_are_the_defaults() {
        assert_eq!(ShimOptions::decode(None).unwrap(), ShimOptions::default());
        assert_eq!(
            ShimOptions::decode(Some(&Any::default())).unwrap(),
            ShimOptions::default()
        );
    }

    #[test]
    fn cri_runtime_options_give_the_config_path() {
        // The bytes containerd's Go marshals for Options{ConfigPath: "/etc/husk/c.toml"}.
        let mut bytes = vec![0x12, 16];
        bytes.extend_from_slice(b"/etc/husk/c.toml");
        let any = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: bytes,
            ..Default::default()
        };
        let o = ShimOptions::decode(Some(&any)).unwrap();
        assert_eq!(o.config, Some(PathBuf::from("/etc/husk/c.toml")));
        assert_eq!(o.binary, None);
        // Round trip through the hand-written message, with a prefixed type URL.
        let m = RuntimeOptions {
            type_url: "x".into(),
            config_path: "/a/b.toml".into(),
            ..Default::default()
        };
        let any = any_of("types.googleapis.com/runtimeoptions.v1.Options", &m);
        assert_eq!(RuntimeOptions::parse_from_bytes(&any.value).unwrap(), m);
        let o = ShimOptions::decode(Some(&any)).unwrap();
        assert_eq!(o.config, Some(PathBuf::from("/a/b.toml")));
        // Empty ConfigPath: no config.
        let any = any_of(RUNTIME_OPTIONS_TYPE, &RuntimeOptions::default());
        assert_eq!(
            ShimOptions::decode(Some(&any)).unwrap(),
            ShimOptions::default()
        );
    }

    #[test]
    fn runc_options_give_binary_root_owner_and_shim_cgroup() {
        let mut m = RuncOptions {
            binary_name: "/usr/local/bin/husk".into(),
            root: "/run/husk-x".into(),
            systemd_cgroup: true,
            io_uid: 1000,
            io_gid: 1001,
            shim_cgroup: "/shims".into(),
            no_pivot_root: true,
            criu_image_path: "/x".into(),
            ..Default::default()
        };
        // containerd 1.6's CriuPath (field 8) arrives as an unknown field.
        m.special_fields
            .mut_unknown_fields()
            .add_length_delimited(8, b"/usr/sbin/criu".to_vec());
        let o = ShimOptions::decode(Some(&any_of(RUNC_OPTIONS_TYPE, &m))).unwrap();
        assert_eq!(
            o,
            ShimOptions {
                config: None,
                binary: Some("/usr/local/bin/husk".into()),
                root: Some("/run/husk-x".into()),
                io_owner: Some((1000, 1001)),
                shim_cgroup: Some("/shims".into()),
            }
        );
        let o =
            ShimOptions::decode(Some(&any_of(RUNC_OPTIONS_TYPE, &RuncOptions::default()))).unwrap();
        assert_eq!(o, ShimOptions::default());
    }

    #[test]
    fn unknown_types_and_garbage_are_errors_naming_the_type() {
        let any = Any {
            type_url: "io.containerd.kata.v2.Options".into(),
            value: vec![],
            ..Default::default()
        };
        let e = ShimOptions::decode(Some(&any)).unwrap_err().to_string();
        assert!(e.contains("io.containerd.kata.v2.Options"), "{e}");
        assert!(e.contains(RUNTIME_OPTIONS_TYPE), "{e}");
        let any = Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: vec![0xff, 0xff, 0xff],
            ..Default::default()
        };
        let e = ShimOptions::decode(Some(&any)).unwrap_err().to_string();
        assert!(e.contains(RUNC_OPTIONS_TYPE), "{e}");
    }

    #[test]
    fn validation_names_the_option() {
        let t = tempfile::tempdir().unwrap();
        let exe = t.path().join("husk");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let plain = t.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let with = |f: &dyn Fn(&mut ShimOptions)| {
            let mut o = ShimOptions::default();
            f(&mut o);
            o.validate()
        };
        assert!(with(&|o| o.binary = Some(exe.clone())).is_ok());
        for (b, why) in [
            (plain.clone(), "not executable"),
            (t.path().to_path_buf(), "not a file"),
            (t.path().join("missing"), "No such file"),
            (PathBuf::from("rel/husk"), "absolute"),
            (PathBuf::from("no-such-husk-binary"), "not found on PATH"),
        ] {
            let e = with(&|o| o.binary = Some(b.clone()))
                .unwrap_err()
                .to_string();
            assert!(e.contains("BinaryName") && e.contains(why), "{e}");
        }
        // A bare name on PATH resolves to its path.
        let o = with(&|o| o.binary = Some("sh".into())).unwrap();
        assert!(o.binary.unwrap().is_absolute());
        let e = with(&|o| o.root = Some("run/husk".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Root") && e.contains("absolute"), "{e}");
        assert!(with(&|o| o.root = Some(t.path().join("r"))).is_ok());
        let cfg = t.path().join("config.toml");
        std::fs::write(&cfg, "memory_mib = 384\n").unwrap();
        assert!(with(&|o| o.config = Some(cfg.clone())).is_ok());
        let e = with(&|o| o.config = Some(t.path().join("none.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ConfigPath") && e.contains("none.toml"), "{e}");
        std::fs::write(&cfg, "memory = 384\n").unwrap();
        let e = with(&|o| o.config = Some(cfg.clone()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ConfigPath") && e.contains("memory"), "{e}");
    }

    #[test]
    fn start_reads_an_any_from_stdin() {
        let m = RuncOptions {
            shim_cgroup: "/shims".into(),
            ..Default::default()
        };
        let any = any_of(RUNC_OPTIONS_TYPE, &m);
        let bytes = any.write_to_bytes().unwrap();
        let o = read_start_options(&mut bytes.as_slice()).unwrap();
        assert_eq!(o.shim_cgroup.as_deref(), Some("/shims"));
        let o = read_start_options(&mut std::io::empty()).unwrap();
        assert_eq!(o, ShimOptions::default());
    }
}
