//! Host-mode tests of OCI runtime-spec conformance (issue 12): where runc is lenient or strict,
//! the agent is the same. Real agent, as root; each test skips (saying why) when the host
//! cannot run them.

mod common;

use common::{ctx, spec, Agent};
use husk_agent::protocol as pb;

fn code(e: ttrpc::Error) -> (ttrpc::Code, String) {
    match e {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not an RPC status: {other:?}"),
    }
}

/// Runs `s` as container `id` to the end; returns (status, stdout, stderr).
fn run(a: &Agent, id: &str, s: &serde_json::Value) -> (i32, String, String) {
    a.create(id, s).unwrap();
    a.start_c(id).unwrap();
    let out = a.read_all(id, "", false);
    let err = a.read_all(id, "", true);
    let status = a.wait(id, "");
    a.remove(id).unwrap();
    (status, out, err)
}

/// `linux.devices` nodes get exactly the spec's fileMode, uid and gid, whatever the agent's
/// umask (022 made a requested 0660 a 0640); runc's default nodes are 0666.
#[test]
fn device_nodes_get_the_exact_mode_and_owner() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let mut s = spec(
        &root,
        &[
            "sh",
            "-c",
            "stat -c '%n %a %u %g %t:%T' /dev/fuse /dev/null",
        ],
    );
    s["linux"]["devices"] = serde_json::json!([
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
         "fileMode": 0o660, "uid": 7, "gid": 9}
    ]);
    let (status, out, err) = run(&a, "dev", &s);
    assert_eq!(status, 0, "{out} {err}");
    assert_eq!(out, "/dev/fuse 660 7 9 a:e5\n/dev/null 666 0 0 1:3\n");
}

/// A namespace the spec does not list is shared with the runtime, in a VM the guest's: no
/// mount namespace means the guest's filesystem, no pid namespace the guest's pids.
#[test]
fn unlisted_namespaces_are_shared_not_refused() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let agent_ns = |n: &str| {
        std::fs::read_link(format!("/proc/{}/ns/{n}", a.pid()))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    // Without a mount namespace nothing is mounted and there is no pivot: the process sees
    // the runtime's root (here the host's, with its own sh).
    let mut s = spec(&root, &["sh", "-c", "readlink /proc/self/ns/mnt; echo $$"]);
    s["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "uts"}]);
    s["linux"]["maskedPaths"] = serde_json::json!([]);
    s["linux"]["readonlyPaths"] = serde_json::json!([]);
    s["process"]["env"] = serde_json::json!(["PATH=/usr/bin:/bin"]);
    let (status, out, err) = run(&a, "nomnt", &s);
    assert_eq!(status, 0, "{out} {err}");
    assert_eq!(out, format!("{}\n1\n", agent_ns("mnt")));

    let mut s = spec(&root, &["sh", "-c", "readlink /proc/self/ns/pid; echo $$"]);
    s["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "uts"}]);
    let (status, out, err) = run(&a, "nopid", &s);
    assert_eq!(status, 0, "{out} {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], agent_ns("pid"), "{out}");
    assert_ne!(lines[1], "1", "{out}");

    // runc's rule for the paths it cannot honour without a mount namespace.
    let mut s = spec(&root, &["true"]);
    s["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}]);
    s["hostname"] = "".into();
    let (c, msg) = code(a.create("masked", &s).unwrap_err());
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
    assert!(
        msg.contains("linux.maskedPaths") && msg.contains("without a private MNT namespace"),
        "{msg}"
    );
}

/// A namespace `path` names a namespace of the host, which a process in the VM cannot join:
/// refused naming the entry, nothing left behind. (The one path accepted, `/proc/1/ns/net`,
/// is the sandbox's network namespace: namespaces.rs tests it.)
#[test]
fn namespace_paths_are_refused_naming_the_entry() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let mut s = spec(&root, &["true"]);
    s["linux"]["namespaces"] = serde_json::json!([
        {"type": "mount"}, {"type": "pid"}, {"type": "uts"},
        {"type": "network", "path": "/var/run/netns/cni-1"}
    ]);
    let (c, msg) = code(a.create("nspath", &s).unwrap_err());
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
    assert!(
        msg.contains("linux.namespaces[3].path") && msg.contains("host"),
        "{msg}"
    );
    assert!(!a.cgroup_root.join("husk/nspath").exists());
}

/// runc refuses a hostname without a private UTS namespace, with this text.
#[test]
fn hostname_needs_a_uts_namespace() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let mut s = spec(&root, &["true"]);
    s["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}, {"type": "pid"}]);
    let (c, msg) = code(a.create("h", &s).unwrap_err());
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
    assert!(
        msg.contains("hostname: unable to set hostname without a private UTS namespace"),
        "{msg}"
    );
}

/// A user namespace with mappings: created first (clone), its maps written by the agent
/// before the stage runs, so that the namespaces it owns let root in the container set the
/// hostname and mount a tmpfs.
#[test]
fn user_namespace_with_mappings() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    // The image belongs to the mapped root, as podman prepares it for a user namespace.
    chown_tree(&root, 100000);
    let mut s = spec(
        &root,
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; hostname; hostname other && hostname; \
             mount -t tmpfs t /data && touch /data/f && echo mounted; id -u; \
             test -f /sys/fs/cgroup/cgroup.controllers && echo cgroup",
        ],
    );
    s["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "user"}));
    s["linux"]["uidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    s["linux"]["gidMappings"] =
        serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    s["process"]["noNewPrivileges"] = false.into();
    // No /dev tmpfs: its nodes would need mknod, which a user namespace may not do (runc
    // bind-mounts the host's nodes instead; husk does not yet): /dev/null bound as podman
    // does for rootless containers.
    let mut mounts: Vec<serde_json::Value> = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["destination"].as_str().unwrap().starts_with("/dev"))
        .cloned()
        .collect();
    mounts.push(
        serde_json::json!({"destination": "/dev/null", "type": "bind",
        "source": "/dev/null", "options": ["bind"]}),
    );
    // No cgroup namespace of its own: the cgroup2 mount is refused (EPERM) and the hierarchy
    // is bind-mounted instead, as runc does.
    mounts.push(
        serde_json::json!({"destination": "/sys/fs/cgroup", "type": "cgroup",
        "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    );
    s["mounts"] = mounts.into();
    let caps = serde_json::json!(["CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN"]);
    for set in ["bounding", "effective", "permitted"] {
        s["process"]["capabilities"][set] = caps.clone();
    }
    let (status, out, err) = run(&a, "userns", &s);
    assert_eq!(status, 0, "{out} {err}");
    let words: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(words[0], ["0", "100000", "65536"], "{out}");
    assert_eq!(words[1], ["0", "100000", "65536"], "{out}");
    assert_eq!(
        &words[2..],
        [["husky"], ["other"], ["mounted"], ["0"], ["cgroup"]],
        "{out}"
    );
}

fn chown_tree(p: &std::path::Path, id: u32) {
    std::os::unix::fs::lchown(p, Some(id), Some(id)).unwrap();
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), id);
        }
    }
}

/// runc warns about and ignores capability names it does not know.
#[test]
fn unknown_capabilities_are_ignored() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let mut s = spec(&root, &["sh", "-c", "grep CapBnd /proc/self/status"]);
    s["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_KILL", "CAP_NOPE"]);
    s["process"]["capabilities"]["effective"] = serde_json::json!(["CAP_KILL", "UNKNOWN_CAP"]);
    let (status, out, err) = run(&a, "caps", &s);
    assert_eq!(status, 0, "{out} {err}");
    assert_eq!(out, "CapBnd:\t0000000000000020\n");
    let log = std::fs::read_to_string(a.dir.join("agent.log")).unwrap();
    assert!(log.contains("CAP_NOPE"), "warned: {log}");

    // The same in an exec's process.
    let s = spec(&root, &["sleep", "100"]);
    a.create("x", &s).unwrap();
    a.start_c("x").unwrap();
    let process = serde_json::json!({
        "args": ["sh", "-c", "grep CapBnd /proc/self/status"], "cwd": "/",
        "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0},
        "capabilities": {"bounding": ["CAP_KILL", "CAP_BOGUS"]}
    });
    exec_process(&a, "x", "e", &process).unwrap();
    assert_eq!(a.read_all("x", "e", false), "CapBnd:\t0000000000000020\n");
    assert_eq!(a.wait("x", "e"), 0);
    a.remove("x").unwrap();
}

fn exec_process(
    a: &Agent,
    id: &str,
    exec: &str,
    process: &serde_json::Value,
) -> ttrpc::Result<pb::Empty> {
    let req = pb::ExecProcessRequest {
        container_id: id.into(),
        exec_id: exec.into(),
        process_json: process.to_string(),
        ..Default::default()
    };
    a.client.exec_process(ctx(), &req)
}

/// runc creates a missing `process.cwd` after pivot_root, so the image's symlinks resolve
/// inside the rootfs (as if it were `/`); a dangling one fails the create as runc's MkdirAll
/// does ("mkdir /work: file exists", measured with runc 1.1) and nothing is made outside.
#[test]
fn missing_cwd_is_created_inside_the_rootfs() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let outside = a.dir.join("outside-cwd");
    std::fs::create_dir(root.join("inside")).unwrap();
    std::os::unix::fs::symlink("/inside", root.join("work")).unwrap();
    let mut s = spec(&root, &["sh", "-c", "pwd"]);
    s["process"]["cwd"] = "/work/a/b".into();
    let (status, out, err) = run(&a, "cwd", &s);
    assert_eq!(status, 0, "{out} {err}");
    // getcwd(2) reports the resolved path.
    assert_eq!(out, "/inside/a/b\n");
    assert!(root.join("inside/a/b").is_dir());

    std::os::unix::fs::symlink(&outside, root.join("gone")).unwrap();
    s["process"]["cwd"] = "/gone/a".into();
    let e = a.create("cwd2", &s).unwrap_err();
    let (_, msg) = code(e);
    assert!(msg.contains("process.cwd"), "{msg}");
    assert!(!outside.exists(), "created {outside:?} outside the rootfs");
}

/// runc makes a missing cwd after the spec's mounts: a cwd below a mount's destination is made
/// inside that mount, not in the image below it (where the mount would hide it).
#[test]
fn cwd_below_a_mount_is_created_inside_the_mount() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let mut s = spec(
        &root,
        &["sh", "-c", "pwd; grep -c ' /work tmpfs ' /proc/mounts"],
    );
    s["process"]["cwd"] = "/work/a/b".into();
    s["mounts"].as_array_mut().unwrap().push(
        serde_json::json!({"destination": "/work", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev"]}),
    );
    let (status, out, err) = run(&a, "cwdmnt", &s);
    assert_eq!(status, 0, "{out} {err}");
    assert_eq!(out, "/work/a/b\n1\n");
    assert!(
        !root.join("work/a").exists(),
        "the cwd was made in the image, under the mount"
    );
}

/// A variable given twice (the spec's, then `exec --env`'s) takes the last value, as runc's
/// environment preparation does.
#[test]
fn later_env_entries_win() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let s = spec(&root, &["sleep", "100"]);
    a.create("env", &s).unwrap();
    a.start_c("env").unwrap();
    let process = serde_json::json!({
        "args": ["env"], "cwd": "/",
        "env": ["PATH=/bin", "FOO=spec", "FOO=cli"], "user": {"uid": 0, "gid": 0}
    });
    exec_process(&a, "env", "e", &process).unwrap();
    // `env` prints its environ as execve passed it (a shell would dedupe it itself).
    let out = a.read_all("env", "e", false);
    let foo: Vec<&str> = out.lines().filter(|l| l.starts_with("FOO=")).collect();
    assert_eq!(foo, ["FOO=cli"], "{out}");
    assert_eq!(a.wait("env", "e"), 0);
    a.remove("env").unwrap();
}

/// Sysctls of a namespace the container does not have its own of would change the guest's
/// (every container's): refused as runc refuses them, naming linux.sysctl.
#[test]
fn sysctls_need_their_namespace() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    for (key, ns, without) in [
        ("kernel.shmmax", "ipc", "ipc"),
        ("fs.mqueue.msg_max", "ipc", "ipc"),
        ("net.ipv4.ip_forward", "network", "network"),
        ("kernel.domainname", "uts", "uts"),
    ] {
        let mut s = spec(&root, &["true"]);
        s["hostname"] = "".into();
        s["linux"]["sysctl"] = serde_json::json!({ key: "1" });
        let list: Vec<serde_json::Value> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] != without)
            .cloned()
            .collect();
        s["linux"]["namespaces"] = list.into();
        let (c, msg) = code(a.create("sysctl", &s).unwrap_err());
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{key}");
        assert!(
            msg.contains("linux.sysctl") && msg.contains(key) && msg.contains(ns),
            "{key}: {msg}"
        );
    }
}

#[test]
fn writing_a_missing_cgroup_file_says_no_such_file() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let mut s = spec(&root, &["true"]);
    s["linux"]["resources"] = serde_json::json!({"unified": {"nosuch.file": "1"}});
    let (c, msg) = code(a.create("cgfile", &s).unwrap_err());
    assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
    assert!(
        msg.contains("linux.resources.unified")
            && msg.contains("No such file or directory")
            && !msg.contains("Permission denied"),
        "{msg}"
    );
    assert!(!a.cgroup_root.join("husk/cgfile").exists());
}
