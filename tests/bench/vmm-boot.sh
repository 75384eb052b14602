#!/usr/bin/env bash
# Benchmark: husk-vmm boot of the minimal guest, measured by the VMM's own clock.
#
# Prints, as medians over RUNS boots (default 5), unconfined and confined (jail + seccomp):
#   - VMM start-up: process start -> the boot vCPU's first KVM_RUN (ms)
#   - kernel entry -> init's boot-complete marker (ms)
#   - whole husk-vmm process wall time, start to exit after the guest's reboot (ms)
#   - husk-vmm RSS outside guest memory (KiB)
# and, for scale, `runc run` of busybox /bin/true measured in the same run, with the ratio.
# Says where it ran: directly on hardware KVM, or inside the KVM test host (QEMU TCG with
# nested SVM, where absolute times are 10-50x slower than hardware and only ratios between
# runs on the same host mean anything).
#
# usage: tests/bench/vmm-boot.sh [RUNS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
runs="${1:-5}"

if [ -z "${HUSK_BENCH_INSIDE:-}" ]; then
    "$root/tests/setup"
    (cd "$root" && cargo build --release --locked -p husk-vmm >&2)
    HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
    HUSK_INITRD="${HUSK_INITRD:-$("$root/tests/guest-boot/make-initramfs" | tail -n1)}"
    export HUSK_KERNEL HUSK_INITRD HUSK_BENCH_INSIDE=1
    exec "$root/tests/with-kvm" "$0" "$runs"
fi

vmm="$root/target/release/husk-vmm"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ -e /sys/module/kvm_pvm ] || ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
    where="unknown KVM"
elif [ -n "${KVM_HOST_INSIDE:-}" ]; then
    where="the KVM test host (QEMU TCG L1, nested SVM): absolute times are not hardware times"
else
    where="hardware KVM ($(grep -owE 'vmx|svm' /proc/cpuinfo | head -n1))"
fi

echo "vmm-boot: $runs boots of $(basename "$HUSK_KERNEL") + test initramfs, 1 vCPU, 256 MiB"
# Each run boots twice, alternating: as is, and confined as husk's supervisor confines it
# (--jail: namespaces, pivot_root into an empty directory, no capabilities; --seccomp kill:
# the per-thread allow-lists), so the confinement's cost is measured in the same run.
mkdir -p "$work/jail"
plain() {
    t0=$(date +%s%N)
    "$vmm" --kernel "$HUSK_KERNEL" --initrd "$HUSK_INITRD" --memory-mib 256 --serial none \
        --report-json "$work/run-$1.json" 2>/dev/null
    t1=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000 ))" >"$work/wall-$1"
}
jailed() {
    t0=$(date +%s%N)
    "$vmm" --kernel "$HUSK_KERNEL" --initrd "$HUSK_INITRD" --memory-mib 256 --serial none \
        --jail "$work/jail" --seccomp kill --report-json "$work/jailed-$1.json" 2>"$work/jailed.err"
    t1=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000 ))" >"$work/jailed-wall-$1"
}
# The order alternates too: whichever boots second in a pair finds warmer caches.
for i in $(seq 1 "$runs"); do
    if [ $((i % 2)) = 1 ]; then plain "$i"; jailed "$i"; else jailed "$i"; plain "$i"; fi
done

# runc baseline: busybox /bin/true in a fresh bundle, same number of runs.
runc_ok=0
if command -v runc >/dev/null && [ -x /bin/busybox ]; then
    bundle="$work/bundle"
    mkdir -p "$bundle/rootfs/bin"
    cp /bin/busybox "$bundle/rootfs/bin/"
    ln -s busybox "$bundle/rootfs/bin/true"
    (cd "$bundle" && runc spec && python3 - <<'PY'
import json
c = json.load(open("config.json"))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
json.dump(c, open("config.json", "w"))
PY
    )
    runc_ok=1
    for i in $(seq 1 "$runs"); do
        t0=$(date +%s%N)
        if ! runc --root "$work/runc-state" run --bundle "$bundle" "bench-$i" </dev/null >/dev/null 2>"$work/runc.err"; then
            runc_ok=0
            break
        fi
        t1=$(date +%s%N)
        echo "$(( (t1 - t0) / 1000 ))" >"$work/runc-$i"
    done
fi

python3 - "$work" "$runs" "$runc_ok" "$where" <<'PY'
import json, statistics, sys, pathlib
work, runs, runc_ok, where = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
reports = [json.loads((work / f"run-{i}.json").read_text()) for i in range(1, runs + 1)]
bad = [r for r in reports if r["exit_code"] != 0]
if bad:
    sys.exit(f"vmm-boot: {len(bad)} boots failed: {bad[0]}")
med = lambda key: statistics.median(r[key] for r in reports)
wall = statistics.median(int((work / f"wall-{i}").read_text()) / 1000 for i in range(1, runs + 1))
print(f"where: {where}")
print(f"VMM start-up (process start -> first KVM_RUN): {med('vmm_startup_ms'):10.2f} ms")
print(f"kernel entry -> init boot marker:              {med('kernel_entry_to_marker_ms'):10.2f} ms")
print(f"husk-vmm wall time, start to guest reboot:     {wall:10.2f} ms")
print(f"husk-vmm RSS outside guest memory:             {med('rss_outside_guest_kib'):10.0f} KiB")
jailed = [json.loads((work / f"jailed-{i}.json").read_text()) for i in range(1, runs + 1)]
if any(r["exit_code"] != 0 for r in jailed):
    sys.exit(f"vmm-boot: a jailed boot failed: {jailed[0]} {(work / 'jailed.err').read_text()[:300]}")
jmed = lambda key: statistics.median(r[key] for r in jailed)
jwall = statistics.median(int((work / f"jailed-wall-{i}").read_text()) / 1000 for i in range(1, runs + 1))
print(f"jailed + seccomp: VMM start-up:                {jmed('vmm_startup_ms'):10.2f} ms ({jmed('vmm_startup_ms') - med('vmm_startup_ms'):+.2f})")
print(f"jailed + seccomp: kernel entry -> boot marker: {jmed('kernel_entry_to_marker_ms'):10.2f} ms ({jmed('kernel_entry_to_marker_ms') - med('kernel_entry_to_marker_ms'):+.2f})")
print(f"jailed + seccomp: wall time:                   {jwall:10.2f} ms ({jwall / wall:.3f}x unconfined)")
if runc_ok:
    rw = statistics.median(int((work / f"runc-{i}").read_text()) / 1000 for i in range(1, runs + 1))
    print(f"runc run busybox /bin/true (same host):        {rw:10.2f} ms")
    print(f"ratio husk-vmm boot wall time / runc run:      {wall / rw:10.1f} x")
else:
    err = (work / "runc.err").read_text() if (work / "runc.err").exists() else "runc not installed"
    print(f"runc baseline: unavailable ({err.strip()[:200]})")
PY
