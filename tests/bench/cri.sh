#!/usr/bin/env bash
# Benchmark: Kubernetes' CRI through containerd 1.6 (the private instance of
# tests/cri/containerd.sh: CRI plugin, CNI bridge, busybox images imported offline), the husk
# runtime handler (io.containerd.husk.v2: a pod is a microVM) against the runc handler
# (io.containerd.runc.v2), in one run, printed as ratios to runc. Per handler, RUNS pods
# (default 3, after WARMUP unmeasured ones, default 1), one at a time, each timed by the CRI
# client (tests/cri, husk-cri: the wall time of each RPC):
#   - RunPodSandbox (for husk: the VM boot with the pause container);
#   - CreateContainer and StartContainer of one busybox `sleep` container in the pod (for
#     husk: the container added to the running VM);
#   - host memory per pod, 2 s after the container started: the PSS (/proc/PID/smaps_rollup)
#     of the pod's shim and all its descendants (husk: shim, supervisor, VMM, virtiofsd,
#     stand-ins; runc: shim, pause and the container's processes), by process name (husk's
#     VMM, started as /proc/self/exe, shows as vmm; the supervisor as husk);
#   - StopPodSandbox + RemovePodSandbox of the pod with its container.
# Medians of the RUNS; memory: the median total and the last pod's breakdown.
#
# Runs itself through tests/with-kvm: directly on hardware KVM, else inside the KVM test host
# (QEMU TCG with nested SVM), where absolute times mean nothing and ratios little. It says which.
#
# usage: tests/bench/cri.sh
#   env RUNS (3), WARMUP (1), CRI_HANDLERS ("runc husk"), HUSK_KERNEL, HUSK_BIN,
#   HUSK_AGENT_INITRD as for tests/e2e/runc-cli.sh.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
runs="${RUNS:-3}"
warmup="${WARMUP:-1}"
handlers="${CRI_HANDLERS:-runc husk}"

if [ "${1:-}" != --inside ]; then
    "$root/tests/e2e/cri.sh" --prepare >/dev/null || exit 1
    export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
    export KVM_HOST_TIMEOUT="${KVM_HOST_TIMEOUT:-3000}"
    exec "$root/tests/with-kvm" "$0" --inside
fi

if [ "${KVM_HOST_INSIDE:-}" = 1 ]; then
    where="inside the KVM test host (QEMU TCG, nested SVM): absolute numbers are meaningless; compare ratios only, and even those only roughly"
else
    where="directly on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') with hardware KVM"
fi
echo "cri bench: $where"
export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
for c in containerd ctr runc jq python3; do
    command -v $c >/dev/null || { echo "cri bench: $c missing"; exit 1; }
done

work="$(mktemp -d /tmp/hkcrib.XXXX)"
# husk's default guest memory (the setup's ConfigPath would give 288 MiB), as in earlier runs.
CRI_HUSK_MEMORY=${CRI_HUSK_MEMORY:-256}
. "$root/tests/cri/containerd.sh"
trap 'cri_stop; rmdir "$work" 2>/dev/null' EXIT
cri_setup "$work" "$(dirname "$(dirname "$husk")")" || exit 1
cri_start || exit 1
echo "cri bench: containerd $(containerd --version | awk '{print $3}'), RUNS=$runs after WARMUP=$warmup, handlers: $handlers"

# pss_tree PID: "TOTAL_KIB name=KIB,..." for PID and all its descendants.
pss_tree() {
    local pids=("$1") all=() p c
    while [ ${#pids[@]} -gt 0 ]; do
        p=${pids[0]}
        pids=("${pids[@]:1}")
        all+=("$p")
        for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do pids+=("$c"); done
    done
    for p in "${all[@]}"; do
        printf '%s %s\n' "$(tr ' ' _ <"/proc/$p/comm" 2>/dev/null)" "$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null)"
    done | awk '$1 == "exe" {$1 = "vmm"} {s += $2; by[$1] += $2} END {printf "%d ", s; sep = ""; for (k in by) {printf "%s%s=%d", sep, k, by[k]; sep = ","} print ""}'
}

# one HANDLER N: one pod; appends "rp create start pss stoprm" to $work/HANDLER.txt (N > 0)
# and its memory breakdown to $work/HANDLER.mem.
one() {
    local h=$1 n=$2 p out id c tpid shim mem t0 rm_ms
    cri_pod_opts "b-$h-$n"
    out=$(C runp --handler "$h" "${POD_OPTS[@]}" 2>&1)
    id=$(jq -r .id <<<"$out" 2>/dev/null)
    [ -n "$id" ] && [ "$id" != null ] || { echo "cri bench: $h: RunPodSandbox failed: $out"; return 1; }
    p=$(jq -r .ms <<<"$out")
    out=$(C run --pod "$id" "${POD_OPTS[@]}" --name sleeper --image "$CRI_IMAGE" -- sleep 3600 2>&1)
    c=$(jq -r .id <<<"$out" 2>/dev/null)
    [ -n "$c" ] && [ "$c" != null ] || { echo "cri bench: $h: CreateContainer/StartContainer failed: $out"; return 1; }
    local cms sms
    cms=$(jq -r .create_ms <<<"$out")
    sms=$(jq -r .start_ms <<<"$out")
    sleep 2
    tpid=$(ctr -a "$CRI_SOCK" -n k8s.io task ls 2>/dev/null | awk -v id="$id" '$1 == id {print $2}')
    shim=$(ps -o ppid= -p "${tpid:-0}" 2>/dev/null | tr -d ' ')
    mem=$(pss_tree "${shim:-0}")
    t0=$(date +%s%N)
    C stopp "$id" >/dev/null && C rmp "$id" >/dev/null || echo "cri bench: $h: teardown of $id failed"
    rm_ms=$((($(date +%s%N) - t0) / 1000000))
    if [ "$n" -gt 0 ]; then
        echo "$p $cms $sms ${mem%% *} $rm_ms" >>"$work/$h.txt"
        echo "${mem#* }" >"$work/$h.mem"
    fi
    local label=""
    [ "$n" -eq 0 ] && label=" (warm-up)"
    echo "  $h pod $n$label: RunPodSandbox $p ms, CreateContainer $cms ms, StartContainer $sms ms, PSS ${mem%% *} KiB, stop+remove $rm_ms ms"
}

for h in $handlers; do
    for n in $(seq $((1 - warmup)) "$runs"); do
        [ "$n" -le 0 ] && n=0
        one "$h" "$n" || break
    done
done

echo "cri bench: medians of $runs pods per handler"
python3 - "$work" $handlers <<'EOF'
import os, statistics, sys
work, handlers = sys.argv[1], sys.argv[2:]
rows = [("RunPodSandbox (ms)", 0), ("CreateContainer (ms)", 1), ("StartContainer (ms)", 2),
        ("Create+StartContainer (ms)", None), ("host PSS per pod (KiB)", 3),
        ("StopPodSandbox+RemovePodSandbox (ms)", 4)]
med = {}
for h in handlers:
    path = os.path.join(work, h + ".txt")
    if not os.path.exists(path):
        continue
    vals = [[float(x) for x in l.split()] for l in open(path) if l.strip()]
    m = {}
    for name, i in rows:
        col = [v[1] + v[2] for v in vals] if i is None else [v[i] for v in vals]
        m[name] = statistics.median(col)
    med[h] = m
hs = [h for h in handlers if h in med]
base = "runc" if "runc" in med else None
head = f"{'':38}" + "".join(f"{h:>12}" for h in hs)
others = [h for h in hs if base and h != base]
head += "".join(f"{h + '/' + base:>12}" for h in others)
print(head)
for name, _ in rows:
    line = f"{name:38}" + "".join(f"{med[h][name]:>12.0f}" for h in hs)
    for h in others:
        line += f"{med[h][name] / med[base][name]:>11.2f}x" if med[base][name] else f"{'-':>12}"
    print(line)
for h in hs:
    mem = open(os.path.join(work, h + ".mem")).read().strip()
    print(f"{h} PSS by process (last pod, KiB): {mem.replace(',', ', ')}")
missing = [h for h in handlers if h not in med]
if missing:
    print("no numbers for: " + ", ".join(missing))
    sys.exit(1)
EOF
