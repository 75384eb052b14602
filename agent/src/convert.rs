//! Conversions between wire messages (`protocol`) and domain types. Nothing else.

use std::collections::HashMap;

use crate::cgroup::Cgroup;
use crate::protocol as pb;
use crate::storage::{Storage, StorageError};

/// The request's storages, validated (errors name `storages[i].<field>`).
pub fn storages(list: &[pb::Storage]) -> Result<Vec<Storage>, StorageError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| Storage::from_pb("storages", i, s))
        .collect()
}

fn clamp_max(v: Option<u64>) -> u64 {
    match v {
        Some(u64::MAX) | None => 0,
        Some(v) => v,
    }
}

/// Stats of a container's cgroup; absent controllers leave their message unset.
pub fn stats(cg: &Cgroup) -> pb::StatsContainerResponse {
    let mut r = pb::StatsContainerResponse::new();
    let cpu = cg.read_flat("cpu.stat");
    let get = |m: &HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    r.cpu = protobuf::MessageField::some(pb::CpuStats {
        usage_usec: get(&cpu, "usage_usec"),
        user_usec: get(&cpu, "user_usec"),
        system_usec: get(&cpu, "system_usec"),
        nr_throttled: get(&cpu, "nr_throttled"),
        throttled_usec: get(&cpu, "throttled_usec"),
        ..Default::default()
    });
    if let Some(usage) = cg.read_value("memory.current") {
        let events = cg.read_flat("memory.events");
        r.memory = protobuf::MessageField::some(pb::MemoryStats {
            usage,
            limit: clamp_max(cg.read_value("memory.max")),
            max_usage: cg.read_value("memory.peak").unwrap_or(0),
            oom_kill: get(&events, "oom_kill"),
            stat: cg.read_flat("memory.stat"),
            ..Default::default()
        });
    }
    if let Some(current) = cg.read_value("pids.current") {
        r.pids = protobuf::MessageField::some(pb::PidsStats {
            current,
            limit: clamp_max(cg.read_value("pids.max")),
            ..Default::default()
        });
    }
    if cg.path().join("io.stat").exists() {
        let (rb, wb, ri, wi) = cg.io_totals();
        r.io = protobuf::MessageField::some(pb::IoStats {
            read_bytes: rb,
            write_bytes: wb,
            read_ios: ri,
            write_ios: wi,
            ..Default::default()
        });
    }
    r
}

/// Guest details from /proc.
pub fn guest_details() -> pb::GuestDetailsResponse {
    let mem_total_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    pb::GuestDetailsResponse {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        mem_total_bytes,
        online_cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        ..Default::default()
    }
}
