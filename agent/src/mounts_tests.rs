//! Mount decisions, checked against the recording syscall fake.

use super::*;
use crate::syscall::fake::{Call, RecordingSyscall};

fn mount(dest: &str, typ: &str, src: &str, opts: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some(typ.into()));
    m.set_source(Some(src.into()));
    m.set_options(Some(opts.iter().map(|s| s.to_string()).collect()));
    m
}

fn plan(mounts: Vec<Mount>) -> RootfsPlan {
    RootfsPlan {
        rootfs: "/r".into(),
        mounts,
        ..Default::default()
    }
}

fn index_of(calls: &[Call], pred: impl Fn(&Call) -> bool) -> usize {
    calls.iter().position(pred).expect("call recorded")
}

#[test]
fn options_split_into_flags_propagation_and_data() {
    let o = MountOptions::parse(&[
        "nosuid".into(),
        "ro".into(),
        "rprivate".into(),
        "mode=755".into(),
        "size=1m".into(),
    ]);
    assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_RDONLY);
    assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
    assert_eq!(o.data(), Some("mode=755,size=1m".into()));
    assert_eq!(
        MountOptions::parse(&["ro".into(), "rw".into()]).flags,
        MsFlags::empty()
    );
}

#[test]
fn root_is_made_slave_first_and_pivot_comes_after_spec_mounts() {
    let sys = RecordingSyscall::new();
    setup_rootfs(&sys, &plan(vec![mount("/proc", "proc", "proc", &[])])).unwrap();
    let calls = sys.calls();
    assert_eq!(
        calls[0],
        Call::Mount {
            source: None,
            target: "/".into(),
            fstype: None,
            flags: MsFlags::MS_SLAVE | MsFlags::MS_REC,
            data: None
        }
    );
    let proc_mount = index_of(
        &calls,
        |c| matches!(c, Call::Mount { target, .. } if target == Path::new("/r/proc")),
    );
    let pivot = index_of(&calls, |c| matches!(c, Call::PivotRoot(_)));
    assert!(proc_mount < pivot);
    assert!(
        calls.contains(&Call::Umount(".".into())),
        "old root detached"
    );
}

#[test]
fn readonly_bind_mount_is_remounted() {
    let sys = RecordingSyscall::new().with_path("/host/file", PathKind::File);
    setup_rootfs(
        &sys,
        &plan(vec![mount(
            "/etc/hosts",
            "bind",
            "/host/file",
            &["rbind", "ro"],
        )]),
    )
    .unwrap();
    let calls = sys.calls();
    assert!(
        calls.contains(&Call::CreateFile("/r/etc/hosts".into())),
        "file target for file source"
    );
    let mounts: Vec<_> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Mount { target, flags, .. } if target == Path::new("/r/etc/hosts") => {
                Some(*flags)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        mounts,
        vec![
            MsFlags::MS_BIND | MsFlags::MS_REC,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY
        ]
    );
}

#[test]
fn dev_tmpfs_gets_default_nodes_and_masked_paths_are_covered() {
    let sys = RecordingSyscall::new()
        .with_path("/proc/kcore", PathKind::File)
        .with_path("/proc/acpi", PathKind::Dir);
    let mut p = plan(vec![mount(
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "mode=755"],
    )]);
    p.masked_paths = vec![
        "/proc/kcore".into(),
        "/proc/acpi".into(),
        "/proc/missing".into(),
    ];
    p.readonly_paths = vec!["/proc/acpi".into()];
    setup_rootfs(&sys, &p).unwrap();
    let calls = sys.calls();
    assert!(calls.contains(&Call::Mknod("/r/dev/null".into(), NodeKind::Char, 1, 3)));
    assert!(calls.contains(&Call::Symlink("pts/ptmx".into(), "/r/dev/ptmx".into())));
    assert!(calls.iter().any(|c| matches!(c, Call::Mount { source: Some(s), target, .. } if s == Path::new("/dev/null") && target == Path::new("/proc/kcore"))));
    assert!(calls.iter().any(|c| matches!(c, Call::Mount { fstype: Some(t), target, .. } if t == "tmpfs" && target == Path::new("/proc/acpi"))));
    assert!(!sys
        .mount_targets()
        .contains(&PathBuf::from("/proc/missing")));
    let pivot = index_of(&calls, |c| matches!(c, Call::PivotRoot(_)));
    let mask = index_of(
        &calls,
        |c| matches!(c, Call::Mount { target, .. } if target == Path::new("/proc/kcore")),
    );
    assert!(pivot < mask, "masks apply inside the new root");
}

#[test]
fn failures_name_the_mount_and_stop_before_pivot() {
    let sys = RecordingSyscall::new().failing("mkdir");
    let err = setup_rootfs(&sys, &plan(vec![mount("/data", "tmpfs", "tmpfs", &[])])).unwrap_err();
    assert!(err.to_string().starts_with("mounts[0] (/data)"), "{err}");
    assert!(!sys.calls().iter().any(|c| matches!(c, Call::PivotRoot(_))));
    let sys = RecordingSyscall::new();
    let err = setup_rootfs(
        &sys,
        &plan(vec![mount("/x", "bind", "/missing", &["bind"])]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("mounts[0] (/x)"), "{err}");
}

#[test]
fn root_readonly_remounts_slash_last() {
    let sys = RecordingSyscall::new();
    let mut p = plan(vec![]);
    p.root_readonly = true;
    setup_rootfs(&sys, &p).unwrap();
    let last = sys.calls().last().cloned().unwrap();
    assert_eq!(
        last,
        Call::Mount {
            source: None,
            target: "/".into(),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            data: None
        }
    );
}

#[test]
fn sysctls_are_written_after_pivot_and_before_readonly_and_masked_paths() {
    let sys = RecordingSyscall::new()
        .with_path("/proc/sys", PathKind::Dir)
        .with_path("/proc/kcore", PathKind::File);
    let mut p = plan(vec![mount("/proc", "proc", "proc", &[])]);
    p.readonly_paths = vec!["/proc/sys".into()];
    p.masked_paths = vec!["/proc/kcore".into()];
    p.sysctl = [
        ("net.ipv4.ping_group_range".to_string(), "0 0".to_string()),
        ("kernel.shmmni".to_string(), "8192".to_string()),
    ]
    .into_iter()
    .collect();
    setup_rootfs(&sys, &p).unwrap();
    let calls = sys.calls();
    let pivot = index_of(&calls, |c| matches!(c, Call::PivotRoot(_)));
    let shm = index_of(&calls, |c| {
        *c == Call::WriteFile("/proc/sys/kernel/shmmni".into(), "8192".into())
    });
    let ping = index_of(&calls, |c| {
        *c == Call::WriteFile("/proc/sys/net/ipv4/ping_group_range".into(), "0 0".into())
    });
    let readonly = index_of(
        &calls,
        |c| matches!(c, Call::Mount { target, .. } if target == Path::new("/proc/sys")),
    );
    let mask = index_of(
        &calls,
        |c| matches!(c, Call::Mount { target, .. } if target == Path::new("/proc/kcore")),
    );
    assert!(
        pivot < shm && shm < ping,
        "in name order, inside the new root"
    );
    assert!(ping < readonly, "/proc/sys is still writable for sysctls");
    assert!(readonly < mask, "runc's order: read-only paths, then masks");
}

#[test]
fn a_failing_sysctl_names_the_field() {
    let sys = RecordingSyscall::new().failing("write");
    let mut p = plan(vec![]);
    p.sysctl = [("kernel.nope".to_string(), "1".to_string())]
        .into_iter()
        .collect();
    let err = setup_rootfs(&sys, &p).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("linux.sysctl: write /proc/sys/kernel/nope"),
        "{err}"
    );
}
