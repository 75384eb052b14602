//! Relays a process's stdio between host fds and the agent's stream RPCs: one thread per
//! direction, each on its own agent connection (the reads block until data comes).
//!
//! Owns: copying bytes and closing stdin at EOF. Knows nothing of the control socket.

use std::fs::File;
use std::io::{Read, Write};
use std::thread::JoinHandle;

use super::agent::AgentClient;

/// Bytes asked for per read.
const CHUNK: u32 = 64 * 1024;

/// Copies the process's stdout (or stderr) to `out` until the guest side ends.
pub fn spawn_output(
    client: &AgentClient,
    id: &str,
    exec: &str,
    stderr: bool,
    mut out: File,
) -> Option<JoinHandle<()>> {
    let client = match client.another() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("stdio relay: {e}");
            return None;
        }
    };
    let (id, exec) = (id.to_string(), exec.to_string());
    let name = if stderr { "stderr" } else { "stdout" };
    std::thread::Builder::new()
        .name(format!("relay-{name}"))
        .spawn(move || {
            let mut broken = false;
            loop {
                match client.read(&id, &exec, stderr, CHUNK) {
                    Ok(Some(data)) => {
                        // Keep draining after the reader went away, so the process never
                        // blocks on a full pipe.
                        if !broken && out.write_all(&data).is_err() {
                            broken = true;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(exec = %exec, "{name} relay ends: {e}");
                        break;
                    }
                }
            }
        })
        .ok()
}

/// Copies `input` to the process's stdin; closes it at EOF.
pub fn spawn_input(client: &AgentClient, id: &str, exec: &str, mut input: File) {
    let client = match client.another() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("stdin relay: {e}");
            return;
        }
    };
    let (id, exec) = (id.to_string(), exec.to_string());
    let _ = std::thread::Builder::new()
        .name("relay-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK as usize];
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = client.close_stdin(&id, &exec);
                        break;
                    }
                    Ok(n) => {
                        if client.write_stdin(&id, &exec, &buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
}

/// Joins output relays, giving up after `timeout` (a grandchild may hold the pipe open).
pub fn join_all(handles: Vec<JoinHandle<()>>, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    for h in handles {
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
}
