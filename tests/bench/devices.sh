#!/usr/bin/env bash
# Benchmark: husk-vmm's virtio devices with a real guest (husk's vmlinux + the device test
# overlay from tests/e2e/devices/, booted with husk_bench=1).
#
# Prints, with units:
#   - virtio-blk sequential write and read of 64 MiB (MiB/s, timed in the guest with dd,
#     write with fsync, read after dropping the page cache);
#   - virtio-vsock throughput host -> guest -> host through the echo helper (MiB/s, 32 MiB)
#     and round-trip latency of 1-byte echoes (microseconds, median of 1000);
# and, for scale, the same operations natively on this host measured in the same run (dd on
# the image file, a Unix socket echo), with the ratio guest/native.
# Says where it ran: directly on hardware KVM, or inside the KVM test host (QEMU TCG with
# nested SVM), where absolute numbers are 10-50x off and only ratios mean anything.
#
# usage: tests/bench/devices.sh        (through tests/with-kvm on hosts without real KVM)
#   env HUSK_VMM, HUSK_KERNEL, HUSK_INITRD, HUSK_BOOT_LIMIT as for tests/e2e/devices.sh.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
vmm="${HUSK_VMM:-$root/target/release/husk-vmm}"
kernel="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
base_initrd="${HUSK_INITRD:-$("$root/tests/guest-boot/make-initramfs" | tail -n1)}"
overlay="$("$root/tests/e2e/devices.sh" --prepare | tail -n1)" || exit 1
limit="${HUSK_BOOT_LIMIT:-600}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "${KVM_HOST_INSIDE:-}" = 1 ]; then
    where="inside the KVM test host (QEMU TCG, nested SVM): absolute numbers are 10-50x slower than hardware; compare ratios only"
else
    where="directly on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') with hardware KVM"
fi
echo "devices benchmark: $where"

cat "$base_initrd" "$overlay" >"$work/initrd.cpio.gz"
truncate -s 80M "$work/disk.img"
uds="$work/v.sock"

timeout -k 10 "$limit" "$vmm" --kernel "$kernel" --initrd "$work/initrd.cpio.gz" --memory-mib 512 \
    --append husk_bench=1 --serial "$work/console.out" \
    --disk "path=$work/disk.img" --vsock "cid=3,uds=$uds" --rng 2>"$work/vmm.err" &
vmm_pid=$!

for _ in $(seq "$limit"); do
    grep -q HUSK-VSOCK-LISTENING "$work/console.out" 2>/dev/null && break
    kill -0 "$vmm_pid" 2>/dev/null || break
    sleep 1
done

# vsock: stream 1 = throughput, stream 2 = latency. Also the same against a native echo.
bench_py='
import socket, sys, time, threading, statistics
def open_stream(path, hybrid):
    for _ in range(100):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(path)
            if hybrid:
                s.sendall(b"CONNECT 1024\n"); line = b""
                while not line.endswith(b"\n"): line += s.recv(1)
                assert line.startswith(b"OK ")
            return s
        except (OSError, AssertionError):
            time.sleep(0.1)
    raise SystemExit("cannot connect")
def throughput(s, total=32 << 20):
    chunk = b"x" * 65536; got = [0]
    def rd():
        while got[0] < total:
            d = s.recv(1 << 20)
            if not d: break
            got[0] += len(d)
    t = threading.Thread(target=rd); t0 = time.monotonic(); t.start()
    sent = 0
    while sent < total: s.sendall(chunk); sent += len(chunk)
    t.join(); dt = time.monotonic() - t0
    return total / dt / (1 << 20)
def latency(s, n=1000):
    rtts = []
    for _ in range(n):
        t0 = time.perf_counter(); s.sendall(b"p"); s.recv(1); rtts.append(time.perf_counter() - t0)
    return statistics.median(rtts) * 1e6
path, hybrid = sys.argv[1], sys.argv[2] == "1"
a = open_stream(path, hybrid); tp = throughput(a); a.close()
b = open_stream(path, hybrid); lat = latency(b); b.close()
print(f"{tp:.1f} {lat:.1f}")
'
# (no process substitution: the KVM test host has no /dev/fd)
out=$(python3 -c "$bench_py" "$uds" 1) || out="nan nan"
read -r vs_tp vs_lat <<<"$out"
wait "$vmm_pid"
status=$?

# Native baselines, same run.
python3 - "$work/native.sock" <<'PY' &
import socket, sys, threading
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(2)
def echo(c):
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
for _ in range(2):
    c, _ = s.accept(); threading.Thread(target=echo, args=(c,)).start()
PY
native_pid=$!
out=$(python3 -c "$bench_py" "$work/native.sock" 0) || out="nan nan"
read -r nat_tp nat_lat <<<"$out"
wait "$native_pid" 2>/dev/null
secs() { /usr/bin/time -f %e "$@" 2>&1 >/dev/null | tail -n1; }
nat_w=$(secs dd if=/dev/zero of="$work/native.img" bs=1M count=64 conv=fsync status=none)
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
nat_r=$(secs dd if="$work/native.img" of=/dev/null bs=1M count=64 status=none)

g() { tr -d '\r' <"$work/console.out" | sed -n "s/.*HUSK-BENCH $1=\([0-9.]*\).*/\1/p" | head -n1; }
blk_w=$(g blk_write_s)
blk_r=$(g blk_read_s)
mibs() { awk -v s="$1" 'BEGIN { if (s + 0 > 0) printf "%.1f", 64 / s; else print "nan" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "  husk-vmm exit status $status"
printf '  %-34s %10s %12s %8s\n' metric guest native ratio
printf '  %-34s %10s %12s %8s\n' "virtio-blk seq write (MiB/s)" "$(mibs "$blk_w")" "$(mibs "$nat_w")" "$(ratio "$(mibs "$blk_w")" "$(mibs "$nat_w")")"
printf '  %-34s %10s %12s %8s\n' "virtio-blk seq read (MiB/s)" "$(mibs "$blk_r")" "$(mibs "$nat_r")" "$(ratio "$(mibs "$blk_r")" "$(mibs "$nat_r")")"
printf '  %-34s %10s %12s %8s\n' "vsock echo throughput (MiB/s)" "$vs_tp" "$nat_tp" "$(ratio "$vs_tp" "$nat_tp")"
printf '  %-34s %10s %12s %8s\n' "vsock 1-byte round trip (us)" "$vs_lat" "$nat_lat" "$(ratio "$vs_lat" "$nat_lat")"
[ "$status" = 0 ]
