//! Host-mode test harness: a busybox rootfs, a husk-agent on a Unix socket with its own
//! cgroup2 root, and a typed client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use husk_agent::protocol::{self as pb, AgentServiceClient};

pub const BUSYBOX: &str = "/bin/busybox";

/// Why host-mode tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("host-mode tests need root (namespaces, mounts, cgroups)".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!("{BUSYBOX} missing (apt install busybox-static)"));
    }
    if husk_agent::cgroup::find_cgroup2_mount().is_none() {
        return Some("no cgroup2 mount on this host".into());
    }
    None
}

#[macro_export]
macro_rules! require_host_mode {
    () => {
        if let Some(why) = common::skip_reason() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(0)
}

pub struct Agent {
    child: Child,
    pub dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub client: AgentServiceClient,
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

impl Agent {
    pub fn start() -> Agent {
        Self::start_under(&[])
    }

    /// Starts the agent through `wrapper` (a command that execs its arguments, such as
    /// `unshare --net`), so that it runs in whatever the wrapper set up.
    pub fn start_under(wrapper: &[&str]) -> Agent {
        let dir = std::env::temp_dir().join(unique("husk-agent-test"));
        std::fs::create_dir_all(&dir).unwrap();
        let cg2 = husk_agent::cgroup::find_cgroup2_mount().unwrap();
        let cgroup_root = cg2.join(unique("husk-test"));
        std::fs::create_dir_all(&cgroup_root).unwrap();
        let sock = dir.join("agent.sock");
        let agent = env!("CARGO_BIN_EXE_husk-agent");
        let mut cmd = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(agent);
                c
            }
            None => Command::new(agent),
        };
        let child = cmd
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--cgroup-root")
            .arg(&cgroup_root)
            .env("HUSK_AGENT_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
            .spawn()
            .expect("spawn husk-agent");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "agent did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The socket file appears at bind(), a moment before listen(): retry refused connects.
        let client = loop {
            match ttrpc::Client::connect(&format!("unix://{}", sock.display())) {
                Ok(c) => break c,
                Err(e) if Instant::now() >= deadline => {
                    let mut child = child;
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("connect: {e}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        Agent {
            child,
            dir,
            cgroup_root,
            client: AgentServiceClient::new(client),
        }
    }

    /// A busybox rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        let r = self.dir.join(unique("rootfs"));
        for d in ["bin", "etc", "proc", "dev", "sys", "tmp", "root", "data"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, r.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "echo", "cat", "sleep", "ls", "id", "hostname", "ps", "true", "false", "stty",
            "readlink", "grep", "wc", "head", "touch", "tty", "dd", "kill", "mount", "env", "seq",
        ] {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
        }
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
        r
    }

    pub fn create(&self, id: &str, spec: &serde_json::Value) -> ttrpc::Result<pb::Empty> {
        let req = pb::CreateContainerRequest {
            container_id: id.into(),
            oci_spec_json: spec.to_string(),
            ..Default::default()
        };
        self.client.create_container(ctx(), &req)
    }

    pub fn start_c(&self, id: &str) -> ttrpc::Result<pb::Empty> {
        self.client.start_container(
            ctx(),
            &pb::ContainerRequest {
                container_id: id.into(),
                ..Default::default()
            },
        )
    }

    pub fn wait(&self, id: &str, exec: &str) -> i32 {
        let req = pb::ProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            ..Default::default()
        };
        self.client.wait_process(ctx(), &req).unwrap().status
    }

    /// Reads a stream to EOF.
    pub fn read_all(&self, id: &str, exec: &str, stderr: bool) -> String {
        let mut out = Vec::new();
        loop {
            let req = pb::ReadStreamRequest {
                container_id: id.into(),
                exec_id: exec.into(),
                len: 4096,
                ..Default::default()
            };
            let r = if stderr {
                self.client.read_stderr(ctx(), &req)
            } else {
                self.client.read_stdout(ctx(), &req)
            }
            .unwrap();
            if r.eof {
                return String::from_utf8_lossy(&out).into_owned();
            }
            out.extend_from_slice(&r.data);
        }
    }

    /// Reads a stream until what was read contains `needle` (panics at EOF first).
    pub fn read_until(&self, id: &str, exec: &str, needle: &str) -> String {
        let mut out = Vec::new();
        while !String::from_utf8_lossy(&out).contains(needle) {
            let req = pb::ReadStreamRequest {
                container_id: id.into(),
                exec_id: exec.into(),
                len: 4096,
                ..Default::default()
            };
            let r = self.client.read_stdout(ctx(), &req).unwrap();
            assert!(
                !r.eof,
                "EOF before {needle:?}: {:?}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&r.data);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    pub fn write_stdin(&self, id: &str, exec: &str, data: &[u8]) {
        let w = pb::WriteStreamRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            data: data.to_vec(),
            ..Default::default()
        };
        self.client.write_stdin(ctx(), &w).unwrap();
    }

    pub fn resize(&self, id: &str, exec: &str, rows: u32, cols: u32) {
        let rs = pb::TtyWinResizeRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            row: rows,
            column: cols,
            ..Default::default()
        };
        self.client.tty_win_resize(ctx(), &rs).unwrap();
    }

    pub fn exec(
        &self,
        id: &str,
        exec: &str,
        args: &[&str],
        terminal: bool,
    ) -> ttrpc::Result<pb::Empty> {
        let process = serde_json::json!({
            "terminal": terminal, "args": args, "cwd": "/",
            "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0},
        });
        let req = pb::ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            process_json: process.to_string(),
            ..Default::default()
        };
        self.client.exec_process(ctx(), &req)
    }

    pub fn signal(&self, id: &str, exec: &str, sig: i32) -> ttrpc::Result<pb::Empty> {
        let req = pb::SignalProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            signal: sig as u32,
            ..Default::default()
        };
        self.client.signal_process(ctx(), &req)
    }

    pub fn remove(&self, id: &str) -> ttrpc::Result<pb::Empty> {
        self.client.remove_container(
            ctx(),
            &pb::RemoveContainerRequest {
                container_id: id.into(),
                timeout: 5,
                ..Default::default()
            },
        )
    }

    pub fn pids(&self, id: &str) -> Vec<i32> {
        self.client
            .list_processes(
                ctx(),
                &pb::ContainerRequest {
                    container_id: id.into(),
                    ..Default::default()
                },
            )
            .unwrap()
            .pids
    }

    pub fn available_controllers(&self) -> Vec<String> {
        std::fs::read_to_string(self.cgroup_root.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

impl Agent {
    /// The agent's pid (a wrapper that execs keeps it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.client.destroy_sandbox(ctx(), &pb::Empty::new());
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(self.dir.join("agent.log")) {
                eprintln!("--- agent log ---\n{log}");
            }
        }
        // Leftover cgroups mean a leak; remove bottom-up so the next run starts clean.
        let _ = std::fs::remove_dir(self.cgroup_root.join("husk"));
        let _ = std::fs::remove_dir(&self.cgroup_root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A spec running `args` in `rootfs` with new mount, pid, ipc, uts namespaces (and net unless
/// `host_net`).
pub fn spec(rootfs: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": rootfs},
        "hostname": "husky",
        "process": {
            "terminal": false, "args": args, "cwd": "/",
            "env": ["PATH=/bin", "TERM=xterm"],
            "user": {"uid": 0, "gid": 0},
            "capabilities": {
                "bounding": ["CAP_KILL", "CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_KILL", "CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_KILL", "CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_NET_BIND_SERVICE"]
            },
            "noNewPrivileges": true
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys"],
            "readonlyPaths": ["/proc/sys"]
        }
    })
}

/// Mount table size of this (the test's) mount namespace, to check nothing leaked.
pub fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}
