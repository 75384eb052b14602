//! `husk update [flags | -r FILE|-] ID`: change a running container's resources, with runc's
//! flags or a JSON `linux.resources` object (`-r`, which wins over the flags as in runc). The
//! supervisor hands the object to the agent's `UpdateContainer`, which writes the cgroup v2
//! files in the guest; only what is named changes. Errors name the field (the agent refuses a
//! resource whose controller is missing). The CPU controls (shares, quota, period) are then
//! written to the sandbox's host cgroup too (`linux.cgroupsPath`, see `hostcg`), so the host
//! enforces what the guest does; its memory limit stays the VM's memory plus overhead (the
//! VM's memory is fixed when it is made).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use oci_spec::runtime::LinuxResources;
use serde_json::{Map, Value};

use super::Ctx;
use crate::control::{self, Request};

/// runc update's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A JSON linux.resources object, from a file or `-` for stdin; the flags are then ignored.
    #[arg(short, long, value_name = "FILE|-")]
    pub resources: Option<PathBuf>,
    /// Block IO weight (10..1000).
    #[arg(long, value_name = "N")]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period (µs).
    #[arg(long, value_name = "N")]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota (µs; -1 for none).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long, visible_alias = "cpu-shares", value_name = "N")]
    pub cpu_share: Option<u64>,
    /// CPUs allowed (0-3, 0,1).
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed (0-3, 0,1).
    #[arg(long, value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or 64m, 1g; -1 for none).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size)]
    pub memory: Option<i64>,
    /// Memory soft limit.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap limit (-1 for unlimited swap).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true, value_parser = parse_size)]
    pub memory_swap: Option<i64>,
    /// Maximum number of pids (-1 or 0 for none).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Accepted for runc compatibility and ignored (cgroup v2 has no kernel memory limit).
    #[arg(long, value_name = "SIZE", hide = true)]
    pub kernel_memory: Option<String>,
    /// Accepted for runc compatibility and ignored (cgroup v2 has no kernel memory limit).
    #[arg(long, value_name = "SIZE", hide = true)]
    pub kernel_memory_tcp: Option<String>,
    /// Container id.
    pub id: String,
}

/// A size as runc takes it (docker's RAMInBytes: binary units, `k`/`m`/`g`/`t`/`p` with an
/// optional `b`/`ib`, case-insensitive); `-1` means unlimited.
pub fn parse_size(s: &str) -> Result<i64, String> {
    if s == "-1" {
        return Ok(-1);
    }
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size: {s:?}"))?;
    let unit = unit.trim_start();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(format!("invalid size: {s:?}")),
    };
    Ok((n * (1u64 << shift) as f64) as i64)
}

/// The resources object the flags describe.
fn from_flags(a: &Args) -> Value {
    let mut res = Map::new();
    let mut section = |name: &str, fields: Vec<(&str, Option<Value>)>| {
        let m: Map<String, Value> = fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect();
        if !m.is_empty() {
            res.insert(name.into(), Value::Object(m));
        }
    };
    section(
        "memory",
        vec![
            ("limit", a.memory.map(Value::from)),
            ("reservation", a.memory_reservation.map(Value::from)),
            ("swap", a.memory_swap.map(Value::from)),
        ],
    );
    section(
        "cpu",
        vec![
            ("shares", a.cpu_share.map(Value::from)),
            ("quota", a.cpu_quota.map(Value::from)),
            ("period", a.cpu_period.map(Value::from)),
            ("cpus", a.cpuset_cpus.clone().map(Value::from)),
            ("mems", a.cpuset_mems.clone().map(Value::from)),
        ],
    );
    section("pids", vec![("limit", a.pids_limit.map(Value::from))]);
    section("blockIO", vec![("weight", a.blkio_weight.map(Value::from))]);
    Value::Object(res)
}

/// The resources JSON to send (`-r`'s, or the flags'), and it read as OCI LinuxResources
/// (which checks it before anything changes).
fn resources(ctx: &Ctx, a: &Args) -> anyhow::Result<(String, LinuxResources)> {
    let Some(path) = &a.resources else {
        if a.kernel_memory.is_some() || a.kernel_memory_tcp.is_some() {
            ctx.log
                .warn("--kernel-memory and --kernel-memory-tcp are ignored (cgroup v2)");
        }
        let v = from_flags(a);
        let res = serde_json::from_value(v.clone())
            .context("the flags do not make a linux.resources object")?;
        return Ok((v.to_string(), res));
    };
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    }
    .with_context(|| format!("-r {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("-r {}", path.display()))?;
    let res = serde_json::from_value(v.clone())
        .with_context(|| format!("-r {}: not a linux.resources object", path.display()))?;
    Ok((v.to_string(), res))
}

/// The verb.
pub fn run(ctx: &Ctx, a: Args) -> anyhow::Result<i32> {
    let (resources_json, res) = resources(ctx, &a)?;
    let _lock = ctx.root.lock(&a.id)?;
    let rec = ctx.root.read_record(&a.id)?;
    if ctx.root.status(&rec) == crate::state::Status::Stopped {
        bail!("container {} is not running", a.id);
    }
    let (sock, container) = rec.control(&ctx.root);
    let req = Request::Update { resources_json };
    control::call_in(
        &sock,
        container.as_deref(),
        &req,
        &[],
        Some(Duration::from_secs(30)),
    )?;
    update_host_cgroup(ctx, &a.id, &res)?;
    Ok(0)
}

/// Writes the update's CPU controls to the container's host cgroup, if it has one.
fn update_host_cgroup(ctx: &Ctx, id: &str, res: &LinuxResources) -> anyhow::Result<()> {
    let Some(cpu) = res.cpu() else {
        return Ok(());
    };
    let dirs = crate::hostcg::load(&ctx.root.container_dir(id));
    if dirs.is_empty() {
        return Ok(());
    }
    let n = crate::hostcg::update_cpu(&dirs, cpu.shares(), cpu.quota(), cpu.period())
        .context("the guest was updated, but not the host cgroup")?;
    ctx.log.debug(&format!(
        "host cgroup: cpu controls written in {n} directories"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[test]
    fn sizes_as_runc_reads_them() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("32m").unwrap(), 32 << 20);
        assert_eq!(parse_size("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("-1").unwrap(), -1);
        assert!(parse_size("12x").is_err());
        assert!(parse_size("m").is_err());
    }

    #[test]
    fn flags_become_linux_resources() {
        let cli = crate::cli::Cli::try_parse_from([
            "husk",
            "update",
            "--memory",
            "64m",
            "--memory-swap",
            "-1",
            "--cpu-shares",
            "512",
            "--cpu-quota",
            "50000",
            "--cpu-period",
            "100000",
            "--cpuset-cpus",
            "0",
            "--pids-limit",
            "20",
            "c",
        ])
        .unwrap();
        let crate::cli::Cmd::Update(a) = cli.cmd else {
            panic!("not update")
        };
        let v = from_flags(&a);
        assert_eq!(
            v,
            json!({
                "memory": {"limit": 64 << 20, "swap": -1},
                "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
                "pids": {"limit": 20},
            })
        );
        serde_json::from_value::<oci_spec::runtime::LinuxResources>(v).unwrap();
    }
}
