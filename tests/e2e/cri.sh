#!/usr/bin/env bash
# End-to-end: Kubernetes' CRI through Debian's containerd 1.6 (its CRI plugin, started here with
# a private config: tests/cri/containerd.sh) and the Rust CRI client tests/cri (husk-cri), with
# the runtime handlers `runc` (io.containerd.runc.v2) and `husk` (io.containerd.husk.v2,
# containerd-shim-husk-v2: the pod's containers in one microVM), a CNI bridge network and
# busybox images imported offline. For each handler (CRI_HANDLERS, default "runc husk"):
#   1. RunPodSandbox with the handler: the pod READY with an IP on the bridge;
#   2. two containers in the pod, busybox httpd in one, and the other fetching its page from
#      127.0.0.1 through ExecSync (the pod's shared network namespace);
#   3. ExecSync's stdout, stderr and exit code; the container's log at the CRI log path
#      (CRI format, both streams); UpdateContainerResources (ContainerStatus reports it and
#      the container sees memory.max and cpu.max); ContainerStats (CPU and memory non-zero);
#      the pod's host processes (husk: the shim and all below it) in kubelet's pod cgroup;
# then, with both handlers' pods running at once: both READY, each fetching the other's page
# over the bridge; then for each handler:
#   4. StopContainer (EXITED), RemoveContainer, StopPodSandbox (NOTREADY), RemovePodSandbox,
#      and nothing left: no process naming the pod or its containers (shim, pause, husk's
#      supervisor and VMM, virtiofsd), no mount, no cgroup, no bundle or husk state, no network
#      namespace, bridge port or TAP beyond the live pods';
#   5. kill -9 of the pod's shim: the pod NOTREADY and its container EXITED, StopPodSandbox and
#      RemovePodSandbox succeed, nothing left.
# The runc handler proves the harness; the husk handler's checks fail (not skip) while
# containerd-shim-husk-v2 is missing. Two husk VMs boot (pods of 1 and 5).
#
# usage: tests/e2e/cri.sh [--prepare]
#   --prepare  as tests/e2e/runc-cli.sh --prepare, plus the release husk-cri (tests/cri)
#   env HUSK_KERNEL, HUSK_BIN (its directory must also hold containerd-shim-husk-v2),
#       HUSK_AGENT_INITRD as for runc-cli.sh; CRI_HANDLERS (default "runc husk").
#
# Needs root, containerd (Debian's 1.6), runc, containernetworking-plugins (/usr/lib/cni),
# jq, python3, and a KVM that boots stock kernels: run it through tests/with-kvm.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
handlers="${CRI_HANDLERS:-runc husk}"

if [ "${1:-}" = --prepare ]; then
    (cd "$root" && cargo build --release --locked -p husk-cri-test) >&2 || exit 1
    exec "$root/tests/e2e/runc-cli.sh" --prepare
fi

export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
for f in "$target/release/husk-cri" /bin/busybox /usr/lib/cni/bridge; do
    [ -e "$f" ] || { echo "cri: $f missing (run tests/e2e/cri.sh --prepare on the host)"; exit 1; }
done
for c in containerd ctr runc jq python3 ip; do
    command -v $c >/dev/null || { echo "cri: $c not installed"; exit 1; }
done

work="$(mktemp -d /tmp/hkcri.XXXX)"
. "$root/tests/cri/containerd.sh"
cleanup() {
    cri_stop
    rmdir "$work" 2>/dev/null
}
trap cleanup EXIT

. "$root/tests/e2e/lib/harness.sh"
# harness.sh's check, but failing with the command (for `check ... || show more`).
check() {
    local name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; return 1; fi
}
# Where containerd-shim-husk-v2 lives: beside husk (HUSK_BIN), on containerd's PATH.
cri_setup "$work" "$(dirname "$(dirname "$husk")")" || exit 1
echo "--- containerd $(containerd --version | awk '{print $3}') with the CRI plugin, socket $CRI_SOCK"
if ! cri_start; then
    echo "cri: containerd did not start"
    exit 1
fi
ok "containerd up, images imported, CRI ready"
[ -x "$(dirname "$husk")/containerd-shim-husk-v2" ] ||
    echo "     no $(dirname "$husk")/containerd-shim-husk-v2: the husk handler's checks will fail"

jqr() { jq -r "$@" 2>/dev/null; }
pod_state() { C inspectp "$1" 2>/dev/null | jqr .state; }
ctr_state() { C inspect "$1" 2>/dev/null | jqr .state; }
wait_for() { # SECONDS COMMAND...: until COMMAND succeeds
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.5
    done
}
is() { [ "$("${@:3}")" = "$2" ]; } # LABEL EXPECTED COMMAND...: COMMAND prints EXPECTED
# eq NAME EXPECTED ACTUAL: a check that ACTUAL is EXPECTED (ACTUAL printed when not)
eq() {
    if [ "$3" = "$2" ]; then ok "$1"; else bad "$1" "got '$3'"; return 1; fi
}
# logs HANDLER POD: what to look at when a husk check fails (containerd's and the sandbox's).
logs() {
    echo "     containerd.log:"
    grep -E 'level=(error|warning)' "$CRI_WORK/containerd.log" | tail -n 8 | sed 's/^/       /'
    if [ -n "${2:-}" ]; then
        echo "     containerd.log on $2:"
        grep -F "$2" "$CRI_WORK/containerd.log" | grep -E 'level=(error|warning)' | tail -n 8 | sed 's/^/       /'
        tail -n 8 "$CRI_STATE/io.containerd.runtime.v2.task/k8s.io/$2/husk.log" 2>/dev/null | sed 's/^/       /'
    fi
    if [ "$1" = husk ] && [ -n "${2:-}" ]; then
        tail -n 12 "/run/husk-shim/k8s.io/$2/supervisor.log" "/run/husk-shim/k8s.io/$2/console.log" \
            2>/dev/null | sed 's/^/       /'
    elif [ "$1" = husk ]; then
        # No pod id (RunPodSandbox failed): the newest sandbox husk made, if any is left.
        local d
        d=$(ls -td /run/husk-shim/k8s.io/*/ 2>/dev/null | head -n 1)
        [ -n "$d" ] && tail -n 12 "$d/supervisor.log" "$d/console.log" 2>/dev/null | sed 's/^/       /'
        grep -E 'level=(error|warning)|husk' "$CRI_WORK/containerd.log" | grep -iE 'shim|sandbox|husk' |
            tail -n 12 | sed 's/^/       /'
    fi
}
# leftovers ID...: what is left on the host of the pods/containers ID: processes naming them,
# mounts, containerd bundles, husk state; and beyond the live pods' share: network namespaces,
# bridge ports, TAPs and (without a live husk pod) husk, virtiofsd and husk shim processes.
leftovers() {
    local id live husk_live
    for id in "$@"; do
        pgrep -af -- "$id" | sed 's/^/process /'
        grep -F "$id" /proc/self/mountinfo | awk '{print "mount " $5}'
        find /sys/fs/cgroup -name "*$id*" 2>/dev/null | sed 's/^/cgroup /'
        for d in "$CRI_STATE/io.containerd.runtime.v2.task/k8s.io/$id" \
            "$CRI_STATE/io.containerd.grpc.v1.cri/sandboxes/$id" \
            "$CRI_STATE/io.containerd.grpc.v1.cri/containers/$id" "/run/husk-shim/k8s.io/$id"; do
            [ -e "$d" ] && echo "state $d"
        done
    done
    live=$(C pods 2>/dev/null | jqr length)
    husk_live=$(C pods 2>/dev/null | jqr '[.[] | select(.handler == "husk")] | length')
    [ -n "$live" ] || { echo "ListPodSandbox failed"; return; }
    n=$(ls /var/run/netns 2>/dev/null | grep -c '^cni-')
    [ "$n" -gt "$live" ] && echo "netns $n network namespaces for $live pods"
    n=$(ip -o link show master "$CRI_BRIDGE" 2>/dev/null | grep -c .)
    [ "$n" -gt "$live" ] && echo "bridge $n ports on $CRI_BRIDGE for $live pods"
    ip -o link show 2>/dev/null | awk -F': ' '$2 ~ /^husk/ {print "TAP " $2}'
    if [ "$husk_live" = 0 ]; then
        pgrep -a -x husk | sed 's/^/process /'
        pgrep -a -x virtiofsd | sed 's/^/process /'
        pgrep -af '^[^ ]*containerd-shim-husk-v2( |$)' | sed 's/^/process /'
    fi
}
clean() { # ID...: leftovers empty within 15 s; printed otherwise
    local end=$((SECONDS + 15)) left
    while :; do
        left=$(leftovers "$@")
        [ -z "$left" ] && return 0
        [ $SECONDS -lt $end ] || { printf '%s\n' "$left" | sed 's/^/     left: /'; return 1; }
        sleep 0.5
    done
}

# tree_pids PID: PID and all its descendants.
tree_pids() {
    local pids=("$1") p c
    while [ ${#pids[@]} -gt 0 ]; do
        p=${pids[0]}
        pids=("${pids[@]:1}")
        echo "$p"
        for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do pids+=("$c"); done
    done
}

declare -A pod web client ip
# scenario H: steps 1-3 for handler H; leaves pod p-H with containers web and client running.
scenario() {
    local h=$1 p="p-$1" out po
    cri_pod_opts "$p"
    po=("${POD_OPTS[@]}")
    echo "--- $h: RunPodSandbox, two containers, ExecSync, logs, update, stats"
    out=$(C runp --handler "$h" "${po[@]}" 2>&1)
    pod[$h]=$(jqr .id <<<"$out")
    if ! check "$h: RunPodSandbox ($(jqr .ms <<<"$out") ms)" test -n "${pod[$h]}"; then
        echo "     $out"
        logs "$h"
        bad "$h: the rest of the pod checks" "no pod"
        return
    fi
    eq "$h: the pod is SANDBOX_READY" SANDBOX_READY "$(pod_state "${pod[$h]}")"
    ip[$h]=$(C inspectp "${pod[$h]}" | jqr .network.ip)
    check "$h: the pod has an IP on the bridge (${ip[$h]})" grep -q "^${CRI_SUBNET_PREFIX//./\\.}[0-9]*$" <<<"${ip[$h]}"
    out=$(C run --pod "${pod[$h]}" "${po[@]}" --name web --image "$CRI_IMAGE" -- httpd -f -p 8080 -h /www 2>&1)
    web[$h]=$(jqr .id <<<"$out")
    check "$h: CreateContainer + StartContainer web, busybox httpd ($(jqr .create_ms <<<"$out") + $(jqr .start_ms <<<"$out") ms)" \
        test -n "${web[$h]}" || { echo "     $out"; logs "$h" "${pod[$h]}"; }
    out=$(C run --pod "${pod[$h]}" "${po[@]}" --name client --image "$CRI_IMAGE" -- \
        sh -c 'echo hello-log; echo err-log >&2; exec sleep 600' 2>&1)
    client[$h]=$(jqr .id <<<"$out")
    check "$h: CreateContainer + StartContainer client ($(jqr .create_ms <<<"$out") + $(jqr .start_ms <<<"$out") ms)" \
        test -n "${client[$h]}" || { echo "     $out"; logs "$h" "${pod[$h]}"; }
    eq "$h: web is CONTAINER_RUNNING" CONTAINER_RUNNING "$(ctr_state "${web[$h]}")"
    eq "$h: client is CONTAINER_RUNNING" CONTAINER_RUNNING "$(ctr_state "${client[$h]}")"
    # kubelet's pod cgroup holds the pod's host processes: for husk the shim and everything
    # below it (supervisor, VMM, virtiofsd, stand-ins), for runc what is below its shim.
    local tpid shim cg bad_cg="" q cmd
    tpid=$(ctr -a "$CRI_SOCK" -n k8s.io task ls 2>/dev/null | awk -v id="${pod[$h]}" '$1 == id {print $2}')
    shim=$(ps -o ppid= -p "${tpid:-0}" 2>/dev/null | tr -d ' ')
    cg="/kubepods/besteffort/pod$p-uid/"
    for q in $(tree_pids "${shim:-0}"); do
        [ "$h" = runc ] && [ "$q" = "$shim" ] && continue
        grep -q "^0::$cg" "/proc/$q/cgroup" 2>/dev/null ||
            { cmd=$(tr '\0' ' ' <"/proc/$q/cmdline" 2>/dev/null); bad_cg="$bad_cg
       $q in $(cut -d: -f3 "/proc/$q/cgroup" 2>/dev/null): ${cmd:0:40} ... ${cmd: -100}"; }
    done
    check "$h: the pod's host processes are in its cgroup parent $cg" test -n "$shim" -a -z "$bad_cg" ||
        echo "     shim ${shim:-not found}; outside:$bad_cg"
    if [ "$h" = husk ]; then
        local mem
        mem=$(C exec "${client[$h]}" -- sh -c 'read -r _ kb _ </proc/meminfo; echo $((kb / 1024))' 2>/dev/null)
        check "husk: the VM has the memory of the handler's options ConfigPath (MemTotal ${mem:-?} MiB, memory_mib $CRI_HUSK_MEMORY)" \
            test "${mem:-0}" -gt $((CRI_HUSK_MEMORY - 48)) -a "${mem:-0}" -le "$CRI_HUSK_MEMORY"
    fi
    fetch_local() { [ "$(C exec "${client[$h]}" -- timeout 10 wget -q -O - http://127.0.0.1:8080/index.html 2>/dev/null)" = hello-from-cri ]; }
    check "$h: client fetches web's page from 127.0.0.1:8080 (ExecSync wget)" wait_for 60 fetch_local ||
        { C exec "${client[$h]}" -- timeout 10 wget -q -O - http://127.0.0.1:8080/index.html 2>&1 | sed 's/^/     /'; logs "$h" "${pod[$h]}"; }
    out=$(C exec --json "${client[$h]}" -- sh -c 'echo out-line; echo err-line >&2; exit 7' 2>&1)
    eq "$h: ExecSync stdout" out-line "$(jqr -j .stdout <<<"$out")" || echo "     $out"
    eq "$h: ExecSync stderr" err-line "$(jqr -j .stderr <<<"$out")"
    eq "$h: ExecSync exit code (7)" 7 "$(jqr .exit_code <<<"$out")"
    C exec "${client[$h]}" -- false
    check "$h: husk-cri exec exits with the command's code (1)" test $? -eq 1
    local log="$CRI_LOGS/$p/client.log"
    eq "$h: ContainerStatus names the log path ($log)" "$log" "$(C inspect "${client[$h]}" | jqr .log_path)"
    log_has() { grep -qE "^[0-9T:.Z-]+ $1 F $2\$" "$log" 2>/dev/null; }
    check "$h: the log has the container's stdout (CRI format)" wait_for 10 log_has stdout hello-log ||
        sed 's/^/     /' "$log" 2>/dev/null
    check "$h: the log has the container's stderr" log_has stderr err-log
    out=$(C update "${client[$h]}" --memory $((128 << 20)) --cpu-quota 50000 --cpu-period 100000 2>&1)
    check "$h: UpdateContainerResources (memory 128 MiB, CPU 50000/100000)" test $? -eq 0 || echo "     $out"
    out=$(C inspect "${client[$h]}" 2>&1 | jq -c '.resources.linux | {memory_limit_in_bytes, cpu_quota, cpu_period}' 2>&1)
    check "$h: ContainerStatus reports the new resources" \
        test "$out" = '{"memory_limit_in_bytes":134217728,"cpu_quota":50000,"cpu_period":100000}' || echo "     $out"
    # cgroup v2 (the KVM test host); v1's files where a host still has them.
    out=$(C exec "${client[$h]}" -- sh -c 'cd /sys/fs/cgroup && if [ -e memory.max ]; then cat memory.max cpu.max
        else cat memory/memory.limit_in_bytes; echo "$(cat cpu/cpu.cfs_quota_us) $(cat cpu/cpu.cfs_period_us)"; fi' 2>&1)
    check "$h: the container sees memory.max and cpu.max" test "$out" = $'134217728\n50000 100000' ||
        echo "     $out" | head -n 4
    out=$(C stats "${client[$h]}" 2>&1)
    check "$h: ContainerStats: CPU time > 0 ($(jqr .cpu.usage_core_nano_seconds.value <<<"$out") ns)" \
        test "$(jqr '(.cpu.usage_core_nano_seconds.value // 0) > 0' <<<"$out")" = true || { echo "     $out" | head -c 600; echo; }
    check "$h: ContainerStats: memory working set > 0 ($(jqr .memory.working_set_bytes.value <<<"$out") B)" \
        test "$(jqr '(.memory.working_set_bytes.value // 0) > 0' <<<"$out")" = true
}

# teardown H: step 4 for handler H's pod.
teardown() {
    local h=$1 p=${pod[$1]:-}
    echo "--- $h: StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox"
    [ -n "$p" ] || { bad "$h: teardown" "no pod"; return; }
    local c
    for c in ${web[$h]:-} ${client[$h]:-}; do
        C stop --grace 2 "$c" >/dev/null 2>&1
    done
    if [ -n "${client[$h]:-}" ]; then
        out=$(C inspect "${client[$h]}" | jq -c '[.state, .exit_code]')
        eq "$h: StopContainer: client is CONTAINER_EXITED with code 137 (sleep as PID 1 ignores SIGTERM)" \
            '["CONTAINER_EXITED",137]' "$out"
    fi
    for c in ${web[$h]:-} ${client[$h]:-}; do
        C rm "$c" >/dev/null 2>&1 || bad "$h: RemoveContainer $c"
    done
    check "$h: no container left in the pod" test "$(C ps | jq --arg p "$p" '[.[] | select(.pod == $p)] | length')" = 0
    out=$(C stopp "$p" 2>&1)
    check "$h: StopPodSandbox ($(jqr .ms <<<"$out") ms)" test -n "$(jqr .ms <<<"$out")" || echo "     $out"
    eq "$h: the pod is SANDBOX_NOTREADY" SANDBOX_NOTREADY "$(pod_state "$p")"
    out=$(C rmp "$p" 2>&1)
    check "$h: RemovePodSandbox ($(jqr .ms <<<"$out") ms)" test -n "$(jqr .ms <<<"$out")" || echo "     $out"
    check "$h: the pod is gone from ListPodSandbox" test "$(C pods | jq --arg p "$p" '[.[] | select(.id == $p)] | length')" = 0
    check "$h: nothing left (processes, mounts, state, netns, bridge port, TAP)" clean "$p" ${web[$h]:-} ${client[$h]:-} ||
        logs "$h" "$p"
}

# killed H: step 5.
killed() {
    local h=$1 p out po c tpid shim
    cri_pod_opts "k-$h"
    po=("${POD_OPTS[@]}")
    echo "--- $h: kill -9 of the shim"
    out=$(C runp --handler "$h" "${po[@]}" 2>&1)
    p=$(jqr .id <<<"$out")
    check "$h: RunPodSandbox k-$h" test -n "$p" || { echo "     $out"; bad "$h: the kill -9 checks" "no pod"; return; }
    out=$(C run --pod "$p" "${po[@]}" --name sleeper --image "$CRI_IMAGE" -- sleep 600 2>&1)
    c=$(jqr .id <<<"$out")
    eq "$h: a container in it runs" CONTAINER_RUNNING "$(ctr_state "$c")" || echo "     $out"
    tpid=$(ctr -a "$CRI_SOCK" -n k8s.io task ls 2>/dev/null | awk -v id="$p" '$1 == id {print $2}')
    shim=$(ps -o ppid= -p "${tpid:-0}" 2>/dev/null | tr -d ' ')
    check "$h: the shim found (parent of the sandbox task $tpid: $shim)" \
        bash -c "tr '\0' ' ' </proc/${shim:-0}/cmdline 2>/dev/null | grep -q -- '-id $p'"
    [ -n "$shim" ] && [ "$shim" -gt 1 ] && kill -9 "$shim"
    check "$h: after kill -9 of the shim the pod is SANDBOX_NOTREADY" wait_for 60 is "" SANDBOX_NOTREADY pod_state "$p" ||
        { C inspectp "$p" | jq -c '{state}'; logs "$h" "$p"; }
    check "$h: ... and its container CONTAINER_EXITED" wait_for 30 is "" CONTAINER_EXITED ctr_state "$c" ||
        C inspect "$c" | jq -c '{state, exit_code, reason}'
    out=$(C stopp "$p" 2>&1)
    check "$h: StopPodSandbox after kill -9" test $? -eq 0 || echo "     $out"
    out=$(C rmp "$p" 2>&1)
    check "$h: RemovePodSandbox after kill -9" test $? -eq 0 || echo "     $out"
    check "$h: nothing left after kill -9 (processes, mounts, state, netns, bridge port, TAP)" clean "$p" $c ||
        logs "$h" "$p"
}

for h in $handlers; do scenario "$h"; done

set -- $handlers
if [ $# -ge 2 ]; then
    a=$1 b=$2
    echo "--- $a and $b pods at once"
    check "pods of both handlers SANDBOX_READY at once" \
        test "$(C pods | jq '[.[] | select(.state == "SANDBOX_READY") | .handler] | sort | unique | length')" = 2
    fetch_from() { # FROM-HANDLER TO-HANDLER
        [ "$(C exec "${client[$1]:-none}" -- timeout 10 wget -q -O - "http://${ip[$2]:-none}:8080/index.html" 2>/dev/null)" = hello-from-cri ]
    }
    check "the $a pod fetches the $b pod's page over the bridge (${ip[$b]:-no ip}:8080)" wait_for 30 fetch_from "$a" "$b"
    check "the $b pod fetches the $a pod's page over the bridge (${ip[$a]:-no ip}:8080)" wait_for 30 fetch_from "$b" "$a"
fi

for h in $handlers; do teardown "$h"; done
for h in $handlers; do killed "$h"; done

echo "cri: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
