//! Validating an OCI runtime spec and turning it into what container creation needs.
//! Every rejection names the spec field; unsupported-but-harmless fields produce warnings.
//! Pure: reads only the rootfs' existence.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespace, Process, Spec};

use crate::caps::CapMasks;
use crate::mounts::{join_rootfs, RootfsPlan};
use crate::namespaces::{NamespaceError, NamespacePlan};
use crate::spawn::IdMaps;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid spec: {field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        reason: reason.into(),
    }
}

impl From<NamespaceError> for SpecError {
    fn from(e: NamespaceError) -> Self {
        let s = e.to_string();
        let (f, r) = s.split_once(": ").unwrap_or(("linux.namespaces", &s));
        bad(f, r)
    }
}

/// A spec that passed validation.
#[derive(Debug, Clone)]
pub struct ValidSpec {
    pub ns: NamespacePlan,
    pub namespaces: Vec<LinuxNamespace>,
    pub rootfs: RootfsPlan,
    pub process: Process,
    pub hostname: Option<String>,
    pub idmaps: Option<IdMaps>,
    pub cgroups_path: Option<PathBuf>,
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    pub warnings: Vec<String>,
}

fn id_map(field: &str, maps: &Option<Vec<LinuxIdMapping>>) -> Result<String, SpecError> {
    let maps = maps
        .as_ref()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad(field, "required with a new user namespace"))?;
    Ok(maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect())
}

/// Checks a process (the container's or an exec's) on its own.
pub fn validate_process(
    p: &Process,
    prefix: &str,
    warnings: &mut Vec<String>,
) -> Result<(), SpecError> {
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(bad(format!("{prefix}.args"), "must not be empty"));
    }
    if !p.cwd().is_absolute() {
        return Err(bad(
            format!("{prefix}.cwd"),
            format!("{:?} must be an absolute path", p.cwd()),
        ));
    }
    for e in p.env().iter().flatten() {
        if !e.contains('=') {
            return Err(bad(
                format!("{prefix}.env"),
                format!("{e:?} is not KEY=value"),
            ));
        }
    }
    if let Some(c) = p.capabilities() {
        CapMasks::from_spec(c).map_err(|e| bad(format!("{prefix}.capabilities"), e.to_string()))?;
    }
    if p.apparmor_profile().as_ref().is_some_and(|s| !s.is_empty()) {
        warnings.push(format!(
            "{prefix}.apparmorProfile: AppArmor is not available in the guest; ignored"
        ));
    }
    if p.selinux_label().as_ref().is_some_and(|s| !s.is_empty()) {
        warnings.push(format!(
            "{prefix}.selinuxLabel: SELinux is not available in the guest; ignored"
        ));
    }
    Ok(())
}

/// Validates `spec`. `rootfs` overrides a relative `root.path` (the bundle is on the host).
pub fn validate(spec: &Spec, rootfs: Option<&Path>) -> Result<ValidSpec, SpecError> {
    let mut warnings = Vec::new();
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| bad("root", "required"))?;
    let rootfs_path = match rootfs {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => root.path().clone(),
    };
    if !rootfs_path.is_absolute() {
        return Err(bad(
            "root.path",
            format!("{rootfs_path:?} must be absolute in the guest"),
        ));
    }
    if !rootfs_path.is_dir() {
        return Err(bad(
            "root.path",
            format!("{} is not a directory", rootfs_path.display()),
        ));
    }
    let process = spec
        .process()
        .clone()
        .ok_or_else(|| bad("process", "required"))?;
    validate_process(&process, "process", &mut warnings)?;
    let linux = spec
        .linux()
        .clone()
        .ok_or_else(|| bad("linux", "required"))?;
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let ns = NamespacePlan::for_create(&namespaces)?;

    let mounts = spec.mounts().clone().unwrap_or_default();
    for (i, m) in mounts.iter().enumerate() {
        let d = m.destination();
        if !d.is_absolute() {
            return Err(bad(
                format!("mounts[{i}].destination"),
                format!("{d:?} must be absolute"),
            ));
        }
        if join_rootfs(&rootfs_path, d).is_none() {
            return Err(bad(
                format!("mounts[{i}].destination"),
                format!("{d:?} may not contain '..'"),
            ));
        }
        let bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
        if bind {
            match m.source() {
                Some(s) if s.exists() => {}
                Some(s) => {
                    return Err(bad(
                        format!("mounts[{i}].source"),
                        format!("{} does not exist", s.display()),
                    ))
                }
                None => {
                    return Err(bad(
                        format!("mounts[{i}].source"),
                        "required for a bind mount",
                    ))
                }
            }
        } else if m.typ().as_deref().is_none_or(str::is_empty) {
            return Err(bad(
                format!("mounts[{i}].type"),
                "required unless the mount is a bind mount",
            ));
        }
    }

    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    if hostname.is_some() && !ns.new_uts {
        return Err(bad("hostname", "setting it requires a new uts namespace"));
    }
    let idmaps = if ns.new_user {
        Some(IdMaps {
            uid_map: id_map("linux.uidMappings", linux.uid_mappings())?,
            gid_map: id_map("linux.gidMappings", linux.gid_mappings())?,
        })
    } else {
        None
    };
    let sysctl = linux.sysctl().clone().unwrap_or_default();
    for k in sysctl.keys() {
        if k.contains('/') || k.contains("..") || k.is_empty() {
            return Err(bad("linux.sysctl", format!("{k:?} is not a sysctl name")));
        }
    }
    if let Some(p) = linux.rootfs_propagation() {
        if ![
            "",
            "private",
            "rprivate",
            "slave",
            "rslave",
            "shared",
            "rshared",
            "unbindable",
            "runbindable",
        ]
        .contains(&p.as_str())
        {
            return Err(bad(
                "linux.rootfsPropagation",
                format!("unknown value {p:?}"),
            ));
        }
    }
    if let Some(profile) = linux.seccomp() {
        crate::seccomp::compile(profile).map_err(|e| {
            let s = e.to_string();
            bad("linux.seccomp", s.trim_start_matches("linux.seccomp: "))
        })?;
    }
    if linux.mount_label().as_ref().is_some_and(|s| !s.is_empty()) {
        warnings.push("linux.mountLabel: SELinux is not available in the guest; ignored".into());
    }
    if spec.hooks().is_some() {
        warnings.push("hooks: run by the host runtime, not inside the guest; ignored".into());
    }
    let rootfs = RootfsPlan {
        rootfs: rootfs_path,
        mounts,
        propagation: linux.rootfs_propagation().clone(),
        devices: linux.devices().clone().unwrap_or_default(),
        masked_paths: linux.masked_paths().clone().unwrap_or_default(),
        readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
        root_readonly: root.readonly().unwrap_or(false),
        sysctl: sysctl.into_iter().collect(),
    };
    Ok(ValidSpec {
        ns,
        namespaces,
        rootfs,
        process,
        hostname,
        idmaps,
        cgroups_path: linux.cgroups_path().clone(),
        seccomp: linux.seccomp().clone(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_json(extra: &str) -> Spec {
        let base = format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"/"}},
            "process":{{"args":["sh"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
            "linux":{{"namespaces":[{{"type":"mount"}},{{"type":"pid"}}]}}{extra}}}"#
        );
        serde_json::from_str(&base).unwrap()
    }

    #[test]
    fn accepts_minimal_spec() {
        let v = validate(&spec_json(""), None).unwrap();
        assert!(v.ns.new_pid);
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            (r#","hostname":"h""#, "hostname"),
            (
                r#","mounts":[{"destination":"rel","type":"tmpfs"}]"#,
                "mounts[0].destination",
            ),
            (
                r#","mounts":[{"destination":"/a/../../b","type":"tmpfs"}]"#,
                "mounts[0].destination",
            ),
            (
                r#","mounts":[{"destination":"/x","type":"bind","source":"/nonexistent-husk"}]"#,
                "mounts[0].source",
            ),
            (r#","mounts":[{"destination":"/x"}]"#, "mounts[0].type"),
        ];
        for (extra, field) in cases {
            let err = validate(&spec_json(extra), None).unwrap_err();
            assert_eq!(err.field, field, "{extra}: {err}");
        }
        let err = validate(&spec_json(""), Some(Path::new("/nonexistent-rootfs"))).unwrap_err();
        assert_eq!(err.field, "root.path");
        let mut s = spec_json("");
        s.process_mut().as_mut().unwrap().set_args(Some(vec![]));
        assert_eq!(validate(&s, None).unwrap_err().field, "process.args");
    }

    #[test]
    fn user_namespace_needs_mappings() {
        let s: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","root":{"path":"/"},"process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
            "linux":{"namespaces":[{"type":"mount"},{"type":"user"}]}}"#,
        )
        .unwrap();
        assert_eq!(validate(&s, None).unwrap_err().field, "linux.uidMappings");
    }
}
