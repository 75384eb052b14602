//! Workarounds for two gaps of the current guest agent, applied to the spec before it goes to
//! the agent, each logged. Remove them when the agent is fixed (see docs/runtime.md):
//!
//! - The agent raises ambient capabilities and fails with EPERM where runc succeeds (runc's
//!   default spec lists all its capabilities as ambient). For a process running as uid 0
//!   ambient capabilities change nothing (root's exec gets its permitted set from the bounding
//!   set anyway), so they are dropped there; non-root processes keep them (and fail).
//! - The agent writes `linux.sysctl` after making the `readonlyPaths` read-only, so with
//!   `/proc/sys` read-only (podman's default) every sysctl fails with EROFS; runc writes them
//!   first. When the spec has sysctls, `/proc/sys` is left writable instead: the container
//!   can then change the sysctls of its own guest kernel, which only the sandbox shares.
//!
//! Owns: these spec rewrites only.

use serde_json::Value;

/// Drops ambient capabilities of a uid 0 process (`process` object). True if it did.
pub fn drop_root_ambient(process: &mut Value) -> bool {
    let uid = process["user"]["uid"].as_u64().unwrap_or(0);
    let caps = &mut process["capabilities"];
    let has = caps["ambient"].as_array().is_some_and(|a| !a.is_empty());
    if uid != 0 || !has {
        return false;
    }
    if let Some(c) = caps.as_object_mut() {
        c.remove("ambient");
    }
    true
}

/// Applies both workarounds to a whole spec.
pub fn adjust_spec(spec: &mut Value) {
    if drop_root_ambient(&mut spec["process"]) {
        tracing::warn!(
            "process.capabilities.ambient dropped for uid 0 (agent gap; no effect for root)"
        );
    }
    let has_sysctl = spec["linux"]["sysctl"]
        .as_object()
        .is_some_and(|m| !m.is_empty());
    if let (true, Some(ro)) = (has_sysctl, spec["linux"]["readonlyPaths"].as_array_mut()) {
        let before = ro.len();
        ro.retain(|p| p.as_str() != Some("/proc/sys"));
        if ro.len() != before {
            tracing::warn!("/proc/sys left writable so that linux.sysctl applies (agent gap)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_what_the_agent_cannot_do() {
        let mut spec = serde_json::json!({
            "process": {"user": {"uid": 0}, "capabilities": {"bounding": ["CAP_KILL"], "ambient": ["CAP_KILL"]}},
            "linux": {"sysctl": {"net.ipv4.ping_group_range": "0 0"}, "readonlyPaths": ["/proc/bus", "/proc/sys"]},
        });
        adjust_spec(&mut spec);
        assert!(spec["process"]["capabilities"]["ambient"].is_null());
        assert_eq!(spec["process"]["capabilities"]["bounding"][0], "CAP_KILL");
        assert_eq!(
            spec["linux"]["readonlyPaths"],
            serde_json::json!(["/proc/bus"])
        );

        let mut user =
            serde_json::json!({"user": {"uid": 1000}, "capabilities": {"ambient": ["CAP_KILL"]}});
        assert!(!drop_root_ambient(&mut user));
        let mut plain = serde_json::json!({"linux": {"readonlyPaths": ["/proc/sys"]}});
        adjust_spec(&mut plain);
        assert_eq!(
            plain["linux"]["readonlyPaths"],
            serde_json::json!(["/proc/sys"])
        );
    }
}
