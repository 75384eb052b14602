//! Host-mode tests of behaviour the runtime relies on because runc has it: exec into a
//! created container, ambient capabilities from runc's default spec, sysctls with a read-only
//! /proc/sys, and stdout reads whose caller went away. Real agent, as root; each test skips
//! (saying why) when the host cannot run them.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ctx, spec, Agent};
use husk_agent::protocol as pb;

fn code(e: ttrpc::Error) -> (ttrpc::Code, String) {
    match e {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not an RPC status: {other:?}"),
    }
}

fn write_stdin(a: &Agent, id: &str, data: &[u8]) {
    let req = pb::WriteStreamRequest {
        container_id: id.into(),
        data: data.to_vec(),
        ..Default::default()
    };
    a.client.write_stdin(ctx(), &req).unwrap();
}

fn read_req(id: &str) -> pb::ReadStreamRequest {
    pb::ReadStreamRequest {
        container_id: id.into(),
        len: 4096,
        ..Default::default()
    }
}

fn agent_log(a: &Agent) -> String {
    std::fs::read_to_string(a.dir.join("agent.log")).unwrap_or_default()
}

#[test]
fn exec_into_a_created_container_before_start() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    a.create("c", &spec(&root, &["sh", "-c", "echo init"]))
        .unwrap();
    a.exec(
        "c",
        "e1",
        &["sh", "-c", "hostname; cat /proc/1/cmdline"],
        false,
    )
    .unwrap();
    let out = a.read_all("c", "e1", false);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "husky", "joined the uts namespace: {out}");
    assert!(
        lines[1].starts_with("husk-agent"),
        "pid 1 is still the waiting init stage: {out}"
    );
    assert_eq!(a.wait("c", "e1"), 0);
    a.start_c("c").unwrap();
    assert_eq!(a.read_all("c", "", false), "init\n");
    assert_eq!(a.wait("c", ""), 0);
    let (c, msg) = code(a.exec("c", "e2", &["true"], false).unwrap_err());
    assert_eq!(c, ttrpc::Code::FAILED_PRECONDITION, "{msg}");
    a.remove("c").unwrap();
}

const RUNC_DEFAULT_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

#[test]
fn runc_default_ambient_caps_start_and_non_root_ambient_caps_are_raised() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let show = "grep -E '^Cap(Eff|Amb)' /proc/self/status";

    // `runc spec`: ambient listed for root, no inheritable set. runc warns and runs.
    let mut s = spec(&root, &["sh", "-c", show]);
    s["process"]["capabilities"] = serde_json::json!({
        "bounding": RUNC_DEFAULT_CAPS, "effective": RUNC_DEFAULT_CAPS,
        "permitted": RUNC_DEFAULT_CAPS, "ambient": RUNC_DEFAULT_CAPS,
    });
    a.create("r", &s).unwrap();
    a.start_c("r").unwrap();
    let out = a.read_all("r", "", false);
    assert_eq!(a.wait("r", ""), 0, "{out}");
    assert!(out.contains("CapEff:\t0000000020000420"), "{out}");
    assert!(
        agent_log(&a).contains("can't raise CAP_KILL"),
        "the unraisable ambient cap is a logged warning"
    );

    // A non-root process with the cap in permitted and inheritable really gets it ambient.
    let bind = ["CAP_NET_BIND_SERVICE"];
    let mut s = spec(&root, &["sh", "-c", show]);
    s["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    s["process"]["capabilities"] = serde_json::json!({
        "bounding": bind, "effective": bind, "permitted": bind,
        "inheritable": bind, "ambient": bind,
    });
    a.create("u", &s).unwrap();
    a.start_c("u").unwrap();
    let out = a.read_all("u", "", false);
    assert_eq!(a.wait("u", ""), 0, "{out}");
    assert!(out.contains("CapAmb:\t0000000000000400"), "{out}");
    assert!(
        out.contains("CapEff:\t0000000000000400"),
        "uid 1000 keeps it across exec: {out}"
    );
    for id in ["r", "u"] {
        a.remove(id).unwrap();
    }
}

#[test]
fn sysctls_apply_with_proc_sys_read_only() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let script = "cat /proc/sys/net/ipv4/ping_group_range /proc/sys/kernel/shmmni; \
                  if echo 4096 > /proc/sys/kernel/shmmni; then echo writable; else echo read-only; fi";
    let mut s = spec(&root, &["sh", "-c", script]);
    s["linux"]["sysctl"] = serde_json::json!({
        "net.ipv4.ping_group_range": "0 0",
        "kernel.shmmni": "1234",
    });
    assert_eq!(s["linux"]["readonlyPaths"][0], "/proc/sys");
    a.create("s", &s).unwrap();
    a.start_c("s").unwrap();
    let out = a.read_all("s", "", false);
    assert_eq!(a.wait("s", ""), 0);
    assert_eq!(out, "0\t0\n1234\nread-only\n");
    a.remove("s").unwrap();
}

#[test]
fn an_abandoned_read_does_not_eat_the_next_output() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let script = "read x; echo one; read x; echo two; read x; echo three";
    a.create("o", &spec(&root, &["sh", "-c", script])).unwrap();
    a.start_c("o").unwrap();

    // A client killed while its ReadStdout is blocked.
    let sock = a.dir.join("agent.sock");
    let mut ctl = Command::new(env!("CARGO_BIN_EXE_husk-agent-ctl"))
        .arg("--addr")
        .arg(format!("unix:{}", sock.display()))
        .args(["read-stdout", "o"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ctl.kill().unwrap();
    ctl.wait().unwrap();
    let mut got = String::new();
    ctl.stdout.take().unwrap().read_to_string(&mut got).unwrap();
    assert_eq!(got, "", "nothing was written yet");
    write_stdin(&a, "o", b"1\n");
    let r = a.client.read_stdout(ctx(), &read_req("o")).unwrap();
    assert_eq!(r.data, b"one\n", "the killed client's read took nothing");

    // A client that timed out but keeps its connection.
    let other = ttrpc::Client::connect(&format!("unix://{}", sock.display())).unwrap();
    let other = pb::AgentServiceClient::new(other);
    let short = ttrpc::context::with_timeout(Duration::from_millis(200).as_nanos() as i64);
    assert!(other.read_stdout(short, &read_req("o")).is_err());
    std::thread::sleep(Duration::from_millis(200));
    write_stdin(&a, "o", b"2\n");
    let r = a.client.read_stdout(ctx(), &read_req("o")).unwrap();
    assert_eq!(r.data, b"two\n", "the timed-out read took nothing");

    write_stdin(&a, "o", b"3\n");
    assert_eq!(a.read_all("o", "", false), "three\n");
    assert_eq!(a.wait("o", ""), 0);
    a.remove("o").unwrap();
    drop(other);
}

#[test]
fn an_oom_kill_is_reported_by_get_oom_event() {
    require_host_mode!();
    let a = Agent::start();
    if !a.available_controllers().iter().any(|c| c == "memory") {
        eprintln!(
            "SKIPPED: no memory controller in the cgroup2 root {} (controllers: {:?}); \
             tests/e2e/agent-guest.sh checks GetOomEvent in a real guest",
            a.cgroup_root.display(),
            a.available_controllers()
        );
        return;
    }
    let root = a.rootfs();
    let mut s = spec(
        &root,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    );
    s["linux"]["resources"] = serde_json::json!({"memory": {"limit": 33554432, "swap": 33554432}});
    a.create("m", &s).unwrap();
    let none = ttrpc::context::with_timeout(Duration::from_millis(300).as_nanos() as i64);
    let (c, _) = code(a.client.get_oom_event(none, &pb::Empty::new()).unwrap_err());
    assert_eq!(c, ttrpc::Code::DEADLINE_EXCEEDED, "no OOM yet");
    a.start_c("m").unwrap();
    assert_eq!(a.wait("m", ""), 128 + libc::SIGKILL);
    let soon = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
    let ev = a.client.get_oom_event(soon, &pb::Empty::new()).unwrap();
    assert_eq!(ev.container_id, "m");
    a.remove("m").unwrap();
}
