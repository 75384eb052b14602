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
use super::hostfs::{self, Dir, Node, RegularFile};

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
/// (`mounts[3] (/data): ...`). Sources are read through `hostfs`: what lies below a source
/// is opened without following symlinks and read no further than its checked size.
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
        let guest = format!("/run/husk/{id}/binds/{i}");
        match hostfs::open(Path::new(&src)).map_err(|e| at(e.to_string()))? {
            Node::File(f) => {
                let target = format!("{guest}/file");
                copy_file(a, f, &target).map_err(at)?;
                m["source"] = target.into();
            }
            Node::Dir(mut d) => {
                let empty = d.names().map_err(|e| at(e.to_string()))?.is_empty();
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
                copy_dir(a, d, &guest).map_err(at)?;
                m["source"] = guest.into();
            }
            Node::Other { path, kind } => {
                return Err(at(format!(
                    "{}: only files and directories can be bind mounted into a husk sandbox \
                     (this is a {kind})",
                    path.display()
                )))
            }
        }
        if a.is_some() {
            tracing::info!(source = %src, destination = %dest, "bind source copied into the guest");
        }
    }
    Ok(())
}

/// Copies one opened file (size checked against `FILE_COPY_MAX` first; with no agent, only
/// that).
fn copy_file(a: Option<&AgentClient>, f: RegularFile, target: &str) -> Result<(), String> {
    let src = f.path().to_path_buf();
    if f.len() > FILE_COPY_MAX {
        return Err(format!(
            "{}: {} bytes; husk copies bind-mounted files of at most {} MiB into the guest \
             (no shared filesystem yet)",
            src.display(),
            f.len(),
            FILE_COPY_MAX >> 20
        ));
    }
    let Some(a) = a else { return Ok(()) };
    let (mode, uid, gid) = owner(f.metadata());
    let data = f.read(FILE_COPY_MAX).map_err(|e| e.to_string())?;
    a.copy_file(target, data, mode, uid, gid)
        .map_err(|e| format!("copying {} into the guest: {e}", src.display()))
}

fn owner(md: &std::fs::Metadata) -> (u32, u32, u32) {
    (md.permissions().mode() & 0o7777, md.uid(), md.gid())
}

/// Deepest directory tree copied (each level holds one descriptor open).
const DIR_DEPTH_MAX: usize = 64;

/// A file read for the copy: guest-relative path, contents, mode, uid, gid.
type Copied = (String, Vec<u8>, (u32, u32, u32));

fn copy_dir(a: Option<&AgentClient>, top: Dir, guest: &str) -> Result<(), String> {
    // Everything is read before anything is copied, so an oversized tree fails first; what
    // is read is bounded by DIR_COPY_MAX.
    let src = top.path().to_path_buf();
    let mut files = Vec::new();
    let mut total = 0u64;
    walk(top, a.is_some(), "", 0, &mut total, &mut files).map_err(|e| match e {
        WalkError::TooBig => format!(
            "{}: more than {} MiB; husk copies bind-mounted directories of at most {} MiB \
             into the guest (no shared filesystem yet)",
            src.display(),
            DIR_COPY_MAX >> 20,
            DIR_COPY_MAX >> 20
        ),
        WalkError::Other(e) => e,
    })?;
    let Some(a) = a else { return Ok(()) };
    for (rel, data, (mode, uid, gid)) in files {
        a.copy_file(&format!("{guest}/{rel}"), data, mode, uid, gid)
            .map_err(|e| format!("copying {}/{rel} into the guest: {e}", src.display()))?;
    }
    Ok(())
}

enum WalkError {
    TooBig,
    Other(String),
}

/// Depth first, one open directory per level; regular files only (symlinks, special files
/// and empty subdirectories are not recreated). `read`: keep the contents (else only size).
fn walk(
    mut d: Dir,
    read: bool,
    rel: &str,
    depth: usize,
    total: &mut u64,
    files: &mut Vec<Copied>,
) -> Result<(), WalkError> {
    if depth > DIR_DEPTH_MAX {
        return Err(WalkError::Other(format!(
            "{}: more than {DIR_DEPTH_MAX} directory levels",
            d.path().display()
        )));
    }
    let other = |e: hostfs::HostFsError| WalkError::Other(e.to_string());
    for name in d.names().map_err(other)? {
        let rel = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        match d.open_entry(&name).map_err(other)? {
            Node::Dir(sub) => walk(sub, read, &rel, depth + 1, total, files)?,
            Node::File(f) => {
                *total = total.saturating_add(f.len());
                if *total > DIR_COPY_MAX {
                    return Err(WalkError::TooBig);
                }
                let meta = owner(f.metadata());
                let data = if read {
                    f.read(FILE_COPY_MAX).map_err(other)?
                } else {
                    Vec::new()
                };
                files.push((rel, data, meta));
            }
            Node::Other { .. } => {}
        }
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

    fn bind_spec(src: &Path) -> Value {
        serde_json::json!({"mounts": [
            {"destination": "/data", "type": "bind", "source": src, "options": ["rbind"]},
        ]})
    }

    #[test]
    fn symlinks_fifos_and_devices_in_a_source_are_skipped_not_read() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("/dev/zero", src.join("zero")).unwrap();
        std::os::unix::fs::symlink("/etc", src.join("etc")).unwrap();
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        check(&bind_spec(&src)).unwrap();
        let mut files = Vec::new();
        let mut total = 0;
        let Node::Dir(d) = hostfs::open(&src).unwrap() else {
            panic!()
        };
        assert!(walk(d, true, "", 0, &mut total, &mut files).is_ok());
        let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["sub/f"]);
        assert_eq!(files[0].1, b"x");
        // A source that is itself a device is refused, never read.
        let e = check(&bind_spec(Path::new("/dev/zero"))).unwrap_err();
        assert!(
            e.starts_with("mounts[0] (/data): /dev/zero: only files"),
            "{e}"
        );
    }
}
