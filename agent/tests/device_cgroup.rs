//! Host-mode test of the device cgroup through the agent's API: CreateContainer applies
//! `linux.resources.devices` (after runc's default allow list) and UpdateContainer replaces
//! it. Real agent, as root, on the host's cgroup2; skips (saying why) when the host cannot.

mod common;

use common::{spec, Agent};
use husk_agent::protocol as pb;

/// Runs `script` as an exec in container `id`; its stdout and stderr.
fn run(a: &Agent, id: &str, exec: &str, script: &str) -> String {
    a.exec(
        id,
        exec,
        &["sh", "-c", &format!("{{ {script}; }} 2>&1")],
        false,
    )
    .unwrap();
    let out = a.read_all(id, exec, false);
    a.wait(id, exec);
    out
}

/// A container with CAP_MKNOD makes nodes for /dev/mem (c 1:1), a loop disk (b 7:0) and
/// /dev/fuse (c 10:229); the spec denies all and allows 10:229 for reading. Only what the
/// rules and runc's defaults allow opens, and an update changes that.
#[test]
fn devices_follow_the_spec_and_updates() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    std::os::unix::fs::symlink("busybox", root.join("bin/mknod")).unwrap();
    let mut s = spec(
        &root,
        &[
            "sh",
            "-c",
            "mknod /dev/m c 1 1 && mknod /dev/l b 7 0 && mknod /dev/f c 10 229 && echo ready; \
             sleep 1000",
        ],
    );
    for set in ["bounding", "effective", "permitted"] {
        s["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push("CAP_MKNOD".into());
    }
    s["linux"]["resources"] = serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "r"}
    ]});
    a.create("d", &s).unwrap();
    a.start_c("d").unwrap();
    let out = a.read_until("d", "", "ready");
    assert!(out.contains("ready"), "mknod is allowed: {out}");

    let probe = "(exec 3</dev/m) && echo m-read; (exec 3</dev/l) && echo l-read; \
                 (exec 3</dev/f) && echo f-read; (exec 3>/dev/f) && echo f-write; \
                 echo x >/dev/null && echo null-ok; head -c 4 /dev/zero | wc -c";
    let out = run(&a, "d", "e1", probe);
    assert!(out.contains("f-read") && out.contains("null-ok"), "{out}");
    for no in ["m-read", "l-read", "f-write"] {
        assert!(!out.contains(no), "{no}: {out}");
    }
    assert_eq!(out.matches("Operation not permitted").count(), 3, "{out}");

    // Update: write to 10:229 and read of the loop disk granted, read of 10:229 dropped.
    let update = |json: &str| {
        a.client.update_container(
            common::ctx(),
            &pb::UpdateContainerRequest {
                container_id: "d".into(),
                resources_json: json.into(),
                ..Default::default()
            },
        )
    };
    update(
        r#"{"devices": [{"allow": false, "access": "rwm"},
                        {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "w"},
                        {"allow": true, "type": "b", "major": 7, "minor": 0, "access": "r"}]}"#,
    )
    .unwrap();
    let out = run(&a, "d", "e2", probe);
    assert!(out.contains("f-write") && out.contains("l-read"), "{out}");
    assert!(!out.contains("f-read") && !out.contains("m-read"), "{out}");
    assert!(out.contains("null-ok"), "defaults survive: {out}");

    // Resources without devices leave the program; a bad rule is INVALID_ARGUMENT naming
    // the field and changes nothing.
    update(r#"{"cpu": {}}"#).unwrap();
    let err =
        update(r#"{"devices": [{"allow": true, "type": "c", "access": "rwx"}]}"#).unwrap_err();
    let ttrpc::Error::RpcStatus(st) = err else {
        panic!("{err:?}")
    };
    assert_eq!(st.code(), ttrpc::Code::INVALID_ARGUMENT);
    assert!(
        st.message().starts_with("linux.resources.devices"),
        "{}",
        st.message()
    );
    let out = run(&a, "d", "e3", probe);
    assert!(out.contains("f-write") && out.contains("l-read"), "{out}");
    a.remove("d").unwrap();
}
