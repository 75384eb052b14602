//! The spec the agent gets for a pod container: namespace paths CRI gives as the sandbox
//! container's mapped to paths the agent can join, and the hooks the host runs taken out.
//! Pure (no I/O), apart from `mod.rs` so that the runtime's fuzz crate, which compiles
//! `server.rs` by path, can compile it too.
//!
//! Owns: the mapping of `/proc/<sandbox pid>/ns/<name>` in a pod container's spec.

use std::path::Path;

use husk_agent::namespaces::SANDBOX_NET;

/// The host ran (or will run) the runtime-namespace hooks; the agent runs the
/// container-namespace ones (createContainer, startContainer).
pub fn strip_runtime_hooks(spec: &mut serde_json::Value) {
    if let Some(h) = spec.get_mut("hooks").and_then(|h| h.as_object_mut()) {
        for k in ["prestart", "createRuntime", "poststart", "poststop"] {
            h.remove(k);
        }
    }
}

/// The `/proc/<pid>/ns` file name of an OCI namespace type.
fn ns_proc_name(oci_type: &str) -> Option<&'static str> {
    Some(match oci_type {
        "network" => "net",
        "mount" => "mnt",
        "ipc" => "ipc",
        "uts" => "uts",
        "pid" => "pid",
        "user" => "user",
        "cgroup" => "cgroup",
        "time" => "time",
        _ => return None,
    })
}

/// The spec the agent gets for a pod container (`add_container`): its rootfs at
/// `guest_root`, the runtime-namespace hooks left to the host, and its namespace paths that
/// name the sandbox container's (`/proc/<sandbox_pid>/ns/<name>`, as CRI gives them: the
/// sandbox container's pid is the supervisor's) mapped to the agent's name for them,
/// `CONTAINER_NS_DIR/<sandbox_id>/ns/<name>`. The network namespace, where the sandbox's
/// network was wired from `wired_netns`, becomes [`network::SANDBOX_NET`] (for that
/// `/proc` path and for the wired path itself), as for the sandbox container. Any other path
/// stays, for the agent to refuse.
pub fn pod_spec(
    spec: &mut serde_json::Value,
    guest_root: &str,
    sandbox_pid: u32,
    sandbox_id: &str,
    wired_netns: Option<&Path>,
) {
    spec["root"]["path"] = guest_root.into();
    strip_runtime_hooks(spec);
    let Some(nss) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return;
    };
    let proc_dir = format!("/proc/{sandbox_pid}/ns");
    for ns in nss.iter_mut() {
        let (Some(t), Some(path)) = (ns["type"].as_str(), ns["path"].as_str()) else {
            continue;
        };
        let Some(name) = ns_proc_name(t) else {
            continue;
        };
        let sandbox_path = Path::new(path) == Path::new(&proc_dir).join(name);
        let mapped = if t == "network"
            && wired_netns.is_some_and(|w| sandbox_path || Path::new(path) == w)
        {
            SANDBOX_NET.to_string()
        } else if sandbox_path {
            format!(
                "{}/{sandbox_id}/ns/{name}",
                husk_agent::namespaces::CONTAINER_NS_DIR
            )
        } else {
            continue;
        };
        ns["path"] = mapped.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pod container's spec as containerd's CRI makes it: the sandbox container's
    /// namespaces as `/proc/<its pid>/ns/<name>`.
    fn cri_spec(pid: u32) -> serde_json::Value {
        json!({
            "root": {"path": "rootfs"},
            "hooks": {"prestart": [{"path": "/x"}], "createContainer": [{"path": "/y"}]},
            "linux": {"namespaces": [
                {"type": "mount"},
                {"type": "network", "path": format!("/proc/{pid}/ns/net")},
                {"type": "ipc", "path": format!("/proc/{pid}/ns/ipc")},
                {"type": "uts", "path": format!("/proc/{pid}/ns/uts")},
                {"type": "pid", "path": format!("/proc/{pid}/ns/pid")},
                {"type": "cgroup", "path": "/proc/999/ns/cgroup"}
            ]}
        })
    }

    #[test]
    fn a_pod_container_gets_the_sandbox_containers_namespaces() {
        let dir = husk_agent::namespaces::CONTAINER_NS_DIR;
        // Not wired (the sandbox has a namespace of its own in the guest): every namespace,
        // the network's too, is the sandbox container's.
        let mut spec = cri_spec(77);
        pod_spec(&mut spec, "/run/husk/share/c2/rootfs", 77, "sb", None);
        assert_eq!(spec["root"]["path"], "/run/husk/share/c2/rootfs");
        assert_eq!(spec["hooks"], json!({"createContainer": [{"path": "/y"}]}));
        assert_eq!(
            spec["linux"]["namespaces"],
            json!([
                {"type": "mount"},
                {"type": "network", "path": format!("{dir}/sb/ns/net")},
                {"type": "ipc", "path": format!("{dir}/sb/ns/ipc")},
                {"type": "uts", "path": format!("{dir}/sb/ns/uts")},
                {"type": "pid", "path": format!("{dir}/sb/ns/pid")},
                // Not the sandbox's: left for the agent to refuse.
                {"type": "cgroup", "path": "/proc/999/ns/cgroup"}
            ])
        );
        // Wired: the network is the sandbox's (the guest's, where the NICs are), given as
        // the sandbox's /proc path or as the wired namespace itself.
        let wired = Path::new("/var/run/netns/cni-1");
        let mut spec = cri_spec(77);
        pod_spec(&mut spec, "/r", 77, "sb", Some(wired));
        assert_eq!(
            spec["linux"]["namespaces"][1],
            json!({"type": "network", "path": SANDBOX_NET})
        );
        assert_eq!(
            spec["linux"]["namespaces"][2]["path"],
            format!("{dir}/sb/ns/ipc")
        );
        let mut spec = json!({"linux": {"namespaces": [
            {"type": "network", "path": "/var/run/netns/cni-1"},
            {"type": "ipc", "path": "/proc/78/ns/ipc"}
        ]}});
        pod_spec(&mut spec, "/r", 77, "sb", Some(wired));
        assert_eq!(spec["linux"]["namespaces"][0]["path"], SANDBOX_NET);
        assert_eq!(
            spec["linux"]["namespaces"][1]["path"], "/proc/78/ns/ipc",
            "another process's namespace is not the sandbox's"
        );
        // Another netns than the wired one stays (the agent refuses it).
        let mut spec = json!({"linux": {"namespaces": [
            {"type": "network", "path": "/var/run/netns/other"}
        ]}});
        pod_spec(&mut spec, "/r", 77, "sb", Some(wired));
        assert_eq!(
            spec["linux"]["namespaces"][0]["path"],
            "/var/run/netns/other"
        );
        // A spec without namespaces or hooks is fine.
        let mut spec = json!({});
        pod_spec(&mut spec, "/r", 77, "sb", None);
        assert_eq!(spec, json!({"root": {"path": "/r"}}));
    }
}
