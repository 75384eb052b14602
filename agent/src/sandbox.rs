//! The sandbox: the set of containers in this guest (or this host-mode agent) plus
//! guest-wide operations (hostname, DNS, guest details). The RPC layer
//! calls only this; it never touches processes or cgroups itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::container::{Container, ContainerError, Runtime};
use crate::oom::OomEvents;
use crate::process::ExtraDir;
use crate::storage::{self, Driver, Mounted, Storage, StorageError};
use crate::syscall::linux::LinuxSyscall;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("container {0} not found")]
    NotFound(String),
    #[error("container {0} already exists")]
    Exists(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, SandboxError>;

fn invalid(field: &'static str, reason: impl ToString) -> SandboxError {
    SandboxError::Invalid {
        field,
        reason: reason.to_string(),
    }
}

/// Guest-wide settings chosen at start-up.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    /// Host mode: the agent is not the guest's PID 1 and must not change guest-wide state
    /// such as the hostname or /etc/resolv.conf.
    pub host_mode: bool,
    /// Where virtio-blk disks are looked up by serial (`/sys/block`).
    pub sys_block: PathBuf,
    /// Private directories for storage overlays (`/run/husk/storage`).
    pub storage_scratch: PathBuf,
}

pub struct Sandbox {
    rt: Runtime,
    cfg: SandboxConfig,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Storages of the sandbox (CreateSandbox), unmounted at shutdown.
    storages: Mutex<Vec<Mounted>>,
    /// Storages of each container (CreateContainer), unmounted when it is removed.
    container_storages: Mutex<HashMap<String, Vec<Mounted>>>,
    next_scratch: std::sync::atomic::AtomicU64,
    /// OOM kills not yet reported through GetOomEvent.
    oom: Arc<OomEvents>,
}

fn valid_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 256
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "container_id",
            format!("{id:?} must be 1-256 of [A-Za-z0-9_.-]"),
        ))
    }
}

impl Sandbox {
    pub fn new(rt: Runtime, cfg: SandboxConfig) -> Self {
        Sandbox {
            rt,
            cfg,
            containers: Mutex::new(HashMap::new()),
            storages: Mutex::new(Vec::new()),
            container_storages: Mutex::new(HashMap::new()),
            next_scratch: std::sync::atomic::AtomicU64::new(0),
            oom: OomEvents::new(),
        }
    }

    /// Mounts `list` in order (`what` names the request field in errors). All or nothing: on
    /// a failure the ones already mounted are unmounted.
    fn mount_storages(&self, what: &str, list: &[Storage]) -> Result<Vec<Mounted>> {
        let sys = LinuxSyscall;
        let mut done: Vec<Mounted> = Vec::new();
        let undo = |done: &[Mounted]| {
            for m in done.iter().rev() {
                storage::unmount(&sys, m);
            }
        };
        for (i, st) in list.iter().enumerate() {
            let field = format!("{what}[{i}]");
            let device = match &st.driver {
                Driver::VirtioBlk { serial } => {
                    let dev = storage::find_disk_by_serial(
                        &self.cfg.sys_block,
                        serial,
                        Duration::from_secs(2),
                    );
                    match dev {
                        Some(d) => Some(d),
                        None => {
                            undo(&done);
                            return Err(StorageError::NoDisk {
                                field: format!("{field}.source"),
                                serial: serial.clone(),
                                sys_block: self.cfg.sys_block.clone(),
                            }
                            .into());
                        }
                    }
                }
                _ => None,
            };
            let n = self
                .next_scratch
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let scratch = self.cfg.storage_scratch.join(n.to_string());
            match storage::mount(&sys, &field, st, device.as_deref(), &scratch) {
                Ok(m) => {
                    tracing::info!(
                        mount_point = %st.mount_point.display(),
                        device = ?device,
                        fstype = %st.fstype,
                        overlay = st.overlay,
                        "{field} mounted"
                    );
                    done.push(m);
                }
                Err(e) => {
                    undo(&done);
                    return Err(e.into());
                }
            }
        }
        Ok(done)
    }

    /// Mounts the sandbox's storages (CreateSandbox); they stay until shutdown.
    pub fn add_storages(&self, list: &[Storage]) -> Result<()> {
        let mounted = self.mount_storages("storages", list)?;
        self.storages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(mounted);
        Ok(())
    }

    /// Unmounts the sandbox's storages (shutdown), last mounted first.
    pub fn remove_storages(&self) {
        let all: Vec<_> =
            std::mem::take(&mut *self.storages.lock().unwrap_or_else(|e| e.into_inner()));
        for m in all.iter().rev() {
            storage::unmount(&LinuxSyscall, m);
        }
    }

    fn release_container_storages(&self, id: &str) {
        let list = self
            .container_storages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        for m in list.unwrap_or_default().iter().rev() {
            storage::unmount(&LinuxSyscall, m);
        }
    }

    pub fn oom_events(&self) -> &OomEvents {
        &self.oom
    }

    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    pub fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| SandboxError::NotFound(id.to_string()))
    }

    /// The init pid of container `id` while its init has not exited: its namespaces are what
    /// a later container of the pod may join (`namespaces::CONTAINER_NS_DIR`).
    pub fn running_init_pid(&self, id: &str) -> Option<i32> {
        let c = self.container(id).ok()?;
        c.init.exit_status().is_none().then_some(c.init.pid)
    }

    pub fn setup(&self, hostname: &str, dns: &[String]) -> Result<()> {
        if self.cfg.host_mode {
            tracing::info!("host mode: not changing hostname or resolv.conf");
            return Ok(());
        }
        if !hostname.is_empty() {
            nix::unistd::sethostname(hostname).map_err(|e| invalid("hostname", e))?;
        }
        if !dns.is_empty() {
            let text: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
            let path = Path::new("/etc/resolv.conf");
            std::fs::create_dir_all("/etc").map_err(|source| SandboxError::Io {
                path: "/etc".into(),
                source,
            })?;
            std::fs::write(path, text).map_err(|source| SandboxError::Io {
                path: path.into(),
                source,
            })?;
        }
        Ok(())
    }

    /// Mounts the container's storages, then creates it; on failure the storages are
    /// unmounted again.
    pub fn create_container(
        &self,
        id: &str,
        spec_json: &str,
        storages: &[Storage],
        rootfs: Option<&Path>,
        bundle: &str,
        extra: &[ExtraDir],
    ) -> Result<()> {
        valid_id(id)?;
        if self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
        {
            return Err(SandboxError::Exists(id.into()));
        }
        let mounted = self.mount_storages("storages", storages)?;
        let result = self.create_container_inner(id, spec_json, rootfs, bundle, extra);
        match result {
            Ok(()) => {
                self.container_storages
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.to_string(), mounted);
                Ok(())
            }
            Err(e) => {
                for m in mounted.iter().rev() {
                    storage::unmount(&LinuxSyscall, m);
                }
                Err(e)
            }
        }
    }

    fn create_container_inner(
        &self,
        id: &str,
        spec_json: &str,
        rootfs: Option<&Path>,
        bundle: &str,
        extra: &[ExtraDir],
    ) -> Result<()> {
        // Reserve the id first so concurrent creates of one id cannot both proceed.
        if self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
        {
            return Err(SandboxError::Exists(id.into()));
        }
        let init_pid_of = |cid: &str| self.running_init_pid(cid);
        let c = Container::create(&self.rt, id, spec_json, rootfs, bundle, extra, &init_pid_of)?;
        let events = c.cgroup().path().join("memory.events");
        if !self.oom.watch(id, events) {
            tracing::debug!(container = id, "no memory.events: no OOM events for it");
        }
        let mut map = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(id) {
            drop(map);
            let _ = c.destroy(Duration::from_secs(5));
            return Err(SandboxError::Exists(id.into()));
        }
        map.insert(id.to_string(), c);
        Ok(())
    }

    pub fn remove_container(&self, id: &str, timeout: Duration) -> Result<()> {
        let c = self.container(id)?;
        c.destroy(timeout)?;
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.release_container_storages(id);
        Ok(())
    }

    /// Removes every container (DestroySandbox, shutdown).
    pub fn remove_all(&self) {
        let all: Vec<_> = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (id, c) in all {
            if let Err(e) = c.destroy(Duration::from_secs(5)) {
                tracing::warn!(container = %id, "destroy: {e}");
            }
            self.release_container_storages(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_checked() {
        assert!(valid_id("abc-1.2_x").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            let e = valid_id(bad).unwrap_err().to_string();
            assert!(e.starts_with("container_id"), "{e}");
        }
    }
}
