#!/usr/bin/env bash
# Benchmark: TCP between the host and a container, under husk (the container in a microVM, its
# NIC wired to the namespace's veth through a TAP and tc mirred, runtime/src/net) and under
# runc (the container in the namespace itself), in one run with the same network namespace,
# veth, rootfs and servers; printed as ratios to runc.
#
# What is measured, all from the host end of the veth (10.79.0.1) to the container
# (10.79.0.2), with busybox servers in the container (`nc -ll -p PORT -e PROG`: one process
# per connection whose stdio is the socket) and a small Python client on the host:
#   - host -> container throughput: the client sends SIZE MiB of zeros, shuts its side down and
#     waits for the server to close (`cat >/dev/null` hit EOF: every byte reached the
#     container); MiB/s over that whole time;
#   - container -> host throughput: the server writes SIZE MiB (`dd if=/dev/zero bs=64k`), the
#     client reads to EOF; MiB/s from connect to EOF;
#   - round trip: one connection (TCP_NODELAY) to `cat`, ROUNDS times 64 bytes out and the same
#     64 bytes back; the median and 99th percentile of each round trip, in microseconds.
# Each throughput figure is the median of RUNS transfers (default 3), on one container (one
# boot) per runtime. Not measured: connection set-up, guest-to-guest traffic, UDP.
#
# Runs itself through tests/with-kvm: directly on hardware KVM, else inside the KVM test host
# (QEMU TCG with nested SVM), where every packet of the husk path crosses an emulated L1 and a
# nested L2, so absolute numbers mean nothing and even the ratios are far from hardware's. It
# says which.
#
# usage: tests/bench/net.sh
#   env SIZE (MiB per transfer, 32), RUNS (3), ROUNDS (round trips, 2000), HUSK_KERNEL,
#   HUSK_BIN, HUSK_AGENT_INITRD as for tests/e2e/runc-cli.sh.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
size="${SIZE:-32}"
runs="${RUNS:-3}"
rounds="${ROUNDS:-2000}"

if [ "${1:-}" != --inside ]; then
    "$root/tests/e2e/runc-cli.sh" --prepare >/dev/null || exit 1
    export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
    export KVM_HOST_TIMEOUT="${KVM_HOST_TIMEOUT:-3000}"
    exec "$root/tests/with-kvm" "$0" --inside
fi

if [ "${KVM_HOST_INSIDE:-}" = 1 ]; then
    where="inside the KVM test host (QEMU TCG, nested SVM): absolute numbers are meaningless; compare ratios only, and even those only roughly"
else
    where="directly on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') with hardware KVM"
fi
echo "net: $where"
export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
for c in runc python3 ip; do
    command -v $c >/dev/null || { echo "net: $c missing (tests/setup)"; exit 1; }
done

work="$(mktemp -d)"
ns=husk-bench-net
cleanup() {
    "$husk" --root "$work/husk" delete --force hb >/dev/null 2>&1
    runc --root "$work/runc" delete --force rb >/dev/null 2>&1
    ip netns del $ns 2>/dev/null
    ip link del hb-veth 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add $ns && ip link add hb-veth type veth peer name eth0 netns $ns &&
    ip addr add 10.79.0.1/24 dev hb-veth && ip link set hb-veth up &&
    ip -n $ns link set lo up && ip -n $ns addr add 10.79.0.2/24 dev eth0 &&
    ip -n $ns link set eth0 up && ip -n $ns route add default via 10.79.0.1 ||
    { echo "net: cannot set up the namespace"; exit 1; }
netns=/var/run/netns/$ns
[ -e $netns ] || netns=/run/netns/$ns

# The bundle: busybox, the three servers as the container's init.
. "$root/tests/e2e/lib/harness.sh"
r="$work/b/rootfs"
busybox_rootfs "$r" sh nc cat dd || exit 1
printf '#!/bin/sh\nexec cat >/dev/null\n' >"$r/sink"
printf '#!/bin/sh\nexec dd if=/dev/zero bs=65536 count=%d 2>/dev/null\n' $((size * 16)) >"$r/source"
cat >"$r/servers" <<'EOF'
#!/bin/sh
nc -ll -p 5001 -e /sink &
nc -ll -p 5002 -e /source &
nc -ll -p 5003 -e cat &
wait
EOF
chmod +x "$r/sink" "$r/source" "$r/servers"
(cd "$work/b" && "$husk" spec) || exit 1
python3 - "$work/b/config.json" "$netns" <<'EOF'
import json, sys
p, netns = sys.argv[1:]
s = json.load(open(p))
s["process"]["terminal"] = False
s["process"]["args"] = ["/servers"]
s["linux"]["namespaces"] = [n for n in s["linux"]["namespaces"] if n["type"] != "network"] + [
    {"type": "network", "path": netns}]
json.dump(s, open(p, "w"), indent=1)
EOF

cat >"$work/client.py" <<'EOF'
import socket, statistics, sys, time
host = "10.79.0.2"
def connect(port):
    end = time.time() + 120
    while True:
        try:
            s = socket.create_connection((host, port), timeout=120)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            if time.time() > end:
                raise
            time.sleep(0.5)
mode, size, runs, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if mode == "ready":
    connect(5003).close()
    sys.exit(0)
chunk = b"\0" * (1 << 16)
def tput_in():
    s = connect(5001)
    t = time.monotonic()
    for _ in range(size * 16):
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    assert s.recv(1) == b""
    return size / (time.monotonic() - t)
def tput_out():
    s = connect(5002)
    t = time.monotonic()
    n = 0
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        n += len(d)
    assert n == size << 20, n
    return size / (time.monotonic() - t)
ins = [tput_in() for _ in range(runs)]
outs = [tput_out() for _ in range(runs)]
s = connect(5003)
msg = b"x" * 64
rtts = []
for _ in range(rounds):
    t = time.monotonic_ns()
    s.sendall(msg)
    got = 0
    while got < 64:
        got += len(s.recv(64 - got))
    rtts.append((time.monotonic_ns() - t) / 1000)
rtts.sort()
print(statistics.median(ins), statistics.median(outs), statistics.median(rtts),
      rtts[int(len(rtts) * 0.99) - 1])
EOF

measure() { # prints "in_MiBs out_MiBs rtt_median_us rtt_p99_us"
    python3 "$work/client.py" ready 0 0 0 &&
        python3 "$work/client.py" run "$size" "$runs" "$rounds"
}

"$husk" --root "$work/husk" create -b "$work/b" hb >/dev/null 2>"$work/husk.err" </dev/null &&
    "$husk" --root "$work/husk" start hb >/dev/null 2>&1 || { echo "net: husk create failed: $(cat "$work/husk.err")"; exit 1; }
h=$(measure) || { echo "net: husk measurement failed"; tail -n 20 "$work/husk/hb/supervisor.log"; exit 1; }
"$husk" --root "$work/husk" delete --force hb >/dev/null 2>&1

runc --root "$work/runc" run -d -b "$work/b" rb >/dev/null 2>"$work/runc.err" </dev/null ||
    { echo "net: runc run failed: $(cat "$work/runc.err")"; exit 1; }
c=$(measure) || { echo "net: runc measurement failed"; exit 1; }
runc --root "$work/runc" delete --force rb >/dev/null 2>&1

echo "net: SIZE=$size MiB per transfer, RUNS=$runs, ROUNDS=$rounds"
python3 - "$h" "$c" <<'EOF'
import sys
h = [float(x) for x in sys.argv[1].split()]
c = [float(x) for x in sys.argv[2].split()]
rows = [("host -> container (MiB/s, median)", 0, "{:.1f}"), ("container -> host (MiB/s, median)", 1, "{:.1f}"),
        ("round trip 64 B (us, median)", 2, "{:.0f}"), ("round trip 64 B (us, p99)", 3, "{:.0f}")]
print(f"{'':36} {'husk':>10} {'runc':>10} {'husk/runc':>10}")
for name, i, f in rows:
    print(f"{name:36} {f.format(h[i]):>10} {f.format(c[i]):>10} {h[i] / c[i]:>9.2f}x")
EOF
