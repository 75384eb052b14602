//! Linux capabilities: names to numbers, and the order in which the init stage switches user
//! and applies the five sets of an OCI process (through `Syscall`, so the order and the
//! ambient decisions are unit-tested with the recording fake; no libcap).

use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxCapabilities};

use crate::syscall::{CapSets, Syscall, SyscallError};

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("process.capabilities: unknown capability {0}")]
    Unknown(String),
    #[error("process.capabilities: {0}")]
    Sys(SyscallError),
    /// Switching user or groups failed; `field` names the spec field.
    #[error("{field}: {source}")]
    User {
        field: &'static str,
        source: SyscallError,
    },
}

impl CapsError {
    fn user(field: &'static str, source: SyscallError) -> Self {
        CapsError::User { field, source }
    }
}

/// Every capability the guest kernel (Linux 6.x) knows, indexed by number. The runtime's
/// `husk features` reports this list.
pub const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The name of capability number `cap`.
pub fn name(cap: u32) -> Option<&'static str> {
    NAMES.get(cap as usize).copied()
}

/// The kernel's number for a capability name such as "CAP_KILL".
pub fn number(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|p| p as u32)
}

fn name_of(c: &Capability) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("CAP_{c}"))
}

/// A capability set as a 64-bit mask.
pub fn mask(set: &Option<HashSet<Capability>>) -> Result<u64, CapsError> {
    let mut m = 0u64;
    for c in set.iter().flatten() {
        let name = name_of(c);
        let n = number(&name).ok_or(CapsError::Unknown(name))?;
        m |= 1 << n;
    }
    Ok(m)
}

/// Removes the capability names this agent does not know from an OCI process (JSON, before it
/// is parsed), returning one warning per name: runc warns about and ignores them (a newer
/// client's capability, a typo), where parsing would reject the whole spec.
pub fn drop_unknown(process: &mut serde_json::Value, at: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(caps) = process
        .get_mut("capabilities")
        .and_then(|c| c.as_object_mut())
    else {
        return warnings;
    };
    for (set, list) in caps.iter_mut() {
        let Some(list) = list.as_array_mut() else {
            continue;
        };
        list.retain(|c| {
            let known = serde_json::from_value::<Capability>(c.clone()).is_ok();
            if !known {
                warnings.push(format!(
                    "{at}.capabilities.{set}: unknown capability {c}; ignored (as runc does)"
                ));
            }
            known
        });
    }
    warnings
}

/// The masks of one process, computed before any privilege change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapMasks {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl CapMasks {
    pub fn from_spec(c: &LinuxCapabilities) -> Result<Self, CapsError> {
        Ok(CapMasks {
            bounding: mask(c.bounding())?,
            effective: mask(c.effective())?,
            permitted: mask(c.permitted())?,
            inheritable: mask(c.inheritable())?,
            ambient: mask(c.ambient())?,
        })
    }
}

/// The highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Who the process becomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Switches to `id` with the capability sets `m`, in runc's and youki's order:
///
/// 1. drop everything outside the bounding set (needs CAP_SETPCAP, so before setuid);
/// 2. keep-caps on, then groups, gid, uid (keeps the permitted set across a setuid away from
///    0), keep-caps off again;
/// 3. capset effective/permitted/inheritable;
/// 4. raise each ambient capability.
///
/// The kernel only raises an ambient capability that is in both the permitted and the
/// inheritable set (runc's default spec lists ambient capabilities without inheritable ones).
/// Like runc, a capability that cannot be raised is a warning, not a failure: the returned
/// messages say which and why.
pub fn drop_privileges(
    sys: &dyn Syscall,
    m: &CapMasks,
    id: &Identity,
    last_cap: u32,
) -> Result<Vec<String>, CapsError> {
    for cap in 0..=last_cap.min(63) {
        if m.bounding & (1 << cap) == 0 {
            sys.cap_bounding_drop(cap).map_err(CapsError::Sys)?;
        }
    }
    sys.set_keep_caps(true).map_err(CapsError::Sys)?;
    sys.setgroups(&id.additional_gids)
        .map_err(|e| CapsError::user("process.user.additionalGids", e))?;
    sys.setresgid(id.gid)
        .map_err(|e| CapsError::user("process.user.gid", e))?;
    sys.setresuid(id.uid)
        .map_err(|e| CapsError::user("process.user.uid", e))?;
    sys.set_keep_caps(false).map_err(CapsError::Sys)?;
    sys.capset(CapSets {
        effective: m.effective,
        permitted: m.permitted,
        inheritable: m.inheritable,
    })
    .map_err(CapsError::Sys)?;
    let mut warnings = Vec::new();
    let raisable = m.permitted & m.inheritable;
    for cap in 0..=last_cap.min(63) {
        if m.ambient & (1 << cap) == 0 {
            continue;
        }
        let cap_name = name(cap).unwrap_or("CAP_?");
        if raisable & (1 << cap) == 0 {
            warnings.push(format!(
                "process.capabilities.ambient: can't raise {cap_name}: not in both the \
                 permitted and inheritable sets"
            ));
            continue;
        }
        if let Err(e) = sys.cap_ambient_raise(cap) {
            warnings.push(format!(
                "process.capabilities.ambient: can't raise {cap_name}: {}",
                e.errno
            ));
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_kernel_numbers() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("CAP_KILL"), Some(5));
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
    }

    #[test]
    fn unknown_names_are_dropped_with_a_warning() {
        let mut p = serde_json::json!({"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "capabilities": {
            "bounding": ["CAP_KILL", "CAP_NOPE", "UNKNOWN_CAP"],
            "effective": ["CAP_KILL"], "ambient": null
        }});
        let w = drop_unknown(&mut p, "process");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("process.capabilities.bounding: unknown capability \"CAP_NOPE\""));
        assert_eq!(
            p["capabilities"]["bounding"],
            serde_json::json!(["CAP_KILL"])
        );
        let parsed: oci_spec::runtime::Process = serde_json::from_value(p).unwrap();
        let m = CapMasks::from_spec(parsed.capabilities().as_ref().unwrap()).unwrap();
        assert_eq!(m.bounding, 1 << 5);
        let mut none = serde_json::json!({"args": ["sh"]});
        assert!(drop_unknown(&mut none, "process").is_empty());
    }

    #[test]
    fn masks_from_spec_sets() {
        let set: HashSet<Capability> = [Capability::Kill, Capability::Chown].into_iter().collect();
        assert_eq!(mask(&Some(set)).unwrap(), (1 << 5) | 1);
        assert_eq!(mask(&None).unwrap(), 0);
    }

    use crate::syscall::fake::{Call, RecordingSyscall};

    const KILL: u64 = 1 << 5;
    const NET_BIND: u64 = 1 << 10;
    const AUDIT_WRITE: u64 = 1 << 29;

    /// runc's `runc spec` for root: ambient = bounding = effective = permitted, no
    /// inheritable.
    fn runc_default() -> CapMasks {
        let all = KILL | NET_BIND | AUDIT_WRITE;
        CapMasks {
            bounding: all,
            effective: all,
            permitted: all,
            inheritable: 0,
            ambient: all,
        }
    }

    fn root() -> Identity {
        Identity::default()
    }

    #[test]
    fn order_is_bounding_then_user_then_capset_then_ambient() {
        let sys = RecordingSyscall::new();
        let mut m = runc_default();
        m.inheritable = m.permitted;
        let id = Identity {
            uid: 1000,
            gid: 100,
            additional_gids: vec![10],
        };
        let warnings = drop_privileges(&sys, &m, &id, 40).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let calls = sys.calls();
        let drops = calls
            .iter()
            .filter(|c| matches!(c, Call::CapBoundingDrop(_)))
            .count();
        assert_eq!(drops, 41 - 3, "all but the three bounding caps dropped");
        let rest: Vec<Call> = calls[drops..].to_vec();
        assert_eq!(
            rest,
            vec![
                Call::KeepCaps(true),
                Call::Setgroups(vec![10]),
                Call::Setresgid(100),
                Call::Setresuid(1000),
                Call::KeepCaps(false),
                Call::Capset(CapSets {
                    effective: m.effective,
                    permitted: m.permitted,
                    inheritable: m.inheritable,
                }),
                Call::AmbientRaise(5),
                Call::AmbientRaise(10),
                Call::AmbientRaise(29),
            ]
        );
    }

    #[test]
    fn ambient_outside_inheritable_is_a_warning_not_a_failure() {
        let sys = RecordingSyscall::new();
        let warnings = drop_privileges(&sys, &runc_default(), &root(), 40).unwrap();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].contains("can't raise CAP_KILL: not in both the permitted and inheritable"),
            "{warnings:?}"
        );
        assert!(
            !sys.calls()
                .iter()
                .any(|c| matches!(c, Call::AmbientRaise(_))),
            "the kernel would refuse: not even tried"
        );
        assert!(sys.calls().iter().any(|c| matches!(c, Call::Capset(_))));
    }

    #[test]
    fn a_refused_raise_warns_and_the_rest_are_still_raised() {
        let sys = RecordingSyscall::new().failing_after("raise ambient", 1);
        let mut m = runc_default();
        m.inheritable = KILL | NET_BIND;
        let warnings = drop_privileges(&sys, &m, &root(), 40).unwrap();
        assert_eq!(
            warnings,
            vec![
                "process.capabilities.ambient: can't raise CAP_NET_BIND_SERVICE: EPERM: Operation not permitted".to_string(),
                "process.capabilities.ambient: can't raise CAP_AUDIT_WRITE: not in both the permitted and inheritable sets".to_string(),
            ]
        );
        assert!(sys.calls().contains(&Call::AmbientRaise(5)));
    }

    #[test]
    fn user_switch_failures_name_the_field() {
        let sys = RecordingSyscall::new().failing("setresuid");
        let id = Identity {
            uid: 1000,
            ..Default::default()
        };
        let err = drop_privileges(&sys, &runc_default(), &id, 40).unwrap_err();
        assert!(
            err.to_string().starts_with("process.user.uid: setresuid"),
            "{err}"
        );
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::Capset(_))));
    }
}
