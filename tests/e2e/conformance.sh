#!/usr/bin/env bash
# End-to-end: OCI runtime-spec conformance of the husk CLI (issue 12, runtime items), in a
# real microVM:
#   - lifecycle hooks on the host: prestart and createRuntime get the state JSON on stdin
#     (ociVersion, id, status creating, pid = the supervisor, bundle, annotations), their
#     args (args[0] is argv0) and exactly their env; poststart runs after start (status
#     running), poststop after delete (status stopped);
#   - a failing createRuntime hook fails `create` naming the hook and leaves nothing (state,
#     host cgroup, processes), after running poststop;
#   - hooks in the guest, from the container's rootfs (busybox sh scripts the host does not
#     have at that path): createContainer (status creating) and startContainer (status
#     created) get the state JSON (id, bundle, annotations, the init's guest pid), which the
#     container prints; a failing startContainer hook fails `start` naming the hook and the
#     process never runs; a createContainer hook past its timeout is killed and fails `create`,
#     leaving nothing;
#   - `out=$(husk run -d ...)` returns once the container closed its stdout, not when it exits;
#   - linux.resources.cpu.cpus "0-1" gives the guest 2 vCPUs (seen in the container);
#   - the supervisor and its VMM run in the host cgroup linux.cgroupsPath names, with the memory
#     limit (guest memory + 128 MiB) and cpu.weight from the spec's shares; `update` of the
#     CPU controls reaches the guest's cgroup and the host cgroup; delete removes it;
#   - delete without --force of a running container fails and leaves it running;
#   - a container with its own user namespace and uid/gid mappings (0 -> 100000, 65536) sets
#     its hostname and mounts a tmpfs; /dev's nodes are the guest's, bind-mounted; without a
#     cgroup namespace its /sys/fs/cgroup is the guest's hierarchy bound read-only (runc's way).
# Five guest boots.
#
# usage: tests/e2e/conformance.sh [--prepare]
#   --prepare  build husk (release) and the agent initramfs on the host
#   env HUSK_KERNEL, HUSK_BIN (default target/release/husk), HUSK_AGENT_INITRD.
#
# Needs root and a KVM that boots stock kernels: run it through tests/with-kvm.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
applets="sh echo cat sleep ls true false id nproc"

if [ "${1:-}" = --prepare ]; then
    (cd "$root" && cargo build --release --locked -p husk) >&2 || exit 1
    "$root/guest-image/build" | tail -n1
    exit $?
fi

export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
for f in "$husk" "$HUSK_KERNEL" "$HUSK_INITRD" /bin/busybox; do
    [ -e "$f" ] || { echo "conformance: $f missing (run tests/e2e/conformance.sh --prepare on the host)"; exit 1; }
done
command -v jq >/dev/null || { echo "conformance: jq missing"; exit 1; }

work="$(mktemp -d)"
work="$(cd "$work" && pwd -P)"
state="$work/root"
bundle="$work/bundle"
cg_parent=husk-conformance-$$
cleanup() {
    delete_all "$husk" "$state"
    for d in /sys/fs/cgroup/$cg_parent /sys/fs/cgroup/*/$cg_parent; do
        [ -d "$d" ] && rmdir "$d"/* "$d" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT

. "$root/tests/e2e/lib/harness.sh"
H() { "$husk" --root "$state" "$@"; }
status_of() { H state "$1" 2>/dev/null | jq -r .status; }

busybox_rootfs "$bundle/rootfs" $applets || { echo "conformance: cannot build the bundle"; exit 1; }
(cd "$work" && H spec && mv config.json spec.json) || { echo "conformance: husk spec failed"; exit 1; }

# A hook script, run as `/bin/sh SCRIPT NAME extra` with argv0 "hook-argv0" (a #! script's
# own argv0 is the kernel's): saves its stdin, argv and environment under $work/hooks/NAME.*
mkdir -p "$work/hooks"
cat >"$work/hook.sh" <<EOF
#!/bin/sh
name=\$1
/bin/cat >"$work/hooks/\$name.json"
/usr/bin/tr '\\0' ' ' </proc/\$\$/cmdline >"$work/hooks/\$name.argv"
/usr/bin/env >"$work/hooks/\$name.env"
EOF
chmod +x "$work/hook.sh"
hook() { # NAME: a hook entry that records under NAME
    jq -n --arg p "$work/hook.sh" --arg n "$1" \
        '{path: "/bin/sh", args: ["hook-argv0", $p, $n, "extra"], env: ["HOOK_VAR=v=1", "PATH=/usr/bin:/bin"], timeout: 30}'
}
# config.json: husk spec's with ARGS (a JSON array), no terminal, and the jq FILTER applied
# (further jq options may follow).
make_config() { # ARGS FILTER [JQ-OPTIONS...]
    local args=$1 filter=$2
    shift 2
    jq --argjson args "$args" "$@" '.process.terminal = false | .process.args = $args | '"$filter" \
        "$work/spec.json" >"$bundle/config.json"
}

# Guest hooks: busybox sh scripts in the container's rootfs (/hooks is not on the host). The
# root is read-only by then (husk spec's default), so they write to the /dev/shm tmpfs.
mkdir -p "$bundle/rootfs/hooks"
printf '#!/bin/sh\ncat >/dev/shm/%s.json\n' cc >"$bundle/rootfs/hooks/cc.sh"
printf '#!/bin/sh\ncat >/dev/shm/%s.json\n' sc >"$bundle/rootfs/hooks/sc.sh"
printf '#!/bin/sh\necho start-hook-says-no >&2\nexit 3\n' >"$bundle/rootfs/hooks/fail.sh"
chmod +x "$bundle/rootfs/hooks/"*.sh

echo "--- refused before anything is made"
make_config '["true"]' '.'
err=$(H run -d --preserve-fds 1 -b "$bundle" r2 2>&1 3>&-)
rc=$?
check "--preserve-fds 1 without an fd 3 fails (rc=$rc)" test $rc -ne 0
case $err in *"--preserve-fds"*) ok "the error names --preserve-fds" ;;
*) bad "the error names --preserve-fds" "$err" ;; esac
check "nothing left of r2" test -z "$(ls -A "$state" 2>/dev/null)"

echo "--- boot 1: hooks, run -d, vCPUs from the cpuset, host cgroup"
shares=512
jq --argjson args '["sh", "-c", "echo hi; exec 1>&-; sleep 600"]' \
    --argjson pre "$(hook prestart)" --argjson cr "$(hook createRuntime)" \
    --arg cg "/$cg_parent/c1" --argjson shares "$shares" '
    .process.terminal = false | .process.args = $args |
    .hooks.prestart = [$pre] | .hooks.createRuntime = [$cr] |
    .hooks.poststart = [$pre | .args[2] = "poststart"] |
    .hooks.poststop = [$pre | .args[2] = "poststop"] |
    .hooks.createContainer = [{path: "/hooks/cc.sh", timeout: 30}] |
    .hooks.startContainer = [{path: "/hooks/sc.sh", args: ["sc"], env: ["A=1"]}] |
    .annotations = {"org.example.test": "conformance"} |
    .linux.cgroupsPath = $cg |
    .linux.resources.cpu = {"cpus": "0-1", "shares": $shares} |
    .linux.resources.memory = {"limit": 268435456}' "$work/spec.json" >"$bundle/config.json"

t0=$SECONDS
out=$(timeout -k 5 180 "$husk" --root "$state" run -d -b "$bundle" --pid-file "$work/c1.pid" c1 2>"$work/c1.err")
rc=$?
took=$((SECONDS - t0))
if [ $rc -ne 0 ] || [ ! -s "$work/c1.pid" ]; then
    bad "run -d c1" "rc=$rc after ${took}s: $(cat "$work/c1.err")"
    tail -n 30 "$state/c1/supervisor.log" "$state/c1/console.log" 2>/dev/null
    echo "conformance: $passed passed, $failed failed (stopped: no container)"
    exit 1
fi
ok "run -d c1 (${took}s, boot included)"
check "out=\$(husk run -d ...) returned with the container's output before it exited (out='$out')" test "$out" = hi
check "c1 is still running after run -d returned" test "$(status_of c1)" = running
sup=$(cat "$work/c1.pid")

echo "--- hooks on the host"
pre="$work/hooks/prestart.json"
if [ -s "$pre" ]; then
    ok "prestart ran"
    check "prestart state: ociVersion" test "$(jq -r .ociVersion "$pre")" != null
    check "prestart state: id" test "$(jq -r .id "$pre")" = c1
    check "prestart state: status creating" test "$(jq -r .status "$pre")" = creating
    check "prestart state: pid is the supervisor ($sup)" test "$(jq -r .pid "$pre")" = "$sup"
    check "prestart state: bundle" test "$(jq -r .bundle "$pre")" = "$bundle"
    check "prestart state: annotations" test "$(jq -r '.annotations["org.example.test"]' "$pre")" = conformance
    check "prestart argv: args[0] is argv0, then the args ($(cat "$work/hooks/prestart.argv"))" test "$(cat "$work/hooks/prestart.argv")" = "hook-argv0 $work/hook.sh prestart extra "
    check "prestart env: exactly the hook's env" test "$(grep -v '^PWD=\|^SHLVL=\|^_=' "$work/hooks/prestart.env" | sort | tr '\n' ' ')" = "HOOK_VAR=v=1 PATH=/usr/bin:/bin "
else
    bad "prestart ran" "$(ls "$work/hooks")"
fi
check "createRuntime ran with status creating" test "$(jq -r .status "$work/hooks/createRuntime.json" 2>/dev/null)" = creating
check "poststart ran with status running" test "$(jq -r .status "$work/hooks/poststart.json" 2>/dev/null)" = running
check "poststop has not run yet" test ! -e "$work/hooks/poststop.json"

echo "--- hooks in the guest, printed by the container"
cc=$(H exec c1 cat /dev/shm/cc.json 2>&1)
sc=$(H exec c1 cat /dev/shm/sc.json 2>&1)
jqs() { printf '%s' "$1" | jq -r "$2" 2>/dev/null; }
check "createContainer state: id c1 ($cc)" test "$(jqs "$cc" .id)" = c1
check "createContainer state: status creating" test "$(jqs "$cc" .status)" = creating
check "createContainer state: bundle is the host's" test "$(jqs "$cc" .bundle)" = "$bundle"
check "startContainer state: id c1 ($sc)" test "$(jqs "$sc" .id)" = c1
check "startContainer state: status created" test "$(jqs "$sc" .status)" = created
check "startContainer state: annotations" test "$(jqs "$sc" '.annotations["org.example.test"]')" = conformance
check "startContainer state: ociVersion" test "$(jqs "$sc" .ociVersion)" = "$(jq -r .ociVersion "$pre")"
check "both hooks got the init's guest pid ($(jqs "$sc" .pid))" test "$(jqs "$sc" .pid)" -gt 0 -a "$(jqs "$sc" .pid)" = "$(jqs "$cc" .pid)"

echo "--- vCPUs from linux.resources.cpu.cpus"
online=$(H exec c1 cat /sys/devices/system/cpu/online 2>&1)
check "the container sees CPUs 0-1 online (got '$online')" test "$online" = 0-1
n=$(H exec c1 nproc 2>&1)
check "nproc in the container is 2 (got '$n')" test "$n" = 2

echo "--- the host cgroup"
vmm=""
for p in /proc/[0-9]*; do
    [ "$(awk '{print $4}' "$p/stat" 2>/dev/null)" = "$sup" ] || continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q ' vmm' && vmm=${p#/proc/}
done
check "/proc/<supervisor>/cgroup names /$cg_parent/c1" grep -q ":/$cg_parent/c1\$" "/proc/$sup/cgroup"
[ -n "$vmm" ] && check "the VMM ($vmm) is in it too" grep -q ":/$cg_parent/c1\$" "/proc/$vmm/cgroup" ||
    bad "the supervisor has a VMM child"
# 256 MiB limit + 128 MiB guest overhead = 384 MiB guest; + 128 MiB host overhead.
want=$(((256 + 128 + 128) * 1024 * 1024))
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg=/sys/fs/cgroup/$cg_parent/c1
    check "memory.max is guest memory + overhead ($want; got $(cat "$cg/memory.max" 2>&1))" test "$(cat "$cg/memory.max" 2>/dev/null)" = "$want"
    check "cpu.weight from shares $shares (got $(cat "$cg/cpu.weight" 2>&1))" test "$(cat "$cg/cpu.weight" 2>/dev/null)" = $((1 + (shares - 2) * 9999 / 262142))
    usage=$(cat "$cg/memory.current" 2>/dev/null || echo 0)
    check "the cgroup is charged the VM's memory (memory.current $usage > 32 MiB)" test "$usage" -gt $((32 << 20))
else
    cg=/sys/fs/cgroup/memory/$cg_parent/c1
    check "memory.limit_in_bytes is guest memory + overhead ($want)" test "$(cat "$cg/memory.limit_in_bytes" 2>/dev/null)" = "$want"
fi

echo "--- update: the CPU controls reach the guest and the host cgroup"
H update --cpu-quota 50000 --cpu-period 100000 --cpu-share 1024 c1 2>"$work/upd.err"
check "update c1 (rc=$?: $(cat "$work/upd.err"))" test ! -s "$work/upd.err"
# (no cgroup namespace in husk spec's list: /sys/fs/cgroup is the guest's whole hierarchy)
out=$(H exec c1 sh -c 'read -r l </proc/self/cgroup; cat "/sys/fs/cgroup${l#0::}/cpu.max"' 2>&1)
check "the container's cpu.max is 50000 100000 (got '$out')" test "$out" = "50000 100000"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    check "the host cgroup's cpu.max is 50000 100000 (got $(cat "$cg/cpu.max" 2>&1))" test "$(cat "$cg/cpu.max" 2>/dev/null)" = "50000 100000"
    check "the host cgroup's cpu.weight is from shares 1024 (got $(cat "$cg/cpu.weight" 2>&1))" test "$(cat "$cg/cpu.weight" 2>/dev/null)" = $((1 + (1024 - 2) * 9999 / 262142))
else
    cpu_cg=/sys/fs/cgroup/cpu/$cg_parent/c1
    check "the host cgroup's cpu.cfs_quota_us is 50000" test "$(cat "$cpu_cg/cpu.cfs_quota_us" 2>/dev/null)" = 50000
fi

echo "--- delete without --force keeps a running container"
H delete c1 2>"$work/del.err"
rc=$?
check "delete of a running container fails (rc=$rc: $(cat "$work/del.err"))" test $rc -ne 0
check "it is still running" test "$(status_of c1)" = running
check "its supervisor still lives" test -d "/proc/$sup"
out=$(H exec c1 echo still-here 2>&1)
check "exec still works" test "$out" = still-here

echo "--- delete --force: poststop, the cgroup goes"
H delete --force c1
check "delete --force" test $? -eq 0
check "poststop ran with status stopped" test "$(jq -r .status "$work/hooks/poststop.json" 2>/dev/null)" = stopped
check "no state of c1" test ! -e "$state/c1"
check "the host cgroup is gone" test ! -e "$cg"

echo "--- boot 2: a failing createRuntime hook"
rm -f "$work/hooks/"*
jq --argjson pre "$(hook prestart)" --arg cg "/$cg_parent/c2" '
    .process.terminal = false | .process.args = ["sleep", "600"] |
    .hooks.createRuntime = [{path: "/bin/sh", args: ["sh", "-c", "echo hook-says-no >&2; exit 3"]}] |
    .hooks.poststop = [$pre | .args[2] = "poststop"] |
    .linux.cgroupsPath = $cg' "$work/spec.json" >"$bundle/config.json"
err=$(timeout -k 5 180 "$husk" --root "$state" create -b "$bundle" c2 2>&1)
rc=$?
check "create fails (rc=$rc)" test $rc -ne 0 -a $rc -ne 124
case $err in *"hooks.createRuntime[0] (/bin/sh): exit status 3: hook-says-no"*) ok "the error names the hook and quotes it" ;;
*) bad "the error names the hook and quotes it" "$err" ;; esac
check "poststop ran after the failed create" test -s "$work/hooks/poststop.json"
check "no state of c2" test ! -e "$state/c2"
check "no host cgroup of c2" test -z "$(ls -d /sys/fs/cgroup/$cg_parent/c2 /sys/fs/cgroup/*/$cg_parent/c2 2>/dev/null)"
left=$(pgrep -f -- "--root $state" || true)
check "no husk process of this root left" test -z "$left"

echo "--- boot 3: a user namespace with uid/gid mappings"
# Container root is host (guest) uid 100000; with CAP_SYS_ADMIN inside its own namespace it
# sets its hostname and mounts a tmpfs; /dev's nodes are the guest's, bind-mounted (mknod is
# refused in a user namespace), as runc does. No cgroup namespace (husk spec's list has none):
# the spec's cgroup2 mount is refused in the user namespace and the guest's hierarchy is
# bind-mounted read-only instead, as runc does.
jq '.process.terminal = false |
    .process.args = ["sh", "-c", "hostname userns-set && mount -t tmpfs t /tmp && echo ok >/tmp/x && cat /tmp/x && hostname && cat /proc/self/uid_map && echo zero | cat >/dev/null && echo null-ok; test -f /sys/fs/cgroup/cgroup.controllers && echo cgroup-ok; touch /sys/fs/cgroup/x 2>/dev/null || echo cgroup-ro"] |
    .process.capabilities.bounding += ["CAP_SYS_ADMIN"] |
    .process.capabilities.effective += ["CAP_SYS_ADMIN"] |
    .process.capabilities.permitted += ["CAP_SYS_ADMIN"] |
    .linux.namespaces = ([.linux.namespaces[] | select(.type != "cgroup")] + [{"type": "user"}]) |
    .linux.uidMappings = [{"containerID": 0, "hostID": 100000, "size": 65536}] |
    .linux.gidMappings = [{"containerID": 0, "hostID": 100000, "size": 65536}]' \
    "$work/spec.json" >"$bundle/config.json"
out=$(timeout -k 5 180 "$husk" --root "$state" run -b "$bundle" u1 2>"$work/u1.err" </dev/null)
rc=$?
check "run in a user namespace (rc=$rc)" test $rc -eq 0
[ $rc -eq 0 ] || { cat "$work/u1.err"; tail -n 20 "$state/u1/supervisor.log" 2>/dev/null; }
case $out in *"ok"*"userns-set"*) ok "the container set its hostname and wrote to the tmpfs it mounted" ;;
*) bad "the container set its hostname and wrote to the tmpfs it mounted" "$out" ;; esac
case $out in *"0 *100000 *65536"*|*"0"*"100000"*"65536"*) ok "uid_map shows 0 -> 100000 (65536)" ;;
*) bad "uid_map shows 0 -> 100000 (65536)" "$out" ;; esac
case $out in *null-ok*) ok "/dev/null works (the guest's node, bind-mounted)" ;;
*) bad "/dev/null works (the guest's node, bind-mounted)" "$out" ;; esac
case $out in *cgroup-ok*cgroup-ro*) ok "/sys/fs/cgroup without a cgroup namespace: the guest's hierarchy, bound read-only" ;;
*) bad "/sys/fs/cgroup without a cgroup namespace: the guest's hierarchy, bound read-only" "$out" ;; esac

echo "--- boot 4: a failing startContainer hook"
make_config '["sh", "-c", "echo process-ran"]' '.hooks.startContainer = [{path: "/hooks/fail.sh"}]'
timeout -k 5 180 "$husk" --root "$state" create -b "$bundle" c3 >"$work/c3.out" 2>"$work/c3.err" </dev/null
rc=$?
check "create c3 (rc=$rc: $(cat "$work/c3.err"))" test $rc -eq 0
err=$(timeout -k 5 60 "$husk" --root "$state" start c3 2>&1)
rc=$?
check "start fails (rc=$rc)" test $rc -ne 0 -a $rc -ne 124
case $err in *"hooks.startContainer[0] (/hooks/fail.sh): exit status 3: start-hook-says-no"*) ok "the error names the startContainer hook and quotes it" ;;
*) bad "the error names the startContainer hook and quotes it" "$err" ;; esac
for _ in $(seq 50); do [ "$(status_of c3)" = stopped ] && break; sleep 0.2; done
check "c3 is stopped (got $(status_of c3))" test "$(status_of c3)" = stopped
H delete c3
check "delete c3" test $? -eq 0
check "the process never ran" test -z "$(grep process-ran "$work/c3.out")"
check "no state of c3" test ! -e "$state/c3"

echo "--- boot 5: a createContainer hook past its timeout"
make_config '["true"]' '.hooks.createContainer = [{path: "/bin/sleep", args: ["sleep", "60"], timeout: 2}]'
t0=$SECONDS
err=$(timeout -k 5 180 "$husk" --root "$state" create -b "$bundle" c4 2>&1 </dev/null)
rc=$?
check "create fails (rc=$rc)" test $rc -ne 0 -a $rc -ne 124
case $err in *"hooks.createContainer[0] (/bin/sleep): timed out after 2 s (killed)"*) ok "the error names the timed-out createContainer hook" ;;
*) bad "the error names the timed-out createContainer hook" "$err" ;; esac
check "create did not wait for the hook's 60 s ($((SECONDS - t0)) s)" test $((SECONDS - t0)) -lt 55
check "no state of c4" test ! -e "$state/c4"
left=$(pgrep -f -- "--root $state" || true)
check "no husk process of this root left" test -z "$left"

echo "conformance: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
