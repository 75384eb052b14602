//! Linux capabilities: names to numbers and applying the five sets of an OCI process with
//! raw prctl/capset calls (no libcap). Runs only in the init stage process.

use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxCapabilities};

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("process.capabilities: unknown capability {0}")]
    Unknown(String),
    #[error("process.capabilities: {op}: {errno}")]
    Sys {
        op: &'static str,
        errno: nix::errno::Errno,
    },
}

const NAMES: &[&str] = &[
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

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn sys(op: &'static str, rc: libc::c_int) -> Result<(), CapsError> {
    if rc < 0 {
        Err(CapsError::Sys {
            op,
            errno: nix::errno::Errno::last(),
        })
    } else {
        Ok(())
    }
}

/// Drops everything outside the bounding set. Needs CAP_SETPCAP, so call before setuid.
pub fn drop_bounding(m: &CapMasks) -> Result<(), CapsError> {
    for cap in 0..=last_cap() {
        if m.bounding & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only; no memory is passed.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            sys("drop bounding", rc)?;
        }
    }
    Ok(())
}

/// Sets effective/permitted/inheritable, then raises the ambient set.
pub fn apply_sets(m: &CapMasks) -> Result<(), CapsError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let split = |v: u64| [v as u32, (v >> 32) as u32];
    let (e, p, i) = (split(m.effective), split(m.permitted), split(m.inheritable));
    let data = [
        Data {
            effective: e[0],
            permitted: p[0],
            inheritable: i[0],
        },
        Data {
            effective: e[1],
            permitted: p[1],
            inheritable: i[1],
        },
    ];
    // SAFETY: capset reads a v3 header and two data structs, laid out as the kernel expects;
    // both outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    sys("capset", rc as libc::c_int)?;
    for cap in 0..=last_cap() {
        if m.ambient & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            sys("raise ambient", rc)?;
        }
    }
    Ok(())
}

/// Keeps permitted capabilities across the coming setuid (cleared again by apply_sets' caller).
pub fn set_keep_caps(on: bool) -> Result<(), CapsError> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0, 0, 0) };
    sys("keepcaps", rc)
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
    fn masks_from_spec_sets() {
        let set: HashSet<Capability> = [Capability::Kill, Capability::Chown].into_iter().collect();
        assert_eq!(mask(&Some(set)).unwrap(), (1 << 5) | 1);
        assert_eq!(mask(&None).unwrap(), 0);
    }
}
