//! Host-mode integration tests: a real husk-agent on a Unix socket, as root, running busybox
//! containers with real namespaces and cgroup v2. Each test skips (saying why) when the host
//! cannot run them.

mod common;

use std::time::Duration;

use common::{ctx, mount_count, spec, Agent};
use husk_agent::protocol as pb;

fn code(e: ttrpc::Error) -> (ttrpc::Code, String) {
    match e {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not an RPC status: {other:?}"),
    }
}

#[test]
fn round_trip_guest_details() {
    require_host_mode!();
    let a = Agent::start();
    let d = a
        .client
        .get_guest_details(ctx(), &pb::Empty::new())
        .unwrap();
    assert_eq!(d.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(d.mem_total_bytes > 0 && d.online_cpus > 0);
}

#[test]
fn created_waits_for_start_then_stdio_and_exit_status() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let marker = root.join("tmp/ran");
    let s = spec(
        &root,
        &[
            "sh",
            "-c",
            "touch /tmp/ran; echo hello; echo oops >&2; exit 3",
        ],
    );
    a.create("c1", &s).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "process ran before start");
    assert_eq!(a.pids("c1").len(), 1, "init stage waits in the cgroup");
    a.start_c("c1").unwrap();
    assert_eq!(a.read_all("c1", "", false), "hello\n");
    assert_eq!(a.read_all("c1", "", true), "oops\n");
    assert_eq!(a.wait("c1", ""), 3);
    assert!(marker.exists());
    let (c, _) = code(a.start_c("c1").unwrap_err());
    assert_eq!(c, ttrpc::Code::FAILED_PRECONDITION);
    a.remove("c1").unwrap();
    let (c, _) = code(a.start_c("c1").unwrap_err());
    assert_eq!(c, ttrpc::Code::NOT_FOUND);
}

#[test]
fn exit_codes_and_signals() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    a.create("e", &spec(&root, &["sh", "-c", "exit 7"]))
        .unwrap();
    a.start_c("e").unwrap();
    assert_eq!(a.wait("e", ""), 7);

    a.create("k", &spec(&root, &["sleep", "100"])).unwrap();
    a.start_c("k").unwrap();
    a.signal("k", "", libc::SIGKILL).unwrap();
    assert_eq!(a.wait("k", ""), 128 + libc::SIGKILL);

    let trap = "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done";
    a.create("t", &spec(&root, &["sh", "-c", trap])).unwrap();
    a.start_c("t").unwrap();
    let req = pb::ReadStreamRequest {
        container_id: "t".into(),
        len: 64,
        ..Default::default()
    };
    assert_eq!(a.client.read_stdout(ctx(), &req).unwrap().data, b"ready\n");
    a.signal("t", "", libc::SIGTERM).unwrap();
    assert_eq!(a.wait("t", ""), 42);
    for id in ["e", "k", "t"] {
        a.remove(id).unwrap();
    }
}

#[test]
fn exec_joins_the_container_namespaces() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    a.create("x", &spec(&root, &["sleep", "100"])).unwrap();
    a.start_c("x").unwrap();
    a.exec(
        "x",
        "e1",
        &[
            "sh",
            "-c",
            "hostname; cat /proc/1/cmdline; echo; echo $$; exit 5",
        ],
        false,
    )
    .unwrap();
    let out = a.read_all("x", "e1", false);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "husky", "{out}");
    assert_eq!(
        lines[1].trim_end_matches('\0').replace('\0', " "),
        "sleep 100"
    );
    assert_ne!(lines[2], "1", "exec is not the container's pid 1");
    assert!(
        lines[2].parse::<u32>().unwrap() < 100,
        "pid in the container's pid namespace: {out}"
    );
    assert_eq!(a.wait("x", "e1"), 5);
    let (c, _) = code(a.exec("x", "e1", &["true"], false).unwrap_err());
    assert_eq!(c, ttrpc::Code::ALREADY_EXISTS);
    let (c, msg) = code(a.exec("x", "e2", &["nonexistent-cmd"], false).unwrap_err());
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
    assert!(msg.contains("process.args"), "{msg}");
    a.remove("x").unwrap();
}

#[test]
fn stdin_and_tty() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    a.create("i", &spec(&root, &["cat"])).unwrap();
    a.start_c("i").unwrap();
    let w = pb::WriteStreamRequest {
        container_id: "i".into(),
        data: b"ping\n".to_vec(),
        ..Default::default()
    };
    assert_eq!(a.client.write_stdin(ctx(), &w).unwrap().len, 5);
    a.client
        .close_stdin(
            ctx(),
            &pb::ProcessRequest {
                container_id: "i".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.read_all("i", "", false), "ping\n");
    assert_eq!(a.wait("i", ""), 0);

    let mut s = spec(&root, &["sh", "-c", "stty size; [ -t 0 ] && echo isatty"]);
    s["process"]["terminal"] = true.into();
    s["process"]["consoleSize"] = serde_json::json!({"height": 30, "width": 100});
    a.create("tty", &s).unwrap();
    a.start_c("tty").unwrap();
    let out = a.read_all("tty", "", false);
    assert!(out.contains("30 100"), "{out:?}");
    assert!(out.contains("isatty"), "{out:?}");
    assert_eq!(a.wait("tty", ""), 0);

    a.create("r", &spec(&root, &["sleep", "100"])).unwrap();
    a.start_c("r").unwrap();
    a.exec("r", "t", &["sh", "-c", "read x; stty size"], true)
        .unwrap();
    let rs = pb::TtyWinResizeRequest {
        container_id: "r".into(),
        exec_id: "t".into(),
        row: 50,
        column: 132,
        ..Default::default()
    };
    a.client.tty_win_resize(ctx(), &rs).unwrap();
    let w = pb::WriteStreamRequest {
        container_id: "r".into(),
        exec_id: "t".into(),
        data: b"go\n".to_vec(),
        ..Default::default()
    };
    a.client.write_stdin(ctx(), &w).unwrap();
    let out = a.read_all("r", "t", false);
    assert!(out.contains("50 132"), "{out:?}");
    for id in ["i", "tty", "r"] {
        a.remove(id).unwrap();
    }
}

/// Like runc, the console is a pty of the container's own devpts (`newinstance`): `tty` names
/// /dev/pts/0 for the init and /dev/pts/1 for the next terminal exec, the pty is the
/// controlling terminal, and TtyWinResize reaches it.
#[test]
fn terminal_is_a_pty_of_the_containers_own_devpts() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let script = "tty; [ -t 0 ] && echo isatty; stty size; ls -1 /dev/pts; echo listed; \
                  read x; stty size; echo >/dev/tty via-ctty";
    let mut s = spec(&root, &["sh", "-c", script]);
    s["process"]["terminal"] = true.into();
    s["process"]["consoleSize"] = serde_json::json!({"height": 30, "width": 100});
    a.create("t", &s).unwrap();
    a.start_c("t").unwrap();
    let out = a.read_until("t", "", "listed");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "/dev/pts/0", "init's tty: {out:?}");
    assert_eq!(lines[1], "isatty", "{out:?}");
    assert_eq!(lines[2], "30 100", "consoleSize: {out:?}");
    assert_eq!(
        lines[3], "0",
        "only the console in the container's devpts: {out:?}"
    );

    // An exec with a terminal gets the next pty of the same instance.
    a.exec(
        "t",
        "e",
        &["sh", "-c", "tty; stty size; read x; stty size"],
        true,
    )
    .unwrap();
    let out = a.read_until("t", "e", "24 80");
    assert_eq!(
        out.lines().next().map(str::trim),
        Some("/dev/pts/1"),
        "{out:?}"
    );
    a.resize("t", "e", 50, 132);
    a.write_stdin("t", "e", b"go\n");
    let out = a.read_all("t", "e", false);
    assert!(out.contains("50 132"), "exec resized: {out:?}");
    assert_eq!(a.wait("t", "e"), 0);

    a.resize("t", "", 40, 120);
    a.write_stdin("t", "", b"go\n");
    let out = a.read_all("t", "", false);
    assert!(out.contains("40 120"), "init resized: {out:?}");
    assert!(out.contains("via-ctty"), "/dev/tty is the console: {out:?}");
    assert_eq!(a.wait("t", ""), 0);
    a.remove("t").unwrap();

    // Without a devpts of its own there is no console to make: refused at create, named.
    s["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["type"] != "devpts");
    let (c, msg) = code(a.create("nopts", &s).unwrap_err());
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
    assert!(msg.contains("process.terminal"), "{msg}");
}

/// A non-root terminal exec: the pty is opened before the privilege drop, and still usable.
#[test]
fn terminal_exec_as_another_user() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    a.create("u", &spec(&root, &["sleep", "100"])).unwrap();
    a.start_c("u").unwrap();
    let process = serde_json::json!({
        "terminal": true, "args": ["sh", "-c", "id -u; tty; stty size"], "cwd": "/",
        "env": ["PATH=/bin"], "user": {"uid": 1000, "gid": 1000},
        "consoleSize": {"height": 33, "width": 77},
    });
    let req = pb::ExecProcessRequest {
        container_id: "u".into(),
        exec_id: "e".into(),
        process_json: process.to_string(),
        ..Default::default()
    };
    a.client.exec_process(ctx(), &req).unwrap();
    let out = a.read_all("u", "e", false);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines, ["1000", "/dev/pts/0", "33 77"], "{out:?}");
    assert_eq!(a.wait("u", "e"), 0);
    a.remove("u").unwrap();
}

#[test]
fn ps_stats_pause_resume() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let s = spec(
        &root,
        &[
            "sh",
            "-c",
            "while true; do echo x >> /tmp/ticks; sleep 0.02; done",
        ],
    );
    a.create("p", &s).unwrap();
    a.start_c("p").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!a.pids("p").is_empty());
    let req = pb::ContainerRequest {
        container_id: "p".into(),
        ..Default::default()
    };
    let st = a.client.stats_container(ctx(), &req).unwrap();
    assert!(st.cpu.usage_usec > 0, "cpu.stat usage");
    let ticks = || {
        std::fs::metadata(root.join("tmp/ticks"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    a.client.pause_container(ctx(), &req).unwrap();
    let frozen = ticks();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ticks(), frozen, "no progress while paused");
    let (c, _) = code(a.client.pause_container(ctx(), &req).unwrap_err());
    assert_eq!(c, ttrpc::Code::FAILED_PRECONDITION);
    a.client.resume_container(ctx(), &req).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(ticks() > frozen, "progress after resume");
    a.remove("p").unwrap();
}

#[test]
fn namespaces_follow_the_spec() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let mine = |n: &str| std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
    a.create("n", &spec(&root, &["sleep", "100"])).unwrap();
    let pid = a.pids("n")[0];
    let theirs = |n: &str| std::fs::read_link(format!("/proc/{pid}/ns/{n}")).unwrap();
    for n in ["mnt", "pid_for_children", "ipc", "uts", "net"] {
        let t = if n == "pid_for_children" {
            std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap()
        } else {
            theirs(n)
        };
        assert_ne!(
            t,
            mine(if n == "pid_for_children" { "pid" } else { n }),
            "{n} namespace must be new"
        );
    }
    assert_eq!(
        theirs("cgroup"),
        mine("cgroup"),
        "no cgroup namespace requested"
    );

    let mut s = spec(&root, &["sleep", "100"]);
    s["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "pid"}]);
    s.as_object_mut().unwrap().remove("hostname");
    a.create("h", &s).unwrap();
    let pid = a.pids("h")[0];
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        mine("net"),
        "host network kept"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/uts")).unwrap(),
        mine("uts")
    );
    a.remove("n").unwrap();
    a.remove("h").unwrap();
}

/// A pod's later container names the sandbox container's namespaces as
/// `CONTAINER_NS_DIR/<id>/ns/<name>` (the supervisor's mapping of CRI's `/proc/<pid>/ns/*`):
/// accepted for a container the agent runs (joined through its init), refused for one it
/// does not run.
#[test]
fn pod_containers_join_the_sandbox_containers_namespaces() {
    use husk_agent::namespaces::CONTAINER_NS_DIR;
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    a.create("sb", &spec(&root, &["sleep", "100"])).unwrap();
    a.start_c("sb").unwrap();
    let sb = a.pids("sb")[0];
    let ns_of = |pid: i32, n: &str| std::fs::read_link(format!("/proc/{pid}/ns/{n}")).unwrap();
    let joined = |id: &str, names: &[&str]| {
        let mut s = spec(&root, &["sleep", "100"]);
        s.as_object_mut().unwrap().remove("hostname");
        let mut nss = vec![serde_json::json!({"type": "mount"})];
        for n in names {
            let t = match *n {
                "net" => "network",
                other => other,
            };
            nss.push(
                serde_json::json!({"type": t, "path": format!("{CONTAINER_NS_DIR}/{id}/ns/{n}")}),
            );
        }
        s["linux"]["namespaces"] = serde_json::Value::Array(nss);
        s
    };
    a.create("pc", &joined("sb", &["ipc", "uts", "net", "pid"]))
        .unwrap();
    a.start_c("pc").unwrap();
    let pc = a.pids("pc")[0];
    for n in ["ipc", "uts", "net", "pid"] {
        assert_eq!(ns_of(pc, n), ns_of(sb, n), "{n} namespace joined");
    }
    assert_ne!(
        ns_of(pc, "mnt"),
        ns_of(sb, "mnt"),
        "its own mount namespace"
    );
    // In the sandbox's pid namespace: the sandbox container's init is pid 1 there.
    let (c, out) = {
        let req = pb::ExecProcessRequest {
            container_id: "pc".into(),
            exec_id: "x".into(),
            process_json: serde_json::json!({
                "args": ["cat", "/proc/1/cmdline"], "cwd": "/", "env": ["PATH=/bin"],
                "user": {"uid": 0, "gid": 0}
            })
            .to_string(),
            ..Default::default()
        };
        a.client.exec_process(ctx(), &req).unwrap();
        (a.wait("pc", "x"), a.read_all("pc", "x", false))
    };
    assert_eq!(c, 0);
    // The pc's own /proc is mounted in a new mount namespace but the joined pid namespace:
    // pid 1 is the sandbox's sleep.
    assert_eq!(out.replace('\0', " ").trim(), "sleep 100");

    // A container the agent does not run: refused, naming the entry.
    let err = a.create("bad", &joined("nope", &["ipc"])).unwrap_err();
    let (c, msg) = code(err);
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
    assert!(
        msg.contains("linux.namespaces[1].path") && msg.contains("\"nope\""),
        "{msg}"
    );
    // And the plain host path CRI would give, unmapped: refused as a host namespace.
    let mut s = spec(&root, &["sleep", "100"]);
    s["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "ipc", "path": format!("/proc/{sb}/ns/ipc")}]);
    let (c, msg) = code(a.create("bad2", &s).unwrap_err());
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
    assert!(msg.contains("names a namespace of the host"), "{msg}");
    a.remove("pc").unwrap();
    a.remove("sb").unwrap();
}

#[test]
fn bad_specs_are_rejected_naming_the_field_and_leave_nothing() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let before = mount_count();
    let mut cases: Vec<(serde_json::Value, &str)> = Vec::new();
    let mut s = spec(&root, &["sh"]);
    s["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}]);
    cases.push((s, "hostname"));
    let mut s = spec(&root, &["sh"]);
    s["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/x", "type": "bind", "source": "/nonexistent/husk", "options": ["rbind"]}));
    cases.push((s, "mounts[4].source"));
    cases.push((spec(&root, &["no-such-binary"]), "process.args"));
    let mut s = spec(&root, &["sh"]);
    s["root"]["path"] = "/nonexistent/rootfs".into();
    cases.push((s, "root.path"));
    let mut s = spec(&root, &["sh"]);
    s["process"]["cwd"] = "relative".into();
    cases.push((s, "process.cwd"));
    let mut s = spec(&root, &["sh"]);
    s["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"destination": "/bad", "type": "nosuchfs", "source": "x"}));
    cases.push((s, "mounts[4]"));
    for (i, (s, field)) in cases.into_iter().enumerate() {
        let id = format!("bad{i}");
        let (c, msg) = code(a.create(&id, &s).unwrap_err());
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{field}: {msg}");
        assert!(msg.contains(field), "expected {field:?} in {msg:?}");
        assert!(
            !a.cgroup_root.join("husk").join(&id).exists(),
            "cgroup left behind for {field}"
        );
    }
    assert_eq!(
        mount_count(),
        before,
        "mounts leaked into the host namespace"
    );
    let (c, _) = code(a.create("../evil", &spec(&root, &["sh"])).unwrap_err());
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
}

#[test]
fn cgroup_limits() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let available = a.available_controllers();
    let mut s = spec(&root, &["sh", "-c", "cat /proc/self/cgroup"]);
    s["linux"]["resources"] =
        serde_json::json!({"memory": {"limit": 33554432}, "pids": {"limit": 8}});
    if !available.iter().any(|c| c == "memory") || !available.iter().any(|c| c == "pids") {
        // The request must fail clearly, naming the field, rather than be ignored.
        let (c, msg) = code(a.create("lim", &s).unwrap_err());
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
        assert!(msg.contains("linux.resources."), "{msg}");
        assert!(!a.cgroup_root.join("husk/lim").exists());
        eprintln!(
            "SKIPPED (partly): memory/pids limits not enforceable here: cgroup2 at {} offers only {:?} \
             (the host binds them to cgroup v1); checked that the request is refused instead",
            a.cgroup_root.display(),
            available
        );
        return;
    }
    a.create("lim", &s).unwrap();
    let cg = a.cgroup_root.join("husk/lim");
    assert_eq!(
        std::fs::read_to_string(cg.join("memory.max"))
            .unwrap()
            .trim(),
        "33554432"
    );
    assert_eq!(
        std::fs::read_to_string(cg.join("pids.max")).unwrap().trim(),
        "8"
    );
    a.start_c("lim").unwrap();
    assert_eq!(a.wait("lim", ""), 0);
    a.remove("lim").unwrap();
    let mut s = spec(
        &root,
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; wait",
        ],
    );
    s["linux"]["resources"] = serde_json::json!({"pids": {"limit": 4}});
    a.create("fork", &s).unwrap();
    a.start_c("fork").unwrap();
    let err = a.read_all("fork", "", true);
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "{err}"
    );
    a.remove("fork").unwrap();
}

#[test]
fn seccomp_profile_is_enforced() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let mut s = spec(&root, &["sh", "-c", "mkdir /tmp/d 2>&1; echo rc=$?"]);
    s["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    });
    a.create("sc", &s).unwrap();
    a.start_c("sc").unwrap();
    let out = a.read_all("sc", "", false);
    assert!(
        out.contains("Permission denied") && out.contains("rc=1"),
        "{out:?}"
    );
    assert_eq!(a.wait("sc", ""), 0);
    assert!(!root.join("tmp/d").exists());
    a.exec("sc2-missing", "e", &["true"], false).unwrap_err();
    a.remove("sc").unwrap();

    let mut s = spec(&root, &["true"]);
    s["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"});
    let err = a.create("bad", &s).unwrap_err();
    assert!(format!("{err:?}").contains("linux.seccomp"), "{err:?}");
}

#[test]
fn container_storages_are_mounted_and_unmounted() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let data = root.join("data");
    let mounted = |p: &std::path::Path| {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(p.to_str().unwrap()))
    };
    let tmpfs = pb::Storage {
        driver: "tmpfs".into(),
        fstype: "tmpfs".into(),
        options: vec!["size=1m".into()],
        mount_point: data.display().to_string(),
        ..Default::default()
    };
    let create = |id: &str, s: &serde_json::Value, storages: Vec<pb::Storage>| {
        let req = pb::CreateContainerRequest {
            container_id: id.into(),
            oci_spec_json: s.to_string(),
            storages,
            ..Default::default()
        };
        a.client.create_container(ctx(), &req)
    };

    // A bad spec: the storage is unmounted again.
    let mut bad = spec(&root, &["true"]);
    bad["process"]["cwd"] = "relative".into();
    let (c, msg) = code(create("bad", &bad, vec![tmpfs.clone()]).unwrap_err());
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    assert!(
        !mounted(&data),
        "storage left mounted after a rejected spec"
    );

    // A disk that is not there is refused, naming the field.
    let disk = pb::Storage {
        driver: "virtio-blk".into(),
        source: "no-such-serial".into(),
        fstype: "ext4".into(),
        mount_point: root.join("x").display().to_string(),
        ..Default::default()
    };
    let (c, msg) = code(create("nodisk", &spec(&root, &["true"]), vec![disk]).unwrap_err());
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.starts_with("storages[0].source"), "{msg}");

    // A good one: the container sees the storage; removing it unmounts.
    create(
        "c",
        &spec(&root, &["sh", "-c", "echo hi > /data/f && cat /data/f"]),
        vec![tmpfs],
    )
    .unwrap();
    assert!(mounted(&data));
    a.start_c("c").unwrap();
    assert_eq!(a.read_all("c", "", false), "hi\n");
    assert_eq!(a.wait("c", ""), 0);
    a.remove("c").unwrap();
    assert!(
        !mounted(&data),
        "storage still mounted after RemoveContainer"
    );
}
