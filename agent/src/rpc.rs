//! The ttrpc service: thin handlers that log, call the sandbox, and map typed errors to ttrpc
//! codes. No container logic lives here. `peer` decides who may connect at all.

pub mod peer;

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ttrpc::{Code, TtrpcContext};

use crate::container::ContainerError;
use crate::convert;
use crate::logbuf::LogBuffer;
use crate::net::{self, NetError, Rtnetlink};
use crate::process::{ExtraDir, ReadWatch, MAX_EXTRA_FDS};
use crate::protocol as pb;
use crate::sandbox::{Sandbox, SandboxError};
use crate::spawn::SpawnError;
use crate::storage::StorageError;

/// Asks the process that owns the server to shut down (power off in the guest).
pub type ShutdownHook = Box<dyn Fn() + Send + Sync>;

pub struct AgentService {
    sandbox: Arc<Sandbox>,
    logs: LogBuffer,
    shutdown: ShutdownHook,
    /// One network change at a time (an UpdateInterface and an UpdateRoutes do not interleave).
    net_lock: Mutex<()>,
}

impl AgentService {
    pub fn new(sandbox: Arc<Sandbox>, logs: LogBuffer, shutdown: ShutdownHook) -> Self {
        AgentService {
            sandbox,
            logs,
            shutdown,
            net_lock: Mutex::new(()),
        }
    }
}

/// The ttrpc code for a network failure: bad fields, a missing NIC, and what the kernel's errno
/// says about the request (typed, never by message text).
pub fn net_code_of(e: &NetError) -> Code {
    use nix::errno::Errno;
    match e {
        NetError::Invalid { .. } => Code::INVALID_ARGUMENT,
        NetError::NoInterface { .. } => Code::NOT_FOUND,
        NetError::NameTaken(_) => Code::ALREADY_EXISTS,
        NetError::Netlink { source, .. } => match source.errno {
            Errno::EINVAL | Errno::ERANGE | Errno::EAFNOSUPPORT => Code::INVALID_ARGUMENT,
            Errno::EEXIST => Code::ALREADY_EXISTS,
            Errno::ENODEV | Errno::ESRCH | Errno::EADDRNOTAVAIL => Code::NOT_FOUND,
            // A gateway no route reaches, a link that must be down first.
            Errno::ENETUNREACH | Errno::EHOSTUNREACH | Errno::EBUSY => Code::FAILED_PRECONDITION,
            Errno::EPERM | Errno::EACCES => Code::PERMISSION_DENIED,
            Errno::ETIMEDOUT => Code::DEADLINE_EXCEEDED,
            // A dump the kernel kept interrupting: asking again may work.
            Errno::EAGAIN => Code::UNAVAILABLE,
            _ => Code::INTERNAL,
        },
    }
}

fn net_status(e: NetError) -> ttrpc::Error {
    tracing::warn!("network request failed: {e}");
    ttrpc::Error::RpcStatus(ttrpc::get_status(net_code_of(&e), e.to_string()))
}

fn rtnetlink() -> R<crate::syscall::netlink::LinuxRtnetlink> {
    crate::syscall::netlink::LinuxRtnetlink::open().map_err(|e| net_status(e.into()))
}

/// The ttrpc code for a failure. Typed, never by message text.
pub fn code_of(e: &SandboxError) -> Code {
    match e {
        SandboxError::NotFound(_) => Code::NOT_FOUND,
        SandboxError::Exists(_) => Code::ALREADY_EXISTS,
        SandboxError::Invalid { .. } => Code::INVALID_ARGUMENT,
        SandboxError::Io { .. } => Code::INTERNAL,
        SandboxError::Storage(s) => match s {
            StorageError::Invalid { .. } | StorageError::NoDisk { .. } => Code::INVALID_ARGUMENT,
            StorageError::Mount { .. } => Code::INTERNAL,
        },
        SandboxError::Container(c) => match c {
            ContainerError::InvalidSpec(_) | ContainerError::BadJson(_) => Code::INVALID_ARGUMENT,
            ContainerError::Spawn(SpawnError::Stage(_)) => Code::INVALID_ARGUMENT,
            ContainerError::Cgroup(crate::cgroup::CgroupError::Unavailable { .. })
            | ContainerError::Cgroup(crate::cgroup::CgroupError::Invalid { .. })
            | ContainerError::Cgroup(crate::cgroup::CgroupError::BadPath(_)) => {
                Code::INVALID_ARGUMENT
            }
            ContainerError::Signal(_, nix::errno::Errno::EINVAL) => Code::INVALID_ARGUMENT,
            ContainerError::WrongState { .. } => Code::FAILED_PRECONDITION,
            ContainerError::ExecExists(_) => Code::ALREADY_EXISTS,
            ContainerError::NoExec(_) => Code::NOT_FOUND,
            ContainerError::Io(crate::process::IoError::NoStream(_)) => Code::FAILED_PRECONDITION,
            ContainerError::Io(crate::process::IoError::NoExtra(_)) => Code::NOT_FOUND,
            ContainerError::Io(crate::process::IoError::NotListening(_)) => {
                Code::FAILED_PRECONDITION
            }
            ContainerError::Io(crate::process::IoError::TooMany(_)) => Code::INVALID_ARGUMENT,
            ContainerError::Io(crate::process::IoError::DeadlineExceeded(_)) => {
                Code::DEADLINE_EXCEEDED
            }
            ContainerError::Io(crate::process::IoError::Abandoned(_)) => Code::CANCELLED,
            _ => Code::INTERNAL,
        },
    }
}

fn status(e: SandboxError) -> ttrpc::Error {
    tracing::warn!("request failed: {e}");
    ttrpc::Error::RpcStatus(ttrpc::get_status(code_of(&e), e.to_string()))
}

fn cerr(e: ContainerError) -> ttrpc::Error {
    status(SandboxError::Container(e))
}

fn invalid(field: &'static str, reason: impl ToString) -> ttrpc::Error {
    status(SandboxError::Invalid {
        field,
        reason: reason.to_string(),
    })
}

type R<T> = ttrpc::Result<T>;

impl pb::AgentService for AgentService {
    fn create_sandbox(&self, _: &TtrpcContext, req: pb::CreateSandboxRequest) -> R<pb::Empty> {
        tracing::info!(sandbox = %req.sandbox_id, "CreateSandbox");
        let storages = convert::storages(&req.storages).map_err(|e| status(e.into()))?;
        self.sandbox
            .setup(&req.hostname, &req.dns)
            .map_err(status)?;
        self.sandbox.add_storages(&storages).map_err(status)?;
        Ok(pb::Empty::new())
    }

    fn destroy_sandbox(&self, _: &TtrpcContext, _: pb::Empty) -> R<pb::Empty> {
        tracing::info!("DestroySandbox");
        self.sandbox.remove_all();
        (self.shutdown)();
        Ok(pb::Empty::new())
    }

    fn get_guest_details(&self, _: &TtrpcContext, _: pb::Empty) -> R<pb::GuestDetailsResponse> {
        Ok(convert::guest_details())
    }

    fn create_container(&self, _: &TtrpcContext, req: pb::CreateContainerRequest) -> R<pb::Empty> {
        tracing::info!(container = %req.container_id, "CreateContainer");
        let storages = convert::storages(&req.storages).map_err(|e| status(e.into()))?;
        let rootfs = (!req.rootfs.is_empty()).then(|| Path::new(&req.rootfs));
        let extra = extra_dirs(&req.extra_fds)?;
        self.sandbox
            .create_container(
                &req.container_id,
                &req.oci_spec_json,
                &storages,
                rootfs,
                &req.bundle,
                &extra,
            )
            .map_err(status)?;
        Ok(pb::Empty::new())
    }

    fn start_container(&self, _: &TtrpcContext, req: pb::ContainerRequest) -> R<pb::Empty> {
        tracing::info!(container = %req.container_id, "StartContainer");
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        c.start().map_err(cerr)?;
        Ok(pb::Empty::new())
    }

    fn remove_container(&self, _: &TtrpcContext, req: pb::RemoveContainerRequest) -> R<pb::Empty> {
        tracing::info!(container = %req.container_id, "RemoveContainer");
        let timeout = Duration::from_secs(if req.timeout == 0 {
            10
        } else {
            req.timeout.into()
        });
        self.sandbox
            .remove_container(&req.container_id, timeout)
            .map_err(status)?;
        Ok(pb::Empty::new())
    }

    fn pause_container(&self, _: &TtrpcContext, req: pb::ContainerRequest) -> R<pb::Empty> {
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        c.pause().map_err(cerr)?;
        Ok(pb::Empty::new())
    }

    fn resume_container(&self, _: &TtrpcContext, req: pb::ContainerRequest) -> R<pb::Empty> {
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        c.resume().map_err(cerr)?;
        Ok(pb::Empty::new())
    }

    fn update_container(&self, _: &TtrpcContext, req: pb::UpdateContainerRequest) -> R<pb::Empty> {
        let res: oci_spec::runtime::LinuxResources =
            serde_json::from_str(&req.resources_json).map_err(|e| invalid("resources_json", e))?;
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        c.update(&res).map_err(cerr)?;
        Ok(pb::Empty::new())
    }

    fn stats_container(
        &self,
        _: &TtrpcContext,
        req: pb::ContainerRequest,
    ) -> R<pb::StatsContainerResponse> {
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        Ok(convert::stats(c.cgroup()))
    }

    fn list_processes(
        &self,
        _: &TtrpcContext,
        req: pb::ContainerRequest,
    ) -> R<pb::ListProcessesResponse> {
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        Ok(pb::ListProcessesResponse {
            pids: c.pids().map_err(cerr)?,
            ..Default::default()
        })
    }

    fn exec_process(&self, _: &TtrpcContext, req: pb::ExecProcessRequest) -> R<pb::Empty> {
        tracing::info!(container = %req.container_id, exec = %req.exec_id, "ExecProcess");
        let process: oci_spec::runtime::Process = crate::spec::parse_process(&req.process_json)
            .map_err(|e| invalid("process_json", e))?;
        let extra = extra_dirs(&req.extra_fds)?;
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        c.exec(self.sandbox.runtime(), &req.exec_id, process, &extra)
            .map_err(cerr)?;
        Ok(pb::Empty::new())
    }

    fn signal_process(&self, _: &TtrpcContext, req: pb::SignalProcessRequest) -> R<pb::Empty> {
        tracing::info!(container = %req.container_id, exec = %req.exec_id, signal = req.signal, "SignalProcess");
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        c.signal(&req.exec_id, req.signal, req.all).map_err(cerr)?;
        Ok(pb::Empty::new())
    }

    fn wait_process(
        &self,
        _: &TtrpcContext,
        req: pb::ProcessRequest,
    ) -> R<pb::WaitProcessResponse> {
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        let p = c.process(&req.exec_id).map_err(cerr)?;
        Ok(pb::WaitProcessResponse {
            status: p.wait(),
            ..Default::default()
        })
    }

    fn write_stdin(
        &self,
        _: &TtrpcContext,
        req: pb::WriteStreamRequest,
    ) -> R<pb::WriteStreamResponse> {
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        let p = c.process(&req.exec_id).map_err(cerr)?;
        let n = match req.fd {
            0 => p.io.write_stdin(&req.data),
            fd => p.io.write_extra(fd, &req.data),
        }
        .map_err(|e| cerr(e.into()))?;
        Ok(pb::WriteStreamResponse {
            len: n as u32,
            ..Default::default()
        })
    }

    fn close_stdin(&self, _: &TtrpcContext, req: pb::ProcessRequest) -> R<pb::Empty> {
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        let p = c.process(&req.exec_id).map_err(cerr)?;
        match req.fd {
            0 => p.io.close_stdin(),
            fd => p.io.close_extra(fd),
        }
        .map_err(|e| cerr(e.into()))?;
        Ok(pb::Empty::new())
    }

    fn read_stdout(
        &self,
        ctx: &TtrpcContext,
        req: pb::ReadStreamRequest,
    ) -> R<pb::ReadStreamResponse> {
        self.read(ctx, req, false)
    }

    fn read_stderr(
        &self,
        ctx: &TtrpcContext,
        req: pb::ReadStreamRequest,
    ) -> R<pb::ReadStreamResponse> {
        self.read(ctx, req, true)
    }

    fn connect_extra_fd(
        &self,
        _: &TtrpcContext,
        req: pb::ProcessRequest,
    ) -> R<pb::ConnectExtraFdResponse> {
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        let p = c.process(&req.exec_id).map_err(cerr)?;
        let stream = p.io.connect_extra(req.fd).map_err(|e| cerr(e.into()))?;
        Ok(pb::ConnectExtraFdResponse {
            stream,
            ..Default::default()
        })
    }

    fn tty_win_resize(&self, _: &TtrpcContext, req: pb::TtyWinResizeRequest) -> R<pb::Empty> {
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        let p = c.process(&req.exec_id).map_err(cerr)?;
        p.io.resize(req.row as u16, req.column as u16)
            .map_err(|e| cerr(e.into()))?;
        Ok(pb::Empty::new())
    }

    /// Blocks until a container's cgroup counts an OOM kill; DEADLINE_EXCEEDED at the
    /// client's timeout (the event stays queued for the next call).
    fn get_oom_event(&self, ctx: &TtrpcContext, _: pb::Empty) -> R<pb::GetOomEventResponse> {
        let gone = || caller_gone(ctx);
        match self
            .sandbox
            .oom_events()
            .next(deadline_of(ctx.timeout_nano), &gone)
        {
            Some(container_id) => Ok(pb::GetOomEventResponse {
                container_id,
                ..Default::default()
            }),
            None if gone() => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                Code::CANCELLED,
                "the caller went away",
            ))),
            None => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                Code::DEADLINE_EXCEEDED,
                "no OOM event before the caller's deadline",
            ))),
        }
    }

    fn update_interface(
        &self,
        _: &TtrpcContext,
        req: pb::UpdateInterfaceRequest,
    ) -> R<pb::Interface> {
        tracing::info!(name = %req.name, mac = %req.mac, "UpdateInterface");
        let update = convert::interface_update(&req).map_err(net_status)?;
        let _one = self.net_lock.lock().unwrap_or_else(|p| p.into_inner());
        let nl = rtnetlink()?;
        let iface = net::update_interface(&nl as &dyn Rtnetlink, &update).map_err(net_status)?;
        Ok(convert::interface(&iface))
    }

    fn update_routes(
        &self,
        _: &TtrpcContext,
        req: pb::UpdateRoutesRequest,
    ) -> R<pb::RoutesResponse> {
        tracing::info!(routes = req.routes.len(), "UpdateRoutes");
        let routes = convert::routes(&req.routes).map_err(net_status)?;
        let _one = self.net_lock.lock().unwrap_or_else(|p| p.into_inner());
        let nl = rtnetlink()?;
        let now = net::update_routes(&nl, &routes).map_err(net_status)?;
        Ok(pb::RoutesResponse {
            routes: now.iter().map(convert::route).collect(),
            ..Default::default()
        })
    }

    fn list_interfaces(&self, _: &TtrpcContext, _: pb::Empty) -> R<pb::InterfacesResponse> {
        let list = net::list_interfaces(&rtnetlink()?).map_err(net_status)?;
        Ok(pb::InterfacesResponse {
            interfaces: list.iter().map(convert::interface).collect(),
            ..Default::default()
        })
    }

    fn list_routes(&self, _: &TtrpcContext, _: pb::Empty) -> R<pb::RoutesResponse> {
        let list = net::list_routes(&rtnetlink()?).map_err(net_status)?;
        Ok(pb::RoutesResponse {
            routes: list.iter().map(convert::route).collect(),
            ..Default::default()
        })
    }

    fn update_neighbors(&self, _: &TtrpcContext, req: pb::UpdateNeighborsRequest) -> R<pb::Empty> {
        tracing::info!(neighbors = req.neighbors.len(), "UpdateNeighbors");
        let list = convert::neighbours(&req.neighbors).map_err(net_status)?;
        let _one = self.net_lock.lock().unwrap_or_else(|p| p.into_inner());
        net::update_neighbours(&rtnetlink()?, &list).map_err(net_status)?;
        Ok(pb::Empty::new())
    }

    fn list_neighbors(&self, _: &TtrpcContext, _: pb::Empty) -> R<pb::NeighborsResponse> {
        let list = net::list_neighbours(&rtnetlink()?).map_err(net_status)?;
        Ok(pb::NeighborsResponse {
            neighbors: list.iter().map(convert::neighbour).collect(),
            ..Default::default()
        })
    }

    fn read_logs(&self, _: &TtrpcContext, req: pb::ReadLogsRequest) -> R<pb::ReadLogsResponse> {
        let (data, next_offset) = self.logs.read(req.offset, req.len as usize);
        Ok(pb::ReadLogsResponse {
            data,
            next_offset,
            ..Default::default()
        })
    }
}

/// The extra fds' directions, in fd order; each entry's fd must be 3 + its index.
fn extra_dirs(fds: &[pb::ExtraFd]) -> R<Vec<ExtraDir>> {
    if fds.len() > MAX_EXTRA_FDS {
        return Err(invalid(
            "extra_fds",
            format!("{} extra fds (at most {MAX_EXTRA_FDS})", fds.len()),
        ));
    }
    fds.iter()
        .enumerate()
        .map(|(i, e)| {
            if e.fd as usize != 3 + i {
                return Err(invalid(
                    "extra_fds",
                    format!("entry {i} is fd {}: must be fd {}", e.fd, 3 + i),
                ));
            }
            match e.direction.enum_value() {
                Ok(pb::FdDirection::FD_DIRECTION_IN) => Ok(ExtraDir::In),
                Ok(pb::FdDirection::FD_DIRECTION_OUT) => Ok(ExtraDir::Out),
                Ok(pb::FdDirection::FD_DIRECTION_BOTH) => Ok(ExtraDir::Both),
                Ok(pb::FdDirection::FD_DIRECTION_LISTEN) => Ok(ExtraDir::Listen),
                _ => Err(invalid(
                    "extra_fds",
                    format!("fd {}: no direction (in, out, both or listen)", e.fd),
                )),
            }
        })
        .collect()
}

/// True once ttrpc has cancelled the request's connection (the client went away).
fn caller_gone(ctx: &TtrpcContext) -> bool {
    !matches!(ctx.cancel_rx.try_recv(), Err(e) if e.is_empty())
}

/// The server-side deadline for a client timeout: a little early (at most 50 ms), so that
/// the reply races the client's own timer less.
fn deadline_of(timeout_nano: i64) -> Option<Instant> {
    let t = Duration::from_nanos(u64::try_from(timeout_nano).ok().filter(|t| *t > 0)?);
    Some(Instant::now() + t - (t / 20).min(Duration::from_millis(50)))
}

impl AgentService {
    /// ReadStdout/ReadStderr. The sync server cannot cancel a handler, so the read itself
    /// watches its caller (deadline, connection hang-up, ttrpc's cancel channel) and gives up
    /// without taking data when the caller left: the next reader gets that output.
    fn read(
        &self,
        ctx: &TtrpcContext,
        req: pb::ReadStreamRequest,
        stderr: bool,
    ) -> R<pb::ReadStreamResponse> {
        let c = self.sandbox.container(&req.container_id).map_err(status)?;
        let p = c.process(&req.exec_id).map_err(cerr)?;
        // Dup first, then check the cancel channel: ttrpc drops its sender before closing the
        // connection, so a still-open channel means the dup is of the caller's connection.
        let peer = crate::process::dup_peer(ctx.fd);
        let gone = || caller_gone(ctx);
        let watch = ReadWatch {
            deadline: deadline_of(ctx.timeout_nano),
            peer: peer.as_ref().map(|p| p.as_fd()),
            gone: &gone,
        };
        let data = match req.fd {
            0 => p.io.read(stderr, req.len as usize, &watch),
            fd => p.io.read_extra(fd, req.len as usize, &watch),
        }
        .map_err(|e| cerr(e.into()))?;
        let eof = data.is_empty();
        Ok(pb::ReadStreamResponse {
            data,
            eof,
            ..Default::default()
        })
    }
}
