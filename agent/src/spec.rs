//! Validating an OCI runtime spec and turning it into what container creation needs.
//! Every rejection names the spec field; unsupported-but-harmless fields produce warnings.
//! Pure: reads only the rootfs' existence.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespace, Process, Spec};

use crate::caps::CapMasks;
use crate::mounts::{join_rootfs, RootfsPlan};
use crate::namespaces::{NamespaceError, NamespacePlan};
use crate::spawn::IdMaps;
use crate::syscall::CloneFlags;

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

/// Parses CreateContainer's spec. Unknown capability names are dropped, returned as warnings
/// (runc warns and ignores them).
pub fn parse_spec(json: &str) -> Result<(Spec, Vec<String>), serde_json::Error> {
    let mut v: serde_json::Value = serde_json::from_str(json)?;
    let warnings = match v.get_mut("process") {
        Some(p) => crate::caps::drop_unknown(p, "process"),
        None => Vec::new(),
    };
    Ok((serde_json::from_value(v)?, warnings))
}

/// Parses an exec's process, logging and dropping unknown capability names (as runc does).
pub fn parse_process(json: &str) -> Result<Process, serde_json::Error> {
    let mut v: serde_json::Value = serde_json::from_str(json)?;
    for w in crate::caps::drop_unknown(&mut v, "process") {
        tracing::warn!("{w}");
    }
    serde_json::from_value(v)
}

/// Keeps the last value of a variable given more than once (the spec's, then `exec --env`'s),
/// as runc's environment preparation does; each kept where its last value was.
pub fn dedup_env(p: &mut Process) {
    let Some(env) = p.env().clone() else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = env
        .into_iter()
        .rev()
        .filter(|e| seen.insert(e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_string()))
        .collect();
    out.reverse();
    p.set_env(Some(out));
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

/// The sysctls of a namespace the container does not have its own of would change the
/// guest's, which every container of the sandbox shares: refused, as runc refuses them in the
/// host's. (Sysctls of no namespace at all, which runc also refuses, are the VM's own here and
/// allowed.)
fn check_sysctl_namespace(key: &str, ns: &NamespacePlan, hostname: bool) -> Result<(), SpecError> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let conflict = |what: &str| {
        bad(
            "linux.sysctl",
            format!(
                "sysctl {key:?} is not allowed as it conflicts with the OCI {what:?} \
                 namespace setting (linux.namespaces has no {what} namespace of its own)"
            ),
        )
    };
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        if !ns.new_ipc && !ns.joins(CloneFlags::CLONE_NEWIPC) {
            return Err(conflict("ipc"));
        }
    } else if key.starts_with("net.") {
        if !ns.new_net && !ns.sandbox_net && !ns.joins(CloneFlags::CLONE_NEWNET) {
            return Err(conflict("network"));
        }
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        if !ns.new_uts && !ns.joins(CloneFlags::CLONE_NEWUTS) {
            return Err(conflict("uts"));
        }
        if key == "kernel.hostname" && hostname {
            return Err(bad(
                "linux.sysctl",
                format!(
                    "sysctl {key:?} is not allowed as it conflicts with the OCI \"hostname\" field"
                ),
            ));
        }
    }
    Ok(())
}

/// Validates `spec`. `rootfs` overrides a relative `root.path` (the bundle is on the host).
pub fn validate(spec: &Spec, rootfs: Option<&Path>) -> Result<ValidSpec, SpecError> {
    validate_in(spec, rootfs, &|_| None)
}

/// [`validate`] in a sandbox whose other containers' namespaces the spec may name
/// (`namespaces::CONTAINER_NS_DIR` paths, resolved through `init_pid_of`).
pub fn validate_in(
    spec: &Spec,
    rootfs: Option<&Path>,
    init_pid_of: crate::namespaces::InitPidOf<'_>,
) -> Result<ValidSpec, SpecError> {
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
    let ns = NamespacePlan::for_create_in(&namespaces, init_pid_of)?;

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
    if hostname.is_some() && !ns.new_uts && !ns.joins(CloneFlags::CLONE_NEWUTS) {
        // runc's rule and text.
        return Err(bad(
            "hostname",
            "unable to set hostname without a private UTS namespace",
        ));
    }
    let masked_paths = linux.masked_paths().clone().unwrap_or_default();
    let readonly_paths = linux.readonly_paths().clone().unwrap_or_default();
    if !ns.new_mount {
        for (f, list) in [
            ("linux.maskedPaths", &masked_paths),
            ("linux.readonlyPaths", &readonly_paths),
        ] {
            if !list.is_empty() {
                return Err(bad(
                    f,
                    "unable to restrict sys entries without a private MNT namespace",
                ));
            }
        }
        // runc does no filesystem setup without a mount namespace; what would need one is
        // ignored, as there, but said.
        if !mounts.is_empty() {
            warnings.push(
                "mounts: ignored without a mount namespace (the process shares the guest's)".into(),
            );
        }
        if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
            warnings.push("linux.devices: ignored without a mount namespace".into());
        }
        if root.readonly().unwrap_or(false) {
            warnings.push("root.readonly: ignored without a mount namespace".into());
        }
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
        check_sysctl_namespace(k, &ns, hostname.is_some())?;
    }
    if !sysctl.is_empty() && !ns.new_mount {
        // The stage writes them through the container's own /proc, set up with its mounts.
        return Err(bad(
            "linux.sysctl",
            "husk applies sysctls only in a container with its own mount namespace",
        ));
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
    // createContainer/startContainer run here (`hooks`); the runtime-namespace kinds are the
    // host runtime's.
    if let Some(h) = spec.hooks() {
        let host = [
            h.prestart(),
            h.create_runtime(),
            h.poststart(),
            h.poststop(),
        ];
        if host
            .iter()
            .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
        {
            warnings.push(
                "hooks: prestart, createRuntime, poststart and poststop are run by the host \
                 runtime, not inside the guest; ignored"
                    .into(),
            );
        }
    }
    let rootfs = RootfsPlan {
        rootfs: rootfs_path,
        mounts,
        propagation: linux.rootfs_propagation().clone(),
        devices: linux.devices().clone().unwrap_or_default(),
        masked_paths,
        readonly_paths,
        root_readonly: root.readonly().unwrap_or(false),
        sysctl: sysctl.into_iter().collect(),
        cgroup2_mount: crate::cgroup::find_cgroup2_mount(),
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

    fn with_namespaces(types: &[&str], extra: &str) -> Spec {
        let ns: Vec<String> = types
            .iter()
            .map(|t| format!(r#"{{"type":"{t}"}}"#))
            .collect();
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"/"}},
            "process":{{"args":["sh"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
            "linux":{{"namespaces":[{}]{extra}}}}}"#,
            ns.join(",")
        ))
        .unwrap()
    }

    #[test]
    fn sysctls_of_a_shared_namespace_are_refused_like_runc() {
        let all = ["mount", "ipc", "network", "uts"];
        for (key, missing) in [
            ("kernel.shmmax", "ipc"),
            ("kernel.sem", "ipc"),
            ("fs.mqueue.queues_max", "ipc"),
            ("net.core.somaxconn", "network"),
            ("kernel.hostname", "uts"),
            ("kernel.domainname", "uts"),
        ] {
            let sysctl = format!(r#","sysctl":{{"{key}":"1"}}"#);
            let ok = validate(&with_namespaces(&all, &sysctl), None);
            if key != "kernel.hostname" {
                assert!(ok.is_ok(), "{key}: {ok:?}");
            }
            let some: Vec<&str> = all.iter().copied().filter(|t| *t != missing).collect();
            let err = validate(&with_namespaces(&some, &sysctl), None).unwrap_err();
            assert_eq!(err.field, "linux.sysctl", "{key}");
            let ns = if missing == "network" {
                "network"
            } else {
                missing
            };
            assert!(
                err.reason.contains(&format!(
                    "sysctl \"{key}\" is not allowed as it conflicts with the OCI \"{ns}\" namespace"
                )),
                "{err}"
            );
        }
        // The sandbox's network namespace (the caller's, wired into the guest) is the
        // container's as runc would join it: its net.* sysctls are allowed (podman's default
        // net.ipv4.ping_group_range on a bridge network).
        let sandbox: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","root":{"path":"/"},
            "process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
            "linux":{"namespaces":[{"type":"mount"},{"type":"network","path":"/proc/1/ns/net"}],
            "sysctl":{"net.ipv4.ping_group_range":"0 0"}}}"#,
        )
        .unwrap();
        let v = validate(&sandbox, None).unwrap();
        assert!(v.ns.sandbox_net && !v.ns.new_net);
        // Another container's namespaces, joined (a pod): its own as runc counts them, so
        // their sysctls and a hostname are allowed (runc allows them in a joined namespace).
        let pod: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","root":{"path":"/"},"hostname":"h",
            "process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
            "linux":{"namespaces":[{"type":"mount"},
                {"type":"ipc","path":"/run/husk/containers/sb/ns/ipc"},
                {"type":"uts","path":"/run/husk/containers/sb/ns/uts"},
                {"type":"network","path":"/run/husk/containers/sb/ns/net"}],
            "sysctl":{"kernel.shmmax":"1","net.core.somaxconn":"1"}}}"#,
        )
        .unwrap();
        let v = validate_in(&pod, None, &|id| (id == "sb").then_some(7)).unwrap();
        assert_eq!(v.ns.join.len(), 3);
        assert!(v.ns.joins(CloneFlags::CLONE_NEWUTS) && !v.ns.new_uts);
        let err = validate(&pod, None).unwrap_err();
        assert_eq!(err.field, "linux.namespaces[1].path", "{err}");
        // The VM's own, not any container's: allowed (runc refuses them on a shared host).
        assert!(validate(
            &with_namespaces(&["mount"], r#","sysctl":{"vm.swappiness":"1"}"#),
            None
        )
        .is_ok());
        // kernel.hostname conflicts with the hostname field.
        let mut s = with_namespaces(&all, r#","sysctl":{"kernel.hostname":"x"}"#);
        s.set_hostname(Some("h".into()));
        assert!(validate(&s, None)
            .unwrap_err()
            .reason
            .contains("\"hostname\" field"));
    }

    #[test]
    fn without_a_mount_namespace_runc_rules_apply() {
        let v = validate(
            &with_namespaces(
                &["pid"],
                r#","devices":[{"path":"/dev/fuse","type":"c","major":10,"minor":229}]"#,
            ),
            None,
        )
        .unwrap();
        assert!(!v.ns.new_mount);
        assert!(
            v.warnings.iter().any(|w| w.starts_with("linux.devices")),
            "{:?}",
            v.warnings
        );
        for f in ["maskedPaths", "readonlyPaths"] {
            let err = validate(
                &with_namespaces(&["pid"], &format!(r#","{f}":["/proc/kcore"]"#)),
                None,
            )
            .unwrap_err();
            assert_eq!(err.field, format!("linux.{f}"));
            assert_eq!(
                err.reason,
                "unable to restrict sys entries without a private MNT namespace"
            );
        }
        let err = validate(
            &with_namespaces(&["pid"], r#","sysctl":{"vm.swappiness":"1"}"#),
            None,
        )
        .unwrap_err();
        assert_eq!(err.field, "linux.sysctl");
    }

    #[test]
    fn hostname_without_uts_uses_runcs_text() {
        let err = validate(&spec_json(r#","hostname":"h""#), None).unwrap_err();
        assert_eq!(err.field, "hostname");
        assert_eq!(
            err.reason,
            "unable to set hostname without a private UTS namespace"
        );
    }

    #[test]
    fn unknown_capabilities_parse_with_warnings_and_env_keeps_the_last() {
        let (s, w) = parse_spec(
            r#"{"ociVersion":"1.0.2","root":{"path":"/"},
            "process":{"args":["sh"],"cwd":"/","env":["A=1","B=2","A=3"],"user":{"uid":0,"gid":0},
              "capabilities":{"bounding":["CAP_KILL","CAP_FUTURE"]}},
            "linux":{}}"#,
        )
        .unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("CAP_FUTURE"));
        let mut p = s.process().clone().unwrap();
        dedup_env(&mut p);
        assert_eq!(p.env().clone().unwrap(), ["B=2", "A=3"]);
        let p = parse_process(r#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0},"capabilities":{"effective":["NOPE"]}}"#)
            .unwrap();
        assert!(p
            .capabilities()
            .as_ref()
            .unwrap()
            .effective()
            .as_ref()
            .unwrap()
            .is_empty());
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
