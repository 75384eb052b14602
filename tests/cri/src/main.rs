//! `husk-cri`: a small CRI client for husk's CRI end-to-end test (tests/e2e/cri.sh) and
//! benchmark (tests/bench/cri.sh). One subcommand per RuntimeService call the scripts drive,
//! over a CRI daemon's Unix socket (containerd 1.6+, API `runtime.v1`); each prints one JSON
//! line on stdout with the call's wall time in milliseconds (`ms`), so the scripts can check
//! fields with jq and the benchmark can collect latencies.
//!
//! Pods are described the way kubelet does it: RunPodSandbox and CreateContainer both carry
//! the pod's `PodSandboxConfig`, rebuilt here from the same options (`--pod-name`,
//! `--pod-namespace`, `--pod-uid`, `--log-dir`, `--cgroup-parent`), so a script passes the
//! pod options to `runp` and again to `create`.
//!
//! Exit status: 0 when the call succeeded; 1 when it failed (the error on stderr); `exec`
//! exits with the command's exit code (125 when the call itself failed).

mod client;
mod pod;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use k8s_cri::v1 as cri;
use serde_json::{json, Value};

use crate::client::Runtime;
use crate::pod::{ContainerOpts, PodOpts, ResourceOpts};

#[derive(Parser)]
#[command(
    name = "husk-cri",
    about = "A small CRI (runtime.v1) client for husk's CRI tests"
)]
struct Cli {
    /// The CRI daemon's socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    socket: PathBuf,
    /// Seconds any one call may take.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Version: the runtime's name, version and API version.
    Version,
    /// Status until RuntimeReady and NetworkReady are both true (or --wait seconds pass).
    Ready {
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// RunPodSandbox: prints {"id", "ms"}.
    Runp {
        /// The runtime handler (containerd's runtimes.<name>); empty: the default runtime.
        #[arg(long, default_value = "")]
        handler: String,
        #[command(flatten)]
        pod: PodOpts,
    },
    /// CreateContainer in a pod: prints {"id", "ms"}.
    Create(CreateArgs),
    /// StartContainer: prints {"ms"}.
    Start { id: String },
    /// CreateContainer then StartContainer: prints {"id", "create_ms", "start_ms", "ms"}.
    Run(CreateArgs),
    /// ExecSync: the command's stdout and stderr as they are, its exit code as ours
    /// (--json: one line {"stdout", "stderr", "exit_code", "ms"} and exit 0).
    Exec {
        id: String,
        /// Seconds the command may run (0: no limit).
        #[arg(long, default_value_t = 60)]
        exec_timeout: i64,
        #[arg(long)]
        json: bool,
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
    /// ContainerStatus: the status, `state` as its name (CONTAINER_RUNNING, ...).
    Inspect { id: String },
    /// PodSandboxStatus: the status, `state` as its name (SANDBOX_READY, SANDBOX_NOTREADY).
    Inspectp { id: String },
    /// UpdateContainerResources (Linux): prints {"ms"}.
    Update {
        id: String,
        #[command(flatten)]
        resources: ResourceOpts,
    },
    /// ContainerStats: the stats.
    Stats { id: String },
    /// StopContainer: prints {"ms"}.
    Stop {
        id: String,
        /// Seconds between SIGTERM and SIGKILL.
        #[arg(long, default_value_t = 10)]
        grace: i64,
    },
    /// RemoveContainer: prints {"ms"}.
    Rm { id: String },
    /// StopPodSandbox: prints {"ms"}.
    Stopp { id: String },
    /// RemovePodSandbox: prints {"ms"}.
    Rmp { id: String },
    /// ListPodSandbox: [{"id", "name", "state", "handler"}].
    Pods,
    /// ListContainers: [{"id", "pod", "name", "state"}].
    Ps,
}

#[derive(Args)]
struct CreateArgs {
    /// The pod sandbox's id (from runp).
    #[arg(long)]
    pod: String,
    #[command(flatten)]
    pod_opts: PodOpts,
    #[command(flatten)]
    container: ContainerOpts,
}

/// Errors of one subcommand.
#[derive(Debug, thiserror::Error)]
enum CmdError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("{call}: {status}")]
    Call {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("{0}")]
    Bad(String),
    #[error("encoding the answer: {0}")]
    Json(#[from] serde_json::Error),
}

fn call_err(call: &'static str) -> impl FnOnce(tonic::Status) -> CmdError {
    move |status| CmdError::Call {
        call,
        status: Box::new(status),
    }
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("husk-cri: cannot start the tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let is_exec = matches!(cli.cmd, Cmd::Exec { json: false, .. });
    match rt.block_on(run(cli)) {
        Ok(Outcome::Json(v)) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Exit(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("husk-cri: {e}");
            ExitCode::from(if is_exec { 125 } else { 1 })
        }
    }
}

enum Outcome {
    Json(Value),
    Exit(u8),
}

async fn run(cli: Cli) -> Result<Outcome, CmdError> {
    let mut rt = client::connect(&cli.socket, Duration::from_secs(cli.timeout)).await?;
    let v = match cli.cmd {
        Cmd::Version => {
            let r = rt
                .version(cri::VersionRequest {
                    version: "v1".into(),
                })
                .await
                .map_err(call_err("Version"))?
                .into_inner();
            serde_json::to_value(r)?
        }
        Cmd::Ready { wait } => ready(&mut rt, wait).await?,
        Cmd::Runp { handler, pod } => {
            let t = Instant::now();
            let r = rt
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(pod.sandbox_config()),
                    runtime_handler: handler,
                })
                .await
                .map_err(call_err("RunPodSandbox"))?
                .into_inner();
            json!({ "id": r.pod_sandbox_id, "ms": ms(t) })
        }
        Cmd::Create(a) => {
            let t = Instant::now();
            let id = create(&mut rt, &a).await?;
            json!({ "id": id, "ms": ms(t) })
        }
        Cmd::Start { id } => {
            let t = Instant::now();
            start(&mut rt, id).await?;
            json!({ "ms": ms(t) })
        }
        Cmd::Run(a) => {
            let t = Instant::now();
            let id = create(&mut rt, &a).await?;
            let create_ms = ms(t);
            let t2 = Instant::now();
            start(&mut rt, id.clone()).await?;
            json!({ "id": id, "create_ms": create_ms, "start_ms": ms(t2), "ms": ms(t) })
        }
        Cmd::Exec {
            id,
            exec_timeout,
            json,
            cmd,
        } => {
            let t = Instant::now();
            let r = rt
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id,
                    cmd,
                    timeout: exec_timeout,
                })
                .await
                .map_err(call_err("ExecSync"))?
                .into_inner();
            if !json {
                use std::io::Write;
                // Best effort: a closed pipe on our side does not change the command's code.
                let _ = std::io::stdout().write_all(&r.stdout);
                let _ = std::io::stderr().write_all(&r.stderr);
                return Ok(Outcome::Exit(u8::try_from(r.exit_code).unwrap_or(255)));
            }
            json!({
                "stdout": String::from_utf8_lossy(&r.stdout),
                "stderr": String::from_utf8_lossy(&r.stderr),
                "exit_code": r.exit_code,
                "ms": ms(t),
            })
        }
        Cmd::Inspect { id } => {
            let r = rt
                .container_status(cri::ContainerStatusRequest {
                    container_id: id,
                    verbose: false,
                })
                .await
                .map_err(call_err("ContainerStatus"))?
                .into_inner();
            let status = r
                .status
                .ok_or_else(|| CmdError::Bad("ContainerStatus: no status".into()))?;
            let state = cri::ContainerState::try_from(status.state)
                .map(|s| s.as_str_name().to_string())
                .unwrap_or_else(|_| status.state.to_string());
            let mut v = serde_json::to_value(status)?;
            v["state"] = json!(state);
            v
        }
        Cmd::Inspectp { id } => {
            let r = rt
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id,
                    verbose: false,
                })
                .await
                .map_err(call_err("PodSandboxStatus"))?
                .into_inner();
            let status = r
                .status
                .ok_or_else(|| CmdError::Bad("PodSandboxStatus: no status".into()))?;
            let mut v = serde_json::to_value(&status)?;
            v["state"] = json!(sandbox_state(status.state));
            v
        }
        Cmd::Update { id, resources } => {
            let t = Instant::now();
            rt.update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id,
                linux: Some(resources.linux()),
                ..Default::default()
            })
            .await
            .map_err(call_err("UpdateContainerResources"))?;
            json!({ "ms": ms(t) })
        }
        Cmd::Stats { id } => {
            let r = rt
                .container_stats(cri::ContainerStatsRequest { container_id: id })
                .await
                .map_err(call_err("ContainerStats"))?
                .into_inner();
            serde_json::to_value(r.stats)?
        }
        Cmd::Stop { id, grace } => {
            let t = Instant::now();
            rt.stop_container(cri::StopContainerRequest {
                container_id: id,
                timeout: grace,
            })
            .await
            .map_err(call_err("StopContainer"))?;
            json!({ "ms": ms(t) })
        }
        Cmd::Rm { id } => {
            let t = Instant::now();
            rt.remove_container(cri::RemoveContainerRequest { container_id: id })
                .await
                .map_err(call_err("RemoveContainer"))?;
            json!({ "ms": ms(t) })
        }
        Cmd::Stopp { id } => {
            let t = Instant::now();
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                .await
                .map_err(call_err("StopPodSandbox"))?;
            json!({ "ms": ms(t) })
        }
        Cmd::Rmp { id } => {
            let t = Instant::now();
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await
                .map_err(call_err("RemovePodSandbox"))?;
            json!({ "ms": ms(t) })
        }
        Cmd::Pods => {
            let r = rt
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
                .await
                .map_err(call_err("ListPodSandbox"))?
                .into_inner();
            let pods: Vec<Value> = r
                .items
                .into_iter()
                .map(|p| {
                    json!({
                        "id": p.id,
                        "name": p.metadata.map(|m| m.name).unwrap_or_default(),
                        "state": sandbox_state(p.state),
                        "handler": p.runtime_handler,
                    })
                })
                .collect();
            json!(pods)
        }
        Cmd::Ps => {
            let r = rt
                .list_containers(cri::ListContainersRequest { filter: None })
                .await
                .map_err(call_err("ListContainers"))?
                .into_inner();
            let cs: Vec<Value> = r
                .containers
                .into_iter()
                .map(|c| {
                    let state = cri::ContainerState::try_from(c.state)
                        .map(|s| s.as_str_name().to_string())
                        .unwrap_or_else(|_| c.state.to_string());
                    json!({
                        "id": c.id,
                        "pod": c.pod_sandbox_id,
                        "name": c.metadata.map(|m| m.name).unwrap_or_default(),
                        "state": state,
                    })
                })
                .collect();
            json!(cs)
        }
    };
    Ok(Outcome::Json(v))
}

fn sandbox_state(state: i32) -> String {
    cri::PodSandboxState::try_from(state)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| state.to_string())
}

async fn create(rt: &mut Runtime, a: &CreateArgs) -> Result<String, CmdError> {
    let r = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: a.pod.clone(),
            config: Some(a.container.config()),
            sandbox_config: Some(a.pod_opts.sandbox_config()),
        })
        .await
        .map_err(call_err("CreateContainer"))?
        .into_inner();
    Ok(r.container_id)
}

async fn start(rt: &mut Runtime, id: String) -> Result<(), CmdError> {
    rt.start_container(cri::StartContainerRequest { container_id: id })
        .await
        .map_err(call_err("StartContainer"))?;
    Ok(())
}

/// Polls Status until the runtime and the network are ready; prints the last conditions.
async fn ready(rt: &mut Runtime, wait: u64) -> Result<Value, CmdError> {
    let t = Instant::now();
    let end = t + Duration::from_secs(wait);
    loop {
        let last = match rt.status(cri::StatusRequest { verbose: false }).await {
            Ok(r) => {
                let conds = r
                    .into_inner()
                    .status
                    .map(|s| s.conditions)
                    .unwrap_or_default();
                let all = ["RuntimeReady", "NetworkReady"]
                    .iter()
                    .all(|want| conds.iter().any(|c| c.r#type == *want && c.status));
                let v = serde_json::to_value(&conds)?;
                if all {
                    return Ok(json!({ "conditions": v, "ms": ms(t) }));
                }
                v.to_string()
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= end {
            return Err(CmdError::Bad(format!("not ready after {wait} s: {last}")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
