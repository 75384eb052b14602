#!/usr/bin/env bash
# End-to-end: the second wall, inside a real guest (issue 8, findings 1 and 2). One container,
# one boot, with no seccomp profile and CAP_MKNOD + CAP_SYS_RAWIO on top of runc's defaults
# (so only the device cgroup stands between it and /dev/mem):
#   vsock   nothing answers it as the agent: connect(AF_VSOCK) to CID 1, 2 and 3, port 1024,
#           fails (no vsock loopback in the guest kernel; CID 2 is the host, where nothing
#           listens on 1024), probed with a static C helper (tests/e2e/guest-wall/);
#   devices a node it makes for /dev/mem (c 1:1) or the raw disk cannot be opened (EPERM from
#           the device cgroup, while mknod itself is allowed, as with runc); /dev/null, zero,
#           urandom work and /dev/tty is not refused by the cgroup; the spec's explicit rule
#           (c 10:229 r, /dev/fuse: opening it needs no capability) opens its node for reading
#           only; `husk update -r` with devices grants (write to 10:229, read of the disk) and
#           revokes, and an update without devices leaves the program alone.
#
# usage: tests/e2e/guest-wall.sh [--prepare]
#   --prepare  build husk (release), the agent initramfs and the probe on the host
#   env HUSK_KERNEL, HUSK_BIN, HUSK_AGENT_INITRD as for tests/e2e/runc-cli.sh.
#
# Needs root and a KVM that boots stock kernels: run it through tests/e2e/run.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
probe="$target/guest-wall/vsock-probe"
applets="sh echo cat head sleep ls mknod dd true wc"

if [ "${1:-}" = --prepare ]; then
    mkdir -p "$(dirname "$probe")" &&
        gcc -static -O2 -Wall -o "$probe" "$root/tests/e2e/guest-wall/vsock-probe.c" >&2 || exit 1
    (cd "$root" && cargo build --release --locked -p husk) >&2 || exit 1
    "$root/guest-image/build" | tail -n1
    exit $?
fi

export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
for f in "$husk" "$HUSK_KERNEL" "$HUSK_INITRD" "$probe" /bin/busybox; do
    [ -e "$f" ] || { echo "guest-wall: $f missing (run tests/e2e/guest-wall.sh --prepare on the host)"; exit 1; }
done

work="$(mktemp -d)"
state="$work/root"
bundle="$work/bundle"
cleanup() {
    delete_all "$husk" "$state"
    rm -rf "$work"
}
trap cleanup EXIT

. "$root/tests/e2e/lib/harness.sh"
H() { "$husk" --root "$state" "$@"; }
X() { H exec w1 sh -c "$1" 2>&1; } # SCRIPT: run in the container, stdout and stderr
status_of() { H state "$1" 2>/dev/null | sed -n 's/.*"status": "\(.*\)".*/\1/p'; }
has() { [[ $1 == *"$2"* ]]; }          # TEXT WORD
lacks() { [[ $1 != *"$2"* ]]; }        # TEXT WORD
say() { head -n 12 <<<"$1" | sed 's/^/     /'; } # the evidence, indented

{ busybox_rootfs "$bundle/rootfs" $applets && cp "$probe" "$bundle/rootfs/bin/vsock-probe"; } || { echo "guest-wall: cannot build the bundle"; exit 1; }
(cd "$bundle" && H spec) || { echo "guest-wall: husk spec failed"; exit 1; }
# husk spec's config.json: no terminal, a long sleep, no seccomp, CAP_MKNOD and CAP_SYS_RAWIO,
# runc's deny-all device rule plus read of c 10:229 (/dev/fuse).
python3 - "$bundle/config.json" <<'EOF' || { echo "guest-wall: cannot edit config.json"; exit 1; }
import json, sys
p = sys.argv[1]
s = json.load(open(p))
s["process"]["terminal"] = False
s["process"]["args"] = ["sleep", "100000"]
for k in ("bounding", "effective", "permitted"):
    s["process"]["capabilities"][k] += ["CAP_MKNOD", "CAP_SYS_RAWIO"]
s["linux"].pop("seccomp", None)
s["linux"].setdefault("resources", {})["devices"] = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "r"},
]
json.dump(s, open(p, "w"), indent=1)
EOF

echo "--- one container: no seccomp, CAP_MKNOD + CAP_SYS_RAWIO"
H run -d -b "$bundle" w1 >"$work/w1.out" 2>&1 </dev/null
if [ "$(status_of w1)" = running ]; then ok "run --detach"; else
    bad "run --detach" "$(cat "$work/w1.out")"
    tail -n 30 "$state/w1/console.log" "$state/w1/supervisor.log" 2>/dev/null
    echo "guest-wall: $passed passed, $((failed + 1)) failed (stopped: no container)"
    exit 1
fi
out=$(X 'grep -E "^(Seccomp|CapEff):" /proc/self/status')
check "the container has no seccomp filter" bash -c '[[ $1 =~ Seccomp:[[:space:]]+0 ]]' _ "$out"
say "$out"

echo "--- vsock: nothing answers as the agent"
for cid in 1 2 3; do
    out=$(X "vsock-probe $cid 1024")
    say "CID $cid: $out"
    if has "$out" "connect: errno"; then ok "connect to vsock CID $cid port 1024 fails"; else
        bad "connect to vsock CID $cid port 1024 fails" "$out"
    fi
done
# The probe itself works: AF_VSOCK sockets can be made (so the refusals above are real).
out=$(X "vsock-probe 2 1024")
check "AF_VSOCK sockets can be made in the container" lacks "$out" "socket: errno"

echo "--- devices: the default deny with runc's allow list"
out=$(X 'mknod /dev/m c 1 1 && echo mknod-ok; head -c 16 /dev/m >/dev/null && echo mem-read; true')
say "$out"
check "mknod of c 1:1 is allowed (as runc)" has "$out" mknod-ok
check "/dev/mem through a node it made: EPERM" bash -c '[[ $1 == *"Operation not permitted"* && $1 != *mem-read* ]]' _ "$out"
# The guest's virtio-blk disk (the rootfs, when it is one); without one, a node for 254:0
# still shows the cgroup's EPERM (the missing device would be ENXIO).
disk=$(X 'cat /sys/block/vd*/dev 2>/dev/null | head -n1')
[[ $disk =~ ^[0-9]+:[0-9]+$ ]] || { echo "     no virtio-blk disk in the guest; probing 254:0"; disk=254:0; }
out=$(X "mknod /dev/d b ${disk%%:*} ${disk##*:} && echo mknod-ok; head -c 512 /dev/d >/dev/null && echo disk-read; true")
say "disk $disk: $out"
check "the raw disk ($disk) through a node it made: EPERM" bash -c '[[ $1 == *"Operation not permitted"* && $1 != *disk-read* ]]' _ "$out"
out=$(X 'echo x >/dev/null && echo null-ok; head -c 8 /dev/zero | wc -c; head -c 8 /dev/urandom | wc -c; (exec 3<>/dev/tty) 2>&1; true')
say "$out"
check "/dev/null, /dev/zero, /dev/urandom work" bash -c '[[ $1 == *null-ok* && $(grep -cx 8 <<<"$1") == 2 ]]' _ "$out"
check "/dev/tty is not refused by the device cgroup" lacks "$out" "Operation not permitted"

echo "--- devices: the spec's explicit rule (c 10:229 r)"
out=$(X 'mknod /dev/k c 10 229 && (exec 3</dev/k) && echo read-opened; (exec 3>/dev/k) && echo write-opened; true')
say "$out"
check "the spec's allow rule opens its node for reading" has "$out" read-opened
check "... and not for writing (EPERM)" bash -c '[[ $1 != *write-opened* && $1 == *"Operation not permitted"* ]]' _ "$out"

echo "--- devices: husk update -r"
printf '{"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}, {"allow": true, "type": "b", "major": %s, "minor": %s, "access": "r"}]}' \
    "${disk%%:*}" "${disk##*:}" >"$work/grant.json"
err=$(H update -r "$work/grant.json" w1 2>&1)
rc=$?
check "update -r with devices (grant)" test $rc -eq 0
[ $rc -eq 0 ] || say "$err"
out=$(X '(exec 3>/dev/k) && echo write-opened; head -c 16 /dev/m >/dev/null && echo mem-read; true')
say "$out"
check "update granted write to c 10:229" has "$out" write-opened
check "/dev/mem still refused" lacks "$out" mem-read
out=$(X 'head -c 512 /dev/d | wc -c')
say "disk: $out"
check "update granted read of the disk (no EPERM)" lacks "$out" "Operation not permitted"
echo '{"pids": {"limit": 100}}' | H update -r - w1
out=$(X '(exec 3>/dev/k) && echo write-opened; true')
check "an update without devices leaves the device program" has "$out" write-opened
echo '{"devices": [{"allow": false, "access": "rwm"}]}' | H update -r - w1
out=$(X '(exec 3</dev/k) && echo read-opened; head -c 512 /dev/d >/dev/null && echo disk-read; echo x >/dev/null && echo null-ok; true')
say "$out"
check "update revoked c 10:229 and the disk" bash -c '[[ $1 != *read-opened* && $1 != *disk-read* ]]' _ "$out"
check "the default allow list survives the update" has "$out" null-ok
err=$(echo '{"devices": [{"allow": true, "access": "rwx"}]}' | H update -r - w1 2>&1)
rc=$?
[[ $rc -ne 0 && $err == *"linux.resources.devices"* ]] && ok "a bad rule is refused naming the field" || bad "a bad rule is refused naming the field" "rc=$rc $err"

H kill w1 KILL
H delete --force w1 >/dev/null 2>&1
check "delete cleans up" test ! -e "$state/w1"

echo "guest-wall: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
