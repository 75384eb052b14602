//! The message the agent sends to a container's init stage (a fresh exec of this binary as
//! `husk-agent init`), and the line protocol on their sync socket:
//!
//! agent -> stage: one byte (maps and cgroup are in place), then the `StageConfig` as one JSON
//! line; later `start\n`.
//! stage -> agent: `pid <n>\n` when the stage forked to enter a pid namespace, any number of
//! `warn <message>\n` (logged by the agent: what runc only warns about, such as an ambient
//! capability that cannot be raised), for a terminal process `console\n` with the pty master
//! attached (SCM_RIGHTS; the pty is the container's own, from its /dev/pts/ptmx), then
//! `ready\n` or `error <message>\n` (a failed createContainer hook is one); after `start`,
//! either EOF (the startContainer hooks passed and the exec succeeded) or
//! `error <message>\n`. The agent reads with recvmsg so that the attached fd is kept.

use std::path::PathBuf;

use oci_spec::runtime::Process;
use serde::{Deserialize, Serialize};

use crate::hooks::ContainerHooks;
use crate::mounts::RootfsPlan;
use crate::namespaces::NamespacePlan;

/// The stage's sync socket without extra fds: 0-2 are stdio, then the sync socket.
pub const SYNC_FD: i32 = 3;

/// The stage's fds: 0-2 stdio, 3..3+N-1 the process's extra fds (runc's `--preserve-fds`,
/// inheritable from the start, as runc's init has them), then the sync socket, whose number
/// the stage gets as its argument (`husk-agent init <fd>`).
pub fn sync_fd_for(extra: usize) -> i32 {
    SYNC_FD + extra as i32
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageConfig {
    pub ns: NamespacePlan,
    /// Filesystem setup; None for exec (joins the container's mount namespace).
    pub rootfs: Option<RootfsPlan>,
    pub hostname: Option<String>,
    pub process: Process,
    /// The container's seccomp profile (also applied to execs).
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// Where the container's /etc/passwd lives relative to the process' root ("/" after pivot).
    pub root_for_users: PathBuf,
    /// The createContainer/startContainer hooks the stage runs (None for exec and for a spec
    /// without them); `launch` fills in the state's pid.
    #[serde(default)]
    pub hooks: Option<ContainerHooks>,
}
