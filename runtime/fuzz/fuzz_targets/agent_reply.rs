#![no_main]
//! The supervisor's handling of the agent's replies: the input is the body of a ttrpc response
//! frame as the supervisor's ttrpc client receives it from the guest (a `ttrpc::Response`:
//! status + payload), for the RPC the first byte picks. It goes the way a real reply goes:
//! a non-OK status becomes an `AgentError` (`supervisor/agent.rs`), an OK one has its payload
//! decoded into the RPC's `husk_agent::protocol` message, which `AgentClient` and the control
//! server turn into what husk reports (`runc_stats` in `supervisor/server.rs` for stats,
//! pids, exit statuses, stream data); that answer then crosses the control socket to the CLI
//! (`control.rs`), which prints it.
//!
//! The ttrpc transport itself (frame headers, stream ids) is the `ttrpc` crate's and is not
//! driven here: it needs a live connection and threads.

use std::os::unix::net::UnixStream;

use husk_agent::protocol as pb;
use husk_runtime_fuzz::control::{self, Response};
use husk_runtime_fuzz::supervisor::agent::AgentError;
use husk_runtime_fuzz::supervisor::server::runc_stats;
use libfuzzer_sys::fuzz_target;
use ttrpc::proto::{Codec, ResponseInit};

/// Answers bigger than this skip the socket (a socket pair holds about 200 KiB unread).
const MAX_ANSWER: usize = 128 << 10;

/// What `client_request!` does with a reply: status first, then the payload.
fn decode<M: protobuf::Message>(body: &[u8]) -> Result<M, AgentError> {
    let res = ttrpc::Response::decode(body)
        .map_err(|e| ttrpc::Error::Others(format!("Unpack response error {e}")))?;
    if let Some(status) = res.non_ok() {
        return Err(ttrpc::Error::RpcStatus(status).into());
    }
    let mut m = M::new();
    Codec::merge(&mut m, &res.payload)
        .map_err(|e| ttrpc::Error::Others(format!("Unpack get error {e}")))?;
    Ok(m)
}

/// The control server's answer for an RPC result, as `dispatch` builds it.
fn answer<T>(r: Result<T, AgentError>, ok: impl FnOnce(T) -> Response) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(e) => Response::error(e),
    }
}

/// Sends `resp` over a control socket and reads it as the CLI does, then prints it as
/// `husk events --stats` / `husk ps --format json` do.
fn to_cli(resp: &Response) {
    if serde_json::to_vec(resp).unwrap().len() > MAX_ANSWER {
        return;
    }
    let (a, b) = UnixStream::pair().unwrap();
    control::send(&a, resp, &[]).unwrap();
    match control::answer(&b) {
        Ok(got) => {
            let data = got.stats.unwrap_or_default();
            let _ = serde_json::json!({ "type": "stats", "id": "c", "data": data }).to_string();
            let _ = serde_json::to_string(&got.pids).unwrap();
            assert_eq!(got.status, resp.status);
        }
        Err(control::ControlError::Refused(e)) => assert_eq!(Some(e), resp.error),
        Err(e) => panic!("the CLI could not read the supervisor's answer: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let resp = match which % 7 {
        // StatsContainer → `husk events --stats`.
        0 => answer(decode::<pb::StatsContainerResponse>(body), |st| Response {
            stats: Some(runc_stats(&st)),
            ..Default::default()
        }),
        // ListProcesses → `husk ps`.
        1 => answer(decode::<pb::ListProcessesResponse>(body), |r| Response {
            pids: r.pids,
            ..Default::default()
        }),
        // WaitProcess → exec's second answer (and the supervisor's exit status).
        2 => answer(decode::<pb::WaitProcessResponse>(body), |r| Response {
            status: Some(r.status),
            ..Default::default()
        }),
        // ReadStdout / ReadStderr → the stdio relay (`AgentClient::read`).
        3 => {
            if let Ok(r) = decode::<pb::ReadStreamResponse>(body) {
                let chunk = (!r.eof || !r.data.is_empty()).then_some(r.data);
                assert!(chunk.as_ref().map_or(true, |c| !c.is_empty() || !r.eof));
            }
            return;
        }
        // GetOomEvent → the OOM counter (`AgentClient::oom_event`).
        4 => {
            if let Ok(r) = decode::<pb::GetOomEventResponse>(body) {
                let _ = r.container_id == "c";
            }
            return;
        }
        // GetGuestDetails → the boot log line.
        5 => {
            if let Ok(d) = decode::<pb::GuestDetailsResponse>(body) {
                let _ = format!("{} {}", d.kernel_release, d.agent_version);
            }
            return;
        }
        // Start / Pause / Resume / Kill / Update: only the status matters.
        _ => answer(decode::<pb::Empty>(body), |_| Response::default()),
    };
    to_cli(&resp);
});
