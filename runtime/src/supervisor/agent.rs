//! `AgentClient`: the supervisor's typed handle on the guest agent, reached through the VMM's
//! hybrid vsock Unix socket (`CONNECT 1024\n` → `OK <port>\n`, then ttrpc), or directly over a
//! Unix socket for a host-mode agent (`HUSK_DEV_AGENT=unix:/path`, tests without KVM).
//!
//! Owns: connecting and one method per RPC the runtime uses; errors keep the ttrpc code.

use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use husk_agent::protocol::{self as pb, AgentServiceClient};
use ttrpc::context::{self, Context};

use super::stdio::Direction;

/// The agent's extra-fd list for `dirs` (fds 3, 4, ...).
fn extra_fds(dirs: &[Direction]) -> Vec<pb::ExtraFd> {
    dirs.iter()
        .enumerate()
        .map(|(i, d)| pb::ExtraFd {
            fd: 3 + i as u32,
            direction: match d {
                Direction::In => pb::FdDirection::FD_DIRECTION_IN,
                Direction::Out => pb::FdDirection::FD_DIRECTION_OUT,
                Direction::Both => pb::FdDirection::FD_DIRECTION_BOTH,
                Direction::Listen => pb::FdDirection::FD_DIRECTION_LISTEN,
            }
            .into(),
            ..Default::default()
        })
        .collect()
}

/// The agent's vsock port.
pub const AGENT_PORT: u32 = 1024;

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Could not reach the agent.
    #[error("connecting to the agent at {path}: {message}")]
    Connect {
        /// Socket.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The agent answered with an error status.
    #[error("{message}")]
    Rpc {
        /// ttrpc code.
        code: ttrpc::Code,
        /// The agent's message (starts with the field at fault for INVALID_ARGUMENT).
        message: String,
    },
    /// Transport failure.
    #[error("agent connection: {0}")]
    Transport(String),
}

impl From<ttrpc::Error> for AgentError {
    fn from(e: ttrpc::Error) -> Self {
        match e {
            ttrpc::Error::RpcStatus(s) => AgentError::Rpc {
                code: s.code(),
                message: s.message().to_string(),
            },
            other => AgentError::Transport(other.to_string()),
        }
    }
}

/// Where the agent is.
#[derive(Debug, Clone)]
pub enum AgentAddr {
    /// The VMM's hybrid vsock socket.
    HybridVsock(PathBuf),
    /// A host-mode agent's Unix socket.
    Unix(PathBuf),
}

impl AgentAddr {
    fn path(&self) -> &Path {
        match self {
            AgentAddr::HybridVsock(p) | AgentAddr::Unix(p) => p,
        }
    }

    /// One connected stream to the agent.
    fn stream(&self) -> Result<UnixStream, String> {
        let mut s = crate::sockpath::connect(self.path()).map_err(|e| e.to_string())?;
        if let AgentAddr::HybridVsock(_) = self {
            husk_agent::client::hybrid_vsock_connect(&mut s, AGENT_PORT, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
        }
        Ok(s)
    }
}

/// A ttrpc client on one connection to the agent.
#[derive(Clone)]
pub struct AgentClient {
    addr: AgentAddr,
    inner: AgentServiceClient,
}

/// No deadline: for calls that block by design (waits, stream reads, OOM events) and the
/// create path, which has the boot timeout around it.
fn ctx() -> Context {
    context::with_timeout(0)
}

/// Longest a teardown RPC (DestroySandbox, RemoveContainer, SignalProcess) may take: a
/// guest that never answers must not keep the supervisor, and so the VM, alive.
pub const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);

fn within(limit: Duration) -> Context {
    context::with_timeout(i64::try_from(limit.as_nanos()).unwrap_or(i64::MAX))
}

impl AgentClient {
    /// Connects once.
    pub fn connect(addr: &AgentAddr) -> Result<AgentClient, AgentError> {
        let err = |message: String| AgentError::Connect {
            path: addr.path().to_path_buf(),
            message,
        };
        let stream = addr.stream().map_err(err)?;
        let client = ttrpc::Client::new(stream.into_raw_fd()).map_err(|e| err(e.to_string()))?;
        Ok(AgentClient {
            addr: addr.clone(),
            inner: AgentServiceClient::new(client),
        })
    }

    /// Connects, retrying until the agent answers `GetGuestDetails`, `deadline` passes or
    /// `give_up` says the guest is gone.
    pub fn wait_ready(
        addr: &AgentAddr,
        deadline: Instant,
        give_up: impl Fn() -> Option<String>,
    ) -> Result<(AgentClient, pb::GuestDetailsResponse), AgentError> {
        let mut last = String::from("no attempt");
        loop {
            if let Some(why) = give_up() {
                return Err(AgentError::Connect {
                    path: addr.path().to_path_buf(),
                    message: why,
                });
            }
            if addr.path().exists() {
                match AgentClient::connect(addr) {
                    Ok(c) => match c.inner.get_guest_details(ctx(), &pb::Empty::new()) {
                        Ok(d) => return Ok((c, d)),
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() > deadline {
                return Err(AgentError::Connect {
                    path: addr.path().to_path_buf(),
                    message: format!("agent not ready in time ({last})"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A second connection (for calls that block: stream reads, waits).
    pub fn another(&self) -> Result<AgentClient, AgentError> {
        AgentClient::connect(&self.addr)
    }

    /// CreateSandbox.
    pub fn create_sandbox(
        &self,
        id: &str,
        hostname: &str,
        storages: Vec<pb::Storage>,
    ) -> Result<(), AgentError> {
        let req = pb::CreateSandboxRequest {
            sandbox_id: id.into(),
            hostname: hostname.into(),
            storages,
            ..Default::default()
        };
        self.inner.create_sandbox(ctx(), &req)?;
        Ok(())
    }

    /// CreateContainer. `bundle` is the host's bundle directory (the guest hooks' state);
    /// `extra` the directions of the process's extra fds 3, 4, ... (`--preserve-fds`).
    pub fn create_container(
        &self,
        id: &str,
        spec_json: &str,
        storages: Vec<pb::Storage>,
        rootfs: &str,
        bundle: &Path,
        extra: &[Direction],
    ) -> Result<(), AgentError> {
        let req = pb::CreateContainerRequest {
            container_id: id.into(),
            oci_spec_json: spec_json.into(),
            storages,
            rootfs: rootfs.into(),
            bundle: bundle.to_string_lossy().into_owned(),
            extra_fds: extra_fds(extra),
            ..Default::default()
        };
        self.inner.create_container(ctx(), &req)?;
        Ok(())
    }

    fn creq(id: &str) -> pb::ContainerRequest {
        pb::ContainerRequest {
            container_id: id.into(),
            ..Default::default()
        }
    }

    fn preq(id: &str, exec: &str) -> pb::ProcessRequest {
        pb::ProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            ..Default::default()
        }
    }

    /// StartContainer.
    pub fn start(&self, id: &str) -> Result<(), AgentError> {
        self.inner.start_container(ctx(), &Self::creq(id))?;
        Ok(())
    }

    /// PauseContainer.
    pub fn pause(&self, id: &str) -> Result<(), AgentError> {
        self.inner.pause_container(ctx(), &Self::creq(id))?;
        Ok(())
    }

    /// ResumeContainer.
    pub fn resume(&self, id: &str) -> Result<(), AgentError> {
        self.inner.resume_container(ctx(), &Self::creq(id))?;
        Ok(())
    }

    /// ListProcesses.
    pub fn ps(&self, id: &str) -> Result<Vec<i32>, AgentError> {
        Ok(self.inner.list_processes(ctx(), &Self::creq(id))?.pids)
    }

    /// StatsContainer.
    pub fn stats(&self, id: &str) -> Result<pb::StatsContainerResponse, AgentError> {
        Ok(self.inner.stats_container(ctx(), &Self::creq(id))?)
    }

    /// UpdateContainer: OCI LinuxResources JSON.
    pub fn update(&self, id: &str, resources_json: &str) -> Result<(), AgentError> {
        let req = pb::UpdateContainerRequest {
            container_id: id.into(),
            resources_json: resources_json.into(),
            ..Default::default()
        };
        self.inner.update_container(ctx(), &req)?;
        Ok(())
    }

    /// GetOomEvent: blocks until a container of the sandbox is OOM-killed; its id.
    pub fn oom_event(&self) -> Result<String, AgentError> {
        Ok(self
            .inner
            .get_oom_event(ctx(), &pb::Empty::new())?
            .container_id)
    }

    /// ExecProcess; `extra` as for `create_container`.
    pub fn exec(
        &self,
        id: &str,
        exec: &str,
        process_json: &str,
        extra: &[Direction],
    ) -> Result<(), AgentError> {
        let req = pb::ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            process_json: process_json.into(),
            extra_fds: extra_fds(extra),
            ..Default::default()
        };
        self.inner.exec_process(ctx(), &req)?;
        Ok(())
    }

    /// SignalProcess (within `TEARDOWN_TIMEOUT`: `kill` and `delete --force` use it).
    pub fn signal(&self, id: &str, exec: &str, signal: u32, all: bool) -> Result<(), AgentError> {
        let req = pb::SignalProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            signal,
            all,
            ..Default::default()
        };
        self.inner.signal_process(within(TEARDOWN_TIMEOUT), &req)?;
        Ok(())
    }

    /// WaitProcess: blocks until the process exits; shell-style status.
    pub fn wait(&self, id: &str, exec: &str) -> Result<i32, AgentError> {
        Ok(self
            .inner
            .wait_process(ctx(), &Self::preq(id, exec))?
            .status)
    }

    /// ReadStdout / ReadStderr (`fd` 0), or extra fd `fd`: up to `len` bytes; `None` at end
    /// of stream.
    pub fn read(
        &self,
        id: &str,
        exec: &str,
        stderr: bool,
        fd: u32,
        len: u32,
    ) -> Result<Option<Vec<u8>>, AgentError> {
        let req = pb::ReadStreamRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            len,
            fd,
            ..Default::default()
        };
        let resp = if stderr {
            self.inner.read_stderr(ctx(), &req)?
        } else {
            self.inner.read_stdout(ctx(), &req)?
        };
        Ok((!resp.eof || !resp.data.is_empty()).then_some(resp.data))
    }

    /// WriteStdin (all of `data`) to stdin (`fd` 0) or extra fd `fd`.
    pub fn write_stdin(
        &self,
        id: &str,
        exec: &str,
        fd: u32,
        data: &[u8],
    ) -> Result<(), AgentError> {
        let req = pb::WriteStreamRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            data: data.to_vec(),
            fd,
            ..Default::default()
        };
        self.inner.write_stdin(ctx(), &req)?;
        Ok(())
    }

    /// CloseStdin of stdin (`fd` 0) or of extra fd `fd`'s host -> guest direction.
    pub fn close_stdin(&self, id: &str, exec: &str, fd: u32) -> Result<(), AgentError> {
        let req = pb::ProcessRequest {
            fd,
            ..Self::preq(id, exec)
        };
        self.inner.close_stdin(ctx(), &req)?;
        Ok(())
    }

    /// ConnectExtraFd: a connection to the process's listening extra fd `fd`; its stream id
    /// (the stream RPCs' `fd`).
    pub fn connect_extra(&self, id: &str, exec: &str, fd: u32) -> Result<u32, AgentError> {
        let req = pb::ProcessRequest {
            fd,
            ..Self::preq(id, exec)
        };
        Ok(self.inner.connect_extra_fd(ctx(), &req)?.stream)
    }

    /// TtyWinResize: the guest pty's window size.
    pub fn tty_resize(&self, id: &str, exec: &str, rows: u16, cols: u16) -> Result<(), AgentError> {
        let req = pb::TtyWinResizeRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            row: rows.into(),
            column: cols.into(),
            ..Default::default()
        };
        self.inner.tty_win_resize(ctx(), &req)?;
        Ok(())
    }

    /// RemoveContainer (within `TEARDOWN_TIMEOUT`).
    pub fn remove_container(&self, id: &str) -> Result<(), AgentError> {
        let req = pb::RemoveContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        self.inner
            .remove_container(within(TEARDOWN_TIMEOUT), &req)?;
        Ok(())
    }

    /// DestroySandbox (within `TEARDOWN_TIMEOUT`): the guest kills everything and powers off.
    pub fn destroy_sandbox(&self) -> Result<(), AgentError> {
        self.inner
            .destroy_sandbox(within(TEARDOWN_TIMEOUT), &pb::Empty::new())?;
        Ok(())
    }

    /// UpdateInterface: the guest NIC found by name and/or MAC gets the MTU, addresses and
    /// state asked for; the NIC as it is afterwards.
    pub fn update_interface(
        &self,
        req: &pb::UpdateInterfaceRequest,
    ) -> Result<pb::Interface, AgentError> {
        Ok(self.inner.update_interface(ctx(), req)?)
    }

    /// UpdateRoutes: the guest's main table becomes `routes` (kernel-made routes stay); the
    /// table afterwards.
    pub fn update_routes(&self, routes: Vec<pb::Route>) -> Result<Vec<pb::Route>, AgentError> {
        let req = pb::UpdateRoutesRequest {
            routes,
            ..Default::default()
        };
        Ok(self.inner.update_routes(ctx(), &req)?.routes)
    }

    /// UpdateNeighbors: adds or replaces static neighbour (ARP / NDP) entries.
    pub fn update_neighbors(&self, neighbors: Vec<pb::Neighbor>) -> Result<(), AgentError> {
        let req = pb::UpdateNeighborsRequest {
            neighbors,
            ..Default::default()
        };
        self.inner.update_neighbors(ctx(), &req)?;
        Ok(())
    }
}
