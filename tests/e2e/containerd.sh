#!/usr/bin/env bash
# End-to-end: Debian's containerd 1.6 driving husk through containerd-shim-husk-v2
# (runtime io.containerd.husk.v2), every task in a real microVM. containerd runs with a private
# config (root, state, sockets under a temp dir on a tmpfs, the CRI plugin's husk runtime and
# restrict_oom_score_adj as docs/containerd.md gives them), bounded in time and stopped by
# PID. A busybox image built offline (busybox-static rootfs -> umoci OCI layout -> `ctr images
# import`). Checks: `ctr run --rm` (stdout, stderr, exit code, nothing left); a long-running
# task: `ctr task ls`, `exec` (output, exit code, stdin), `ps`, `pause`/`resume`, `metrics`,
# the task events (`ctr events`), `kill` (the foreground `ctr run` exits with the trap's
# status), and nothing left (no shim, supervisor, VMM, virtiofsd, husk state, rootfs mount);
# a process OOM-killed under `--memory-limit` and its TaskOOM; `ctr run -t` through tmux
# (prompt, window size, isatty, exit code); `kill -9` of a shim: the task is reported exited,
# the container removable, nothing left; a pod without CRI (sandbox and container by CRI's
# annotations: one shim, one VM, the shim in the sandbox's cgroup); runtime options:
# `--runtime-config-path` (runtimeoptions.v1.Options: husk's config file, its memory_mib seen in
# the guest; a bad path refused naming ConfigPath, nothing left) and runc's options
# (containerd.runc.v1.Options, which ctr only sends for the runtime io.containerd.runc.v2: that
# name resolves to husk's shim on this containerd's PATH, as CRI's runtime_path would do it;
# --runc-binary/--runc-root: the husk state under that root; a bad BinaryName refused);
# containerd stopped (by PID) and started again while a shim serves a running task: the task
# still RUNNING, exec, kill with its TaskExit reaching the new containerd, delete, nothing left.
# Nine guest boots.
#
# usage: tests/e2e/containerd.sh [--prepare]
#   --prepare  build husk and the shim (release) and the agent initramfs on the host
#   env HUSK_KERNEL (tests/run-all exports it), HUSK_BIN (default target/release/husk; the
#   shim containerd-shim-husk-v2 is taken from the same directory), HUSK_AGENT_INITRD
#   (default target/guest-image/initramfs.cpio).
#
# Needs root, containerd, umoci and tmux (tests/setup installs them) and a KVM that boots
# stock kernels: run it through tests/with-kvm.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
bindir="$(dirname "$husk")"
shim="$bindir/containerd-shim-husk-v2"
RT=io.containerd.husk.v2

if [ "${1:-}" = --prepare ]; then
    exec "$root/tests/e2e/runc-cli.sh" --prepare
fi

export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
for f in "$husk" "$shim" "$HUSK_KERNEL" "$HUSK_INITRD" /bin/busybox; do
    [ -e "$f" ] || { echo "containerd: $f missing (run tests/e2e/containerd.sh --prepare on the host)"; exit 1; }
done
for c in containerd ctr umoci tmux; do
    command -v $c >/dev/null || { echo "containerd: $c not installed (tests/setup installs it)"; exit 1; }
done

work="$(mktemp -d)"
cd_dir="$work/containerd"
# overlayfs snapshots need a real filesystem for their upper dirs (the KVM test host's root is
# itself an overlay): a private tmpfs for containerd's root and state.
mkdir -p "$cd_dir" && mount -t tmpfs tmpfs "$cd_dir" ||
    { echo "containerd: cannot mount a tmpfs for containerd"; exit 1; }
sock="$cd_dir/containerd.sock"
ns=husk-e2e
export HUSK_SHIM_ROOT="$cd_dir/husk"
C() { timeout -k 5 "${CTR_TIMEOUT:-180}" ctr --address "$sock" -n "$ns" "$@"; }
H() { "$husk" --root "$HUSK_SHIM_ROOT" "$@"; }
cdpid=""
cleanup() {
    tmux kill-session -t husk-ctr 2>/dev/null
    if [ -n "$cdpid" ]; then
        for t in $(C task ls -q 2>/dev/null); do C task kill -s KILL "$t" >/dev/null 2>&1; done
        sleep 1
        for t in $(C task ls -q 2>/dev/null); do C task rm -f "$t" >/dev/null 2>&1; done
        for c in $(C c ls -q 2>/dev/null); do C c rm "$c" >/dev/null 2>&1; done
    fi
    for id in $(H list -q 2>/dev/null); do H delete --force "$id" >/dev/null 2>&1; done
    for id in $("$husk" --root "$work/runc-root/$ns" list -q 2>/dev/null); do
        "$husk" --root "$work/runc-root/$ns" delete --force "$id" >/dev/null 2>&1
    done
    # Shims of this run only (their -address is this run's socket).
    for p in $(pgrep -f -- "[c]ontainerd-shim-husk-v2 .*-address $sock" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    if [ -n "$cdpid" ]; then
        kill "$cdpid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$cdpid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$cdpid" 2>/dev/null
    fi
    grep -o " $cd_dir[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
    umount -l "$cd_dir" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

. "$root/tests/e2e/lib/harness.sh"
wait_for() { # SECONDS COMMAND...
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.3
    done
}
checkd() { # like check, but a failure returns 1 (so that `|| details` runs)
    local name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; return 1; fi
}
is() { # NAME GOT WANT: a check that shows what it got on failure
    if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "got '${2:0:300}', want '$3'"; fi
}
task_status() { C task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $3 }'; }
task_pid() { C task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $2 }'; }
logs() { # what the shim and husk logged about a container, for a failure
    local b="$cd_dir/state/io.containerd.runtime.v2.task/$ns/$1"
    tail -n 12 "$b/husk.log" "$b/shim.log" "$HUSK_SHIM_ROOT/$1/supervisor.log" "$HUSK_SHIM_ROOT/$1/console.log" 2>/dev/null | sed 's/^/     /'
    grep -i -E "husk|shim" "$work/containerd.log" | tail -n 8 | sed 's/^/     /'
    # A lost sandbox's supervisor.log and console.log, which the shim logs before the delete.
    grep -A 52 "$1: sandbox lost" "$work/containerd.log" | tail -n 60 | sed 's/^/     /'
}
# nothing_left ID SUPERVISOR_PID: no process, state or mount of container ID remains.
nothing_left() {
    local id=$1 spid=$2
    check "$id: supervisor $spid gone" wait_for 20 bash -c "! kill -0 $spid 2>/dev/null"
    check "$id: no VMM process" bash -c "! pgrep -f '^/proc/self/exe vmm' >/dev/null"
    check "$id: no virtiofsd" bash -c "! pgrep -x virtiofsd >/dev/null"
    check "$id: no husk state" wait_for 10 test ! -e "$HUSK_SHIM_ROOT/$id"
    check "$id: no shim" wait_for 10 bash -c "! pgrep -f -- '[c]ontainerd-shim-husk-v2 .*-address $sock' >/dev/null"
    check "$id: no rootfs mount" bash -c "! grep -q '/$id/rootfs ' /proc/self/mounts"
}

echo "--- containerd (private config, CRI plugin with the husk runtime)"
mkdir -p "$cd_dir/root" "$cd_dir/state" "$cd_dir/opt"
cat >"$work/config.toml" <<EOF
version = 2
root = "$cd_dir/root"
state = "$cd_dir/state"
[grpc]
  address = "$sock"
[debug]
  level = "debug"
[plugins."io.containerd.internal.v1.opt"]
  path = "$cd_dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.husk]
      runtime_type = "$RT"
EOF
# runc's runtime name resolves to husk's shim (for the runc options checks): this containerd
# runs no runc.
mkdir -p "$work/alias" && ln -s "$shim" "$work/alias/containerd-shim-runc-v2"
PATH="$work/alias:$bindir:$PATH" timeout -k 10 1200 containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
cdpid=$!
if ! wait_for 30 C version >/dev/null 2>&1; then
    bad "containerd starts" "$(tail -n 20 "$work/containerd.log")"
    echo "containerd: $passed passed, $failed failed"
    exit 1
fi
ok "containerd starts ($(C version 2>/dev/null | sed -n 's/^ *Version: *//p' | head -n1))"

echo "--- image (offline busybox through umoci)"
img="$work/img"
rootfs="$work/rootfs"
busybox_rootfs "$rootfs" sh echo cat sleep ls true false stty tty id env ps hostname dd &&
    umoci init --layout "$img" &&
    umoci new --image "$img:latest" &&
    umoci unpack --image "$img:latest" "$work/bundle" >/dev/null &&
    cp -a "$rootfs/." "$work/bundle/rootfs/" &&
    umoci repack --image "$img:latest" "$work/bundle" &&
    umoci config --image "$img:latest" --config.cmd sh --config.env PATH=/bin &&
    tar -C "$img" -cf "$work/busybox.tar" . ||
    { echo "containerd: cannot build the image"; exit 1; }
C images import --base-name localhost/busybox "$work/busybox.tar" >/dev/null 2>"$work/import.err"
checkd "ctr images import of the umoci layout" bash -c "ctr --address '$sock' -n $ns images ls -q | grep -qx localhost/busybox:latest" ||
    sed 's/^/     /' "$work/import.err"
image=localhost/busybox:latest

echo "--- ctr run --rm (boot 1)"
out=$(C run --rm --runtime $RT $image r1 sh -c 'echo out; echo err >&2; exit 3' </dev/null 2>"$work/r1.err")
rc=$?
checkd "run: exit code (3)" test $rc -eq 3 || { cat "$work/r1.err"; logs r1; }
check "run: stdout" test "$out" = out
check "run: stderr" grep -qx err "$work/r1.err"
check "run --rm: no container left" bash -c "! ctr --address '$sock' -n $ns c ls -q | grep -qx r1"
check "r1: no husk state" test ! -e "$HUSK_SHIM_ROOT/r1"
check "r1: no shim" wait_for 10 bash -c "! pgrep -f -- '[c]ontainerd-shim-husk-v2 .*-id r1 ' >/dev/null"

echo "--- a running task: exec, ps, pause/resume, metrics, kill (boot 2)"
C events >"$work/events.out" 2>&1 &
evpid=$!
C run --runtime $RT $image c1 sh -c "trap 'exit 42' TERM; echo started; while :; do sleep 1; done" \
    </dev/null >"$work/c1.out" 2>"$work/c1.err" &
c1run=$!
t0=$SECONDS
if ! wait_for 120 bash -c "grep -q started '$work/c1.out'"; then
    bad "c1 runs" "$(cat "$work/c1.err")"
    logs c1
else
    ok "c1 runs (its output reaches ctr after $((SECONDS - t0)) s)"
fi
check "task ls: RUNNING" test "$(task_status c1)" = RUNNING
spid=$(task_pid c1)
check "the task's pid is the supervisor's" bash -c "grep -q supervise /proc/$spid/cmdline"
out=$(C task exec --exec-id e1 c1 sh -c 'echo in-exec; exit 4' </dev/null 2>&1)
rc=$?
check "exec: exit code (4)" test $rc -eq 4
is "exec: output" "$out" in-exec
out=$(echo piped | C task exec --exec-id e2 c1 cat 2>&1)
is "exec: stdin reaches the process (and its EOF)" "$out" piped
out=$(C task exec --exec-id e3 c1 sh -c 'echo $PATH; test -x /bin/busybox && echo rootfs' 2>&1)
is "exec: the container's env and rootfs" "$(echo $out)" "/bin rootfs"
# Kill of one exec: its process is in the VM, signalled by the id husk gave it there.
C task exec --exec-id e4 c1 sleep 300 </dev/null >/dev/null 2>&1 &
e4run=$!
for _ in $(seq 60); do
    C task exec --exec-id probe c1 /bin/busybox pgrep -f 'sleep 300' >/dev/null 2>&1 && break
    sleep 1
done
C task kill --exec-id e4 --signal SIGKILL c1 >"$work/e4.kill" 2>&1
check "kill --exec-id: accepted" test $? -eq 0 || cat "$work/e4.kill"
end=$((SECONDS + 30))
while kill -0 $e4run 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 1; done
wait $e4run
rc=$?
check "kill --exec-id SIGKILL: the exec ends with 137 ($rc)" test $rc -eq 137
check "kill --exec-id: the container's init runs on" test "$(task_status c1)" = RUNNING
ps_out=$(C task ps c1 2>&1)
checkd "task ps lists processes" bash -c "[ \$(grep -cE '^[0-9]+' <<<'$ps_out') -ge 1 ]" || echo "     $ps_out"
C task pause c1
check "pause: PAUSED" test "$(task_status c1)" = PAUSED
C task resume c1
check "resume: RUNNING" test "$(task_status c1)" = RUNNING
m=$(C task metrics --format json c1 2>&1)
checkd "metrics: cgroup v2 numbers from the guest (pids, memory, cpu)" python3 -c '
import json, sys
m = json.loads(sys.argv[1])
d = m.get("Data") or m.get("data") or m
assert d["pids"]["current"] >= 1, d
assert d["memory"]["usage"] > 0, d
assert d["cpu"]["usage_usec"] > 0, d' "$m" || echo "     ${m:0:400}"
for t in create start exec-added exec-started paused resumed; do
    check "event /tasks/$t published" grep -q "/tasks/$t .*c1" "$work/events.out"
done
C task kill c1
wait $c1run
rc=$?
checkd "kill (SIGTERM): the task exits through its trap (42)" test $rc -eq 42 || { cat "$work/c1.err"; logs c1; }
C c rm c1
for t in exit delete; do
    check "event /tasks/$t published" wait_for 10 grep -q "/tasks/$t .*c1" "$work/events.out"
done
check "container removed" bash -c "! ctr --address '$sock' -n $ns c ls -q | grep -qx c1"
nothing_left c1 "$spid"

echo "--- OOM under --memory-limit (boot 3)"
out=$(C run --rm --runtime $RT --memory-limit 67108864 $image o1 \
    sh -c 'dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null; echo dd-exit=$?' </dev/null 2>&1)
is "a process over the 64 MiB limit is OOM-killed (137)" "$out" dd-exit=137
checkd "TaskOOM published (ctr events: /tasks/oom for o1)" wait_for 20 grep -q '/tasks/oom.*"o1"' "$work/events.out" ||
    { grep -E '/tasks/.*o1' "$work/events.out" | tail -n 5 | sed 's/^/     /'; logs o1; }
kill $evpid 2>/dev/null

echo "--- ctr run -t through tmux (boot 4)"
cat >"$work/it.sh" <<EOF
#!/bin/sh
PATH='$PATH' ctr --address '$sock' -n $ns run -t --rm --runtime $RT $image t1 sh
echo "ctr-exit=\$?" >'$work/it.rc'
EOF
chmod +x "$work/it.sh"
tmux new-session -d -s husk-ctr -x 120 -y 40 "$work/it.sh" \; set-option -t husk-ctr remain-on-exit on
# capture-pane drops the prompt's trailing blank: "/ #".
t0=$SECONDS
end=$((SECONDS + 120))
until tmux capture-pane -p -t husk-ctr 2>/dev/null | grep -q '^/ #'; do
    [ $SECONDS -lt $end ] || break
    sleep 1
done
checkd "run -t: the shell's prompt ($((SECONDS - t0)) s)" bash -c "tmux capture-pane -p -t husk-ctr | grep -q '^/ #'" ||
    tmux capture-pane -p -t husk-ctr 2>/dev/null | grep -v '^$' | head -n 4 | sed 's/^/     pane: /'
tmux send-keys -t husk-ctr 'echo tty-$((6 * 7)); stty size; test -t 0 && echo isatty' Enter
sleep 3
tmux send-keys -t husk-ctr 'exit 5' Enter
end=$((SECONDS + 60))
until [ -s "$work/it.rc" ] || [ $SECONDS -ge $end ]; do sleep 1; done
pane=$(tmux capture-pane -p -t husk-ctr 2>/dev/null; cat "$work/it.rc" 2>/dev/null)
check "run -t: typed input runs (echo)" grep -q '^tty-42' <<<"$pane"
check "run -t: the window size reaches the guest (40 120)" grep -q '^40 120' <<<"$pane"
check "run -t: stdin is a terminal in the guest" grep -q '^isatty' <<<"$pane"
checkd "run -t: exit code (5)" grep -qx ctr-exit=5 "$work/it.rc" || { echo "$pane" | tail -n 8 | sed 's/^/     /'; logs t1; }
tmux kill-session -t husk-ctr 2>/dev/null
check "t1: no husk state" wait_for 10 test ! -e "$HUSK_SHIM_ROOT/t1"

echo "--- kill -9 of the shim (boot 5)"
C run -d --runtime $RT $image k1 sleep 100000 </dev/null >/dev/null 2>"$work/k1.err"
checkd "k1 runs" wait_for 60 bash -c "[ \"\$(ctr --address '$sock' -n $ns task ls | awk '\$1 == \"k1\" { print \$3 }')\" = RUNNING ]" ||
    { cat "$work/k1.err"; logs k1; }
spid=$(task_pid k1)
shimpid=$(pgrep -f -- "[c]ontainerd-shim-husk-v2 .*-id k1 " | head -n1)
check "k1's shim found" test -n "$shimpid"
[ -n "$shimpid" ] && kill -9 "$shimpid"
check "after kill -9 of the shim: the task is reported exited" \
    wait_for 30 bash -c "s=\$(ctr --address '$sock' -n $ns task ls | awk '\$1 == \"k1\" { print \$3 }'); [ \"\$s\" != RUNNING ] && [ \"\$s\" != PAUSED ]"
C task rm -f k1 >/dev/null 2>&1
C c rm k1
check "the container is removable" bash -c "! ctr --address '$sock' -n $ns c ls -q | grep -qx k1"
nothing_left k1 "$spid"
grep -E 'cleaning up after shim disconnected.*id=k1' "$work/containerd.log" | head -n 1 | sed 's/^/     /'

echo "--- a pod without CRI: a sandbox and a container in its VM through CRI's annotations (boot 6)"
A=(--annotation io.kubernetes.cri.sandbox-id=s1)
C run -d --runtime $RT --cgroup /husk-e2e/s1 "${A[@]}" --annotation io.kubernetes.cri.container-type=sandbox \
    $image s1 sleep 100000 </dev/null >/dev/null 2>"$work/s1.err"
checkd "sandbox s1 runs" wait_for 60 bash -c "[ \"\$(ctr --address '$sock' -n $ns task ls | awk '\$1 == \"s1\" { print \$3 }')\" = RUNNING ]" ||
    { cat "$work/s1.err"; logs s1; }
spid=$(task_pid s1)
C run --runtime $RT "${A[@]}" --annotation io.kubernetes.cri.container-type=container \
    $image p1 sh -c "trap 'exit 43' TERM; echo in-pod; while :; do sleep 1; done" \
    </dev/null >"$work/p1.out" 2>"$work/p1.err" &
p1run=$!
checkd "pod container p1 runs (its output reaches ctr)" wait_for 60 grep -q in-pod "$work/p1.out" ||
    { cat "$work/p1.err"; logs p1; }
shims=$(pgrep -f -- "[c]ontainerd-shim-husk-v2 .*-address $sock" | wc -l)
is "one shim serves the pod" "$shims" 1
shimpid=$(pgrep -f -- "[c]ontainerd-shim-husk-v2 .*-address $sock" | head -n1)
is "the shim lives in the sandbox's host cgroup" "$(cat /proc/$shimpid/cgroup 2>/dev/null)" "0::/husk-e2e/s1"
b1=$(C task exec --exec-id b1 s1 cat /proc/sys/kernel/random/boot_id 2>&1)
b2=$(C task exec --exec-id b2 p1 cat /proc/sys/kernel/random/boot_id 2>&1)
check "p1 runs in s1's VM (one guest boot id)" test -n "$b1" -a "$b1" = "$b2"
is "one VMM for the pod" "$(pgrep -f '^/proc/self/exe vmm' | wc -l)" 1
m=$(C task metrics --format json p1 2>&1)
checkd "metrics of the pod container" python3 -c '
import json, sys
m = json.loads(sys.argv[1])
d = m.get("Data") or m.get("data") or m
assert d["pids"]["current"] >= 1, d' "$m" || echo "     ${m:0:400}"
C task kill p1
wait $p1run
rc=$?
checkd "kill p1 (SIGTERM): its trap's status (43)" test $rc -eq 43 || { cat "$work/p1.err"; logs p1; }
C c rm p1
check "s1 still runs after p1 is gone" test "$(task_status s1)" = RUNNING
C task kill -s KILL s1
checkd "s1 stops" wait_for 30 bash -c "[ \"\$(ctr --address '$sock' -n $ns task ls | awk '\$1 == \"s1\" { print \$3 }')\" = STOPPED ]" || logs s1
C task rm s1 >/dev/null
C c rm s1
check "s1 removed" bash -c "! ctr --address '$sock' -n $ns c ls -q | grep -qx s1"
nothing_left s1 "$spid"
check "p1: no husk state" test ! -e "$HUSK_SHIM_ROOT/p1"
check "the pod's host cgroup is gone" test ! -e /sys/fs/cgroup/husk-e2e/s1

echo "--- runtime options: --runtime-config-path, husk's config file (boot 7)"
printf 'memory_mib = 384\n' >"$work/husk-config.toml"
out=$(C run --rm --runtime $RT --runtime-config-path "$work/husk-config.toml" $image cfg1 \
    sh -c 'while read k v u; do [ "$k" = MemTotal: ] && echo $((v / 1024)); done </proc/meminfo' \
    </dev/null 2>"$work/cfg1.err")
# memory_mib = 384 against the default 256: the guest kernel's MemTotal lies between.
checkd "ConfigPath: the guest has the config file's memory (MemTotal ${out:-?} MiB, memory_mib 384)" \
    bash -c "[ '${out:-0}' -gt 300 ] && [ '${out:-0}' -le 384 ]" || { cat "$work/cfg1.err"; logs cfg1; }
check "cfg1: no husk state" wait_for 10 test ! -e "$HUSK_SHIM_ROOT/cfg1"
C run --rm --runtime $RT --runtime-config-path "$work/no-such.toml" $image bad1 true </dev/null >/dev/null 2>"$work/bad1.err"
rc=$?
checkd "a missing ConfigPath is refused, naming the option" \
    bash -c "[ $rc -ne 0 ] && grep -q 'ConfigPath.*no-such.toml' '$work/bad1.err'" || cat "$work/bad1.err"
C c rm bad1 >/dev/null 2>&1
check "bad1: nothing left (state, rootfs mount, shim)" wait_for 10 bash -c \
    "! test -e '$HUSK_SHIM_ROOT/bad1' && ! grep -q '/bad1/rootfs ' /proc/self/mounts && ! pgrep -f -- '[c]ontainerd-shim-.* -id bad1 ' >/dev/null"

echo "--- runtime options: runc's (BinaryName, Root) (boot 8)"
rroot="$work/runc-root"
RC=(--runtime io.containerd.runc.v2 --runc-binary "$husk" --runc-root "$rroot")
C run -d "${RC[@]}" $image rc1 sleep 100000 </dev/null >/dev/null 2>"$work/rc1.err"
checkd "rc1 runs" wait_for 60 bash -c "[ \"\$(ctr --address '$sock' -n $ns task ls | awk '\$1 == \"rc1\" { print \$3 }')\" = RUNNING ]" ||
    { cat "$work/rc1.err"; logs rc1; }
spid=$(task_pid rc1)
check "Root: husk's state is under <Root>/<namespace>" test -d "$rroot/$ns/rc1"
check "Root: nothing under the default root" test ! -e "$HUSK_SHIM_ROOT/rc1"
is "Root: husk state finds rc1 there" "$("$husk" --root "$rroot/$ns" state rc1 2>&1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>&1)" running
rb="$cd_dir/state/io.containerd.runtime.v2.task/$ns/rc1"
is "the bundle's husk-shim.json records Root and BinaryName" \
    "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["root"], r["binary"])' "$rb/husk-shim.json" 2>&1)" "$rroot/$ns $husk"
out=$(C task exec --exec-id x1 rc1 echo exec-ok 2>&1)
is "exec in a task with runc options" "$out" exec-ok
C task kill -s KILL rc1
checkd "rc1 stops" wait_for 30 bash -c "[ \"\$(ctr --address '$sock' -n $ns task ls | awk '\$1 == \"rc1\" { print \$3 }')\" = STOPPED ]" || logs rc1
C task rm rc1 >/dev/null
C c rm rc1
check "rc1: supervisor gone" wait_for 20 bash -c "! kill -0 $spid 2>/dev/null"
check "rc1: no husk state under Root" wait_for 10 test ! -e "$rroot/$ns/rc1"
check "rc1: no shim" wait_for 10 bash -c "! pgrep -f -- '[c]ontainerd-shim-husk-v2 .*-address $sock' >/dev/null"
C run --rm --runtime io.containerd.runc.v2 --runc-binary "$work/husk-config.toml" $image bad2 true </dev/null >/dev/null 2>"$work/bad2.err"
rc=$?
checkd "a BinaryName that is not executable is refused, naming the option" \
    bash -c "[ $rc -ne 0 ] && grep -q 'BinaryName.*not executable' '$work/bad2.err'" || cat "$work/bad2.err"
C c rm bad2 >/dev/null 2>&1
check "bad2: nothing left (rootfs mount, shim)" wait_for 10 bash -c \
    "! grep -q '/bad2/rootfs ' /proc/self/mounts && ! pgrep -f -- '[c]ontainerd-shim-.* -id bad2 ' >/dev/null"

echo "--- containerd restarts while a shim serves a running task (boot 9)"
C run -d --runtime $RT $image cr1 sh -c "trap 'exit 44' TERM; while :; do sleep 1; done" </dev/null >/dev/null 2>"$work/cr1.err"
checkd "cr1 runs" wait_for 60 bash -c "[ \"\$(ctr --address '$sock' -n $ns task ls | awk '\$1 == \"cr1\" { print \$3 }')\" = RUNNING ]" ||
    { cat "$work/cr1.err"; logs cr1; }
spid=$(task_pid cr1)
out=$(C task exec --exec-id before cr1 echo before-restart 2>&1)
is "exec before the restart" "$out" before-restart
shimpid=$(pgrep -f -- "[c]ontainerd-shim-husk-v2 .*-id cr1 " | head -n1)
kill "$cdpid"
for _ in $(seq 100); do kill -0 "$cdpid" 2>/dev/null || break; sleep 0.2; done
check "containerd stopped (by its PID)" bash -c "! kill -0 $cdpid 2>/dev/null"
wait "$cdpid" 2>/dev/null
check "the shim serves on while containerd is down" kill -0 "${shimpid:-0}"
check "the task's supervisor runs on" kill -0 "${spid:-0}"
PATH="$work/alias:$bindir:$PATH" timeout -k 10 1200 containerd --config "$work/config.toml" >>"$work/containerd.log" 2>&1 &
cdpid=$!
checkd "containerd starts again with the same config" wait_for 30 bash -c "ctr --address '$sock' version >/dev/null 2>&1" ||
    tail -n 20 "$work/containerd.log" | sed 's/^/     /'
C events >"$work/events2.out" 2>&1 &
ev2=$!
checkd "after the restart: task ls shows cr1 RUNNING" wait_for 30 bash -c "[ \"\$(ctr --address '$sock' -n $ns task ls | awk '\$1 == \"cr1\" { print \$3 }')\" = RUNNING ]" ||
    { C task ls 2>&1 | sed 's/^/     /'; grep -iE 'cr1|shim' "$work/containerd.log" | tail -n 10 | sed 's/^/     /'; }
is "after the restart: the same task pid" "$(task_pid cr1)" "$spid"
out=$(C task exec --exec-id after cr1 echo after-restart 2>&1)
is "after the restart: exec" "$out" after-restart
out=$(echo piped | C task exec --exec-id after2 cr1 cat 2>&1)
is "after the restart: exec with stdin" "$out" piped
C task kill cr1
checkd "after the restart: kill stops cr1" wait_for 30 bash -c "[ \"\$(ctr --address '$sock' -n $ns task ls | awk '\$1 == \"cr1\" { print \$3 }')\" = STOPPED ]" || logs cr1
checkd "after the restart: the shim's TaskExit reaches containerd (ctr events)" wait_for 20 grep -q '/tasks/exit.*cr1' "$work/events2.out" ||
    grep -iE 'event|forward' "$work/containerd.log" | grep -i cr1 | tail -n 5 | sed 's/^/     /'
C task rm cr1 >"$work/cr1.rm" 2>&1
check "after the restart: task delete" test $? -eq 0 || cat "$work/cr1.rm"
C c rm cr1
check "after the restart: container removed" bash -c "! ctr --address '$sock' -n $ns c ls -q | grep -qx cr1"
kill $ev2 2>/dev/null
nothing_left cr1 "$spid"

echo "containerd: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
