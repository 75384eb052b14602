//! OCI seccomp profiles compiled to BPF with `seccompiler` (pure Rust, so the agent stays one
//! static binary; no libseccomp). seccompiler filters have one match and one mismatch action,
//! so a profile becomes a stack of filters: a base filter (mismatch = defaultAction, match =
//! allow) holding the allow rules, and one filter per other action (mismatch = allow). The
//! kernel runs every filter and takes the most severe result. Syscall names unknown on this
//! architecture are skipped, as libseccomp does.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp: {0}")]
    Unsupported(String),
    #[error("linux.seccomp: compiling the filter: {0}")]
    Compile(String),
    #[error("linux.seccomp: installing the filter: {0}")]
    Apply(String),
}

const ARCH: TargetArch = TargetArch::x86_64;

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<Value, SeccompError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => json!("allow"),
        LinuxSeccompAction::ScmpActErrno => json!({"errno": errno.unwrap_or(libc::EPERM as u32)}),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            json!("kill_thread")
        }
        LinuxSeccompAction::ScmpActKillProcess => json!("kill_process"),
        LinuxSeccompAction::ScmpActTrap => json!("trap"),
        LinuxSeccompAction::ScmpActLog => json!("log"),
        LinuxSeccompAction::ScmpActTrace => json!({"trace": errno.unwrap_or(0)}),
        other => return Err(SeccompError::Unsupported(format!("action {other:?}"))),
    })
}

fn known(name: &str) -> bool {
    let probe = json!({"p": {"default_action": "allow", "filter_action": "log", "filter": [{"syscall": name}]}});
    seccompiler::compile_from_json(probe.to_string().as_bytes(), ARCH).is_ok()
}

/// Compiles a profile into filters to install in order.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>, SeccompError> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    // action (as JSON text) -> rules
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for sc in profile.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret())?;
        if act == default {
            continue;
        }
        let mut args = Vec::new();
        for a in sc.args().iter().flatten() {
            let (op, val) = match a.op() {
                LinuxSeccompOperator::ScmpCmpEq => (json!("eq"), a.value()),
                LinuxSeccompOperator::ScmpCmpNe => (json!("ne"), a.value()),
                LinuxSeccompOperator::ScmpCmpLt => (json!("lt"), a.value()),
                LinuxSeccompOperator::ScmpCmpLe => (json!("le"), a.value()),
                LinuxSeccompOperator::ScmpCmpGt => (json!("gt"), a.value()),
                LinuxSeccompOperator::ScmpCmpGe => (json!("ge"), a.value()),
                LinuxSeccompOperator::ScmpCmpMaskedEq => {
                    (json!({"masked_eq": a.value()}), a.value_two().unwrap_or(0))
                }
            };
            args.push(json!({"index": a.index(), "type": "qword", "op": op, "val": val}));
        }
        for name in sc.names() {
            if !known(name) {
                continue;
            }
            let rule = if args.is_empty() {
                json!({"syscall": name})
            } else {
                json!({"syscall": name, "args": args})
            };
            groups.entry(act.to_string()).or_default().push(rule);
        }
    }
    let allow = json!("allow").to_string();
    let mut filters = serde_json::Map::new();
    if default != json!("allow") {
        let rules = groups.remove(&allow).unwrap_or_default();
        filters.insert(
            "0-base".into(),
            json!({"default_action": default, "filter_action": "allow", "filter": rules}),
        );
    } else {
        groups.remove(&allow);
    }
    for (i, (act, rules)) in groups.into_iter().enumerate() {
        let act: Value =
            serde_json::from_str(&act).map_err(|e| SeccompError::Compile(e.to_string()))?;
        filters.insert(
            format!("{}-action", i + 1),
            json!({"default_action": "allow", "filter_action": act, "filter": rules}),
        );
    }
    let text = Value::Object(filters).to_string();
    let mut map = seccompiler::compile_from_json(text.as_bytes(), ARCH)
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
    let mut names: Vec<String> = map.keys().cloned().collect();
    names.sort();
    Ok(names.into_iter().filter_map(|n| map.remove(&n)).collect())
}

/// Installs the filters on the calling thread (single-threaded stage).
pub fn apply(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for f in filters {
        seccompiler::apply_filter(f).map_err(|e| SeccompError::Apply(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_a_docker_like_profile_skipping_unknown_names() {
        let p: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"syscalls":[
                {"names":["read","write","exit_group","arm_fadvise64_64"],"action":"SCMP_ACT_ALLOW"},
                {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                {"names":["ptrace"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
        )
        .unwrap();
        let filters = compile(&p).unwrap();
        assert_eq!(filters.len(), 3, "base + errno(38) + kill");
    }

    #[test]
    fn allow_by_default_with_one_errno_rule() {
        let p: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        assert_eq!(compile(&p).unwrap().len(), 1);
    }
}
