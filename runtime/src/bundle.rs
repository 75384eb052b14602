//! An OCI bundle: `config.json` parsed and checked before anything is created, so a bad
//! bundle fails with an error naming the field and leaves nothing behind.
//!
//! Owns: reading and validating the bundle on the host. The agent validates the spec again in
//! the guest (namespaces, mounts, resources); this catches what the host must know.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};
use serde_json::Value;

/// Errors loading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle directory or its config.json cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// config.json is not valid JSON.
    #[error("config.json: {0}")]
    Json(serde_json::Error),
    /// A field is missing or wrong.
    #[error("config.json: {field}: {message}")]
    Field {
        /// JSON path of the field (`process.args`, `mounts[2].destination`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn field(field: impl Into<String>, message: impl Into<String>) -> BundleError {
    BundleError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// A loaded bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    /// The spec.
    pub spec: Spec,
    /// config.json as read (sent to the agent unchanged).
    pub config_json: String,
    /// The rootfs on the host (root.path resolved against the bundle).
    pub rootfs: PathBuf,
}

impl Bundle {
    /// Reads and checks `<dir>/config.json`.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let dir = std::fs::canonicalize(dir).map_err(|source| BundleError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("config.json");
        let config_json =
            std::fs::read_to_string(&path).map_err(|source| BundleError::Read { path, source })?;
        let spec = parse_spec(&config_json)?;
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| field("root", "is required"))?;
        let rootfs = dir.join(root.path());
        if !rootfs.exists() {
            return Err(field(
                "root.path",
                format!("{} does not exist", rootfs.display()),
            ));
        }
        Ok(Bundle {
            dir,
            spec,
            config_json,
            rootfs,
        })
    }

    /// The spec's annotations (empty when none).
    pub fn annotations(&self) -> HashMap<String, String> {
        self.spec.annotations().clone().unwrap_or_default()
    }
}

/// Parses config.json; type errors name the top-level section or array element they are in.
pub fn parse_spec(text: &str) -> Result<Spec, BundleError> {
    let mut value: Value = serde_json::from_str(text).map_err(BundleError::Json)?;
    // Unknown capability names: warned about and ignored, as runc does (the agent does the
    // same with what it is sent).
    if let Some(p) = value.get_mut("process") {
        for w in husk_agent::caps::drop_unknown(p, "process") {
            tracing::warn!("{w}");
        }
    }
    let obj = value
        .as_object()
        .ok_or_else(|| field("(root)", "config.json must be a JSON object"))?;
    match obj.get("ociVersion") {
        Some(Value::String(v)) if !v.is_empty() => {}
        Some(_) => return Err(field("ociVersion", "must be a non-empty string")),
        None => return Err(field("ociVersion", "is required")),
    }
    let process = obj
        .get("process")
        .ok_or_else(|| field("process", "is required"))?;
    check_process(process, "process")?;
    for (key, v) in obj {
        match (key.as_str(), v) {
            ("mounts", Value::Array(items)) => {
                for (i, m) in items.iter().enumerate() {
                    let at = format!("mounts[{i}]");
                    match m.get("destination") {
                        Some(Value::String(d)) if d.starts_with('/') => {}
                        Some(Value::String(d)) => {
                            return Err(field(
                                format!("{at}.destination"),
                                format!("{d:?} must be an absolute path"),
                            ))
                        }
                        _ => return Err(field(format!("{at}.destination"), "is required")),
                    }
                    section::<oci_spec::runtime::Mount>(m, &at)?;
                }
            }
            ("root", v) => {
                match v.get("path") {
                    Some(Value::String(p)) if !p.is_empty() => {}
                    _ => return Err(field("root.path", "is required")),
                }
                section::<oci_spec::runtime::Root>(v, key)?;
            }
            ("linux", v) => {
                section::<oci_spec::runtime::Linux>(v, key)?;
            }
            ("hooks", v) => {
                section::<oci_spec::runtime::Hooks>(v, key)?;
                check_hooks(v)?;
            }
            ("hostname", v) if !v.is_string() => return Err(field(key, "must be a string")),
            ("annotations", v) => {
                section::<HashMap<String, String>>(v, key)?;
            }
            _ => {}
        }
    }
    serde_json::from_value(value).map_err(|e| field("(spec)", e.to_string()))
}

/// The hook lists the spec defines, as config.json names them.
const HOOK_KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Each hook's `path` is absolute and its `timeout` positive (the spec's MUSTs). The
/// container-namespace hooks (createContainer, startContainer) go to the agent, which runs
/// them in the guest with paths resolved in the container's rootfs.
fn check_hooks(v: &Value) -> Result<(), BundleError> {
    for kind in HOOK_KINDS {
        let Some(Value::Array(list)) = v.get(kind) else {
            continue;
        };
        for (i, h) in list.iter().enumerate() {
            let at = format!("hooks.{kind}[{i}]");
            match h.get("path") {
                Some(Value::String(p)) if p.starts_with('/') => {}
                Some(Value::String(p)) => {
                    return Err(field(
                        format!("{at}.path"),
                        format!("{p:?} must be an absolute path"),
                    ))
                }
                _ => return Err(field(format!("{at}.path"), "is required")),
            }
            if let Some(t) = h.get("timeout") {
                if t.as_i64().is_none_or(|t| t <= 0) {
                    return Err(field(
                        format!("{at}.timeout"),
                        "must be a number of seconds greater than zero",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks a process object (config.json's `process`, or `exec --process`).
pub fn check_process(v: &Value, at: &str) -> Result<Process, BundleError> {
    match v.get("args") {
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {}
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(field(format!("{at}.args"), "must not be empty"))
        }
        Some(_) => return Err(field(format!("{at}.args"), "must be an array of strings")),
        None => return Err(field(format!("{at}.args"), "is required")),
    }
    match v.get("cwd") {
        Some(Value::String(c)) if c.starts_with('/') => {}
        Some(Value::String(c)) => {
            return Err(field(
                format!("{at}.cwd"),
                format!("{c:?} must be an absolute path"),
            ))
        }
        Some(_) => return Err(field(format!("{at}.cwd"), "must be a string")),
        None => return Err(field(format!("{at}.cwd"), "is required")),
    }
    if let Some(user) = v.get("user") {
        for k in ["uid", "gid"] {
            if let Some(x) = user.get(k) {
                if x.as_u64().is_none_or(|n| n > u64::from(u32::MAX)) {
                    return Err(field(
                        format!("{at}.user.{k}"),
                        "must be a number in 0..=4294967295",
                    ));
                }
            }
        }
    }
    let mut v = v.clone();
    for w in husk_agent::caps::drop_unknown(&mut v, at) {
        tracing::warn!("{w}");
    }
    section::<Process>(&v, at)
}

fn section<T: serde::de::DeserializeOwned>(v: &Value, at: &str) -> Result<T, BundleError> {
    serde_json::from_value(v.clone()).map_err(|e| field(at, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_capabilities_are_ignored_not_refused() {
        let mut v = base();
        v["process"]["capabilities"] = serde_json::json!({
            "bounding": ["CAP_KILL", "CAP_FROM_THE_FUTURE"],
            "effective": ["CAP_KILL"]
        });
        let spec = parse_spec(&v.to_string()).expect("unknown capability ignored");
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        assert_eq!(caps.bounding().as_ref().map(|b| b.len()), Some(1));
    }

    #[test]
    fn all_six_hook_kinds_are_accepted_and_checked() {
        let mut v = base();
        v["hooks"] = serde_json::json!({
            "prestart": [{"path": "/bin/true"}],
            "createRuntime": [{"path": "/bin/true", "args": ["true"], "timeout": 3}],
            "createContainer": [{"path": "/bin/true", "timeout": 1}],
            "startContainer": [{"path": "/bin/hook", "args": ["hook", "x"], "env": ["A=1"]}],
            "poststart": [{"path": "/bin/true"}],
            "poststop": [{"path": "/bin/true", "env": ["A=1"]}],
        });
        let spec = parse_spec(&v.to_string()).unwrap();
        let hooks = spec.hooks().as_ref().unwrap();
        assert_eq!(hooks.start_container().as_ref().unwrap().len(), 1);
        for kind in ["createContainer", "startContainer"] {
            let mut v = base();
            v["hooks"] = serde_json::json!({ kind: [{"path": "bin/hook"}] });
            assert_eq!(
                err(&v),
                format!("config.json: hooks.{kind}[0].path: \"bin/hook\" must be an absolute path")
            );
            v["hooks"] = serde_json::json!({ kind: [{"path": "/bin/hook", "timeout": 0}] });
            assert_eq!(
                err(&v),
                format!(
                    "config.json: hooks.{kind}[0].timeout: must be a number of seconds greater \
                     than zero"
                )
            );
        }
    }

    fn base() -> Value {
        serde_json::json!({
            "ociVersion": "1.0.2-dev",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}]
        })
    }

    fn err(v: &Value) -> String {
        parse_spec(&v.to_string()).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_minimal_spec() {
        parse_spec(&base().to_string()).unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = base();
        v["process"]["args"] = serde_json::json!([]);
        assert_eq!(err(&v), "config.json: process.args: must not be empty");
        let mut v = base();
        v["process"]["cwd"] = serde_json::json!("rel");
        assert!(
            err(&v).starts_with("config.json: process.cwd:"),
            "{}",
            err(&v)
        );
        let mut v = base();
        v["process"]["user"]["uid"] = serde_json::json!("root");
        assert!(err(&v).starts_with("config.json: process.user.uid:"));
        let mut v = base();
        v["mounts"][0]["destination"] = serde_json::json!("proc");
        assert!(err(&v).starts_with("config.json: mounts[0].destination:"));
        let mut v = base();
        v.as_object_mut().unwrap().remove("ociVersion");
        assert_eq!(err(&v), "config.json: ociVersion: is required");
        let mut v = base();
        v["linux"] = serde_json::json!({"namespaces": [{"type": "bogus"}]});
        assert!(err(&v).starts_with("config.json: linux:"), "{}", err(&v));
        let mut v = base();
        v["hooks"] = serde_json::json!({"prestart": [{"path": "hook"}]});
        assert_eq!(
            err(&v),
            "config.json: hooks.prestart[0].path: \"hook\" must be an absolute path"
        );
        v["hooks"] = serde_json::json!({"poststop": [{"path": "/h", "timeout": 0}]});
        assert!(
            err(&v).starts_with("config.json: hooks.poststop[0].timeout:"),
            "{}",
            err(&v)
        );
        assert!(parse_spec("{")
            .unwrap_err()
            .to_string()
            .starts_with("config.json: "));
    }
}
