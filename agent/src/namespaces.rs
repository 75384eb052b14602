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
    #[error("linux.namespaces: a mount namespace is required (the agent never mounts in its own)")]
    NoMountNamespace,
    #[error("linux.namespaces: {0} namespace path {1:?} must be absolute")]
    RelativePath(String, PathBuf),
    #[error("linux.namespaces: {0} namespaces are not supported")]
    Unsupported(String),
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
}

impl NamespacePlan {
    /// Plans a container's init from the spec's namespace list.
    pub fn for_create(list: &[LinuxNamespace]) -> Result<Self, NamespaceError> {
        let mut seen = HashSet::new();
        let mut plan = NamespacePlan::default();
        let mut clone = CloneFlags::empty();
        for ns in list {
            let t = ns.typ();
            let name = proc_name(t).to_string();
            if !seen.insert(name.clone()) {
                return Err(NamespaceError::Duplicate(name));
            }
            if t == LinuxNamespaceType::Time {
                return Err(NamespaceError::Unsupported(name));
            }
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => {
                    if !p.is_absolute() {
                        return Err(NamespaceError::RelativePath(name, p.clone()));
                    }
                    plan.join.push(Join {
                        flag: flag(t).bits(),
                        path: p.clone(),
                    });
                    plan.join_pid |= t == LinuxNamespaceType::Pid;
                }
                _ => match t {
                    LinuxNamespaceType::Cgroup => plan.new_cgroup = true,
                    other => clone |= flag(other),
                },
            }
        }
        if !seen.contains("mnt") {
            return Err(NamespaceError::NoMountNamespace);
        }
        sort_joins(&mut plan.join);
        plan.new_uts = clone.contains(CloneFlags::CLONE_NEWUTS);
        plan.new_user = clone.contains(CloneFlags::CLONE_NEWUSER);
        plan.new_pid = clone.contains(CloneFlags::CLONE_NEWPID);
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
    fn joined_namespaces_are_setns_with_user_first() {
        let plan = NamespacePlan::for_create(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("/var/run/netns/x")),
            ns(LinuxNamespaceType::User, Some("/proc/7/ns/user")),
            ns(LinuxNamespaceType::Pid, Some("/proc/7/ns/pid")),
        ])
        .unwrap();
        assert!(plan.join_pid);
        assert!(!plan.clone_flags().contains(CloneFlags::CLONE_NEWNET));
        let sys = RecordingSyscall::new();
        apply_joins(&sys, &plan).unwrap();
        let calls = sys.calls();
        assert_eq!(
            calls[0],
            Call::Setns("/proc/7/ns/user".into(), CloneFlags::CLONE_NEWUSER)
        );
        assert_eq!(calls.len(), 3);
    }

    #[test]
    fn mount_namespace_is_required_and_duplicates_rejected() {
        let err = NamespacePlan::for_create(&[ns(LinuxNamespaceType::Pid, None)]).unwrap_err();
        assert_eq!(err, NamespaceError::NoMountNamespace);
        assert!(err.to_string().starts_with("linux.namespaces"));
        let err = NamespacePlan::for_create(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Mount, None),
        ])
        .unwrap_err();
        assert_eq!(err, NamespaceError::Duplicate("mnt".into()));
        let err = NamespacePlan::for_create(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("netns")),
        ])
        .unwrap_err();
        assert!(matches!(err, NamespaceError::RelativePath(..)));
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
