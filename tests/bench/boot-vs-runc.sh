#!/usr/bin/env bash
# Benchmark: `husk run` vs `runc run` of a busybox /bin/true, and `podman run --rm` with each
# as the runtime, all in one hyperfine invocation (RUNS runs each, default 20), printing the
# medians and the ratios; then the host memory one running sandbox costs (the supervisor's
# RSS and PSS, guest memory included) for a busybox `sleep`.
#
# Runs itself through tests/with-kvm: directly on hardware KVM, else inside the KVM test host
# (QEMU TCG with nested SVM), where absolute times are 10-50x slower than hardware and only
# the ratios mean something. It says which.
#
# usage: tests/bench/boot-vs-runc.sh
#   env RUNS (20), HUSK_KERNEL, HUSK_BIN, HUSK_AGENT_INITRD as for tests/e2e/runc-cli.sh;
#   NO_PODMAN=1 skips podman.
# (The `podman run (husk)` rows used to stop the benchmark. Not hyperfine, its shell, stdin or
# conmon: the same `podman run --rm` failed at once without hyperfine too, exit 126, because
# `$work/husk-podman/<64-hex id>/control.sock` is 109 bytes, over sun_path's 107, so husk
# create failed; tests/e2e/podman.sh's shorter --root fit by 2 bytes. husk now reaches long
# socket paths through /proc/self/fd (runtime/src/sockpath.rs).)
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
runs="${RUNS:-20}"

if [ "${1:-}" != --inside ]; then
    "$root/tests/e2e/runc-cli.sh" --prepare >/dev/null || exit 1
    export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
    export KVM_HOST_TIMEOUT="${KVM_HOST_TIMEOUT:-3000}"
    exec "$root/tests/with-kvm" "$0" --inside
fi

if [ "${KVM_HOST_INSIDE:-}" = 1 ]; then
    where="inside the KVM test host (QEMU TCG, nested SVM): absolute times are 10-50x slower than hardware; compare ratios only"
else
    where="directly on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') with hardware KVM"
fi
echo "boot-vs-runc: $where"
export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
for c in hyperfine runc python3; do
    command -v $c >/dev/null || { echo "boot-vs-runc: $c missing (tests/setup)"; exit 1; }
done

work="$(mktemp -d)"
mkdir -p "$work/storage"
podman_ok=
if [ -z "${NO_PODMAN:-}" ] && command -v podman >/dev/null && mount -t tmpfs tmpfs "$work/storage"; then
    podman_ok=1
fi
cleanup() {
    for id in $("$husk" --root "$work/husk" list -q 2>/dev/null); do
        "$husk" --root "$work/husk" delete --force "$id" >/dev/null 2>&1
    done
    [ -n "$podman_ok" ] && umount -l "$work/storage"
    rm -rf "$work"
}
trap cleanup EXIT

# The bundle: a busybox rootfs, runc's default spec without a terminal.
mkdir -p "$work/b/rootfs" && (
    cd "$work/b/rootfs" && mkdir -p bin etc proc sys dev tmp root run &&
        cp /bin/busybox bin/ && for a in sh true sleep; do ln -s busybox "bin/$a"; done
) && (cd "$work/b" && runc spec) || exit 1
sed -i -e 's|"terminal": true|"terminal": false|' \
    -e 's|^\t\t\t"sh"$|\t\t\t"true"|' "$work/b/config.json"

H="$husk --root $work/husk"
# "husk run (unconfined VMM)": the same with the VMM's jail and seccomp filters off, to state
# what the host-side wall costs at start-up (never how husk runs otherwise).
cmds=(-n "husk run" "$H run -b $work/b t >/dev/null"
    -n "husk run (unconfined VMM)" "HUSK_VMM_JAIL=off HUSK_VMM_SECCOMP=off $H run -b $work/b t >/dev/null"
    -n "runc run" "runc --root $work/runc run -b $work/b t >/dev/null")
if [ -n "$podman_ok" ]; then
    cat >"$work/husk-rt" <<EOF
#!/bin/sh
export HUSK_KERNEL='$HUSK_KERNEL' HUSK_INITRD='$HUSK_INITRD'
exec '$husk' --root '$work/husk-podman' "\$@"
EOF
    chmod +x "$work/husk-rt"
    tar -C "$work/b/rootfs" -cf "$work/img.tar" .
    P="podman --root $work/storage --runroot $work/run --storage-driver overlay --cgroup-manager cgroupfs --events-backend file"
    $P import -q "$work/img.tar" localhost/bench >/dev/null || podman_ok=
    opts="--network none --ulimit nofile=20000:20000 --ulimit nproc=32768:32768"
    [ -n "$podman_ok" ] && cmds+=(-n "podman run (husk)" "$P --runtime $work/husk-rt run --rm $opts localhost/bench true"
        -n "podman run (runc)" "$P --runtime runc run --rm $opts localhost/bench true")
fi

hyperfine --runs "$runs" --warmup 1 --style basic --export-json "$work/h.json" "${cmds[@]}" >&2 || exit 1
python3 - "$work/h.json" <<'EOF'
import json, statistics, sys
r = {x["command"]: statistics.median(x["times"]) * 1000 for x in json.load(open(sys.argv[1]))["results"]}
for k, v in r.items():
    print(f"median {k}: {v:.0f} ms")
if "husk run" in r:
    print(f"ratio husk run / runc run: {r['husk run'] / r['runc run']:.1f}x")
    u = r["husk run (unconfined VMM)"]
    print(f"jail + seccomp cost on husk run: {r['husk run'] - u:+.0f} ms ({r['husk run'] / u:.3f}x)")
if "podman run (husk)" in r:
    print(f"ratio podman run husk / runc: {r['podman run (husk)'] / r['podman run (runc)']:.1f}x")
EOF

# Memory of one running sandbox: the supervisor holds the VMM and the guest's memory.
sed -i 's|^\t\t\t"true"$|\t\t\t"sleep", "600"|' "$work/b/config.json"
$H run -d -b "$work/b" m >/dev/null 2>&1 </dev/null || { echo "boot-vs-runc: husk run -d failed"; exit 1; }
sleep 2
pid=$($H state m | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
# The supervisor and its child, the jailed VMM (`husk vmm`), which holds guest memory.
vmm=$(for p in /proc/[0-9]*; do [ "$(awk '{print $4}' "$p/stat" 2>/dev/null)" = "$pid" ] && echo "${p#/proc/}"; done | head -n1)
rss=$(cat "/proc/$pid/status" "/proc/$vmm/status" 2>/dev/null | awk '/^VmRSS/ {s += $2} END {print s}')
pss=$(cat "/proc/$pid/smaps_rollup" "/proc/$vmm/smaps_rollup" 2>/dev/null | awk '/^Pss:/ {s += $2} END {print s}')
mem=$(grep -oE 'memory_mib = [0-9]+' /etc/husk/config.toml 2>/dev/null | grep -oE '[0-9]+$' || echo 256)
echo "sandbox memory (busybox sleep, guest memory ${mem} MiB): supervisor + VMM RSS ${rss} KiB, PSS ${pss} KiB"
