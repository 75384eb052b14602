use super::*;
use crate::syscall::fake::{Call, RecordingSyscall};

fn pb_storage(driver: &str, source: &str, fstype: &str, options: &[&str], mp: &str) -> pb::Storage {
    pb::Storage {
        driver: driver.into(),
        source: source.into(),
        fstype: fstype.into(),
        options: options.iter().map(|s| s.to_string()).collect(),
        mount_point: mp.into(),
        ..Default::default()
    }
}

fn parse(s: pb::Storage) -> Result<Storage> {
    Storage::from_pb("storages", 0, &s)
}

fn mounts(sys: &RecordingSyscall) -> Vec<(PathBuf, Option<String>, MsFlags, Option<String>)> {
    sys.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Mount {
                target,
                fstype,
                flags,
                data,
                ..
            } => Some((target, fstype, flags, data)),
            _ => None,
        })
        .collect()
}

#[test]
fn virtio_blk_ext4_read_only_mounts_the_disk_read_only() {
    let st = parse(pb_storage(
        "virtio-blk",
        "rootfs",
        "ext4",
        &["ro", "noatime"],
        "/run/c/rootfs",
    ))
    .unwrap();
    let sys = RecordingSyscall::new();
    let m = mount(
        &sys,
        "storages[0]",
        &st,
        Some(Path::new("/dev/vda")),
        Path::new("/s"),
    )
    .unwrap();
    assert_eq!(m.targets, vec![PathBuf::from("/run/c/rootfs")]);
    let calls = sys.calls();
    assert!(calls.contains(&Call::Mount {
        source: Some("/dev/vda".into()),
        target: "/run/c/rootfs".into(),
        fstype: Some("ext4".into()),
        flags: MsFlags::MS_RDONLY | MsFlags::MS_NOATIME,
        data: None,
    }));
}

#[test]
fn writable_ext4_without_ro_is_mounted_read_write() {
    let st = parse(pb_storage("virtio-blk", "d", "ext4", &["ro", "rw"], "/m")).unwrap();
    assert!(!st.flags.contains(MsFlags::MS_RDONLY));
}

#[test]
fn erofs_is_always_read_only_and_other_fstypes_are_refused() {
    let st = parse(pb_storage("virtio-blk", "d", "erofs", &[], "/m")).unwrap();
    assert!(st.flags.contains(MsFlags::MS_RDONLY));
    let e = parse(pb_storage("virtio-blk", "d", "xfs", &[], "/m")).unwrap_err();
    assert!(e.to_string().starts_with("storages[0].fstype:"), "{e}");
}

#[test]
fn overlay_puts_a_tmpfs_upper_over_the_read_only_disk() {
    let st = parse(pb_storage(
        "virtio-blk",
        "img",
        "erofs",
        &["overlay"],
        "/run/c/rootfs",
    ))
    .unwrap();
    let sys = RecordingSyscall::new();
    let m = mount(
        &sys,
        "storages[0]",
        &st,
        Some(Path::new("/dev/vdb")),
        Path::new("/s/0"),
    )
    .unwrap();
    assert_eq!(
        m.targets,
        vec![
            PathBuf::from("/s/0/lower"),
            PathBuf::from("/s/0/rw"),
            PathBuf::from("/run/c/rootfs")
        ]
    );
    let ms = mounts(&sys);
    assert_eq!(ms[0].1.as_deref(), Some("erofs"));
    assert!(ms[0].2.contains(MsFlags::MS_RDONLY));
    assert_eq!(ms[1].1.as_deref(), Some("tmpfs"));
    assert_eq!(ms[2].1.as_deref(), Some("overlay"));
    assert!(
        !ms[2].2.contains(MsFlags::MS_RDONLY),
        "the overlay itself is writable"
    );
    assert_eq!(
        ms[2].3.as_deref(),
        Some("lowerdir=/s/0/lower,upperdir=/s/0/rw/upper,workdir=/s/0/rw/work")
    );
    // upper and work are created on the tmpfs, after it is mounted.
    let calls = sys.calls();
    let tmpfs_at = calls
        .iter()
        .position(|c| matches!(c, Call::Mount { target, .. } if target == Path::new("/s/0/rw")))
        .unwrap();
    let upper_at = calls
        .iter()
        .position(|c| *c == Call::Mkdir("/s/0/rw/upper".into()))
        .unwrap();
    assert!(tmpfs_at < upper_at);
}

#[test]
fn unmount_goes_in_reverse_order() {
    let sys = RecordingSyscall::new();
    let m = Mounted {
        targets: vec!["/a".into(), "/b".into(), "/c".into()],
    };
    unmount(&sys, &m);
    assert_eq!(
        sys.calls(),
        vec![
            Call::Umount("/c".into()),
            Call::Umount("/b".into()),
            Call::Umount("/a".into())
        ]
    );
}

#[test]
fn a_failed_mount_leaves_nothing_mounted() {
    // The tmpfs mount fails after the lower layer was mounted: the lower is unmounted again.
    let sys = RecordingSyscall::new().failing_after("mount", 1);
    let st = parse(pb_storage("virtio-blk", "img", "ext4", &["overlay"], "/m")).unwrap();
    let e = mount(
        &sys,
        "storages[1]",
        &st,
        Some(Path::new("/dev/vda")),
        Path::new("/s"),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("storages[1]:"), "{e}");
    assert_eq!(sys.calls().last(), Some(&Call::Umount("/s/lower".into())));
}

#[test]
fn requests_are_validated_naming_the_field() {
    for (s, field) in [
        (
            pb_storage("virtio-blk", "", "ext4", &[], "/m"),
            "storages[0].source",
        ),
        (
            pb_storage("virtio-blk", "d", "ext4", &[], "rel"),
            "storages[0].mount_point",
        ),
        (
            pb_storage("virtio-blk", "d", "ext4", &[], "/a/../b"),
            "storages[0].mount_point",
        ),
        (
            pb_storage("virtio-blk", "d", "ext4", &[], "/"),
            "storages[0].mount_point",
        ),
        (pb_storage("", "d", "ext4", &[], "/m"), "storages[0].driver"),
        (
            pb_storage("bind", "rel", "", &[], "/m"),
            "storages[0].source",
        ),
        (
            pb_storage("tmpfs", "", "", &["overlay"], "/m"),
            "storages[0].options",
        ),
        (pb_storage("9p", "tag", "", &[], "/m"), "storages[0].fstype"),
    ] {
        let e = parse(s).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{field}:")), "{e}");
    }
}

#[test]
fn virtio_fs_mounts_the_tag_as_virtiofs() {
    let st = parse(pb_storage(
        "virtio-fs",
        "husk-share",
        "virtiofs",
        &["nodev"],
        "/run/husk/share",
    ))
    .unwrap();
    assert_eq!(
        st.driver,
        Driver::VirtioFs {
            tag: "husk-share".into()
        }
    );
    let sys = RecordingSyscall::new();
    let m = mount(&sys, "storages[0]", &st, None, Path::new("/s")).unwrap();
    assert_eq!(m.targets, vec![PathBuf::from("/run/husk/share")]);
    assert!(sys.calls().contains(&Call::Mount {
        source: Some("husk-share".into()),
        target: "/run/husk/share".into(),
        fstype: Some("virtiofs".into()),
        flags: MsFlags::MS_NODEV,
        data: None,
    }));
}

#[test]
fn virtio_fs_requests_are_validated_naming_the_field() {
    let long = "t".repeat(37);
    for (s, field) in [
        (
            pb_storage("virtio-fs", "", "virtiofs", &[], "/m"),
            "storages[0].source",
        ),
        (
            pb_storage("virtio-fs", "a tag", "virtiofs", &[], "/m"),
            "storages[0].source",
        ),
        (
            pb_storage("virtio-fs", &long, "virtiofs", &[], "/m"),
            "storages[0].source",
        ),
        (
            pb_storage("virtio-fs", "husk-share", "", &[], "/m"),
            "storages[0].fstype",
        ),
        (
            pb_storage("virtio-fs", "husk-share", "ext4", &[], "/m"),
            "storages[0].fstype",
        ),
        (
            pb_storage("virtio-fs", "husk-share", "virtiofs", &["overlay"], "/m"),
            "storages[0].options",
        ),
        (
            pb_storage("virtio-fs", "husk-share", "virtiofs", &[], "share"),
            "storages[0].mount_point",
        ),
    ] {
        let e = parse(s).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{field}:")), "{e}");
    }
    assert!(parse(pb_storage(
        "virtio-fs",
        &"t".repeat(36),
        "virtiofs",
        &[],
        "/m"
    ))
    .is_ok());
}

#[test]
fn tmpfs_and_bind_storages() {
    let st = parse(pb_storage("tmpfs", "", "", &["size=16m", "nodev"], "/t")).unwrap();
    let sys = RecordingSyscall::new();
    mount(&sys, "s", &st, None, Path::new("/s")).unwrap();
    let ms = mounts(&sys);
    assert_eq!(ms[0].1.as_deref(), Some("tmpfs"));
    assert_eq!(ms[0].2, MsFlags::MS_NODEV);
    assert_eq!(ms[0].3.as_deref(), Some("size=16m"));

    let st = parse(pb_storage("bind", "/data", "", &["ro"], "/b")).unwrap();
    let sys = RecordingSyscall::new();
    mount(&sys, "s", &st, None, Path::new("/s")).unwrap();
    let ms = mounts(&sys);
    assert!(ms[0].2.contains(MsFlags::MS_BIND));
    assert!(ms[1].2.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY));
}

#[test]
fn disks_are_found_by_serial_in_sysfs() {
    let dir = std::env::temp_dir().join(format!("husk-sysblock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, serial) in [("vda", "boot\n"), ("vdb", "rootfs"), ("loop0", "rootfs")] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("serial"), serial).unwrap();
    }
    let z = Duration::ZERO;
    assert_eq!(
        find_disk_by_serial(&dir, "rootfs", z),
        Some("/dev/vdb".into())
    );
    assert_eq!(
        find_disk_by_serial(&dir, "boot", z),
        Some("/dev/vda".into())
    );
    assert_eq!(find_disk_by_serial(&dir, "missing", z), None);
    std::fs::remove_dir_all(&dir).unwrap();
}
