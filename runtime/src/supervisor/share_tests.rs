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
