//! `Stats`: husk's runc-style stats (`husk events --stats`, numbers from the guest's cgroup
//! v2) as containerd's `io.containerd.cgroups.v2.Metrics`.

use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Converts the `data` of a runc `stats` event.
pub fn metrics(data: &Value) -> Metrics {
    let cpu = &data["cpu"];
    let mem = &data["memory"];
    let raw = &mem["raw"];
    let r = |k: &str| u(&raw[k]);
    let mut m = Metrics::new();
    m.pids = Some(PidsStat {
        current: u(&data["pids"]["current"]),
        limit: u(&data["pids"]["limit"]),
        ..Default::default()
    })
    .into();
    m.cpu = Some(CPUStat {
        usage_usec: u(&cpu["usage"]["total"]) / 1000,
        user_usec: u(&cpu["usage"]["user"]) / 1000,
        system_usec: u(&cpu["usage"]["kernel"]) / 1000,
        nr_periods: u(&cpu["throttling"]["periods"]),
        nr_throttled: u(&cpu["throttling"]["throttledPeriods"]),
        throttled_usec: u(&cpu["throttling"]["throttledTime"]) / 1000,
        ..Default::default()
    })
    .into();
    m.memory = Some(MemoryStat {
        usage: u(&mem["usage"]["usage"]),
        usage_limit: u(&mem["usage"]["limit"]),
        max_usage: u(&mem["usage"]["max"]),
        swap_usage: u(&mem["swap"]["usage"]),
        swap_limit: u(&mem["swap"]["limit"]),
        anon: r("anon"),
        file: r("file"),
        kernel_stack: r("kernel_stack"),
        slab: r("slab"),
        sock: r("sock"),
        shmem: r("shmem"),
        file_mapped: r("file_mapped"),
        file_dirty: r("file_dirty"),
        file_writeback: r("file_writeback"),
        anon_thp: r("anon_thp"),
        inactive_anon: r("inactive_anon"),
        active_anon: r("active_anon"),
        inactive_file: r("inactive_file"),
        active_file: r("active_file"),
        unevictable: r("unevictable"),
        slab_reclaimable: r("slab_reclaimable"),
        slab_unreclaimable: r("slab_unreclaimable"),
        pgfault: r("pgfault"),
        pgmajfault: r("pgmajfault"),
        workingset_refault: r("workingset_refault"),
        workingset_activate: r("workingset_activate"),
        workingset_nodereclaim: r("workingset_nodereclaim"),
        pgrefill: r("pgrefill"),
        pgscan: r("pgscan"),
        pgsteal: r("pgsteal"),
        pgactivate: r("pgactivate"),
        pgdeactivate: r("pgdeactivate"),
        pglazyfree: r("pglazyfree"),
        pglazyfreed: r("pglazyfreed"),
        thp_fault_alloc: r("thp_fault_alloc"),
        thp_collapse_alloc: r("thp_collapse_alloc"),
        ..Default::default()
    })
    .into();
    m.memory_events = Some(MemoryEvents {
        oom_kill: u(&mem["usage"]["failcnt"]),
        ..Default::default()
    })
    .into();
    let blk = |list: &str, op: &str| -> u64 {
        data["blkio"][list]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["op"].as_str() == Some(op))
                    .map(|e| u(&e["value"]))
                    .sum()
            })
            .unwrap_or(0)
    };
    m.io = Some(IOStat {
        usage: vec![IOEntry {
            rbytes: blk("ioServiceBytesRecursive", "Read"),
            wbytes: blk("ioServiceBytesRecursive", "Write"),
            rios: blk("ioServicedRecursive", "Read"),
            wios: blk("ioServicedRecursive", "Write"),
            ..Default::default()
        }],
        ..Default::default()
    })
    .into();
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::MessageFull;

    #[test]
    fn runc_stats_become_cgroup_v2_metrics() {
        let data = serde_json::json!({
            "cpu": {"usage": {"total": 5_000_000, "kernel": 1_000_000, "user": 4_000_000},
                    "throttling": {"throttledPeriods": 3, "throttledTime": 7000}},
            "memory": {"usage": {"limit": 1 << 30, "usage": 123_456, "max": 200_000, "failcnt": 2},
                       "raw": {"anon": 4096, "file": 8192, "pgfault": 9}},
            "pids": {"current": 4, "limit": 50},
            "blkio": {
                "ioServiceBytesRecursive": [{"op": "Read", "value": 10}, {"op": "Write", "value": 20}],
                "ioServicedRecursive": [{"op": "Read", "value": 1}, {"op": "Write", "value": 2}]
            }
        });
        let m = metrics(&data);
        assert_eq!(m.cpu.usage_usec, 5000);
        assert_eq!(m.cpu.system_usec, 1000);
        assert_eq!(m.cpu.user_usec, 4000);
        assert_eq!(m.cpu.nr_throttled, 3);
        assert_eq!(m.cpu.throttled_usec, 7);
        assert_eq!(m.memory.usage, 123_456);
        assert_eq!(m.memory.usage_limit, 1 << 30);
        assert_eq!(m.memory.max_usage, 200_000);
        assert_eq!(m.memory.anon, 4096);
        assert_eq!(m.memory.file, 8192);
        assert_eq!(m.memory.pgfault, 9);
        assert_eq!(m.memory_events.oom_kill, 2);
        assert_eq!(m.pids.current, 4);
        assert_eq!(m.pids.limit, 50);
        assert_eq!(m.io.usage[0].rbytes, 10);
        assert_eq!(m.io.usage[0].wios, 2);
        // The type containerd's `ctr task metrics` decodes.
        assert_eq!(
            Metrics::descriptor().full_name(),
            "io.containerd.cgroups.v2.Metrics"
        );
        // Missing sections are zeros, not a panic.
        let empty = metrics(&serde_json::json!({}));
        assert_eq!(empty.cpu.usage_usec, 0);
    }
}
