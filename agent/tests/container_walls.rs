//! Host-mode tests of the walls the agent builds inside a container, against what runc gives
//! the same bundle: seccomp without forced no_new_privs, mount targets resolved inside the
//! rootfs. Real agent, as root; each test skips (saying why) when the host cannot run them.

mod common;

use common::{spec, Agent};

/// runc installs a seccomp profile without setting no_new_privs when the spec leaves
/// `process.noNewPrivileges` off (the spec's default config and podman's): the container sees
/// `NoNewPrivs: 0`, and the filter is still in force (`Seccomp: 2`). With it on, `1`.
#[test]
fn seccomp_does_not_force_no_new_privs() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    for (id, nnp) in [("nnp-off", false), ("nnp-on", true)] {
        let mut s = spec(
            &root,
            &[
                "sh",
                "-c",
                "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; mkdir /tmp/nnp 2>&1; echo rc=$?",
            ],
        );
        s["process"]["noNewPrivileges"] = nnp.into();
        s["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        });
        a.create(id, &s).unwrap();
        a.start_c(id).unwrap();
        let out = a.read_all(id, "", false);
        assert_eq!(a.wait(id, ""), 0, "{out}");
        let want = format!("NoNewPrivs:\t{}", u8::from(nnp));
        assert!(out.contains(&want), "{id}: want {want:?} in {out:?}");
        assert!(
            out.contains("Seccomp:\t2"),
            "{id}: filter installed: {out:?}"
        );
        assert!(
            out.contains("Permission denied") && out.contains("rc=1"),
            "{id}: filter enforced: {out:?}"
        );
        a.remove(id).unwrap();
    }
}

/// An image's symlinks cannot send a mount outside the rootfs (runc's securejoin): an
/// absolute link to a directory outside, `..` through a link, and a dangling link whose
/// target runc creates inside the rootfs. Without it the agent created (and in the guest,
/// mounted over) directories outside the container.
#[test]
fn mount_targets_behind_image_symlinks_stay_in_the_rootfs() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let outside = a.dir.join("outside");
    std::os::unix::fs::symlink(&outside, root.join("vol")).unwrap();
    std::os::unix::fs::symlink("..", root.join("up")).unwrap();
    std::os::unix::fs::symlink("/made/by/runc", root.join("dangling")).unwrap();
    let mut s = spec(
        &root,
        &[
            "sh",
            "-c",
            "echo hi > /vol/x && cat /vol/x && echo ok > /up/escaped/y && cat /escaped/y \
             && echo there > /dangling/z && cat /made/by/runc/z",
        ],
    );
    let tmpfs =
        |dest: &str| serde_json::json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"});
    let mounts = s["mounts"].as_array_mut().unwrap();
    mounts.extend([tmpfs("/vol"), tmpfs("/up/escaped"), tmpfs("/dangling")]);
    a.create("walls", &s).unwrap();
    a.start_c("walls").unwrap();
    let out = a.read_all("walls", "", false);
    let err = a.read_all("walls", "", true);
    assert_eq!(a.wait("walls", ""), 0, "{out} {err}");
    assert_eq!(out, "hi\nok\nthere\n");
    a.remove("walls").unwrap();
    assert!(!outside.exists(), "created {outside:?} outside the rootfs");
    assert!(!a.dir.join("escaped").exists(), "created ../escaped");
    assert!(root.join(outside.strip_prefix("/").unwrap()).is_dir());
    assert!(root.join("escaped").is_dir());
    assert!(root.join("made/by/runc").is_dir());
}
