//! Bind mounts of host paths, copied into the guest: there is no shared filesystem between
//! the host and the microVM yet, so a bind mount's host source is copied in through the
//! agent's `CopyFile` under `/run/husk/<id>/binds/<n>` and the mount's source rewritten to
//! that guest path before the spec goes to the agent. Files (podman's /etc/hosts,
//! /etc/resolv.conf, /etc/hostname, /run/.containerenv) are copied whole; directories up to
//! `DIR_COPY_MAX` bytes in all (regular files only; symlinks, special files and empty
//! subdirectories are not recreated); an empty directory (podman's /dev/shm) becomes a tmpfs.
//! Writes in the container stay in the guest: they never reach the host source.
//!
//! Owns: deciding what a host bind source becomes in the guest. Must not touch the rootfs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::Value;

use super::agent::AgentClient;

/// Largest single file copied (a ttrpc message is at most 4 MiB).
pub const FILE_COPY_MAX: u64 = 3 << 20;
/// Largest directory tree copied, all files together.
pub const DIR_COPY_MAX: u64 = 16 << 20;

/// Whether a spec mount is a bind mount.
fn is_bind(m: &Value) -> bool {
    m["type"].as_str() == Some("bind")
        || m["options"].as_array().is_some_and(|o| {
            o.iter()
                .any(|x| matches!(x.as_str(), Some("bind" | "rbind")))
        })
}

/// Checks that every bind mount's host source can be copied (before the VM boots).
pub fn check(spec: &Value) -> Result<(), String> {
    copy_in(None, "check", &mut spec.clone())
}

/// Copies every bind mount's host source into the guest and rewrites `spec["mounts"]` to
/// use the copies; with no agent, only checks. Errors name the mount
/// (`mounts[3] (/data): ...`).
pub fn copy_in(a: Option<&AgentClient>, id: &str, spec: &mut Value) -> Result<(), String> {
    let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for (i, m) in mounts.iter_mut().enumerate() {
        if !is_bind(m) {
            continue;
        }
        let dest = m["destination"].as_str().unwrap_or("?").to_string();
        let at = |e: String| format!("mounts[{i}] ({dest}): {e}");
        let Some(src) = m["source"].as_str().map(str::to_string) else {
            continue;
        };
        let md = std::fs::metadata(&src).map_err(|e| at(format!("{src}: {e}")))?;
        let guest = format!("/run/husk/{id}/binds/{i}");
        if md.is_file() {
            let target = format!("{guest}/file");
            copy_file(a, Path::new(&src), &md, &target).map_err(at)?;
            m["source"] = target.into();
        } else if md.is_dir() {
            let empty = std::fs::read_dir(&src)
                .map_err(|e| at(format!("{src}: {e}")))?
                .next()
                .is_none();
            if empty {
                // Nothing to copy: a guest tmpfs is the same empty, writable directory.
                let opts: Vec<Value> = m["options"]
                    .as_array()
                    .map(|o| {
                        o.iter()
                            .filter(|x| {
                                !matches!(
                                    x.as_str(),
                                    Some("bind" | "rbind" | "private" | "rprivate")
                                )
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                *m = serde_json::json!({
                    "destination": dest, "type": "tmpfs", "source": "tmpfs", "options": opts,
                });
                continue;
            }
            copy_dir(a, Path::new(&src), &guest).map_err(at)?;
            m["source"] = guest.into();
        } else {
            return Err(at(format!(
                "{src}: only files and directories can be bind mounted into a husk sandbox"
            )));
        }
        if a.is_some() {
            tracing::info!(source = %src, destination = %dest, "bind source copied into the guest");
        }
    }
    Ok(())
}

fn copy_file(
    a: Option<&AgentClient>,
    src: &Path,
    md: &std::fs::Metadata,
    target: &str,
) -> Result<(), String> {
    if md.len() > FILE_COPY_MAX {
        return Err(format!(
            "{}: {} bytes; husk copies bind-mounted files of at most {} MiB into the guest \
             (no shared filesystem yet)",
            src.display(),
            md.len(),
            FILE_COPY_MAX >> 20
        ));
    }
    let Some(a) = a else { return Ok(()) };
    let data = std::fs::read(src).map_err(|e| format!("{}: {e}", src.display()))?;
    a.copy_file(
        target,
        data,
        md.permissions().mode() & 0o7777,
        md.uid(),
        md.gid(),
    )
    .map_err(|e| format!("copying {} into the guest: {e}", src.display()))
}

fn copy_dir(a: Option<&AgentClient>, src: &Path, guest: &str) -> Result<(), String> {
    // Size first, so an oversized tree fails before anything is copied.
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let p = e.map_err(|e| format!("{}: {e}", d.display()))?.path();
            let md = std::fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                total += md.len();
                files.push((p, md));
            }
        }
        if total > DIR_COPY_MAX {
            return Err(format!(
                "{}: more than {} MiB; husk copies bind-mounted directories of at most {} MiB \
                 into the guest (no shared filesystem yet)",
                src.display(),
                DIR_COPY_MAX >> 20,
                DIR_COPY_MAX >> 20
            ));
        }
    }
    for (p, md) in files {
        let rel = p
            .strip_prefix(src)
            .unwrap_or(&p)
            .to_string_lossy()
            .to_string();
        copy_file(a, &p, &md, &format!("{guest}/{rel}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_bind_mounts() {
        assert!(is_bind(&serde_json::json!({"type": "bind"})));
        assert!(is_bind(&serde_json::json!({"options": ["rbind", "ro"]})));
        assert!(!is_bind(
            &serde_json::json!({"type": "tmpfs", "options": ["nosuid"]})
        ));
    }
}
