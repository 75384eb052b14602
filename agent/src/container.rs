//! A container: its validated spec, cgroup, init process and execs, and the lifecycle
//! created -> running <-> paused -> stopped. Creation leaves nothing behind on failure: the
//! stage is killed (its mounts die with its mount namespace) and the cgroup removed.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process as OciProcess};

use crate::cgroup::{Cgroup, CgroupError, CgroupRoot};
use crate::hooks::ContainerHooks;
use crate::namespaces::NamespacePlan;
use crate::process::{ChildStdio, ExtraDir, IoError, PendingExtra, Process, ProcessIo};
use crate::reaper::ExitRegistry;
use crate::spawn::{self, ReadyStage, SpawnError};
use crate::spec::{self, SpecError};
use crate::stage::StageConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    #[error("invalid spec: {0}")]
    BadJson(String),
    #[error("container {id} is {status:?}; cannot {op}")]
    WrongState {
        id: String,
        status: Status,
        op: &'static str,
    },
    #[error("exec {0} already exists")]
    ExecExists(String),
    #[error("no exec {0} in this container")]
    NoExec(String),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("signal {0}: {1}")]
    Signal(u32, nix::errno::Errno),
}

type Result<T> = std::result::Result<T, ContainerError>;

/// Whether a container in `status` can take an exec: runc allows it once the init's
/// namespaces exist (created or running), never into a paused or stopped container, nor a
/// created one whose init stage already died (a signal ends it before start).
fn exec_allowed(status: Status, init_exited: bool) -> bool {
    match status {
        Status::Created => !init_exited,
        Status::Running => true,
        Status::Paused | Status::Stopped => false,
    }
}

/// What containers share: where cgroups go, how to re-exec the agent, who reaps.
pub struct Runtime {
    pub cgroups: CgroupRoot,
    pub exe: CString,
    pub registry: Arc<ExitRegistry>,
}

struct State {
    status: Status,
    pending_start: Option<ReadyStage>,
}

pub struct Container {
    pub id: String,
    namespaces: Vec<oci_spec::runtime::LinuxNamespace>,
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    cgroup: Cgroup,
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    state: Mutex<State>,
    pub warnings: Vec<String>,
}

/// A process' stdio before its stage is ready: pipes now, or for a terminal the pty its stage
/// allocates from the container's own devpts (as runc does), whose master comes back with
/// the ready stage.
enum PendingIo {
    Pipes(ProcessIo),
    Console(PendingExtra),
}

/// The process's stdio and its `extra` fds (3, 4, ...; runc's `--preserve-fds`, relayed by
/// the host through the stream RPCs).
fn io_for(p: &OciProcess, extra: &[ExtraDir]) -> Result<(PendingIo, ChildStdio)> {
    Ok(if p.terminal().unwrap_or(false) {
        let (pending, child) = ProcessIo::console_pending(extra)?;
        (PendingIo::Console(pending), child)
    } else {
        let (io, child) = ProcessIo::pipes_with(extra)?;
        (PendingIo::Pipes(io), child)
    })
}

impl PendingIo {
    /// The agent side of the stdio once `stage` is ready; a stage that sent no console is
    /// killed.
    fn finish(self, stage: &mut ReadyStage) -> Result<ProcessIo> {
        match self {
            PendingIo::Pipes(io) => Ok(io),
            PendingIo::Console(extra) => match stage.console.take() {
                Some(master) => Ok(ProcessIo::console_with(master, extra)?),
                None => {
                    let _ = kill(Pid::from_raw(stage.pid), Signal::SIGKILL);
                    Err(SpawnError::Setup("process.terminal: the stage sent no pty".into()).into())
                }
            },
        }
    }
}

impl Container {
    /// Validates the spec, creates the cgroup and the init stage (which runs the
    /// createContainer hooks; `bundle`, the host's bundle directory, is in their state), and
    /// leaves the container `Created`, its process waiting for `start` (which runs the
    /// startContainer hooks). `init_pid_of` resolves the other containers of the sandbox
    /// whose namespaces the spec may name (`namespaces::CONTAINER_NS_DIR`).
    pub fn create(
        rt: &Runtime,
        id: &str,
        spec_json: &str,
        rootfs: Option<&Path>,
        bundle: &str,
        extra: &[ExtraDir],
        init_pid_of: crate::namespaces::InitPidOf<'_>,
    ) -> Result<Arc<Self>> {
        let (spec, parse_warnings) =
            spec::parse_spec(spec_json).map_err(|e| ContainerError::BadJson(e.to_string()))?;
        let mut v = spec::validate_in(&spec, rootfs, init_pid_of)?;
        v.warnings.splice(0..0, parse_warnings);
        for w in &v.warnings {
            tracing::warn!(container = id, "{w}");
        }
        spec::dedup_env(&mut v.process);
        let cg_path = rt.cgroups.resolve(v.cgroups_path.as_deref(), id)?;
        let cgroup = rt.cgroups.create(&cg_path)?;
        let cleanup = |e: ContainerError| {
            let _ = cgroup.destroy();
            e
        };
        let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
        if let Some(res) = &resources {
            cgroup.apply(res).map_err(|e| cleanup(e.into()))?;
        }
        let (io, child) = io_for(&v.process, extra).map_err(cleanup)?;
        let cfg = StageConfig {
            ns: v.ns.clone(),
            // Without a mount namespace the process shares the guest's filesystem: nothing
            // is mounted and there is no pivot_root (runc's behaviour).
            rootfs: v.ns.new_mount.then(|| v.rootfs.clone()),
            hostname: v.hostname.clone(),
            process: v.process.clone(),
            seccomp: v.seccomp.clone(),
            root_for_users: "/".into(),
            hooks: ContainerHooks::from_spec(&spec, id, bundle),
        };
        let mut stage = spawn::launch(
            &rt.exe,
            &cfg,
            child.raw(),
            &child.extra_raw(),
            &cgroup,
            v.idmaps.as_ref(),
            &rt.registry,
        )
        .map_err(|e| cleanup(e.into()))?;
        drop(child);
        let io = io.finish(&mut stage).map_err(cleanup)?;
        for w in &stage.warnings {
            tracing::warn!(container = id, "{w}");
        }
        let mut warnings = v.warnings;
        warnings.extend(stage.warnings.iter().cloned());
        let init = Process::new("", stage.pid, io, &rt.registry);
        Ok(Arc::new(Container {
            id: id.to_string(),
            namespaces: v.namespaces,
            seccomp: v.seccomp,
            cgroup,
            init,
            execs: Mutex::new(HashMap::new()),
            state: Mutex::new(State {
                status: Status::Created,
                pending_start: Some(stage),
            }),
            warnings,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current status (a finished init makes a running container stopped).
    pub fn status(&self) -> Status {
        let mut st = self.state();
        if st.status != Status::Stopped
            && st.status != Status::Created
            && self.init.exit_status().is_some()
        {
            st.status = Status::Stopped;
        }
        st.status
    }

    fn wrong(&self, status: Status, op: &'static str) -> ContainerError {
        ContainerError::WrongState {
            id: self.id.clone(),
            status,
            op,
        }
    }

    pub fn start(&self) -> Result<()> {
        let stage = {
            let mut st = self.state();
            if st.status != Status::Created {
                return Err(self.wrong(st.status, "start"));
            }
            st.status = Status::Running;
            st.pending_start.take()
        };
        let stage = stage.ok_or_else(|| self.wrong(Status::Created, "start"))?;
        stage
            .start()
            .inspect_err(|_| self.state().status = Status::Stopped)?;
        Ok(())
    }

    /// Runs `process` in the container's namespaces and cgroup. Like runc, a `Created`
    /// container takes execs too: its namespaces exist as soon as the init stage is ready.
    pub fn exec(
        &self,
        rt: &Runtime,
        exec_id: &str,
        process: OciProcess,
        extra: &[ExtraDir],
    ) -> Result<Arc<Process>> {
        let status = self.status();
        if !exec_allowed(status, self.init.exit_status().is_some()) {
            let shown = if status == Status::Created {
                Status::Stopped
            } else {
                status
            };
            return Err(self.wrong(shown, "exec"));
        }
        if exec_id.is_empty()
            || self
                .execs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(exec_id)
        {
            return Err(ContainerError::ExecExists(exec_id.to_string()));
        }
        let mut warnings = Vec::new();
        spec::validate_process(&process, "process", &mut warnings)?;
        let mut process = process;
        spec::dedup_env(&mut process);
        let (io, child) = io_for(&process, extra)?;
        let cfg = StageConfig {
            ns: NamespacePlan::for_exec(&self.namespaces, self.init.pid),
            rootfs: None,
            hostname: None,
            process,
            seccomp: self.seccomp.clone(),
            root_for_users: "/".into(),
            hooks: None,
        };
        let mut stage = spawn::launch(
            &rt.exe,
            &cfg,
            child.raw(),
            &child.extra_raw(),
            &self.cgroup,
            None,
            &rt.registry,
        )?;
        drop(child);
        let io = io.finish(&mut stage)?;
        for w in warnings.iter().chain(&stage.warnings) {
            tracing::warn!(container = %self.id, exec = exec_id, "{w}");
        }
        let pid = stage.pid;
        let proc = Process::new(exec_id, pid, io, &rt.registry);
        stage.start()?;
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(exec_id.to_string(), Arc::clone(&proc));
        Ok(proc)
    }

    /// The init (empty `exec_id`) or an exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(Arc::clone(&self.init));
        }
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ContainerError::NoExec(exec_id.to_string()))
    }

    pub fn signal(&self, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let sig = Signal::try_from(signal as i32).map_err(|e| ContainerError::Signal(signal, e))?;
        if all {
            for pid in self.cgroup.procs()? {
                let _ = kill(Pid::from_raw(pid), sig);
            }
            return Ok(());
        }
        let p = self.process(exec_id)?;
        if p.exit_status().is_some() {
            return Ok(());
        }
        // A created container's init has not exec'd yet: a signal just ends it.
        kill(Pid::from_raw(p.pid), sig).map_err(|e| ContainerError::Signal(signal, e))
    }

    pub fn pause(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Running {
            return Err(self.wrong(status, "pause"));
        }
        self.cgroup.set_frozen(true)?;
        self.state().status = Status::Paused;
        Ok(())
    }

    pub fn resume(&self) -> Result<()> {
        let status = self.status();
        if status != Status::Paused {
            return Err(self.wrong(status, "resume"));
        }
        self.cgroup.set_frozen(false)?;
        self.state().status = Status::Running;
        Ok(())
    }

    pub fn update(&self, res: &LinuxResources) -> Result<()> {
        Ok(self.cgroup.apply(res)?)
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        Ok(self.cgroup.procs()?)
    }

    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// Kills everything left, waits for the init, and removes the cgroup.
    pub fn destroy(&self, timeout: Duration) -> Result<()> {
        if let Some(stage) = self.state().pending_start.take() {
            stage.abort();
        }
        if self.status() == Status::Paused {
            let _ = self.cgroup.set_frozen(false);
        }
        for pid in self.cgroup.procs().unwrap_or_default() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(self.init.pid), Signal::SIGKILL);
        if self.init.wait_timeout(timeout).is_none() {
            tracing::warn!(container = %self.id, "init did not exit after SIGKILL");
        }
        self.state().status = Status::Stopped;
        Ok(self.cgroup.destroy()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_is_allowed_in_created_and_running_only() {
        assert!(exec_allowed(Status::Created, false));
        assert!(
            !exec_allowed(Status::Created, true),
            "init stage died before start"
        );
        assert!(exec_allowed(Status::Running, false));
        assert!(!exec_allowed(Status::Paused, false));
        assert!(!exec_allowed(Status::Stopped, true));
    }
}
