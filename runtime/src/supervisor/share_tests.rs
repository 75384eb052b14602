use super::*;

#[test]
fn recognizes_bind_mounts() {
    assert!(is_bind(&serde_json::json!({"type": "bind"})));
    assert!(is_bind(&serde_json::json!({"options": ["rbind", "ro"]})));
    assert!(!is_bind(
        &serde_json::json!({"type": "tmpfs", "options": ["nosuid"]})
    ));
}

#[test]
fn dev_shm_becomes_a_guest_tmpfs_keeping_its_options() {
    let m = serde_json::json!({"destination": "/dev/shm", "type": "bind",
        "source": "/var/lib/x/shm", "options": ["rbind", "rprivate", "nosuid", "size=64m"]});
    assert_eq!(
        guest_tmpfs(&m, "/dev/shm"),
        serde_json::json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
            "options": ["nosuid", "size=64m"]})
    );
}

#[test]
fn mountinfo_mount_points_are_decoded() {
    let text = "22 1 0:21 / / rw shared:1 - ext4 /dev/vda rw\n\
                35 22 0:30 / /run/husk/a\\040b/share rw - tmpfs tmpfs rw\n";
    assert_eq!(
        mount_points(text),
        [PathBuf::from("/"), PathBuf::from("/run/husk/a b/share")]
    );
}

/// The layout as `delete` finds it after the supervisor's namespace is gone: stubs only.
fn stubs(state: &Path) {
    let share = state.join(SHARE_DIR);
    std::fs::create_dir_all(share.join("c1/rootfs")).unwrap();
    std::fs::create_dir_all(share.join("c1/mounts/0")).unwrap();
    std::fs::write(share.join("c1/mounts/1"), "").unwrap();
}

#[test]
fn remove_takes_the_stubs_and_the_share() {
    let t = tempfile::tempdir().unwrap();
    stubs(t.path());
    remove(t.path()).unwrap();
    assert!(!t.path().join(SHARE_DIR).exists());
    // Nothing there is fine too.
    remove(t.path()).unwrap();
}

#[test]
fn remove_never_empties_a_stub_that_is_not_empty() {
    let t = tempfile::tempdir().unwrap();
    stubs(t.path());
    let data = t.path().join("share/c1/rootfs/bin");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("sh"), "user data").unwrap();
    let e = remove(t.path()).unwrap_err().to_string();
    assert!(e.contains("rmdir") && e.contains("c1/rootfs"), "{e}");
    assert_eq!(std::fs::read(data.join("sh")).unwrap(), b"user data");
}

#[test]
fn remove_never_follows_a_symlink_in_the_share() {
    let t = tempfile::tempdir().unwrap();
    stubs(t.path());
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("f"), "keep").unwrap();
    std::os::unix::fs::symlink(&outside, t.path().join("share/c1/mounts/2")).unwrap();
    remove(t.path()).unwrap();
    assert_eq!(std::fs::read(outside.join("f")).unwrap(), b"keep");
}

#[test]
fn plan_lists_the_rootfs_and_bind_sources_and_rewrites_the_spec() {
    let t = tempfile::tempdir().unwrap();
    let bundle = t.path();
    std::fs::create_dir(bundle.join("rootfs")).unwrap();
    std::fs::create_dir(bundle.join("data")).unwrap();
    std::fs::write(bundle.join("hosts"), "").unwrap();
    let mut spec = serde_json::json!({"mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro"]},
        {"destination": "/etc/hosts", "source": bundle.join("hosts"), "options": ["bind"]},
        {"destination": "/dev/shm", "type": "bind", "source": "/nowhere", "options": ["rbind"]},
    ]});
    let (root, attaches) = plan("c2", Some(&bundle.join("rootfs")), bundle, &mut spec).unwrap();
    assert_eq!(root.as_deref(), Some("/run/husk/share/c2/rootfs"));
    let got: Vec<_> = attaches
        .iter()
        .map(|a| (a.what(), a.rel.as_str(), a.dir, a.recursive, a.read_only))
        .collect();
    assert_eq!(
        got,
        [
            ("root.path".to_string(), "c2/rootfs", true, true, false),
            (
                "mounts[1] (/data)".to_string(),
                "c2/mounts/1",
                true,
                true,
                true
            ),
            (
                "mounts[2] (/etc/hosts)".to_string(),
                "c2/mounts/2",
                false,
                false,
                false
            ),
        ]
    );
    assert_eq!(
        attaches[1].source,
        bundle.join("data"),
        "relative to the bundle"
    );
    let m = &spec["mounts"];
    assert_eq!(m[0]["source"], "proc");
    assert_eq!(m[1]["source"], "/run/husk/share/c2/mounts/1");
    assert_eq!(m[2]["source"], "/run/husk/share/c2/mounts/2");
    assert_eq!(m[3]["type"], "tmpfs");

    // The stubs, from the host's side: the share's modes.
    let share = t.path().join("share");
    make_dir(&share, DIR_MODE).unwrap();
    make_stubs(|rel| share.join(rel), "c2", &attaches).unwrap();
    let mode = |p: &str| crate::perms::tests::mode(&share.join(p));
    assert_eq!(mode("c2"), 0o711);
    assert_eq!(mode("c2/mounts"), 0o711);
    assert_eq!(mode("c2/rootfs"), 0o700);
    assert_eq!(mode("c2/mounts/1"), 0o700);
    assert!(share.join("c2/mounts/2").is_file());
    remove_container_stubs(&share, "c2").unwrap();
    assert!(!share.join("c2").exists());
    assert!(share.is_dir(), "the share itself stays");
    remove_container_stubs(&share, "c2").unwrap();
}

#[test]
fn plan_names_the_mount_whose_source_is_wrong() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = serde_json::json!({"mounts": [
        {"destination": "/a", "type": "bind", "source": "/nonexistent/x"},
    ]});
    let e = plan("c", None, t.path(), &mut spec)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("mounts[0] (/a): /nonexistent/x:"), "{e}");
    let sock = t.path().join("s");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut spec = serde_json::json!({"mounts": [
        {"destination": "/s", "type": "bind", "source": sock},
    ]});
    let e = plan("c", None, t.path(), &mut spec)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mounts[0] (/s)") && e.contains("socket"), "{e}");
}

/// A stand-in supervisor: a process in a mount namespace of its own (a slave of this one)
/// with `share` bind-mounted onto itself, shared and read-only, as `Share::create` makes it.
fn fake_supervisor(share: &Path) -> std::process::Child {
    let script = format!(
        "mount --bind {s} {s} && mount --make-shared {s} && mount -o remount,bind,ro {s} \
         && echo ready && exec sleep 100",
        s = share.display()
    );
    let mut child = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "slave", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

/// Runs `f` in a forked child (single-threaded, as `setns` needs); its result as a string.
fn in_child(f: impl FnOnce() -> Result<()>) -> std::result::Result<(), String> {
    let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
    // SAFETY: the child only runs `f` (mount syscalls, file reads, small allocations that
    // glibc's fork handlers keep safe) and exits with _exit.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let msg = match f() {
                Ok(()) => String::new(),
                Err(e) => e.to_string(),
            };
            let _ = std::io::Write::write_all(&mut &w, msg.as_bytes());
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut msg = String::new();
            std::io::Read::read_to_string(&mut &r, &mut msg).unwrap();
            nix::sys::wait::waitpid(child, None).unwrap();
            if msg.is_empty() {
                Ok(())
            } else {
                Err(msg)
            }
        }
    }
}

fn mount_line<'a>(mountinfo: &'a str, point: &Path) -> Option<&'a str> {
    mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(point.to_str().unwrap()))
}

#[test]
fn a_pod_containers_files_attach_and_detach_in_the_supervisors_namespace() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root (mount namespaces)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = t.path().canonicalize().unwrap();
    let share = base.join("share");
    make_dir(&share, DIR_MODE).unwrap();
    let bundle = base.join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs/etc")).unwrap();
    std::fs::write(bundle.join("rootfs/etc/hostname"), "pod").unwrap();
    std::fs::create_dir(base.join("vol")).unwrap();
    std::fs::write(base.join("file"), "f").unwrap();
    let mut sup = fake_supervisor(&share);
    let sup_pid = sup.id() as i32;

    let mut spec = serde_json::json!({"mounts": [
        {"destination": "/vol", "type": "bind", "source": base.join("vol"), "options": ["rbind"]},
        {"destination": "/f", "type": "bind", "source": base.join("file"), "options": ["bind", "ro"]},
    ]});
    let (_, attaches) = plan("c2", Some(&bundle.join("rootfs")), &bundle, &mut spec).unwrap();
    make_stubs(|rel| share.join(rel), "c2", &attaches).unwrap();
    in_child(|| attach_in_namespace(sup_pid, &share, &attaches)).unwrap();

    let info = std::fs::read_to_string(format!("/proc/{sup_pid}/mountinfo")).unwrap();
    for rel in ["c2/rootfs", "c2/mounts/0", "c2/mounts/1"] {
        assert!(
            mount_line(&info, &share.join(rel)).is_some(),
            "{rel}:\n{info}"
        );
    }
    let ro = mount_line(&info, &share.join("c2/mounts/1")).unwrap();
    assert!(ro.split(' ').nth(5).unwrap().starts_with("ro"), "{ro}");
    let rw = mount_line(&info, &share.join("c2/rootfs")).unwrap();
    assert!(rw.split(' ').nth(5).unwrap().starts_with("rw"), "{rw}");
    // Seen through the supervisor's root, the rootfs is there; the host has no mount.
    let seen = format!(
        "/proc/{sup_pid}/root{}",
        share.join("c2/rootfs/etc/hostname").display()
    );
    assert_eq!(std::fs::read_to_string(seen).unwrap(), "pod");
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host.contains(share.to_str().unwrap()), "{host}");
    // Detached over there, the stubs here go with rmdir/unlink.
    in_child(|| detach_in_namespace(sup_pid, &share, "c2").map(drop)).unwrap();
    let info = std::fs::read_to_string(format!("/proc/{sup_pid}/mountinfo")).unwrap();
    assert!(!info.contains(share.join("c2").to_str().unwrap()), "{info}");
    // Again: nothing left is fine.
    in_child(|| detach_in_namespace(sup_pid, &share, "c2").map(drop)).unwrap();
    remove_container_stubs(&share, "c2").unwrap();
    assert!(!share.join("c2").exists());
    // A missing source is named, before anything is attached.
    let bad = vec![Attach {
        source: base.join("gone"),
        ..attaches[1].clone()
    }];
    let e = in_child(|| attach_in_namespace(sup_pid, &share, &bad)).unwrap_err();
    assert!(e.starts_with("mounts[0] (/vol): open_tree"), "{e}");
    // The process must be single-threaded (this test's is not).
    let e = attach_in_namespace(sup_pid, &share, &attaches).unwrap_err();
    assert!(matches!(e, ShareError::Threaded(_)), "{e}");
    sup.kill().unwrap();
    sup.wait().unwrap();
    std::fs::remove_dir(&share).unwrap();
}
