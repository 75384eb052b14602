#!/usr/bin/env bash
# End-to-end: the host-side wall (issue 8), on a running container in a real microVM.
#   - under the caller's `umask 000`, everything husk creates under its root is private:
#     files and sockets 0600, directories 0700 (the virtio-fs share's own ones 0711);
#   - the VMM process (`husk vmm`, the supervisor's child) runs confined: every one of its
#     threads has `Seccomp: 2` (filter mode), no capability in any set, no_new_privs; its root
#     is the jail directory (only the vsock socket in it), not the host's /, and its mount and
#     network namespaces are its own;
#   - the supervisor runs under its own seccomp allow-list: `Seccomp: 2` on every one of its
#     threads, and its log names the mode installed;
#   - the container still works through the jailed VMM (exec, exit status);
#   - `kill -9` of the supervisor takes the VMM with it (parent-death signal), and `delete`
#     then leaves nothing (state directory, processes).
# One guest boot.
#
# usage: tests/e2e/host-wall.sh [--prepare]
#   --prepare  build husk (release) and the agent initramfs on the host
#   env HUSK_KERNEL, HUSK_BIN (default target/release/husk), HUSK_AGENT_INITRD.
#
# Needs root and a KVM that boots stock kernels: run it through tests/with-kvm.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
applets="sh echo cat sleep ls true false id"

if [ "${1:-}" = --prepare ]; then
    (cd "$root" && cargo build --release --locked -p husk) >&2 || exit 1
    "$root/guest-image/build" | tail -n1
    exit $?
fi

export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
for f in "$husk" "$HUSK_KERNEL" "$HUSK_INITRD" /bin/busybox; do
    [ -e "$f" ] || { echo "host-wall: $f missing (run tests/e2e/host-wall.sh --prepare on the host)"; exit 1; }
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

busybox_rootfs "$bundle/rootfs" $applets || { echo "host-wall: cannot build the bundle"; exit 1; }
(cd "$bundle" && H spec) || { echo "host-wall: husk spec failed"; exit 1; }
sed -i -e 's|"terminal": true|"terminal": false|' \
    -e "s|^\t\t\t\"sh\"\$|\t\t\t\"sleep\", \"600\"|" "$bundle/config.json"

echo "--- create + start under umask 000"
(umask 000 && H create -b "$bundle" --pid-file "$work/w1.pid" w1 </dev/null >"$work/w1.out" 2>"$work/w1.err")
rc=$?
if [ $rc -ne 0 ]; then
    bad "create under umask 000" "rc=$rc: $(cat "$work/w1.err")"
    tail -n 30 "$state/w1/console.log" "$state/w1/supervisor.log" 2>/dev/null
    echo "host-wall: $passed passed, $failed failed (stopped: no container)"
    exit 1
fi
ok "create under umask 000"
(umask 000 && H start w1)
check "start" test $? -eq 0

echo "--- modes under the state root"
# The virtio-fs share's own directories are 0711 (traversable, not listable): the guest sees
# their modes, and a container with a user namespace must traverse them (docs/runtime.md).
loose=$(find "$state" \( -type d ! -perm 700 ! \( -perm 711 -path "$state/*/share*" \) \) \
    -o \( ! -type d ! -perm 600 \) 2>/dev/null)
[ -z "$loose" ] && ok "every directory 0700 (the share's 0711), every file and socket 0600 (umask 000)" ||
    bad "every directory 0700 (the share's 0711), every file and socket 0600 (umask 000)" "$(for f in $loose; do stat -c '%a %F %n' "$f"; done)"
check "control.sock is a socket" test -S "$state/w1/control.sock"
check "the vsock socket lives in the jail directory" test -S "$state/w1/vm/vsock.sock"

echo "--- the VMM process"
sup=$(cat "$work/w1.pid")
vmm=""
for p in /proc/[0-9]*; do
    [ "$(awk '{print $4}' "$p/stat" 2>/dev/null)" = "$sup" ] || continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q ' vmm' && vmm=${p#/proc/}
done
if [ -z "$vmm" ]; then
    bad "the supervisor ($sup) has a 'husk vmm' child"
else
    ok "the supervisor ($sup) has a 'husk vmm' child ($vmm)"
    nthreads=$(ls "/proc/$vmm/task" | wc -l)
    unfiltered=$(grep -L '^Seccomp:[[:space:]]*2$' /proc/"$vmm"/task/*/status)
    [ -z "$unfiltered" ] && ok "Seccomp: 2 on all $nthreads VMM threads" ||
        bad "Seccomp: 2 on all $nthreads VMM threads" "$unfiltered"
    caps=$(grep -h -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/"$vmm"/task/*/status | awk '{print $2}' | sort -u)
    check "no capability in any set on any VMM thread ($(echo $caps))" test "$caps" = 0000000000000000
    check "no_new_privs on every VMM thread" test "$(grep -h '^NoNewPrivs:' /proc/"$vmm"/task/*/status | awk '{print $2}' | sort -u)" = 1
    check "the VMM's root is not the host's /" test "$(stat -L -c %d:%i "/proc/$vmm/root")" != "$(stat -c %d:%i /)"
    check "the VMM's root holds only the vsock socket" test "$(ls -A "/proc/$vmm/root/")" = vsock.sock
    check "the VMM sees no /etc" test ! -e "/proc/$vmm/root/etc"
    check "the VMM has its own mount namespace" test "$(readlink "/proc/$vmm/ns/mnt")" != "$(readlink /proc/self/ns/mnt)"
    check "the VMM has its own network namespace" test "$(readlink "/proc/$vmm/ns/net")" != "$(readlink /proc/self/ns/net)"
    check "the supervisor itself keeps the host's root" test "$(stat -L -c %d:%i "/proc/$sup/root")" = "$(stat -c %d:%i /)"
fi
# The supervisor's own allow-list (docs/security.md, "The supervisor's seccomp list"): on
# every one of its threads, installed in the mode asked for, and said so in its log.
nthreads=$(ls "/proc/$sup/task" | wc -l)
unfiltered=$(grep -L '^Seccomp:[[:space:]]*2$' /proc/"$sup"/task/*/status)
[ -z "$unfiltered" ] && ok "Seccomp: 2 on all $nthreads supervisor threads" ||
    bad "Seccomp: 2 on all $nthreads supervisor threads" "$unfiltered"
sup_mode=${HUSK_SUPERVISOR_SECCOMP:-kill}
check "supervisor.log says the filter is installed (mode $sup_mode)" \
    grep -qE "supervisor seccomp filter installed.*mode=\"?$sup_mode" "$state/w1/supervisor.log"

echo "--- the container works through the jailed VMM"
out=$(H exec w1 echo through-the-jail 2>&1)
check "exec echo" test "$out" = through-the-jail
H exec w1 sh -c 'exit 7'
check "exec exit status 7" test $? -eq 7

echo "--- kill -9 of the supervisor takes the VMM with it; delete leaves nothing"
kill -9 "$sup"
for _ in $(seq 50); do [ -d "/proc/$vmm" ] || break; sleep 0.1; done
check "the VMM process is gone after the supervisor's kill -9" test ! -d "/proc/$vmm"
H delete w1
check "delete after kill -9" test $? -eq 0
check "no state left" test ! -e "$state/w1"
left=$(pgrep -f -- "--root $state" || true)
check "no husk process of this root left" test -z "$left"

echo "host-wall: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
