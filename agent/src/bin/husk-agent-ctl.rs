//! husk-agent-ctl: a development client for husk-agent (Kata's agent-ctl idea). It connects
//! over a Unix socket (host-mode agent) or the host side of a husk-vmm hybrid vsock (the
//! `CONNECT <port>` handshake, then the stream is handed to the ttrpc client) and runs one
//! RPC per invocation. Failures print `husk-agent-ctl: <ttrpc code>: <message>` and exit 1.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};

use husk_agent::protocol::{self as pb, AgentServiceClient};

#[derive(Parser, Debug)]
#[command(
    name = "husk-agent-ctl",
    version,
    about = "Drive a husk-agent from the command line"
)]
struct Args {
    /// unix:/path (a host-mode agent) or hvsock:/path[:port] (husk-vmm --vsock uds=/path; port
    /// defaults to 1024).
    #[arg(long)]
    addr: String,
    /// Per-request timeout in seconds (0: none).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Retry connecting until the agent answers GetGuestDetails (or SECS pass).
    WaitReady {
        #[arg(long, default_value_t = 60)]
        secs: u64,
    },
    /// Print guest details.
    GuestDetails,
    /// CreateSandbox.
    CreateSandbox {
        #[arg(long, default_value = "sandbox")]
        id: String,
        #[arg(long, default_value = "")]
        hostname: String,
        #[arg(long)]
        dns: Vec<String>,
        /// driver=D,source=S,fstype=F,mount=PATH[,opt=O]... (repeatable)
        #[arg(long)]
        storage: Vec<String>,
    },
    /// DestroySandbox: the agent removes everything and powers the guest off.
    DestroySandbox,
    /// CreateContainer from an OCI config.json.
    Create {
        id: String,
        #[arg(long)]
        spec: PathBuf,
        /// driver=D,source=S,fstype=F,mount=PATH[,opt=O]... (repeatable)
        #[arg(long)]
        storage: Vec<String>,
        /// Guest path of the rootfs (overrides a relative root.path).
        #[arg(long, default_value = "")]
        rootfs: String,
    },
    Start {
        id: String,
    },
    Remove {
        id: String,
        #[arg(long, default_value_t = 0)]
        timeout: u32,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// UpdateContainer with OCI LinuxResources JSON.
    Update {
        id: String,
        resources_json: String,
    },
    /// Print the container's cgroup stats as JSON.
    Stats {
        id: String,
    },
    /// Print the container's pids, one per line.
    Ps {
        id: String,
    },
    /// ExecProcess: run ARGS in the container (as root, cwd /, PATH set).
    Exec {
        id: String,
        exec_id: String,
        #[arg(long)]
        tty: bool,
        #[arg(long = "env")]
        env: Vec<String>,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// SignalProcess (number or name like TERM, SIGKILL).
    Signal {
        id: String,
        signal: String,
        #[arg(long, default_value = "")]
        exec: String,
        #[arg(long)]
        all: bool,
    },
    /// WaitProcess: print the exit status (code, or 128 + signal).
    Wait {
        id: String,
        #[arg(long, default_value = "")]
        exec: String,
    },
    /// Copy the process's stdout (or stderr) to ours until EOF.
    ReadStdout {
        id: String,
        #[arg(long, default_value = "")]
        exec: String,
        #[arg(long)]
        stderr: bool,
    },
    /// Send our stdin to the process, then close its stdin.
    WriteStdin {
        id: String,
        #[arg(long, default_value = "")]
        exec: String,
    },
    /// Print the agent's log buffer.
    Logs,
    /// Wait for the next OOM kill in any container (bounded by --timeout) and print its id.
    OomEvent,
    /// UpdateInterface: find the NIC by --name and/or --mac, then change it; prints it.
    UpdateInterface {
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        mac: String,
        #[arg(long, default_value = "")]
        new_name: String,
        /// 0: unchanged.
        #[arg(long, default_value_t = 0)]
        mtu: u32,
        /// ADDR/PREFIX (repeatable); the NIC's addresses become exactly these.
        #[arg(long)]
        addr: Vec<String>,
        #[arg(long, conflicts_with = "down")]
        up: bool,
        #[arg(long)]
        down: bool,
    },
    /// UpdateRoutes: the main table becomes these routes (kernel-made ones stay); prints it.
    UpdateRoutes {
        /// 'DEST[/PREFIX]|default [via GW] [dev DEV] [src SRC] [scope universe|link|host]
        /// [nexthop [via GW] [dev DEV] [weight N]]...' (repeatable; ip-route style).
        #[arg(long)]
        route: Vec<String>,
    },
    /// UpdateNeighbors: add or replace these neighbour entries.
    UpdateNeighbors {
        /// 'ADDR lladdr MAC dev DEV [nud permanent|reachable|stale|noarp] [router]
        /// [extern_learn]' (repeatable; ip-neigh style).
        #[arg(long)]
        neigh: Vec<String>,
    },
    /// ListNeighbors, ip-neigh style, one per line.
    Neighbors,
    /// ListInterfaces: `INDEX: NAME MAC mtu N up|down ADDR/PREFIX...` per line.
    Interfaces,
    /// ListRoutes, ip-route style, one per line.
    Routes,
}

/// ip-route style text to a wire route (the agent validates and names fields).
fn parse_route(s: &str) -> anyhow::Result<pb::Route> {
    let mut r = pb::Route::new();
    let mut words = s.split_whitespace();
    let dest = words.next().context("--route: empty")?;
    match dest.split_once('/') {
        Some((a, p)) => {
            r.destination = a.into();
            r.prefix = p
                .parse()
                .with_context(|| format!("--route: prefix {p:?}"))?;
        }
        None if dest == "default" => r.destination = dest.into(),
        None => {
            r.destination = dest.into();
            r.prefix = if dest.contains(':') { 128 } else { 32 };
        }
    }
    // After "nexthop", via / dev / weight belong to that next hop (ip-route's multipath form).
    let mut hop: Option<pb::NextHop> = None;
    while let Some(k) = words.next() {
        if k == "nexthop" {
            r.nexthops.extend(hop.replace(pb::NextHop::new()));
            continue;
        }
        let v = words
            .next()
            .with_context(|| format!("--route: {k} needs a value"))?;
        match (k, hop.as_mut()) {
            ("via", Some(h)) => h.gateway = v.into(),
            ("dev", Some(h)) => h.device = v.into(),
            ("weight", Some(h)) => {
                h.weight = v
                    .parse()
                    .with_context(|| format!("--route: weight {v:?}"))?
            }
            ("via", None) => r.gateway = v.into(),
            ("dev", None) => r.device = v.into(),
            ("src", _) => r.source = v.into(),
            ("scope", _) => {
                r.scope = match v {
                    "universe" | "global" => pb::RouteScope::ROUTE_SCOPE_UNIVERSE,
                    "link" => pb::RouteScope::ROUTE_SCOPE_LINK,
                    "host" => pb::RouteScope::ROUTE_SCOPE_HOST,
                    _ => bail!("--route: scope {v:?} (universe, link, host)"),
                }
                .into()
            }
            _ => bail!("--route: unknown word {k:?} (via, dev, src, scope, nexthop, weight)"),
        }
    }
    r.nexthops.extend(hop);
    Ok(r)
}

fn show_route(r: &pb::Route) -> String {
    let mut s = if r.destination == "default" {
        r.destination.clone()
    } else {
        format!("{}/{}", r.destination, r.prefix)
    };
    for (k, v) in [("via", &r.gateway), ("dev", &r.device), ("src", &r.source)] {
        if !v.is_empty() {
            s += &format!(" {k} {v}");
        }
    }
    for h in &r.nexthops {
        s += " nexthop";
        for (k, v) in [("via", &h.gateway), ("dev", &h.device)] {
            if !v.is_empty() {
                s += &format!(" {k} {v}");
            }
        }
        s += &format!(" weight {}", h.weight);
    }
    match r.scope.enum_value() {
        Ok(pb::RouteScope::ROUTE_SCOPE_UNIVERSE) => s += " scope universe",
        Ok(pb::RouteScope::ROUTE_SCOPE_LINK) => s += " scope link",
        Ok(pb::RouteScope::ROUTE_SCOPE_HOST) => s += " scope host",
        _ => {}
    }
    s
}

const NTF_EXT_LEARNED: u32 = 0x10;
const NTF_ROUTER: u32 = 0x80;

const NUD_NAMES: [(&str, pb::NeighborState); 9] = [
    ("permanent", pb::NeighborState::NEIGHBOR_STATE_PERMANENT),
    ("reachable", pb::NeighborState::NEIGHBOR_STATE_REACHABLE),
    ("stale", pb::NeighborState::NEIGHBOR_STATE_STALE),
    ("noarp", pb::NeighborState::NEIGHBOR_STATE_NOARP),
    ("incomplete", pb::NeighborState::NEIGHBOR_STATE_INCOMPLETE),
    ("delay", pb::NeighborState::NEIGHBOR_STATE_DELAY),
    ("probe", pb::NeighborState::NEIGHBOR_STATE_PROBE),
    ("failed", pb::NeighborState::NEIGHBOR_STATE_FAILED),
    ("none", pb::NeighborState::NEIGHBOR_STATE_NONE),
];

/// ip-neigh style text to a wire neighbour (the agent validates and names fields).
fn parse_neigh(s: &str) -> anyhow::Result<pb::Neighbor> {
    let mut n = pb::Neighbor::new();
    let mut words = s.split_whitespace();
    n.address = words.next().context("--neigh: empty")?.into();
    while let Some(k) = words.next() {
        match k {
            "router" => n.flags |= NTF_ROUTER,
            "extern_learn" => n.flags |= NTF_EXT_LEARNED,
            _ => {
                let v = words
                    .next()
                    .with_context(|| format!("--neigh: {k} needs a value"))?;
                match k {
                    "lladdr" => n.lladdr = v.into(),
                    "dev" => n.device = v.into(),
                    "nud" => {
                        n.state = NUD_NAMES
                            .iter()
                            .find(|(name, _)| *name == v)
                            .with_context(|| format!("--neigh: nud {v:?}"))?
                            .1
                            .into()
                    }
                    _ => bail!(
                        "--neigh: unknown word {k:?} (lladdr, dev, nud, router, extern_learn)"
                    ),
                }
            }
        }
    }
    Ok(n)
}

/// `ADDR dev DEV lladdr MAC [router] STATE`, as `ip neigh` prints it.
fn show_neigh(n: &pb::Neighbor) -> String {
    let mut s = format!("{} dev {}", n.address, n.device);
    if !n.lladdr.is_empty() {
        s += &format!(" lladdr {}", n.lladdr);
    }
    if n.flags & NTF_ROUTER != 0 {
        s += " router";
    }
    if n.flags & NTF_EXT_LEARNED != 0 {
        s += " extern_learn";
    }
    let state = NUD_NAMES
        .iter()
        .find(|(_, st)| n.state.enum_value() == Ok(*st))
        .map_or("?", |(name, _)| name);
    s + " " + &state.to_uppercase()
}

fn show_interface(i: &pb::Interface) -> String {
    let mut s = format!(
        "{}: {} {} mtu {} {}",
        i.index,
        i.name,
        i.mac,
        i.mtu,
        if i.up { "up" } else { "down" }
    );
    for a in &i.addresses {
        s += &format!(" {}/{}", a.address, a.prefix);
    }
    s
}

/// Opens a stream to the agent: a Unix socket, or husk-vmm's hybrid vsock socket with the
/// `CONNECT <port>\n` / `OK <hostport>\n` handshake.
fn connect(addr: &str) -> anyhow::Result<ttrpc::Client> {
    if let Some(path) = addr
        .strip_prefix("unix://")
        .or_else(|| addr.strip_prefix("unix:"))
    {
        return ttrpc::Client::connect(&format!("unix://{path}"))
            .with_context(|| format!("connecting to {path}"));
    }
    let Some(rest) = addr.strip_prefix("hvsock:") else {
        bail!("--addr: {addr:?} is neither unix:/path nor hvsock:/path[:port]");
    };
    let (path, port) = match rest.rsplit_once(':') {
        Some((p, port)) if port.parse::<u32>().is_ok() => (p, port.parse::<u32>()?),
        _ => (rest, 1024),
    };
    let mut s = UnixStream::connect(path).with_context(|| format!("connecting to {path}"))?;
    husk_agent::client::hybrid_vsock_connect(&mut s, port, Duration::from_secs(30))
        .with_context(|| path.to_string())?;
    ttrpc::Client::new(s.into_raw_fd()).map_err(|e| anyhow!("ttrpc client: {e}"))
}

fn parse_storage(spec: &str) -> anyhow::Result<pb::Storage> {
    let mut s = pb::Storage::new();
    for kv in spec.split(',') {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--storage: {kv:?} is not key=value"))?;
        match k {
            "driver" => s.driver = v.into(),
            "source" => s.source = v.into(),
            "fstype" => s.fstype = v.into(),
            "mount" | "mount_point" => s.mount_point = v.into(),
            "opt" | "option" => s.options.push(v.into()),
            _ => bail!("--storage: unknown key {k:?} (driver, source, fstype, mount, opt)"),
        }
    }
    Ok(s)
}

fn rpc_error(e: ttrpc::Error) -> anyhow::Error {
    match e {
        ttrpc::Error::RpcStatus(st) => anyhow!("{:?}: {}", st.code(), st.message()),
        other => anyhow!("{other}"),
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("husk-agent-ctl: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let timeout_ns = (args.timeout as i64).saturating_mul(1_000_000_000);
    let ctx = || ttrpc::context::with_timeout(timeout_ns);
    if let Cmd::WaitReady { secs } = args.cmd {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        loop {
            let attempt = connect(&args.addr).and_then(|c| {
                AgentServiceClient::new(c)
                    .get_guest_details(
                        ttrpc::context::with_timeout(10_000_000_000),
                        &pb::Empty::new(),
                    )
                    .map_err(rpc_error)
            });
            match attempt {
                Ok(d) => {
                    println!(
                        "ready after {} ms: agent {}, kernel {}",
                        started.elapsed().as_millis(),
                        d.agent_version,
                        d.kernel_release
                    );
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => return Err(e.context("agent not ready")),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    let client = AgentServiceClient::new(connect(&args.addr)?);
    let creq = |id: &str| pb::ContainerRequest {
        container_id: id.into(),
        ..Default::default()
    };
    match args.cmd {
        Cmd::WaitReady { .. } => unreachable!("handled above"),
        Cmd::GuestDetails => {
            let d = client
                .get_guest_details(ctx(), &pb::Empty::new())
                .map_err(rpc_error)?;
            println!(
                "agent_version={} kernel_release={} mem_total_bytes={} online_cpus={}",
                d.agent_version, d.kernel_release, d.mem_total_bytes, d.online_cpus
            );
        }
        Cmd::CreateSandbox {
            id,
            hostname,
            dns,
            storage,
        } => {
            let req = pb::CreateSandboxRequest {
                sandbox_id: id,
                hostname,
                dns,
                storages: storage
                    .iter()
                    .map(|s| parse_storage(s))
                    .collect::<Result<_, _>>()?,
                ..Default::default()
            };
            client.create_sandbox(ctx(), &req).map_err(rpc_error)?;
        }
        Cmd::DestroySandbox => {
            // The guest powers off right after replying; a connection that drops instead of
            // replying means the same.
            match client.destroy_sandbox(ctx(), &pb::Empty::new()) {
                Ok(_) => {}
                Err(ttrpc::Error::RpcStatus(st)) => bail!("{:?}: {}", st.code(), st.message()),
                Err(e) => eprintln!("husk-agent-ctl: no reply ({e}); the guest went away"),
            }
        }
        Cmd::Create {
            id,
            spec,
            storage,
            rootfs,
        } => {
            let json = std::fs::read_to_string(&spec)
                .with_context(|| format!("reading {}", spec.display()))?;
            let req = pb::CreateContainerRequest {
                container_id: id,
                oci_spec_json: json,
                storages: storage
                    .iter()
                    .map(|s| parse_storage(s))
                    .collect::<Result<_, _>>()?,
                rootfs,
                ..Default::default()
            };
            client.create_container(ctx(), &req).map_err(rpc_error)?;
        }
        Cmd::Start { id } => {
            client
                .start_container(ctx(), &creq(&id))
                .map_err(rpc_error)?;
        }
        Cmd::Remove { id, timeout } => {
            let req = pb::RemoveContainerRequest {
                container_id: id,
                timeout,
                ..Default::default()
            };
            client.remove_container(ctx(), &req).map_err(rpc_error)?;
        }
        Cmd::Pause { id } => {
            client
                .pause_container(ctx(), &creq(&id))
                .map_err(rpc_error)?;
        }
        Cmd::Resume { id } => {
            client
                .resume_container(ctx(), &creq(&id))
                .map_err(rpc_error)?;
        }
        Cmd::Update { id, resources_json } => {
            let req = pb::UpdateContainerRequest {
                container_id: id,
                resources_json,
                ..Default::default()
            };
            client.update_container(ctx(), &req).map_err(rpc_error)?;
        }
        Cmd::Stats { id } => {
            let s = client
                .stats_container(ctx(), &creq(&id))
                .map_err(rpc_error)?;
            let mut j = serde_json::json!({});
            if let Some(c) = s.cpu.as_ref() {
                j["cpu"] = serde_json::json!({"usage_usec": c.usage_usec, "user_usec": c.user_usec,
                    "system_usec": c.system_usec, "nr_throttled": c.nr_throttled});
            }
            if let Some(m) = s.memory.as_ref() {
                j["memory"] = serde_json::json!({"usage": m.usage, "limit": m.limit,
                    "max_usage": m.max_usage, "oom_kill": m.oom_kill});
            }
            if let Some(p) = s.pids.as_ref() {
                j["pids"] = serde_json::json!({"current": p.current, "limit": p.limit});
            }
            if let Some(io) = s.io.as_ref() {
                j["io"] =
                    serde_json::json!({"read_bytes": io.read_bytes, "write_bytes": io.write_bytes});
            }
            println!("{j}");
        }
        Cmd::Ps { id } => {
            let r = client
                .list_processes(ctx(), &creq(&id))
                .map_err(rpc_error)?;
            for p in r.pids {
                println!("{p}");
            }
        }
        Cmd::Exec {
            id,
            exec_id,
            tty,
            env,
            args,
        } => {
            let mut env = env;
            if !env.iter().any(|e| e.starts_with("PATH=")) {
                env.push(
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                );
            }
            let process = serde_json::json!({
                "terminal": tty,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": env,
                "cwd": "/",
            });
            let req = pb::ExecProcessRequest {
                container_id: id,
                exec_id,
                process_json: process.to_string(),
                ..Default::default()
            };
            client.exec_process(ctx(), &req).map_err(rpc_error)?;
        }
        Cmd::Signal {
            id,
            signal,
            exec,
            all,
        } => {
            let req = pb::SignalProcessRequest {
                container_id: id,
                exec_id: exec,
                signal: husk_agent::client::parse_signal(&signal)?,
                all,
                ..Default::default()
            };
            client.signal_process(ctx(), &req).map_err(rpc_error)?;
        }
        Cmd::Wait { id, exec } => {
            let req = pb::ProcessRequest {
                container_id: id,
                exec_id: exec,
                ..Default::default()
            };
            let r = client.wait_process(ctx(), &req).map_err(rpc_error)?;
            println!("{}", r.status);
        }
        Cmd::ReadStdout { id, exec, stderr } => {
            let mut out = std::io::stdout().lock();
            loop {
                let req = pb::ReadStreamRequest {
                    container_id: id.clone(),
                    exec_id: exec.clone(),
                    len: 65536,
                    ..Default::default()
                };
                let r = if stderr {
                    client.read_stderr(ctx(), &req)
                } else {
                    client.read_stdout(ctx(), &req)
                }
                .map_err(rpc_error)?;
                if r.eof || r.data.is_empty() {
                    break;
                }
                out.write_all(&r.data)?;
                out.flush()?;
            }
        }
        Cmd::WriteStdin { id, exec } => {
            let mut stdin = BufReader::new(std::io::stdin().lock());
            loop {
                let buf = stdin.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                let req = pb::WriteStreamRequest {
                    container_id: id.clone(),
                    exec_id: exec.clone(),
                    data: buf.to_vec(),
                    ..Default::default()
                };
                let r = client.write_stdin(ctx(), &req).map_err(rpc_error)?;
                stdin.consume(r.len as usize);
            }
            let req = pb::ProcessRequest {
                container_id: id,
                exec_id: exec,
                ..Default::default()
            };
            client.close_stdin(ctx(), &req).map_err(rpc_error)?;
        }
        Cmd::OomEvent => {
            let r = client
                .get_oom_event(ctx(), &pb::Empty::new())
                .map_err(rpc_error)?;
            println!("{}", r.container_id);
        }
        Cmd::UpdateInterface {
            name,
            mac,
            new_name,
            mtu,
            addr,
            up,
            down,
        } => {
            let addresses = addr
                .iter()
                .map(|a| {
                    let (address, prefix) = a
                        .split_once('/')
                        .with_context(|| format!("--addr {a:?}: ADDR/PREFIX"))?;
                    Ok(pb::IpAddress {
                        address: address.into(),
                        prefix: prefix
                            .parse()
                            .with_context(|| format!("--addr {a:?}: prefix"))?,
                        ..Default::default()
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let state = match (up, down) {
                (true, _) => pb::LinkState::LINK_STATE_UP,
                (_, true) => pb::LinkState::LINK_STATE_DOWN,
                _ => pb::LinkState::LINK_STATE_UNCHANGED,
            };
            let req = pb::UpdateInterfaceRequest {
                name,
                mac,
                new_name,
                mtu,
                addresses,
                state: state.into(),
                ..Default::default()
            };
            let i = client.update_interface(ctx(), &req).map_err(rpc_error)?;
            println!("{}", show_interface(&i));
        }
        Cmd::UpdateRoutes { route } => {
            let req = pb::UpdateRoutesRequest {
                routes: route
                    .iter()
                    .map(|r| parse_route(r))
                    .collect::<anyhow::Result<_>>()?,
                ..Default::default()
            };
            let r = client.update_routes(ctx(), &req).map_err(rpc_error)?;
            for route in &r.routes {
                println!("{}", show_route(route));
            }
        }
        Cmd::UpdateNeighbors { neigh } => {
            let req = pb::UpdateNeighborsRequest {
                neighbors: neigh
                    .iter()
                    .map(|n| parse_neigh(n))
                    .collect::<anyhow::Result<_>>()?,
                ..Default::default()
            };
            client.update_neighbors(ctx(), &req).map_err(rpc_error)?;
        }
        Cmd::Neighbors => {
            let r = client
                .list_neighbors(ctx(), &pb::Empty::new())
                .map_err(rpc_error)?;
            for n in &r.neighbors {
                println!("{}", show_neigh(n));
            }
        }
        Cmd::Interfaces => {
            let r = client
                .list_interfaces(ctx(), &pb::Empty::new())
                .map_err(rpc_error)?;
            for i in &r.interfaces {
                println!("{}", show_interface(i));
            }
        }
        Cmd::Routes => {
            let r = client
                .list_routes(ctx(), &pb::Empty::new())
                .map_err(rpc_error)?;
            for route in &r.routes {
                println!("{}", show_route(route));
            }
        }
        Cmd::Logs => {
            let mut offset = 0;
            let mut out = std::io::stdout().lock();
            loop {
                let req = pb::ReadLogsRequest {
                    offset,
                    len: 65536,
                    ..Default::default()
                };
                let r = client.read_logs(ctx(), &req).map_err(rpc_error)?;
                if r.data.is_empty() {
                    break;
                }
                out.write_all(&r.data)?;
                offset = r.next_offset;
            }
        }
    }
    Ok(())
}
