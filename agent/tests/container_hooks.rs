//! Host-mode tests of the container-namespace hooks (createContainer, startContainer) the
//! init stage runs: state on stdin, where they run, failures and timeouts naming the hook and
//! leaving nothing behind. Real agent, as root; each test skips (saying why) when the host
//! cannot run them.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{ctx, mount_count, spec, Agent};
use husk_agent::protocol as pb;

fn create(a: &Agent, id: &str, s: &serde_json::Value) -> ttrpc::Result<pb::Empty> {
    let req = pb::CreateContainerRequest {
        container_id: id.into(),
        oci_spec_json: s.to_string(),
        bundle: "/host/bundle".into(),
        ..Default::default()
    };
    a.client.create_container(ctx(), &req)
}

fn message(e: ttrpc::Error) -> String {
    match e {
        ttrpc::Error::RpcStatus(s) => s.message().to_string(),
        other => panic!("not an RPC status: {other:?}"),
    }
}

fn script(root: &Path, name: &str, body: &str) {
    let p = root.join("hooks").join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Container cgroups left under the agent's root (`husk/<id>`).
fn cgroups_left(a: &Agent) -> Vec<String> {
    std::fs::read_dir(a.cgroup_root.join("husk"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// createContainer runs chrooted into the rootfs before pivot_root (it writes where the root
/// becomes read-only later), in the container's uts and pid namespaces; startContainer runs
/// after pivot_root as the process' user; both get the state, their args and only their env.
#[test]
fn both_hooks_get_the_state_and_run_in_the_container() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    script(
        &root,
        "create.sh",
        "cat > /create.json; hostname > /create.host; echo $$ > /create.pid; \
         echo \"$1 $FOO\" > /create.args",
    );
    script(
        &root,
        "start.sh",
        "cat > /tmp/start.json; id -u > /tmp/start.uid",
    );
    let mut s = spec(
        &root,
        &[
            "sh",
            "-c",
            "cat /create.json; echo; cat /tmp/start.json; echo; cat /create.host /create.pid \
             /create.args /tmp/start.uid; touch /not-writable 2>/dev/null || echo ro",
        ],
    );
    s["root"]["readonly"] = true.into();
    s["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    s["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]}));
    s["annotations"] = serde_json::json!({"org.example": "yes"});
    s["hooks"] = serde_json::json!({
        "createContainer": [{"path": "/hooks/create.sh", "args": ["cc", "one"], "env": ["FOO=bar"]}],
        "startContainer": [{"path": "/hooks/start.sh", "timeout": 10}],
    });
    create(&a, "hk", &s).unwrap();
    assert!(
        root.join("create.json").exists(),
        "createContainer ran at create"
    );
    assert!(!root.join("tmp/start.json").exists());
    a.start_c("hk").unwrap();
    let out = a.read_all("hk", "", false);
    let err = a.read_all("hk", "", true);
    assert_eq!(a.wait("hk", ""), 0, "{out} {err}");
    a.remove("hk").unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    let cc: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let sc: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(cc["ociVersion"], husk_agent::hooks::OCI_VERSION);
    assert_eq!(cc["id"], "hk");
    assert_eq!(cc["status"], "creating");
    assert_eq!(sc["status"], "created");
    assert_eq!(cc["bundle"], "/host/bundle");
    assert_eq!(sc["annotations"]["org.example"], "yes");
    assert!(cc["pid"].as_i64().unwrap() > 1, "{cc}");
    assert_eq!(cc["pid"], sc["pid"]);
    assert_eq!(lines[2], "husky", "the container's uts namespace");
    assert_ne!(lines[3], "1", "the container's pid namespace, not its init");
    assert!(lines[3].parse::<u32>().unwrap() < 100, "{}", lines[3]);
    assert_eq!(lines[4], "one bar", "args and env");
    assert_eq!(lines[5], "1000", "startContainer runs as the process' user");
    assert_eq!(
        lines[6], "ro",
        "the root became read-only after the hook wrote"
    );
}

/// A hook path resolves in the container's rootfs, not the agent's (host's) filesystem.
#[test]
fn a_create_container_hook_path_resolves_in_the_rootfs() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    assert!(Path::new("/usr/bin/env").exists());
    let mut s = spec(&root, &["true"]);
    s["hooks"] = serde_json::json!({"createContainer": [{"path": "/usr/bin/env"}]});
    let before = mount_count();
    let e = message(create(&a, "nopath", &s).unwrap_err());
    assert!(
        e.contains("hooks.createContainer[0] (/usr/bin/env): cannot run it:"),
        "{e}"
    );
    assert_eq!(mount_count(), before);
    assert!(cgroups_left(&a).is_empty(), "{:?}", cgroups_left(&a));
    // The id is free again.
    let s = spec(&root, &["true"]);
    create(&a, "nopath", &s).unwrap();
    a.remove("nopath").unwrap();
}

/// A createContainer hook past its timeout is killed and fails the create, leaving no
/// container, cgroup or process behind.
#[test]
fn a_create_container_hook_past_its_timeout_fails_the_create() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let mut s = spec(&root, &["true"]);
    s["hooks"] = serde_json::json!({
        "createContainer": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]
    });
    let t0 = std::time::Instant::now();
    let e = message(create(&a, "slow", &s).unwrap_err());
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        e.contains("hooks.createContainer[0] (/bin/sleep): timed out after 1 s (killed)"),
        "{e}"
    );
    assert!(cgroups_left(&a).is_empty(), "{:?}", cgroups_left(&a));
    let e = message(a.start_c("slow").unwrap_err());
    assert!(e.contains("slow"), "no such container: {e}");
}

/// A failing startContainer hook fails start with its name and output; the process never
/// runs and the container is stopped.
#[test]
fn a_failing_start_container_hook_fails_start() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    script(&root, "fail.sh", "echo nope >&2; exit 3");
    let mut s = spec(&root, &["sh", "-c", "touch /ran"]);
    s["hooks"] = serde_json::json!({"startContainer": [{"path": "/hooks/fail.sh"}]});
    create(&a, "bad", &s).unwrap();
    let e = message(a.start_c("bad").unwrap_err());
    assert!(
        e.contains("hooks.startContainer[0] (/hooks/fail.sh): exit status 3: nope"),
        "{e}"
    );
    assert_ne!(a.wait("bad", ""), 0);
    assert!(!root.join("ran").exists(), "the process never ran");
    a.remove("bad").unwrap();
    assert!(cgroups_left(&a).is_empty(), "{:?}", cgroups_left(&a));
}
