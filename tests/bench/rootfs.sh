#!/usr/bin/env bash
# Benchmark: what the container's filesystem costs, in one run.
#
# 1. Start-up against rootfs size: `husk create` (to "created": VM booted, container made) of a
#    ~2 MB busybox tree and of a ~500 MB tree (the same busybox plus 400 x 1 MiB files and
#    20,000 x 4 KiB files), two ways:
#    - virtio-fs (how husk runs a directory rootfs): nothing is copied, the tree is shared;
#    - packing (how husk ran a directory rootfs before the share): `mkfs.ext4 -d` of the tree
#      into an image, with the flags and sizing husk used, then `husk create` of that image
#      as a block-device rootfs (loop device; virtio-blk passthrough).
#    Medians of RUNS (default 3) creates each.
# 2. File I/O inside the container, as ratios to runc: write 256 MiB sequentially (fsync),
#    read it back, create 10,000 small files (and sync), delete them (and sync); timed in the
#    container from /proc/uptime (10 ms ticks), under husk with virtio-fs, husk with a
#    virtio-blk (ext4 image on a loop device) rootfs, and runc on the same directory.
# 3. Host memory per sandbox (busybox sleep): PSS of the supervisor, the jailed VMM and
#    virtiofsd, with virtio-fs and with virtio-blk.
#
# Runs itself through tests/with-kvm: directly on hardware KVM, else inside the KVM test host
# (QEMU TCG with nested SVM), where absolute times are 10-50x slower than hardware; compare
# ratios and the shape (does start-up grow with the image?) only.
#
# usage: tests/bench/rootfs.sh     env RUNS (3), PARTS ("1 2 3": which parts to run), HUSK_KERNEL,
#   HUSK_BIN, HUSK_AGENT_INITRD
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
runs="${RUNS:-3}"

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
echo "rootfs: $where"
# virtiofsd holds an O_PATH fd for every inode the guest has looked up (until the guest
# forgets it), so creating 10k files needs an open-file limit above that: husk passes its own
# hard limit to virtiofsd (it cannot raise it without CAP_SYS_RESOURCE). Root in the test
# host can raise it; elsewhere the limit is what it is (check `ulimit -Hn`).
ulimit -Hn 1048576 2>/dev/null && ulimit -Sn 1048576
echo "rootfs: open-file limit $(ulimit -Hn)"
export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
for c in runc python3 mkfs.ext4 losetup; do
    command -v $c >/dev/null || { echo "rootfs: $c missing (tests/setup)"; exit 1; }
done
. "$root/tests/e2e/lib/harness.sh"

work="$(mktemp -d)"
loops=()
cleanup() {
    for id in $("$husk" --root "$work/husk" list -q 2>/dev/null); do
        "$husk" --root "$work/husk" delete --force "$id" >/dev/null 2>&1
    done
    for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
H() { "$husk" --root "$work/husk" "$@"; }
now_ms() { date +%s%3N; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

applets="sh true sleep dd sync rm mkdir seq xargs touch cat"
busybox_rootfs "$work/small" $applets || exit 1
cp -a "$work/small" "$work/big"
python3 - "$work/big/filler" <<'EOF' || exit 1
import os, sys
base = sys.argv[1]
one_mib = (b"husk\n" * (1 << 18))[: 1 << 20]
os.makedirs(f"{base}/large")
for i in range(400):
    with open(f"{base}/large/{i}", "wb") as f:
        f.write(one_mib)
for d in range(20):
    os.makedirs(f"{base}/small/{d}")
    for i in range(1000):
        with open(f"{base}/small/{d}/{i}", "wb") as f:
            f.write(one_mib[:4096])
EOF

# bundle DIR ROOTFS ARGS-JSON [MEMORY-MIB]: runc's spec, no terminal, writable rootfs, these
# args, a memory limit if given (husk sizes the guest from it: limit + 128 MiB).
bundle() {
    mkdir -p "$1" && (cd "$1" && runc spec) && python3 - "$1/config.json" "$2" "$3" "${4:-0}" <<'EOF'
import json, sys
path, rootfs, args, mib = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
s = json.load(open(path))
if mib:
    s["linux"].setdefault("resources", {})["memory"] = {"limit": mib << 20}
s["root"] = {"path": rootfs, "readonly": False}
s["process"]["terminal"] = False
s["process"]["args"] = args
json.dump(s, open(path, "w"), indent="\t")
EOF
}
# pack TREE IMAGE: what husk's create did before the share (runtime/src/rootfs.rs, removed):
# size = data + 30% + 512 B per inode + 32 MiB (+ EXTRA MiB), inodes = entries + 25% + 4096
# (+ EXTRA-INODES), mkfs.ext4 -d without a journal.  usage: pack TREE IMAGE [EXTRA [EXTRA-INODES]]
pack() {
    local bytes entries size
    bytes=$(du -sb "$1" | cut -f1)
    entries=$(find "$1" -xdev | wc -l)
    size=$(((bytes + bytes / 10 * 3 + entries * 512 + (32 << 20) + (${3:-0} << 20) + (1 << 20) - 1) >> 20))
    truncate -s "${size}M" "$2" &&
        mkfs.ext4 -q -F -O ^has_journal -L husk-rootfs -E lazy_itable_init=1,nodiscard \
            -N $((entries + entries / 4 + 4096 + ${4:-0})) -d "$1" "$2"
}
loop_of() { # IMAGE -> prints the loop device
    local l
    l=$(losetup -f --show "$1") || return 1
    loops+=("$l")
    echo "$l"
}

parts=" ${PARTS:-1 2 3} "
part() { [[ $parts == *" $1 "* ]]; }

part 1 && echo "--- 1. husk create against rootfs size (median of $runs)"
part 1 && printf '%-8s %8s %16s %16s %14s\n' tree size "virtio-fs ms" "packing ms" "(mkfs ms)"
for t in small big; do
    part 1 || break
    size=$(du -sm "$work/$t" | cut -f1)
    bundle "$work/fs-$t" "$work/$t" '["sleep","600"]' || exit 1
    fs=()
    for r in $(seq "$runs"); do
        a=$(now_ms)
        H create -b "$work/fs-$t" "fs-$t-$r" >/dev/null 2>&1 </dev/null || { echo "rootfs: husk create (virtio-fs, $t) failed"; exit 1; }
        fs+=($(($(now_ms) - a)))
        H delete -f "fs-$t-$r" >/dev/null 2>&1
    done
    pk=()
    mk=()
    for r in $(seq "$runs"); do
        a=$(now_ms)
        pack "$work/$t" "$work/$t.img" || { echo "rootfs: mkfs.ext4 -d failed"; exit 1; }
        b=$(now_ms)
        l=$(loop_of "$work/$t.img") || exit 1
        bundle "$work/blk-$t-$r" "$l" '["sleep","600"]' || exit 1
        H create -b "$work/blk-$t-$r" "blk-$t-$r" >/dev/null 2>&1 </dev/null || { echo "rootfs: husk create (virtio-blk, $t) failed"; exit 1; }
        c=$(now_ms)
        pk+=($((c - a)))
        mk+=($((b - a)))
        H delete -f "blk-$t-$r" >/dev/null 2>&1
        losetup -d "$l"
        rm -f "$work/$t.img"
    done
    printf '%-8s %6s MB %16s %16s %14s\n' "$t" "$size" "$(median "${fs[@]}")" "$(median "${pk[@]}")" "$(median "${mk[@]}")"
done

if part 2; then
echo "--- 2. file I/O in the container (ms; 10 ms resolution)"
# The workload prints "T <phase> <uptime>" lines, phases w (write), r (read), c (create),
# d (delete), and "F <phase> <status>" where a phase failed (its time is then not shown).
io='t() { read u _ </proc/uptime; echo "T $1 $u"; }
f() { [ "$2" = 0 ] || echo "F $1 $2"; }
t w; dd if=/dev/zero of=/io.bin bs=1M count=256 conv=fsync 2>&1; f w $?; t W
t r; dd if=/io.bin of=/dev/null bs=1M 2>&1; f r $?; t R
rm -f /io.bin; sync
t c; mkdir /many && cd /many && seq 10000 | xargs touch && sync; f c $?; t C
t d; cd / && rm -rf /many && sync; f d $?; t D'
args=$(python3 -c 'import json, sys; print(json.dumps(["sh", "-c", sys.argv[1]]))' "$io")
cp -a "$work/small" "$work/io"
cp -a "$work/small" "$work/io-runc-rootfs"
# 1 GiB: the 256 MiB file and the page cache fit the guest (1152 MiB) under each runtime.
bundle "$work/io-fs" "$work/io" "$args" 1024 || exit 1
bundle "$work/io-runc" "$work/io-runc-rootfs" "$args" 1024 || exit 1
pack "$work/io" "$work/io.img" 384 16384 || exit 1
l=$(loop_of "$work/io.img") || exit 1
bundle "$work/io-blk" "$l" "$args" 1024 || exit 1
io_run() { # NAME: husk run --keep of bundle io-NAME; on a failure its status, output and logs
    local rc=0
    H run --keep -b "$work/io-$1" "io-$1" >"$work/out.$1" 2>&1 </dev/null || rc=$?
    if [ $rc != 0 ]; then
        echo "rootfs: husk run ($1) exited with status $rc:"
        sed 's/^/     /' "$work/out.$1"
        tail -n 20 "$work/husk/io-$1/supervisor.log" "$work/husk/io-$1/console.log" 2>/dev/null | sed 's/^/     /'
    fi
    H delete -f "io-$1" >/dev/null 2>&1
}
io_run fs
io_run blk
runc --root "$work/runc" run -b "$work/io-runc" io-runc >"$work/out.runc" 2>&1 </dev/null || { echo "rootfs: runc run failed:"; cat "$work/out.runc"; }
python3 - "$work" <<'EOF'
import sys
work = sys.argv[1]
def phases(name):
    t, failed = {}, set()
    for line in open(f"{work}/out.{name}"):
        p = line.split()
        if len(p) == 3 and p[0] == "T":
            t[p[1]] = float(p[2])
        elif len(p) == 3 and p[0] == "F":
            failed.add(p[1])
            print(f"{name}: phase {p[1]} failed (status {p[2]})")
        elif line.strip() and p[0] != "T" and "records" not in line and "copied" not in line:
            print(f"{name}: {line.rstrip()}")
    return {k: round((t[k.upper()] - t[k]) * 1000) for k in "wrcd"
            if k in t and k.upper() in t and k not in failed}
rows = {n: phases(n) for n in ("runc", "fs", "blk")}
names = {"w": "write 256 MiB (fsync)", "r": "read 256 MiB", "c": "create 10k files", "d": "delete 10k files"}
print(f"{'':24} {'runc':>8} {'husk virtio-fs':>16} {'husk virtio-blk':>16}")
for k, label in names.items():
    base = rows["runc"].get(k)
    cells = []
    for n in ("fs", "blk"):
        v = rows[n].get(k)
        if v is None:
            cells.append(f"{'-':>16}")
        elif base:
            cells.append(f"{v:>7} ({v / base:5.1f}x)")
        else:
            cells.append(f"{v:>7} (   - x)")
    print(f"{label:24} {base if base is not None else '-':>8} {cells[0]:>16} {cells[1]:>16}")
EOF
fi

part 3 || exit 0
echo "--- 3. host memory per sandbox (busybox sleep)"
# pss_tree PID: PSS (KiB) of PID and all its descendants.
pss_tree() {
    local pids=("$1") all=() p c
    while [ ${#pids[@]} -gt 0 ]; do
        p=${pids[0]}
        pids=("${pids[@]:1}")
        all+=("$p")
        for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do pids+=("$c"); done
    done
    for p in "${all[@]}"; do
        printf '%s %s\n' "$(cat "/proc/$p/comm" 2>/dev/null)" "$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null)"
    done | awk '{s += $2; by[$1] += $2} END {printf "%d KiB (", s; sep = ""; for (k in by) {printf "%s%s %d", sep, k, by[k]; sep = ", "} print ")"}'
}
for kind in fs blk; do
    if [ $kind = fs ]; then bundle "$work/m-fs" "$work/small" '["sleep","600"]'; else
        pack "$work/small" "$work/m.img" && bundle "$work/m-blk" "$(loop_of "$work/m.img")" '["sleep","600"]'
    fi || exit 1
    H run -d -b "$work/m-$kind" "m-$kind" >/dev/null 2>&1 </dev/null || { echo "rootfs: husk run -d ($kind) failed"; continue; }
    sleep 2
    pid=$(H state "m-$kind" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
    echo "virtio-$kind: supervisor + children PSS $(pss_tree "$pid")"
    H delete -f "m-$kind" >/dev/null 2>&1
done
