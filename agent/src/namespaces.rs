//! Namespace decisions: which namespaces a container's init gets new at clone time, which it
//! joins by path, and in what order; and for exec, which of the container's namespaces a new
//! process joins. Pure planning plus one function that applies joins through `&dyn Syscall`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use serde::{Deserialize, Serialize};

use crate::syscall::{CloneFlags, Syscall, SyscallError};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamespaceError {
    #[error("linux.namespaces: {0} namespace listed twice")]
    Duplicate(String),
    #[error(
        "linux.namespaces[{0}].path: {1:?} names a namespace of the host, which a container in \
         a VM cannot join (leave the path out for a new namespace, or the entry out to share \
         the VM's)"
    )]
    HostPath(usize, PathBuf),
    #[error("linux.namespaces: {0} namespaces are not supported")]
    Unsupported(String),
    #[error(
        "linux.namespaces[{0}].path: {1:?} names container {2:?}, which this sandbox does not \
         run (or whose init has exited)"
    )]
    NoContainer(usize, PathBuf, String),
}

/// The `/proc/<pid>/ns/<name>` file name of a namespace type.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// A namespace to join: its clone flag (as bits, so the plan serializes) and path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub flag: i32,
    pub path: PathBuf,
}

/// What to do about namespaces for one process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacePlan {
    /// New namespaces created by clone() (everything new except cgroup).
    pub clone_flags: i32,
    /// Namespaces joined by setns() in the init stage; user first.
    pub join: Vec<Join>,
    /// unshare(CLONE_NEWCGROUP) after the agent placed the process in its cgroup.
    pub new_cgroup: bool,
    /// A pid namespace is joined, so the stage must fork once more to enter it.
    pub join_pid: bool,
    pub new_uts: bool,
    pub new_user: bool,
    pub new_pid: bool,
    /// The spec lists a mount namespace. Without one the container shares the guest's mount
    /// namespace, and with it the guest's root: no mounts, no pivot_root (runc's behaviour).
    #[serde(default)]
    pub new_mount: bool,
    pub new_ipc: bool,
    pub new_net: bool,
    /// The container uses the sandbox's network namespace ([`SANDBOX_NET`]): the guest's own,
    /// where the runtime wired the caller's interfaces. Its own as far as sysctls go.
    #[serde(default)]
    pub sandbox_net: bool,
}

/// Where the runtime names the namespaces of another container of this sandbox:
/// `CONTAINER_NS_DIR/<container id>/ns/<name>` (`<name>` as in `/proc/<pid>/ns`). A pod's
/// later containers get the sandbox container's namespaces this way (the host's CRI paths
/// `/proc/<sandbox pid>/ns/<name>` mapped by the supervisor); the agent joins
/// `/proc/<that container's init pid>/ns/<name>`. Nothing is ever created at this path.
pub const CONTAINER_NS_DIR: &str = "/run/husk/containers";

/// The init pid of a container this sandbox runs (None: no such container, or its init has
/// exited), for resolving [`CONTAINER_NS_DIR`] paths.
pub type InitPidOf<'a> = &'a dyn Fn(&str) -> Option<i32>;

/// The container id in a [`CONTAINER_NS_DIR`] path for a namespace of type `t`
/// (`<dir>/<id>/ns/<proc name of t>`); None for any other path.
pub fn container_of_ns_path(p: &Path, t: LinuxNamespaceType) -> Option<&str> {
    let rest = p.strip_prefix(CONTAINER_NS_DIR).ok()?;
    let mut parts = rest.components().map(|c| match c {
        std::path::Component::Normal(s) => s.to_str(),
        _ => None,
    });
    let id = parts.next()??;
    let (ns, name, end) = (parts.next()??, parts.next()??, parts.next());
    (ns == "ns" && name == proc_name(t) && end.is_none() && !id.is_empty()).then_some(id)
}

/// The network namespace path the runtime gives a container that uses the sandbox's network
/// (the guest's initial namespace, PID 1's: the agent's), into which it wired the caller's
/// interfaces. The one namespace path accepted here: it names no namespace of the host.
pub const SANDBOX_NET: &str = "/proc/1/ns/net";

impl NamespacePlan {
    /// Plans a container's init from the spec's namespace list. A type the list leaves out is
    /// shared with the runtime, which in a VM means the guest's (the sandbox's) namespace; a
    /// listed one without a path is new. In a new user namespace clone(2) creates the user
    /// namespace first, so it owns the others created with it. No other container's
    /// namespaces can be named ([`NamespacePlan::for_create_in`] can).
    pub fn for_create(list: &[LinuxNamespace]) -> Result<Self, NamespaceError> {
        Self::for_create_in(list, &|_| None)
    }

    /// [`NamespacePlan::for_create`] in a sandbox whose containers' init pids `init_pid_of`
    /// gives: a [`CONTAINER_NS_DIR`] path of one of them becomes a join of its init's
    /// namespace.
    pub fn for_create_in(
        list: &[LinuxNamespace],
        init_pid_of: InitPidOf<'_>,
    ) -> Result<Self, NamespaceError> {
        let mut seen = HashSet::new();
        let mut plan = NamespacePlan::default();
        let mut clone = CloneFlags::empty();
        for (i, ns) in list.iter().enumerate() {
            let t = ns.typ();
            let name = proc_name(t).to_string();
            if !seen.insert(name.clone()) {
                return Err(NamespaceError::Duplicate(name));
            }
            if t == LinuxNamespaceType::Time {
                return Err(NamespaceError::Unsupported(name));
            }
            match ns.path() {
                // The sandbox's network namespace: the agent's own, which the container's
                // init inherits; nothing to join.
                Some(p) if t == LinuxNamespaceType::Network && p == Path::new(SANDBOX_NET) => {
                    plan.sandbox_net = true;
                }
                // Another container of this sandbox (a pod's shared namespaces, which the
                // supervisor maps from the sandbox container's host path): joined through
                // its init's /proc entry.
                Some(p) if container_of_ns_path(p, t).is_some() => {
                    let cid = container_of_ns_path(p, t).unwrap_or_default();
                    let pid = init_pid_of(cid).ok_or_else(|| {
                        NamespaceError::NoContainer(i, p.clone(), cid.to_string())
                    })?;
                    plan.join.push(Join {
                        flag: flag(t).bits(),
                        path: PathBuf::from(format!("/proc/{pid}/ns/{name}")),
                    });
                    if t == LinuxNamespaceType::Pid {
                        plan.join_pid = true;
                    }
                }
                // Any other path is a file in the caller's (the host's) /proc or /run/netns:
                // nothing of the host can be joined from inside the VM.
                Some(p) if !p.as_os_str().is_empty() => {
                    return Err(NamespaceError::HostPath(i, p.clone()));
                }
                _ => match t {
                    LinuxNamespaceType::Cgroup => plan.new_cgroup = true,
                    other => clone |= flag(other),
                },
            }
        }
        sort_joins(&mut plan.join);
        plan.new_uts = clone.contains(CloneFlags::CLONE_NEWUTS);
        plan.new_user = clone.contains(CloneFlags::CLONE_NEWUSER);
        plan.new_pid = clone.contains(CloneFlags::CLONE_NEWPID);
        plan.new_mount = clone.contains(CloneFlags::CLONE_NEWNS);
        plan.new_ipc = clone.contains(CloneFlags::CLONE_NEWIPC);
        plan.new_net = clone.contains(CloneFlags::CLONE_NEWNET);
        plan.clone_flags = clone.bits();
        Ok(plan)
    }

    /// Plans an exec: join every namespace the container has, through its init's pid.
    pub fn for_exec(list: &[LinuxNamespace], init_pid: i32) -> Self {
        let mut join: Vec<Join> = list
            .iter()
            .filter(|ns| ns.typ() != LinuxNamespaceType::Time)
            .map(|ns| Join {
                flag: flag(ns.typ()).bits(),
                path: PathBuf::from(format!("/proc/{init_pid}/ns/{}", proc_name(ns.typ()))),
            })
            .collect();
        sort_joins(&mut join);
        let join_pid = list.iter().any(|ns| ns.typ() == LinuxNamespaceType::Pid);
        NamespacePlan {
            join,
            join_pid,
            ..Default::default()
        }
    }

    pub fn clone_flags(&self) -> CloneFlags {
        CloneFlags::from_bits_truncate(self.clone_flags)
    }

    /// A namespace of type `flag` is joined (another container's): the container has it as
    /// its own as far as runc's rules go (sysctls, hostname), as with a joined path in runc.
    pub fn joins(&self, flag: CloneFlags) -> bool {
        self.join
            .iter()
            .any(|j| CloneFlags::from_bits_truncate(j.flag) == flag)
    }
}

/// The user namespace decides permissions for the others, so it is joined first; the mount
/// namespace last, because joining it changes what the remaining `/proc/<pid>/ns` paths
/// resolve to.
fn sort_joins(join: &mut [Join]) {
    join.sort_by_key(|j| match CloneFlags::from_bits_truncate(j.flag) {
        CloneFlags::CLONE_NEWUSER => 0,
        CloneFlags::CLONE_NEWNS => 2,
        _ => 1,
    });
}

/// Joins the planned namespaces (in the stage process, before any mount work).
pub fn apply_joins(sys: &dyn Syscall, plan: &NamespacePlan) -> Result<(), SyscallError> {
    for j in &plan.join {
        sys.setns(Path::new(&j.path), CloneFlags::from_bits_truncate(j.flag))?;
    }
    if plan.new_cgroup {
        sys.unshare(CloneFlags::CLONE_NEWCGROUP)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::fake::{Call, RecordingSyscall};

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut n = LinuxNamespace::default();
        n.set_typ(t);
        n.set_path(path.map(PathBuf::from));
        n
    }

    #[test]
    fn new_namespaces_become_clone_flags_except_cgroup() {
        let plan = NamespacePlan::for_create(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Cgroup, None),
        ])
        .unwrap();
        let f = plan.clone_flags();
        assert!(f.contains(
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS
        ));
        assert!(!f.contains(CloneFlags::CLONE_NEWCGROUP));
        assert!(plan.new_cgroup && plan.new_uts && plan.new_pid && !plan.join_pid);
    }

    #[test]
    fn joins_are_setns_with_user_first() {
        let plan = NamespacePlan {
            join: vec![
                Join {
                    flag: CloneFlags::CLONE_NEWNET.bits(),
                    path: "/proc/7/ns/net".into(),
                },
                Join {
                    flag: CloneFlags::CLONE_NEWUSER.bits(),
                    path: "/proc/7/ns/user".into(),
                },
            ],
            ..Default::default()
        };
        let mut plan = plan;
        sort_joins(&mut plan.join);
        let sys = RecordingSyscall::new();
        apply_joins(&sys, &plan).unwrap();
        let calls = sys.calls();
        assert_eq!(
            calls[0],
            Call::Setns("/proc/7/ns/user".into(), CloneFlags::CLONE_NEWUSER)
        );
        assert_eq!(calls.len(), 2);
    }

    #[test]
    fn the_sandbox_network_is_shared_not_joined() {
        let plan = NamespacePlan::for_create(&[ns(LinuxNamespaceType::Network, Some(SANDBOX_NET))])
            .unwrap();
        assert!(plan.sandbox_net && !plan.new_net && plan.join.is_empty());
        assert_eq!(plan.clone_flags, 0);
        // Only for the network namespace.
        let err = NamespacePlan::for_create(&[ns(LinuxNamespaceType::Ipc, Some("/proc/1/ns/ipc"))])
            .unwrap_err();
        assert_eq!(err, NamespaceError::HostPath(0, "/proc/1/ns/ipc".into()));
    }

    #[test]
    fn another_containers_namespaces_are_joined_through_its_init() {
        let known = |id: &str| (id == "sb").then_some(42);
        let dir = |id: &str, name: &str| format!("{CONTAINER_NS_DIR}/{id}/ns/{name}");
        let plan = NamespacePlan::for_create_in(
            &[
                ns(LinuxNamespaceType::Mount, None),
                ns(LinuxNamespaceType::Ipc, Some(&dir("sb", "ipc"))),
                ns(LinuxNamespaceType::Pid, Some(&dir("sb", "pid"))),
                ns(LinuxNamespaceType::Network, Some(SANDBOX_NET)),
                ns(LinuxNamespaceType::Uts, Some(&dir("sb", "uts"))),
            ],
            &known,
        )
        .unwrap();
        let paths: Vec<_> = plan.join.iter().map(|j| j.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/proc/42/ns/ipc"),
                PathBuf::from("/proc/42/ns/pid"),
                PathBuf::from("/proc/42/ns/uts"),
            ]
        );
        assert!(plan.join_pid && plan.new_mount && plan.sandbox_net);
        assert!(!plan.new_ipc && !plan.new_pid && !plan.new_uts);
        assert!(plan.joins(CloneFlags::CLONE_NEWIPC) && !plan.joins(CloneFlags::CLONE_NEWNET));
        assert_eq!(plan.clone_flags(), CloneFlags::CLONE_NEWNS);

        // A container the sandbox does not run.
        let err = NamespacePlan::for_create_in(
            &[ns(LinuxNamespaceType::Ipc, Some(&dir("other", "ipc")))],
            &known,
        )
        .unwrap_err();
        assert_eq!(
            err,
            NamespaceError::NoContainer(0, dir("other", "ipc").into(), "other".into())
        );
        assert!(err.to_string().starts_with("linux.namespaces[0].path: "));
        // Without a sandbox to ask (a plain create), and for paths of another shape: refused
        // as host paths.
        let err =
            NamespacePlan::for_create(&[ns(LinuxNamespaceType::Ipc, Some(&dir("sb", "ipc")))])
                .unwrap_err();
        assert!(matches!(err, NamespaceError::NoContainer(0, _, _)));
        for bad in [
            dir("sb", "net"),
            format!("{CONTAINER_NS_DIR}/sb/ipc"),
            format!("{CONTAINER_NS_DIR}/sb/ns/ipc/x"),
            format!("{CONTAINER_NS_DIR}/../sb/ns/ipc"),
            format!("{CONTAINER_NS_DIR}//ns/ipc"),
            "/proc/42/ns/ipc".into(),
        ] {
            let err =
                NamespacePlan::for_create_in(&[ns(LinuxNamespaceType::Ipc, Some(&bad))], &known)
                    .unwrap_err();
            assert_eq!(
                err,
                NamespaceError::HostPath(0, bad.clone().into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn host_paths_are_refused_naming_the_entry() {
        let err = NamespacePlan::for_create(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("/var/run/netns/x")),
        ])
        .unwrap_err();
        assert_eq!(err, NamespaceError::HostPath(1, "/var/run/netns/x".into()));
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "linux.namespaces[1].path: \"/var/run/netns/x\" names a namespace of the host"
            ),
            "{msg}"
        );
        // An empty path means a new namespace.
        let plan = NamespacePlan::for_create(&[ns(LinuxNamespaceType::Network, Some(""))]).unwrap();
        assert!(plan.new_net && plan.join.is_empty());
    }

    #[test]
    fn unlisted_namespaces_are_shared_and_duplicates_rejected() {
        let plan = NamespacePlan::for_create(&[ns(LinuxNamespaceType::Pid, None)]).unwrap();
        assert!(plan.new_pid && !plan.new_mount && !plan.new_uts && !plan.new_net);
        assert_eq!(plan.clone_flags(), CloneFlags::CLONE_NEWPID);
        let plan = NamespacePlan::for_create(&[]).unwrap();
        assert_eq!(plan.clone_flags, 0);
        let err = NamespacePlan::for_create(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Mount, None),
        ])
        .unwrap_err();
        assert_eq!(err, NamespaceError::Duplicate("mnt".into()));
    }

    #[test]
    fn exec_joins_all_container_namespaces_via_init_pid() {
        let plan = NamespacePlan::for_exec(
            &[
                ns(LinuxNamespaceType::Mount, None),
                ns(LinuxNamespaceType::Pid, None),
            ],
            42,
        );
        assert!(plan.join_pid);
        let paths: Vec<_> = plan.join.iter().map(|j| j.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/proc/42/ns/pid"),
                PathBuf::from("/proc/42/ns/mnt")
            ]
        );
        assert_eq!(plan.clone_flags, 0);
    }
}
