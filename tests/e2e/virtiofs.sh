#!/usr/bin/env bash
# End-to-end: the sandbox's virtio-fs share, each container in a real microVM. Container A
# writes into its rootfs and a read-write bind mount (both on the host afterwards), is refused
# a write to a read-only bind mount, reads a 100 MiB directory's file whole, and makes a symlink
# in its volume to /etc that resolves to the container's /etc, never the host's. A and B,
# started one after the other, see each other's writes through one host directory. While they
# run, no share mount is visible on the host (they live in the supervisor's mount namespace).
# Then nothing is left behind (no supervisor, VMM or virtiofsd process, no mount in any
# process's namespace, no file) after `delete` of A, `delete -f` of a running B, and `kill -9`
# of C's supervisor followed by `delete`; the bind sources' data is untouched. Three guest
# boots.
#
# usage: tests/e2e/virtiofs.sh [--prepare]
#   --prepare  as tests/e2e/runc-cli.sh --prepare (husk release build, agent initramfs)
#   env HUSK_KERNEL (tests/run-all exports it), HUSK_BIN (default target/release/husk),
#   HUSK_AGENT_INITRD (default target/guest-image/initramfs.cpio), HUSK_VIRTIOFSD.
#
# Needs root, virtiofsd (tests/setup installs it) and a KVM that boots stock kernels: run it
# through tests/with-kvm.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
applets="sh echo cat sleep ls ln touch test tail stat dd wc mkdir rm"

if [ "${1:-}" = --prepare ]; then
    exec "$root/tests/e2e/runc-cli.sh" --prepare
fi

export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
for f in "$husk" "$HUSK_KERNEL" "$HUSK_INITRD" /bin/busybox; do
    [ -e "$f" ] || { echo "virtiofs: $f missing (run tests/e2e/virtiofs.sh --prepare on the host)"; exit 1; }
done

work="$(mktemp -d)"
state="$work/root"
cleanup() {
    delete_all "$husk" "$state"
    rm -rf "$work"
}
trap cleanup EXIT

. "$root/tests/e2e/lib/harness.sh"
H() { "$husk" --root "$state" "$@"; }
status_of() { H state "$1" 2>/dev/null | sed -n 's/.*"status": "\(.*\)".*/\1/p'; }
wait_for() { # SECONDS COMMAND...: until COMMAND succeeds
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.5
    done
}
logs() { # ID: the container's husk logs, for a failure
    tail -n 20 "$state/$1/supervisor.log" "$state/$1/console.log" 2>/dev/null | sed 's/^/     /'
}
# bundle DIR SCRIPT MOUNTS_JSON: a busybox bundle running `sh -c SCRIPT` with these extra
# mounts, config.json from `husk spec` without a terminal.
bundle() {
    busybox_rootfs "$1/rootfs" $applets &&
        echo container-etc >"$1/rootfs/etc/husk-marker" &&
        (cd "$1" && H spec) &&
        python3 - "$1/config.json" "$2" "$3" <<'EOF'
import json, sys
path, script, mounts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["root"]["readonly"] = False
spec["process"]["args"] = ["sh", "-c", script]
spec["mounts"] += mounts
json.dump(spec, open(path, "w"), indent=1)
EOF
}
bind() { # SOURCE DESTINATION [OPTION...]: one bind mount as JSON
    local src=$1 dst=$2 opts='"rbind"'
    shift 2
    for o in "$@"; do opts="$opts, \"$o\""; done
    printf '{"destination": "%s", "type": "bind", "source": "%s", "options": [%s]}' "$dst" "$src" "$opts"
}
# leftovers ID SUPERVISOR_PID: what must be gone once a container is deleted
# checkv NAME DUMP COMMAND...: check, and on a failure run the shell text DUMP
checkv() {
    local name=$1 dump=$2
    shift 2
    if "$@"; then ok "$name"; else
        bad "$name"
        eval "$dump"
    fi
}
leftovers() {
    local id=$1 pid=$2 what="after $3"
    check "$what: no supervisor process" bash -c "! kill -0 $pid 2>/dev/null"
    check "$what: no virtiofsd of $id" bash -c "! pgrep -f -- '[-]-shared-dir $state/$id/share' >/dev/null"
    check "$what: no mount of $id in any mount namespace" bash -c "! grep -qsF '$state/$id/' /proc/[0-9]*/mountinfo"
    check "$what: no file of $id" test ! -e "$state/$id"
}

mkdir -p "$work/rw" "$work/ro" "$work/big" "$work/shared" "$state"
echo read-only-data >"$work/ro/data"
head -c $((100 << 20)) /dev/zero >"$work/big/f" && printf 'BIG-END\n' >>"$work/big/f"
big_size=$(stat -c %s "$work/big/f")

# A: every write and read check, then waits for B's file and copies it.
script_a='echo rootfs-write >/from-guest.txt
echo volume-write >/rw/written.txt
ln -s /etc /rw/etc-link
cat /rw/etc-link/husk-marker >/rw/symlink.txt
test -e /rw/etc-link/debian_version && echo host-etc-visible >>/rw/symlink.txt
if touch /ro/x 2>/dev/null; then echo ro-writable; else echo ro-refused; fi >/rw/ro.txt
cat /ro/data >>/rw/ro.txt
stat -c %s /big/f >/rw/big.txt
tail -c 8 /big/f >>/rw/big.txt
dd if=/big/f of=/dev/null bs=1M 2>>/rw/big.txt
echo from-a >/shared/a.txt
i=0; while [ ! -e /shared/b.txt ] && [ $i -lt 180 ]; do sleep 1; i=$((i + 1)); done
cat /shared/b.txt >/shared/a-saw-b.txt'
# B: reads A's file, writes its own, then runs until deleted.
script_b='cat /shared/a.txt >/shared/b-saw-a.txt; echo from-b >/shared/b.txt; exec sleep 600'
bundle "$work/a" "$script_a" "[$(bind "$work/rw" /rw), $(bind "$work/ro" /ro ro), $(bind "$work/big" /big), $(bind "$work/shared" /shared)]" &&
    bundle "$work/b" "$script_b" "[$(bind "$work/shared" /shared)]" &&
    bundle "$work/c" 'exec sleep 600' "[$(bind "$work/rw" /rw)]" ||
    { echo "virtiofs: cannot build the bundles"; exit 1; }

echo "--- A and B (boots 1, 2)"
H run -d -b "$work/a" --pid-file "$work/a.pid" a >/dev/null 2>"$work/a.err" </dev/null
checkv "run -d A" 'cat "$work/a.err"; logs a' test $? -eq 0 || true
if [ ! -s "$work/a.pid" ]; then
    echo "virtiofs: $passed passed, $((failed)) failed (stopped: A did not start)"
    exit 1
fi
pid_a=$(cat "$work/a.pid" 2>/dev/null || echo 0)
checkv "A writes into the shared directory" 'logs a' wait_for 240 test -s "$work/shared/a.txt"
check "A's share mounts are in its supervisor's namespace" grep -qF "$state/a/share/a/rootfs" "/proc/$pid_a/mountinfo"
check "no share mount on the host while A runs" bash -c "! grep -qF '$state/' /proc/self/mountinfo"
H run -d -b "$work/b" --pid-file "$work/b.pid" b >/dev/null 2>"$work/b.err" </dev/null
checkv "run -d B" 'cat "$work/b.err"; logs b' test $? -eq 0
pid_b=$(cat "$work/b.pid" 2>/dev/null || echo 0)
checkv "B sees A's write" 'ls -la "$work/shared"; logs b' wait_for 240 grep -qsx from-a "$work/shared/b-saw-a.txt"
checkv "A sees B's write" 'ls -la "$work/shared"; logs a; logs b' wait_for 60 grep -qsx from-b "$work/shared/a-saw-b.txt"
check "A exits" wait_for 60 test "$(status_of a)" = stopped

echo "--- what A wrote and read"
check "a write into the rootfs is on the host" grep -qx rootfs-write "$work/a/rootfs/from-guest.txt"
check "a write into a read-write bind mount is on the host" grep -qx volume-write "$work/rw/written.txt"
check "a read-only bind mount refuses writes" grep -qx ro-refused "$work/rw/ro.txt"
check "a read-only bind mount is readable" grep -qx read-only-data "$work/rw/ro.txt"
check "nothing was written into the read-only source" test ! -e "$work/ro/x"
check "a 100 MiB bind-mounted directory: the file's size" bash -c "head -n1 '$work/rw/big.txt' | grep -qx $big_size"
check "a 100 MiB bind-mounted directory: its last bytes" grep -qx BIG-END "$work/rw/big.txt"
checkv "a 100 MiB bind-mounted directory: read whole" 'sed "s/^/     /" "$work/rw/big.txt"' \
    grep -q "^100+1 records in" "$work/rw/big.txt"
check "a symlink to /etc in a volume resolves to the container's /etc" grep -qx container-etc "$work/rw/symlink.txt"
check "... never to the host's /etc" bash -c "! grep -q host-etc-visible '$work/rw/symlink.txt'"
check "the symlink is on the host as the container made it" test "$(readlink "$work/rw/etc-link")" = /etc

echo "--- delete, delete -f, kill -9 + delete (boot 3)"
H delete a
check "delete A" test $? -eq 0
leftovers a "$pid_a" "delete"
check "delete -f of a running B" H delete -f b
leftovers b "$pid_b" "delete -f"
H run -d -b "$work/c" --pid-file "$work/c.pid" c >/dev/null 2>"$work/c.err" </dev/null
checkv "run -d C" 'cat "$work/c.err"; logs c' test $? -eq 0
pid_c=$(cat "$work/c.pid" 2>/dev/null || echo 0)
vfsd_c=$(pgrep -f -- "[-]-shared-dir $state/c/share" | tr '\n' ' ')
check "C has its virtiofsd (two processes: its namespace sandbox is a child)" test "$(echo $vfsd_c | wc -w)" -eq 2
kill -9 "$pid_c"
check "C stopped after kill -9 of its supervisor" wait_for 20 test "$(status_of c)" = stopped
check "C's virtiofsd died with its supervisor" wait_for 10 bash -c "! pgrep -f -- '[-]-shared-dir $state/c/share' >/dev/null"
H delete c
check "delete C" test $? -eq 0
leftovers c "$pid_c" "kill -9 + delete"

echo "--- nothing left"
check "no VMM process" bash -c "! pgrep -f '^/proc/self/exe vmm' >/dev/null"
check "no virtiofsd process" bash -c "! pgrep -x virtiofsd >/dev/null"
check "no mount under the state root in any namespace" bash -c "! grep -qsF '$state/' /proc/[0-9]*/mountinfo"
check "the state root is empty" test -z "$(ls -A "$state")"
check "the bind sources' data is untouched" bash -c "grep -qx volume-write '$work/rw/written.txt' && test \$(stat -c %s '$work/big/f') = $big_size && grep -qx read-only-data '$work/ro/data'"

echo "virtiofs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
