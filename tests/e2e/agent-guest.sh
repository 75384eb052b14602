#!/usr/bin/env bash
# End-to-end: husk-agent as the PID 1 of a real guest. husk-vmm boots husk's vmlinux with the
# agent initramfs (guest-image/build), a busybox ext4 rootfs disk (read-only, serial "rootfs"),
# a writable ext4 data disk (serial "data"), virtio-vsock and virtio-rng; husk-agent-ctl then
# drives the agent over the hybrid vsock socket: sandbox with a storage, containers whose
# rootfs is the disk under an overlay, created -> start -> stdout -> exit status, exec,
# signals, ps, stats, pause/resume, cgroup memory and pids limits, namespaces, a bad spec, the
# guest NIC (virtio-net on a TAP in a network namespace this script makes) configured with
# UpdateInterface/UpdateRoutes/UpdateNeighbors (MTU, IPv4 + IPv6 addresses, an IPv6 multipath
# route, the IPv4 one the guest kernel refuses, a permanent neighbour for the gateway) and a
# container in the guest's network pinging the host end through the default route, and
# DestroySandbox, after which the VM must exit 0 ("guest
# powered off").
#
# usage: tests/e2e/agent-guest.sh [--prepare]
#   --prepare  build the initramfs, husk-agent-ctl and the rootfs image on the host (compiling
#              under TCG is slow); prints the rootfs image path.
#   env HUSK_VMM, HUSK_KERNEL (tests/run-all exports them), HUSK_AGENT_LIMIT (seconds).
#
# Needs root (netns, TAP) and a KVM that boots stock kernels: run it through tests/with-kvm.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${HUSK_CACHE:-/var/cache/husk}/agent-e2e"
target="${CARGO_TARGET_DIR:-$root/target}"
initrd="$target/guest-image/initramfs.cpio"
ctl="$target/x86_64-unknown-linux-gnu/release/husk-agent-ctl"
applets="sh echo cat sleep ls hostname ps true false seq dd grep wc head tr readlink id mount kill env touch ping"

rootfs_image() { # builds (or reuses) the busybox ext4 image; prints its path
    local key dir
    key=$( (sha256sum /bin/busybox; echo "$applets v1") | sha256sum | cut -c1-16)
    dir="$cache/$key"
    if [ ! -f "$dir/rootfs.ext4" ]; then
        rm -rf "$dir/tree" && mkdir -p "$dir/tree" || return 1
        (
            cd "$dir/tree" &&
                mkdir -p bin etc proc sys dev tmp root data run &&
                cp /bin/busybox bin/ &&
                for a in $applets; do ln -s busybox "bin/$a"; done &&
                printf 'root:x:0:0:root:/root:/bin/sh\n' >etc/passwd &&
                printf 'root:x:0:\n' >etc/group
        ) || return 1
        mkfs.ext4 -q -F -L husk-rootfs -d "$dir/tree" -E root_owner=0:0 "$dir/rootfs.ext4.tmp" 16M >&2 &&
            mv "$dir/rootfs.ext4.tmp" "$dir/rootfs.ext4" || return 1
    fi
    echo "$dir/rootfs.ext4"
}

if [ "${1:-}" = --prepare ]; then
    "$root/guest-image/build" >/dev/null || exit 1
    rootfs_image
    exit $?
fi

vmm="${HUSK_VMM:-$root/target/release/husk-vmm}"
kernel="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
limit="${HUSK_AGENT_LIMIT:-600}"
for f in "$vmm" "$kernel" "$initrd" "$ctl"; do
    [ -e "$f" ] || { echo "agent-guest: $f missing (run tests/e2e/agent-guest.sh --prepare on the host)"; exit 1; }
done
image=$(rootfs_image | tail -n1) || { echo "agent-guest: cannot build the rootfs image"; exit 1; }

work="$(mktemp -d)"
ns="husk-agent-e2e-$$"
tap=huskat0
guest_mac=02:00:00:00:78:02
cleanup() {
    [ -n "${vmm_pid:-}" ] && kill "$vmm_pid" 2>/dev/null
    ip netns del "$ns" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
. "$root/tests/e2e/lib/harness.sh"

cp "$image" "$work/rootfs.ext4"
truncate -s 16M "$work/data.ext4" && mkfs.ext4 -q -F -L husk-data "$work/data.ext4"
uds="$work/v.sock"
C() { "$ctl" --addr "hvsock:$uds:1024" --timeout 300 "$@"; }

# Network: a namespace with a TAP at 10.78.0.1/24 that also owns 10.79.0.1, which the guest
# reaches only through its default route.
ip netns add "$ns" || { echo "agent-guest: cannot create a network namespace (need root)"; exit 1; }
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip tuntap add dev "$tap" mode tap
ip netns exec "$ns" ip addr add 10.78.0.1/24 dev "$tap"
ip netns exec "$ns" ip addr add 10.79.0.1/32 dev "$tap"
ip netns exec "$ns" ip link set "$tap" up

echo "agent-guest: $vmm"
start=$(date +%s.%N)
ip netns exec "$ns" "$vmm" --kernel "$kernel" --initrd "$initrd" --memory-mib 512 --vcpus 2 \
    --serial "$work/console.out" --boot-timeout 120 --report-json "$work/report.json" \
    --disk "path=$work/rootfs.ext4,ro=on,serial=rootfs" --disk "path=$work/data.ext4,serial=data" \
    --vsock "cid=3,uds=$uds" --net "tap=$tap,mac=$guest_mac" --rng 2>"$work/vmm.err" &
vmm_pid=$!

for _ in $(seq 600); do [ -S "$uds" ] && break; sleep 0.1; done
if ! C wait-ready --secs "$limit" >"$work/ready" 2>&1; then
    bad agent_listens_on_vsock "$(cat "$work/ready")"
else
    ok agent_listens_on_vsock
    echo "  $(cat "$work/ready") ($(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $start}") s after husk-vmm started)"

    # --- sandbox with a storage: the data disk, writable, no overlay.
    check create_sandbox_with_data_disk C create-sandbox --hostname husk-guest \
        --storage driver=virtio-blk,source=data,fstype=ext4,mount=/run/husk/data

    spec() { # FILE ID ARGS_JSON [EXTRA_LINUX_JSON]
        cat >"$1" <<EOF
{"ociVersion":"1.0.2",
 "process":{"args":$3,"env":["PATH=/bin"],"cwd":"/","user":{"uid":0,"gid":0}},
 "root":{"path":"rootfs"},"hostname":"$2",
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
           {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755","size=65536k"]},
           {"destination":"/data","type":"bind","source":"/run/husk/data","options":["rbind","rw"]}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network"},{"type":"cgroup"}]
          ${4:+,$4}}}
EOF
    }
    rootfs_storage() { echo "driver=virtio-blk,source=rootfs,fstype=ext4,mount=/run/husk/$1/rootfs,opt=ro,opt=overlay"; }

    # --- c1: created, waits, starts, prints, exits 7.
    spec "$work/c1.json" c1 '["sh","-c","echo hello-from-guest; hostname; echo written > /data/from-c1; echo overlay > /etc/rw-test && cat /etc/rw-test; exit 7"]'
    if C create c1 --spec "$work/c1.json" --storage "$(rootfs_storage c1)" --rootfs /run/husk/c1/rootfs 2>"$work/err"; then
        ok create_container_from_rootfs_disk
        # A pending WaitProcess consumes nothing (a dropped ReadStdout would eat the output).
        timeout 3 "$ctl" --addr "hvsock:$uds:1024" wait c1 >/dev/null 2>&1
        check container_waits_in_created [ $? = 124 ]
        check start_container C start c1
        out=$(C read-stdout c1)
        if [ "$out" = "$(printf 'hello-from-guest\nc1\noverlay')" ]; then ok stdout_read; else bad stdout_read "got $(printf %q "$out")"; fi
        st=$(C wait c1)
        check exit_status_7 [ "$st" = 7 ]
        check remove_container_unmounts_storage C remove c1
    else
        bad create_container_from_rootfs_disk "$(cat "$work/err")"
    fi

    # --- c2: long-running, with memory and pids limits.
    spec "$work/c2.json" c2 '["sleep","1000"]' \
        '"resources":{"memory":{"limit":33554432},"pids":{"limit":20}}'
    if C create c2 --spec "$work/c2.json" --storage "$(rootfs_storage c2)" --rootfs /run/husk/c2/rootfs 2>"$work/err" &&
        C start c2; then
        ok create_and_start_c2
        C exec c2 e1 -- sh -c 'hostname; tr "\0" " " </proc/1/cmdline; echo; grep -c : /proc/net/dev'
        ns_out=$(C read-stdout c2 --exec e1)
        check exec_runs_in_container [ "$(C wait c2 --exec e1)" = 0 ]
        check namespaces_uts_hostname [ "$(echo "$ns_out" | sed -n 1p)" = c2 ]
        check namespaces_pid_init_is_sleep grep -q '^sleep 1000' <<<"$(echo "$ns_out" | sed -n 2p)"
        check namespaces_net_only_lo [ "$(echo "$ns_out" | sed -n 3p)" = 1 ]

        pids=$(C ps c2)
        check ps_lists_init [ -n "$pids" ]
        stats=$(C stats c2)
        check stats_memory_limit grep -q '"limit":33554432' <<<"$stats"
        check stats_pids_limit grep -q '"pids":{"current":[0-9]*,"limit":20}' <<<"$stats"

        # pause/resume: an exec that would finish is held while the cgroup is frozen.
        C exec c2 e3 -- sh -c 'sleep 2; echo woke'
        C pause c2
        timeout 5 "$ctl" --addr "hvsock:$uds:1024" wait c2 --exec e3 >/dev/null 2>&1
        check pause_freezes [ $? = 124 ]
        check resume C resume c2
        check resumed_process_finishes [ "$(C wait c2 --exec e3)" = 0 ]
        check resumed_process_output [ "$(C read-stdout c2 --exec e3)" = woke ]

        # memory.max = 32 MiB (no swap): a 64 MiB buffer is OOM-killed.
        C exec c2 e5 -- dd if=/dev/zero of=/dev/null bs=64M count=1
        st=$(C wait c2 --exec e5)
        oom=$(C stats c2 | sed -n 's/.*"oom_kill":\([0-9]*\).*/\1/p')
        if [ "$st" = 137 ] && [ "${oom:-0}" -ge 1 ]; then ok memory_limit_oom_kills; else
            bad memory_limit_oom_kills "status $st, oom_kill ${oom:-?}, stderr: $(C read-stdout c2 --exec e5 --stderr 2>&1)"; fi
        # ... and GetOomEvent reports it (the agent's memory.events watcher).
        check oom_event_reported [ "$("$ctl" --addr "hvsock:$uds:1024" --timeout 10 oom-event)" = c2 ]

        # Signals: TERM to an exec.
        C exec c2 e6 -- sleep 100
        C signal c2 TERM --exec e6
        check signal_exec_term [ "$(C wait c2 --exec e6)" = 143 ]
        # pids.max = 20: 30 background sleeps cannot all fork.
        C exec c2 e4 -- sh -c 'for i in $(seq 30); do sleep 60 >/dev/null 2>&1 & done; echo done'
        e4err=$(C read-stdout c2 --exec e4 --stderr)
        C wait c2 --exec e4 >/dev/null
        cur=$(C stats c2 | sed -n 's/.*"pids":{"current":\([0-9]*\).*/\1/p')
        check pids_limit_refuses_forks grep -qi fork <<<"$e4err"
        check pids_current_within_limit [ "${cur:-99}" -le 20 ]

        # KILL to every process of the container (init included).
        C signal c2 KILL --all
        check signal_all_kill_init [ "$(C wait c2)" = 137 ]
        C remove c2
    else
        bad create_and_start_c2 "$(cat "$work/err")"
    fi

    # --- network: the guest NIC found by its MAC, renamed, addressed and up; a default route;
    # a container sharing the guest's network namespace (CAP_NET_RAW for busybox ping) pings
    # an address the host has only behind that route.
    iface=$(C update-interface --mac "$guest_mac" --new-name husk0 --addr 10.78.0.2/24 --up 2>&1)
    check net_update_interface_by_mac grep -q "husk0 $guest_mac mtu [0-9]* up 10.78.0.2/24" <<<"$iface"
    routes=$(C update-routes --route 'default via 10.78.0.1 dev husk0' 2>&1)
    check net_update_routes_default grep -q '^default via 10.78.0.1 dev husk0' <<<"$routes"
    check net_list_routes grep -q '^10.78.0.0/24 dev husk0 src 10.78.0.2' <<<"$(C routes)"
    # MTU and an IPv6 address too (the supervisor copies the host veth's).
    iface=$(C update-interface --name husk0 --mtu 1400 --addr 10.78.0.2/24 --addr fd00:78::2/64 --up 2>&1)
    check net_update_interface_mtu_and_ipv6 grep -q "husk0 $guest_mac mtu 1400 up .*fd00:78::2/64" <<<"$iface"
    # Multipath: an IPv6 route over two link-local next hops (IPv6 ECMP is always built in)
    # is added, listed with its hops, and kept by the same request again.
    mp6='fd00:99::/64 nexthop via fe80::1 dev husk0 nexthop via fe80::2 dev husk0 weight 2'
    routes=$(C update-routes --route 'default via 10.78.0.1 dev husk0' --route "$mp6" 2>&1)
    if grep -q '^fd00:99::/64 .*nexthop via fe80::1 dev husk0 weight 1' <<<"$routes" &&
        grep -q '^fd00:99::/64 .*nexthop via fe80::2 dev husk0 weight 2' <<<"$routes"; then
        ok net_multipath_ipv6_route; else bad net_multipath_ipv6_route "$routes"; fi
    routes=$(C update-routes --route 'default via 10.78.0.1 dev husk0' --route "$mp6" 2>&1)
    check net_multipath_route_kept_by_same_request grep -q '^fd00:99::/64 .*nexthop via fe80::2' <<<"$routes"
    # The guest kernel has no CONFIG_IP_ROUTE_MULTIPATH (no IP_ADVANCED_ROUTER): an IPv4
    # multipath route is refused with the kernel's own words, naming the route.
    err=$(C update-routes --route 'default via 10.78.0.1 dev husk0' \
        --route '10.99.0.0/16 nexthop via 10.78.0.1 nexthop via 10.78.0.3' 2>&1)
    check net_multipath_ipv4_refused_with_kernel_message \
        grep -q 'INVALID_ARGUMENT: routes\[1\] (10.99.0.0/16 nexthop via 10.78.0.1 weight 1 nexthop via 10.78.0.3 weight 1): RTM_NEWROUTE: EINVAL.*Multipath' <<<"$err"
    # Neighbours: the gateway gets a permanent entry with the TAP's real MAC (the ping below
    # then needs no ARP), an IPv6 router entry; a bad MAC is refused naming the field.
    tap_mac=$(ip netns exec "$ns" cat "/sys/class/net/$tap/address")
    check net_update_neighbors C update-neighbors --neigh "10.78.0.1 lladdr $tap_mac dev husk0" \
        --neigh 'fd00:78::1 lladdr 02:00:00:00:78:01 dev husk0 router nud permanent'
    neigh=$(C neighbors 2>&1)
    check net_list_neighbors_ipv4_permanent grep -q "^10.78.0.1 dev husk0 lladdr $tap_mac PERMANENT" <<<"$neigh"
    check net_list_neighbors_ipv6_router grep -q '^fd00:78::1 dev husk0 lladdr 02:00:00:00:78:01 router PERMANENT' <<<"$neigh"
    err=$(C update-neighbors --neigh '10.78.0.9 lladdr 02:00:00:00:78:09 dev husk0' --neigh '10.78.0.8 lladdr 02:00:00:78 dev husk0' 2>&1)
    check net_bad_neighbor_names_field grep -q 'INVALID_ARGUMENT: neighbors\[1\].lladdr' <<<"$err"
    cat >"$work/c3.json" <<EOF
{"ociVersion":"1.0.2",
 "process":{"args":["ping","-c","2","-W","10","10.79.0.1"],"env":["PATH=/bin"],"cwd":"/","user":{"uid":0,"gid":0},
            "capabilities":{"bounding":["CAP_NET_RAW"],"effective":["CAP_NET_RAW"],"permitted":["CAP_NET_RAW"]}},
 "root":{"path":"rootfs"},"hostname":"c3",
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"}]}}
EOF
    if C create c3 --spec "$work/c3.json" --storage "$(rootfs_storage c3)" --rootfs /run/husk/c3/rootfs 2>"$work/err" &&
        C start c3; then
        ping_out=$(C read-stdout c3)
        st=$(C wait c3)
        if [ "$st" = 0 ] && grep -q 'bytes from 10.79.0.1' <<<"$ping_out"; then ok net_container_pings_host_via_default_route; else
            bad net_container_pings_host_via_default_route "status $st: $ping_out $(C read-stdout c3 --stderr 2>&1)"; fi
        # The gateway's entry stayed the permanent one set above (ARP did not replace it).
        check net_permanent_neighbor_kept_after_traffic grep -q "^10.78.0.1 dev husk0 lladdr $tap_mac PERMANENT" <<<"$(C neighbors 2>&1)"
        C remove c3
    else
        bad net_container_pings_host_via_default_route "$(cat "$work/err")"
    fi

    # --- a bad spec: rejected naming the field; its storage is unmounted again (a second
    # create at the same mount point with a good spec works).
    spec "$work/bad.json" bad '["true"]'
    sed -i 's/"cwd":"\/"/"cwd":"relative"/' "$work/bad.json"
    err=$(C create bad --spec "$work/bad.json" --storage "$(rootfs_storage bad)" --rootfs /run/husk/bad/rootfs 2>&1)
    check bad_spec_names_field grep -q 'INVALID_ARGUMENT: .*process.cwd: "relative"' <<<"$err"
    spec "$work/good.json" good '["true"]'
    C create good --spec "$work/good.json" --storage "$(rootfs_storage bad)" --rootfs /run/husk/bad/rootfs &&
        C start good && st=$(C wait good) && C remove good
    check after_bad_spec_a_good_one_works [ "${st:-x}" = 0 ]

    C logs >"$work/agent.log" 2>/dev/null
    startup=$(sed -n 's/.*startup_ms="\{0,1\}\([0-9.]*\).*/\1/p' "$work/agent.log" | head -n1)

    check destroy_sandbox C destroy-sandbox
fi

# The VM must power off by itself.
for _ in $(seq 300); do kill -0 "$vmm_pid" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$vmm_pid" 2>/dev/null; then
    kill "$vmm_pid"
    bad vm_exits_after_destroy "still running 60 s after DestroySandbox"
    wait "$vmm_pid"
else
    wait "$vmm_pid"
    status=$?
    check vm_powered_off_status_0 [ "$status" = 0 ]
    check vmm_says_powered_off grep -q "guest powered off" "$work/vmm.err"
fi
vmm_pid=
check data_disk_written_and_synced sh -c "debugfs -R 'cat /from-c1' '$work/data.ext4' 2>/dev/null | grep -q written"

marker=$(sed -n 's/.*"kernel_entry_to_marker_ms":\([0-9.]*\).*/\1/p' "$work/report.json" 2>/dev/null)
echo "  kernel entry -> agent listening (boot marker): ${marker:-?} ms; agent exec -> listening: ${startup:-?} ms"
echo "  husk-vmm report: $(cat "$work/report.json" 2>/dev/null)"
if [ "$failed" != 0 ]; then
    echo "  console:"
    tr -d '\r' <"$work/console.out" | sed 's/^/  | /' | tail -n 40
    echo "  husk-vmm stderr:"
    sed 's/^/  | /' "$work/vmm.err" | tail -n 20
fi
echo "agent-guest: $passed passed, $failed failed"
[ "$failed" = 0 ]
