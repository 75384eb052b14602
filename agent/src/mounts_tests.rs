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

// --- Targets resolved inside the rootfs (real filesystem, no mounts; runc's securejoin) ---

mod in_root {
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};

    use crate::syscall::linux::LinuxSyscall;
    use crate::syscall::{Create, PathKind, Syscall};

    /// A scratch directory `<tmp>/husk-inroot-<pid>-<tag>/a/b/rootfs`, removed on drop.
    struct Scratch {
        top: PathBuf,
        rootfs: PathBuf,
    }

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let top =
                std::env::temp_dir().join(format!("husk-inroot-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&top);
            let rootfs = top.join("a/b/rootfs");
            std::fs::create_dir_all(rootfs.join("etc")).unwrap();
            Scratch { top, rootfs }
        }

        /// Everything under the scratch top that is not inside the rootfs.
        fn outside(&self) -> Vec<PathBuf> {
            fn walk(p: &Path, skip: &Path, out: &mut Vec<PathBuf>) {
                for e in std::fs::read_dir(p).unwrap().flatten() {
                    let path = e.path();
                    if path == skip {
                        continue;
                    }
                    out.push(path.clone());
                    if e.file_type().unwrap().is_dir() {
                        walk(&path, skip, out);
                    }
                }
            }
            let mut out = Vec::new();
            walk(&self.top, &self.rootfs, &mut out);
            out.sort();
            out
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.top);
        }
    }

    fn expected_outside(s: &Scratch) -> Vec<PathBuf> {
        vec![s.top.join("a"), s.top.join("a/b")]
    }

    /// Where the resolved handle really points (the target of its /proc/self/fd link).
    fn real(p: &Path) -> PathBuf {
        std::fs::read_link(p).unwrap()
    }

    #[test]
    fn absolute_symlink_stays_in_the_rootfs() {
        let s = Scratch::new("abs");
        symlink("/etc", s.rootfs.join("data")).unwrap();
        let name = format!("husk-inroot-test-{}", std::process::id());
        let dest = Path::new("/data").join(&name);
        let r = LinuxSyscall.open_in_root(&s.rootfs, &dest, Create::Dir);
        // Checked (and cleaned up) first: the host's /etc must be untouched.
        let host = Path::new("/etc").join(&name);
        let leaked = host.exists();
        let _ = std::fs::remove_dir(&host);
        assert!(!leaked, "created {host:?} outside the rootfs");
        let r = r.unwrap();
        assert!(r.path().starts_with("/proc/self/fd/"), "{:?}", r.path());
        assert_eq!(r.kind(), PathKind::Dir);
        assert_eq!(real(r.path()), s.rootfs.join("etc").join(&name));
        assert_eq!(s.outside(), expected_outside(&s));
    }

    #[test]
    fn dotdot_through_a_symlink_stops_at_the_rootfs() {
        let s = Scratch::new("up");
        std::fs::create_dir_all(s.rootfs.join("x")).unwrap();
        symlink("../../..", s.rootfs.join("x/up")).unwrap();
        for (dest, create) in [
            ("/x/up/escaped", Create::Dir),
            ("/x/up/../../escaped-file", Create::File),
        ] {
            let r = LinuxSyscall
                .open_in_root(&s.rootfs, Path::new(dest), create)
                .unwrap();
            let name = Path::new(dest).file_name().unwrap();
            assert_eq!(real(r.path()), s.rootfs.join(name), "{dest}");
        }
        assert!(s.rootfs.join("escaped").is_dir());
        assert!(s.rootfs.join("escaped-file").is_file());
        assert_eq!(s.outside(), expected_outside(&s));
    }

    /// runc (issue 12 item 8): a destination reached through a dangling symlink is created
    /// where the link points, inside the rootfs.
    #[test]
    fn dangling_symlinks_get_their_target_created_inside() {
        let s = Scratch::new("dangling");
        symlink(
            "/var/log/app/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r",
            s.rootfs.join("logs"),
        )
        .unwrap();
        symlink("../run/missing-hosts", s.rootfs.join("etc/hosts")).unwrap();
        let r = LinuxSyscall
            .open_in_root(&s.rootfs, Path::new("/logs"), Create::Dir)
            .unwrap();
        assert_eq!(
            real(r.path()),
            s.rootfs
                .join("var/log/app/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r"),
            "a deep missing path is created whole"
        );
        let r = LinuxSyscall
            .open_in_root(&s.rootfs, Path::new("/etc/hosts"), Create::File)
            .unwrap();
        assert_eq!(r.kind(), PathKind::File);
        assert_eq!(real(r.path()), s.rootfs.join("run/missing-hosts"));
        assert!(s.rootfs.join("run/missing-hosts").is_file());
        assert_eq!(s.outside(), expected_outside(&s));
    }

    #[test]
    fn loops_missing_paths_and_files_in_the_middle_are_errors() {
        let s = Scratch::new("errors");
        symlink("loop", s.rootfs.join("loop")).unwrap();
        std::fs::write(s.rootfs.join("file"), "").unwrap();
        let e = LinuxSyscall
            .open_in_root(&s.rootfs, Path::new("/loop/x"), Create::Dir)
            .unwrap_err();
        assert_eq!(e.errno, nix::errno::Errno::ELOOP);
        let e = LinuxSyscall
            .open_in_root(&s.rootfs, Path::new("/file/x"), Create::Dir)
            .unwrap_err();
        assert_eq!(e.errno, nix::errno::Errno::ENOTDIR);
        let e = LinuxSyscall
            .open_in_root(&s.rootfs, Path::new("/nope"), Create::Nothing)
            .unwrap_err();
        assert_eq!(e.errno, nix::errno::Errno::ENOENT);
        assert!(!s.rootfs.join("nope").exists());
        let r = LinuxSyscall
            .open_in_root(&s.rootfs, Path::new("/"), Create::Nothing)
            .unwrap();
        assert_eq!(real(r.path()), s.rootfs);
    }

    /// The mount itself, in a forked child with its own mount namespace: a tmpfs for `/data`
    /// (`data -> <scratch>/outside`, absolute) and a bind of a file onto `/up/hosts`
    /// (`up -> ..`) land inside the rootfs; nothing outside is created or covered.
    #[test]
    fn mounts_through_escaping_symlinks_land_inside_the_rootfs() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIPPED: mounting needs root");
            return;
        }
        let s = Scratch::new("mount");
        let outside = s.top.join("outside");
        symlink(&outside, s.rootfs.join("data")).unwrap();
        symlink("..", s.rootfs.join("up")).unwrap();
        let src = s.top.join("a/hosts-src");
        std::fs::write(&src, "bound").unwrap();
        let tmpfs = super::mount("/data", "tmpfs", "tmpfs", &[]);
        let bind = super::mount("/up/hosts", "bind", src.to_str().unwrap(), &["bind", "ro"]);
        let inside = s.rootfs.join(outside.strip_prefix("/").unwrap());
        let p = super::RootfsPlan {
            rootfs: s.rootfs.clone(),
            ..Default::default()
        };
        // SAFETY: the child only makes system calls and _exits (fork from a threaded test).
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = (|| {
                    let private = nix::mount::MsFlags::MS_PRIVATE | nix::mount::MsFlags::MS_REC;
                    if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_err()
                        || nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
                            .is_err()
                    {
                        return 10;
                    }
                    if super::mount_one(&LinuxSyscall, &p, &tmpfs).is_err() {
                        return 11;
                    }
                    if super::mount_one(&LinuxSyscall, &p, &bind).is_err() {
                        return 12;
                    }
                    let dev = |p: &Path| {
                        std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                    };
                    // The tmpfs covers the directory created inside the rootfs.
                    if dev(&inside).ok() == dev(&s.rootfs).ok() {
                        return 13;
                    }
                    match std::fs::read_to_string(s.rootfs.join("hosts")) {
                        Ok(t) if t == "bound" => {}
                        _ => return 14,
                    }
                    if std::fs::write(s.rootfs.join("hosts"), "x").is_ok() {
                        return 15; // the read-only remount reached the bind mount
                    }
                    0
                })();
                // SAFETY: _exit ends the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "10 unshare, 11 tmpfs, 12 bind, 13 tmpfs not inside, 14 bind not inside, 15 not ro"
                );
            }
        }
        assert!(!outside.exists(), "created {outside:?} outside the rootfs");
        assert!(inside.is_dir());
        let mut want = expected_outside(&s);
        want.push(src);
        want.sort();
        assert_eq!(s.outside(), want);
    }
}

/// A cgroup2 mount refused with EPERM (a user namespace without its own cgroup namespace)
/// becomes a read-only bind of the guest's cgroup2 hierarchy, as runc's mountCgroupV2 does.
#[test]
fn refused_cgroup_mount_falls_back_to_a_bind_of_the_hierarchy() {
    let sys = RecordingSyscall::new()
        .with_path("/sys/fs/cgroup", PathKind::Dir)
        .failing_fstype("cgroup2");
    let mut p = plan(vec![mount(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", "ro"],
    )]);
    p.cgroup2_mount = Some("/sys/fs/cgroup".into());
    setup_rootfs(&sys, &p).unwrap();
    let calls = sys.calls();
    let target = PathBuf::from("/r/sys/fs/cgroup");
    let bind = index_of(&calls, |c| {
        matches!(c, Call::Mount { source: Some(s), target: t, flags, .. }
            if s == Path::new("/sys/fs/cgroup") && *t == target && *flags == MsFlags::MS_BIND)
    });
    let remount = index_of(&calls, |c| {
        matches!(c, Call::Mount { target: t, flags, .. }
            if *t == target && flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY))
    });
    assert!(bind < remount);

    // Without a hierarchy to bind, the refusal is the error.
    let sys = RecordingSyscall::new().failing_fstype("cgroup2");
    p.cgroup2_mount = None;
    assert!(setup_rootfs(&sys, &p).is_err());
}
