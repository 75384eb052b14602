//! Pod and container descriptions from command-line options: the `PodSandboxConfig`,
//! `ContainerConfig` and `LinuxContainerResources` messages, filled in as kubelet fills them
//! for a plain pod (network and IPC shared by the pod, a PID namespace per container).

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;
use k8s_cri::v1 as cri;

/// The pod: metadata, log directory, cgroup parent, annotations.
#[derive(Args, Clone)]
pub struct PodOpts {
    /// The pod's name (metadata.name); also its hostname.
    #[arg(long)]
    pub pod_name: String,
    /// The pod's namespace (metadata.namespace).
    #[arg(long, default_value = "default")]
    pub pod_namespace: String,
    /// The pod's uid (default: "<pod-name>-uid").
    #[arg(long)]
    pub pod_uid: Option<String>,
    /// The directory of the pod's container logs (log_directory; container log paths are
    /// relative to it).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// The pod's cgroup parent (kubelet's cgroupfs driver gives e.g. /kubepods/pod<uid>).
    #[arg(long)]
    pub cgroup_parent: Option<String>,
    /// A pod annotation KEY=VALUE (repeatable).
    #[arg(long = "pod-annotation", value_parser = key_value)]
    pub annotations: Vec<(String, String)>,
}

/// A container of the pod.
#[derive(Args, Clone)]
pub struct ContainerOpts {
    /// The container's name (metadata.name).
    #[arg(long)]
    pub name: String,
    /// The image reference (already in the daemon's image store).
    #[arg(long)]
    pub image: String,
    /// The log file, relative to the pod's --log-dir (default: "<name>.log").
    #[arg(long)]
    pub log_path: Option<String>,
    /// An environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = key_value)]
    pub envs: Vec<(String, String)>,
    #[command(flatten)]
    pub resources: ResourceOpts,
    /// The command and its arguments (the image's entrypoint when empty).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Linux resources of a container (CreateContainer and UpdateContainerResources).
#[derive(Args, Clone, Default)]
pub struct ResourceOpts {
    /// memory.max in bytes (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub memory: i64,
    /// CPU CFS quota in microseconds per period (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub cpu_quota: i64,
    /// CPU CFS period in microseconds (0: the default).
    #[arg(long, default_value_t = 0)]
    pub cpu_period: i64,
    /// CPU shares (0: the default).
    #[arg(long, default_value_t = 0)]
    pub cpu_shares: i64,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE"))
}

/// Kubelet's defaults for a pod's namespaces: network and IPC of the pod, PID per container.
fn namespace_options() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

impl PodOpts {
    fn uid(&self) -> String {
        self.pod_uid
            .clone()
            .unwrap_or_else(|| format!("{}-uid", self.pod_name))
    }

    /// The PodSandboxConfig of RunPodSandbox and CreateContainer.
    pub fn sandbox_config(&self) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.pod_name.clone(),
                uid: self.uid(),
                namespace: self.pod_namespace.clone(),
                attempt: 0,
            }),
            hostname: self.pod_name.clone(),
            log_directory: self
                .log_dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            annotations: self.annotations.iter().cloned().collect::<HashMap<_, _>>(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone().unwrap_or_default(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespace_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl ContainerOpts {
    /// The ContainerConfig of CreateContainer.
    pub fn config(&self) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: self.name.clone(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: self.command.clone(),
            envs: self
                .envs
                .iter()
                .map(|(key, value)| cri::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            log_path: self
                .log_path
                .clone()
                .unwrap_or_else(|| format!("{}.log", self.name)),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(self.resources.linux()),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(namespace_options()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }
}

impl ResourceOpts {
    pub fn linux(&self) -> cri::LinuxContainerResources {
        cri::LinuxContainerResources {
            memory_limit_in_bytes: self.memory,
            cpu_quota: self.cpu_quota,
            cpu_period: self.cpu_period,
            cpu_shares: self.cpu_shares,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodOpts {
        PodOpts {
            pod_name: "p1".into(),
            pod_namespace: "default".into(),
            pod_uid: None,
            log_dir: Some("/tmp/logs/p1".into()),
            cgroup_parent: Some("/kubepods/podp1".into()),
            annotations: vec![("a".into(), "b".into())],
        }
    }

    #[test]
    fn sandbox_config_is_kubelets_shape() {
        let c = pod().sandbox_config();
        let m = c.metadata.unwrap();
        assert_eq!((m.name.as_str(), m.uid.as_str()), ("p1", "p1-uid"));
        assert_eq!(c.log_directory, "/tmp/logs/p1");
        assert_eq!(c.annotations.get("a").map(String::as_str), Some("b"));
        let linux = c.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods/podp1");
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
    }

    #[test]
    fn container_log_path_defaults_to_its_name() {
        let c = ContainerOpts {
            name: "web".into(),
            image: "localhost/busybox:1".into(),
            log_path: None,
            envs: vec![("K".into(), "V".into())],
            resources: ResourceOpts {
                memory: 64 << 20,
                ..Default::default()
            },
            command: vec!["httpd".into(), "-f".into()],
        }
        .config();
        assert_eq!(c.log_path, "web.log");
        assert_eq!(c.envs[0].key, "K");
        assert_eq!(
            c.linux.unwrap().resources.unwrap().memory_limit_in_bytes,
            64 << 20
        );
    }

    #[test]
    fn key_value_needs_an_equals_sign() {
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(key_value("ab").is_err());
    }
}
