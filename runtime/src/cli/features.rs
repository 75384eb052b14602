//! `husk features`: what husk implements, as runc's `features` JSON (4-space indent). The
//! lists are what the guest agent applies, not what the host kernel has: everything of a
//! container happens in the guest. `hooks` lists the hooks husk runs: all six, prestart,
//! createRuntime, poststart and poststop on the host, createContainer and startContainer in
//! the guest (the agent's init stage, in the container's namespaces).

use serde::Serialize;
use serde_json::{json, Value};

use super::Ctx;

/// No flags.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Mount options the agent understands (anything else goes to the filesystem as data).
const MOUNT_OPTIONS: [&str; 31] = [
    "async",
    "atime",
    "bind",
    "dev",
    "diratime",
    "exec",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

/// The hooks husk runs, in runc's order (runc lists all six too).
const HOOKS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// The features object.
pub fn features() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::state::OCI_VERSION,
        "hooks": HOOKS,
        "mountOptions": &MOUNT_OPTIONS[..],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": husk_agent::caps::NAMES,
            "cgroup": {"v1": false, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                    "SCMP_ACT_TRACE", "SCMP_ACT_TRAP",
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                    "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE",
                ],
                "archs": ["SCMP_ARCH_X86_64"],
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {
            "io.husk.version": env!("CARGO_PKG_VERSION"),
            "io.husk.sandbox": "kvm-microvm",
        },
    })
}

/// The verb.
pub fn run(_ctx: &Ctx, _a: Args) -> anyhow::Result<i32> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    features().serialize(&mut ser)?;
    println!("{}", String::from_utf8_lossy(&out));
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn runc_shape() {
        let f = super::features();
        assert_eq!(f["linux"]["cgroup"]["v2"], true);
        assert_eq!(f["linux"]["capabilities"][40], "CAP_CHECKPOINT_RESTORE");
        assert!(f["linux"]["seccomp"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a != "SCMP_ACT_NOTIFY"));
        assert_eq!(
            f["hooks"],
            serde_json::json!([
                "prestart",
                "createRuntime",
                "createContainer",
                "startContainer",
                "poststart",
                "poststop"
            ])
        );
    }
}
