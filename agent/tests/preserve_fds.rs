//! Host-mode tests of extra fds (runc's `--preserve-fds`, relayed by the host): a real
//! husk-agent gives a container's init and an exec fds 3.. made of pipes (in, out) and a
//! socketpair (both), and serves their other ends through the stream RPCs with `fd` set.

mod common;

use std::io::{Read, Write};
use std::os::fd::FromRawFd;

use common::{ctx, spec, Agent};
use husk_agent::protocol as pb;

fn extra(dirs: &[pb::FdDirection]) -> Vec<pb::ExtraFd> {
    dirs.iter()
        .enumerate()
        .map(|(i, d)| pb::ExtraFd {
            fd: 3 + i as u32,
            direction: (*d).into(),
            ..Default::default()
        })
        .collect()
}

fn write(a: &Agent, id: &str, exec: &str, fd: u32, data: &[u8]) {
    let req = pb::WriteStreamRequest {
        container_id: id.into(),
        exec_id: exec.into(),
        data: data.to_vec(),
        fd,
        ..Default::default()
    };
    a.client.write_stdin(ctx(), &req).unwrap();
}

fn close(a: &Agent, id: &str, exec: &str, fd: u32) {
    let req = pb::ProcessRequest {
        container_id: id.into(),
        exec_id: exec.into(),
        fd,
        ..Default::default()
    };
    a.client.close_stdin(ctx(), &req).unwrap();
}

fn read_fd(a: &Agent, id: &str, exec: &str, fd: u32) -> ttrpc::Result<pb::ReadStreamResponse> {
    let req = pb::ReadStreamRequest {
        container_id: id.into(),
        exec_id: exec.into(),
        len: 4096,
        fd,
        ..Default::default()
    };
    a.client.read_stdout(ctx(), &req)
}

/// Reads extra fd `fd` to EOF.
fn read_all_fd(a: &Agent, id: &str, exec: &str, fd: u32) -> String {
    let mut out = Vec::new();
    loop {
        let r = read_fd(a, id, exec, fd).unwrap();
        if r.eof && r.data.is_empty() {
            return String::from_utf8_lossy(&out).into_owned();
        }
        out.extend_from_slice(&r.data);
    }
}

fn code(e: ttrpc::Error) -> (ttrpc::Code, String) {
    match e {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not an RPC status: {other:?}"),
    }
}

#[test]
fn init_gets_in_out_and_both_fds_at_3_4_5_and_nothing_else() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let script = "cat <&3 >&4; exec 3<&- 4>&-; read l <&5; echo \"both:$l\" >&5; \
                  for n in 6 7 8 9 10 11 12; do [ -e /proc/$$/fd/$n ] && echo leak $n; done; \
                  echo done";
    let s = spec(&root, &["sh", "-c", script]);
    use pb::FdDirection::*;
    let req = pb::CreateContainerRequest {
        container_id: "pf".into(),
        oci_spec_json: s.to_string(),
        extra_fds: extra(&[FD_DIRECTION_IN, FD_DIRECTION_OUT, FD_DIRECTION_BOTH]),
        ..Default::default()
    };
    a.client.create_container(ctx(), &req).unwrap();
    a.start_c("pf").unwrap();
    write(&a, "pf", "", 3, b"hello through fd 3\n");
    close(&a, "pf", "", 3);
    assert_eq!(read_all_fd(&a, "pf", "", 4), "hello through fd 3\n");
    write(&a, "pf", "", 5, b"ping\n");
    close(&a, "pf", "", 5);
    assert_eq!(read_all_fd(&a, "pf", "", 5), "both:ping\n");
    assert_eq!(a.read_all("pf", "", false), "done\n");
    assert_eq!(a.wait("pf", ""), 0);
    // Directions are kept: fd 3 has no output, fd 4 no input, fd 6 does not exist.
    let (c, _) = code(read_fd(&a, "pf", "", 3).unwrap_err());
    assert_eq!(c, ttrpc::Code::FAILED_PRECONDITION);
    let (c, msg) = code(read_fd(&a, "pf", "", 6).unwrap_err());
    assert_eq!(c, ttrpc::Code::NOT_FOUND, "{msg}");
    assert!(msg.contains("fd 6"), "{msg}");
    a.remove("pf").unwrap();
}

#[test]
fn an_exec_and_a_terminal_exec_get_their_extra_fds() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    a.create("pe", &spec(&root, &["sleep", "30"])).unwrap();
    a.start_c("pe").unwrap();
    use pb::FdDirection::*;
    for (exec, terminal) in [("e1", false), ("e2", true)] {
        let process = serde_json::json!({
            "terminal": terminal, "args": ["sh", "-c", "echo via $0 >&3", exec], "cwd": "/",
            "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0},
        });
        let req = pb::ExecProcessRequest {
            container_id: "pe".into(),
            exec_id: exec.into(),
            process_json: process.to_string(),
            extra_fds: extra(&[FD_DIRECTION_OUT]),
            ..Default::default()
        };
        a.client.exec_process(ctx(), &req).unwrap();
        assert_eq!(read_all_fd(&a, "pe", exec, 3), format!("via {exec}\n"));
        assert_eq!(a.wait("pe", exec), 0, "{exec}");
    }
    a.remove("pe").unwrap();
}

#[test]
fn extra_fds_must_be_numbered_from_3_and_have_a_direction() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let s = spec(&root, &["true"]);
    let bad = [
        vec![pb::ExtraFd {
            fd: 4,
            direction: pb::FdDirection::FD_DIRECTION_IN.into(),
            ..Default::default()
        }],
        vec![pb::ExtraFd {
            fd: 3,
            ..Default::default()
        }],
    ];
    for extra_fds in bad {
        let req = pb::CreateContainerRequest {
            container_id: "bad".into(),
            oci_spec_json: s.to_string(),
            extra_fds,
            ..Default::default()
        };
        let (c, msg) = code(a.client.create_container(ctx(), &req).unwrap_err());
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
        assert!(msg.starts_with("extra_fds"), "{msg}");
    }
}

/// A listening extra fd: the process gets a listening socket at fd 3; ConnectExtraFd makes a
/// connection to it, relayed through the returned stream both ways. The test takes the
/// process's fd 3 (pidfd_getfd) and accepts on it as the process would.
#[test]
fn a_listening_fd_takes_connections_made_through_the_agent() {
    require_host_mode!();
    let a = Agent::start();
    let root = a.rootfs();
    let req = pb::CreateContainerRequest {
        container_id: "pl".into(),
        oci_spec_json: spec(&root, &["sleep", "30"]).to_string(),
        extra_fds: extra(&[pb::FdDirection::FD_DIRECTION_LISTEN]),
        ..Default::default()
    };
    a.client.create_container(ctx(), &req).unwrap();
    a.start_c("pl").unwrap();
    let pid = a.pids("pl")[0];
    // SAFETY: raw syscalls that take no pointers; the fds they return are owned below.
    let listener = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, 3, 0) as i32;
        libc::close(pidfd);
        assert!(fd >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
        std::os::unix::net::UnixListener::from_raw_fd(fd)
    };
    let conn = |a: &Agent| {
        let req = pb::ProcessRequest {
            container_id: "pl".into(),
            fd: 3,
            ..Default::default()
        };
        a.client.connect_extra_fd(ctx(), &req).unwrap().stream
    };
    let (s1, s2) = (conn(&a), conn(&a));
    assert_ne!(s1, s2);
    for (stream, word) in [(s1, "one"), (s2, "two")] {
        write(&a, "pl", "", stream, word.as_bytes());
        close(&a, "pl", "", stream);
        let (mut peer, _) = listener.accept().unwrap();
        let mut got = String::new();
        peer.read_to_string(&mut got).unwrap();
        assert_eq!(got, word);
        peer.write_all(format!("back:{word}").as_bytes()).unwrap();
        drop(peer);
        assert_eq!(read_all_fd(&a, "pl", "", stream), format!("back:{word}"));
        // Both directions ended: the connection is forgotten.
        let (c, _) = code(read_fd(&a, "pl", "", stream).unwrap_err());
        assert_eq!(c, ttrpc::Code::NOT_FOUND);
    }
    // Only a listening fd takes connections.
    let req = pb::ProcessRequest {
        container_id: "pl".into(),
        fd: 4,
        ..Default::default()
    };
    let (c, _) = code(a.client.connect_extra_fd(ctx(), &req).unwrap_err());
    assert_eq!(c, ttrpc::Code::NOT_FOUND);
    a.signal("pl", "", libc::SIGKILL).unwrap();
    a.wait("pl", "");
    a.remove("pl").unwrap();
}
