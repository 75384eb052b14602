#!/usr/bin/env bash
# End-to-end: pods through the husk CLI (docs/pods.md), one real microVM. A sandbox container
# (busybox: httpd on 127.0.0.1:8080, then sleep; hostname podhost; new IPC and UTS namespaces,
# the guest's network) boots the VM; pod containers are created in it with
# `husk create --sandbox`, their specs sharing the sandbox's network, IPC and UTS namespaces
# through /proc/<sandbox pid>/ns/... paths, as CRI gives them. Checked: a pod container's
# output reaches the caller's stdout, its writes to its rootfs (an overlay mounted after the
# sandbox started, as the shim's), to a tmpfs volume mounted after it too and to a read-write
# bind mount are on the host, a read-only bind refuses writes, it fetches the sandbox's page over
# 127.0.0.1, it has the sandbox's hostname and namespaces; state (created, running, paused,
# stopped, the stand-in's pid), start, exec, ps, pause/resume, update, events --stats and kill
# address it; its stand-in sits in its linux.cgroupsPath cgroup; a terminal pod container
# through --console-socket; its exit code comes back through its stand-in (the pid file's process, reaped
# by a subreaper here, as the shim does) and `state`; delete refuses a running one, then
# leaves no mount in the supervisor's namespace and no state; bad --sandbox input is refused
# naming it with nothing left behind; `delete -f` of the sandbox with a pod container still
# running leaves no VMM, virtiofsd, mount or sandbox state, the pod container reads stopped
# (stand-in status 255) and its own delete removes it. One guest boot.
#
# usage: tests/e2e/pod.sh [--prepare]
#   --prepare  as tests/e2e/runc-cli.sh --prepare (husk release build, agent initramfs)
#   env HUSK_KERNEL, HUSK_BIN (default target/release/husk), HUSK_AGENT_INITRD.
#
# Needs root, virtiofsd and a KVM that boots stock kernels: run it through tests/with-kvm
# (tests/e2e/run pod.sh).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
applets="sh echo cat sleep hostname httpd wget readlink touch test mkdir stty tty"
recvtty="$root/tests/e2e/recvtty.py"
cg=husk-pod-e2e-$$

if [ "${1:-}" = --prepare ]; then
    exec "$root/tests/e2e/runc-cli.sh" --prepare
fi

export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
for f in "$husk" "$HUSK_KERNEL" "$HUSK_INITRD" /bin/busybox; do
    [ -e "$f" ] || { echo "pod: $f missing (run tests/e2e/pod.sh --prepare on the host)"; exit 1; }
done

work="$(mktemp -d)"
state="$work/root"
reapers=()
cleanup() {
    # Pod containers first (their delete needs the sandbox's namespace), then the rest.
    for id in c2 c3 c4 c5 c7; do "$husk" --root "$state" delete -f "$id" >/dev/null 2>&1; done
    delete_all "$husk" "$state"
    for p in "${reapers[@]}"; do kill "$p" 2>/dev/null; done
    umount "$work/c2/rootfs" "$work/c2fs" "$work/late" 2>/dev/null
    rmdir "/sys/fs/cgroup/$cg" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

. "$root/tests/e2e/lib/harness.sh"
H() { "$husk" --root "$state" "$@"; }
status_of() { H state "$1" 2>/dev/null | sed -n 's/.*"status": "\(.*\)".*/\1/p'; }
pid_of() { H state "$1" 2>/dev/null | sed -n 's/.*"pid": \([0-9]*\).*/\1/p'; }
wait_for() { # SECONDS COMMAND...: until COMMAND succeeds
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.3
    done
}
logs() { # ID: husk's logs, for a failure
    tail -n 25 "$state/$1/supervisor.log" "$state/$1/console.log" 2>/dev/null | sed 's/^/     /'
}
# sandbox_alive SECTION: the sections below need sandbox sb running; when its VM was lost,
# say so with its logs and end the suite, instead of sitting out every later check's timeout
# (a lost sandbox made one CI attempt run into the 600 s limit).
sandbox_alive() {
    [ "$(status_of sb)" = running ] && return 0
    bad "the sandbox still runs before: $1" "$(H state sb 2>&1 | tr -d '\n')"
    logs sb
    echo "pod: $passed passed, $failed failed (ended early: the sandbox is gone)"
    exit 1
}
checkv() { # NAME DUMP COMMAND...: check; on a failure, eval DUMP
    local name=$1 dump=$2
    shift 2
    if "$@"; then ok "$name"; else
        bad "$name"
        eval "$dump"
    fi
}
# bundle DIR SCRIPT PATCH_PY: a busybox bundle running `sh -c SCRIPT`, config.json from
# `husk spec` without a terminal, then PATCH_PY (python statements on `spec`).
bundle() {
    busybox_rootfs "$1/rootfs" $applets &&
        (cd "$1" && H spec) &&
        python3 - "$1/config.json" "$2" "$3" <<'EOF'
import json, sys
path, script, patch = sys.argv[1], sys.argv[2], sys.argv[3]
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["root"]["readonly"] = False
spec["process"]["args"] = ["sh", "-c", script]
exec(patch)
json.dump(spec, open(path, "w"), indent=1)
EOF
}
# The pod container's namespaces as CRI gives them: the sandbox's network, IPC and UTS by
# /proc path (no hostname of its own: the UTS namespace is joined).
pod_patch() { # SANDBOX_PID [EXTRA_PY]
    cat <<EOF
ns = [n for n in spec["linux"]["namespaces"] if n["type"] not in ("network", "ipc", "uts")]
ns += [{"type": t, "path": "/proc/$1/ns/" + p} for t, p in (("network", "net"), ("ipc", "ipc"), ("uts", "uts"))]
spec["linux"]["namespaces"] = ns
spec.pop("hostname", None)
${2:-}
EOF
}
# reap PIDFILE OUT -- COMMAND...: runs COMMAND (a husk create that leaves a stand-in) as a
# child subreaper, then waits for the pid in PIDFILE and writes its exit status to OUT (as
# the shim reaps what husk leaves behind). Backgrounded by the caller.
reap() {
    python3 - "$@" <<'EOF'
import ctypes, os, subprocess, sys
pidfile, out, cmd = sys.argv[1], sys.argv[2], sys.argv[4:]
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
rc = subprocess.call(cmd, stdin=subprocess.DEVNULL)
if rc != 0:
    open(out, "w").write("create-failed %d\n" % rc)
    sys.exit(1)
pid = int(open(pidfile).read())
open(out + ".created", "w").write("%d\n" % pid)
while True:
    got, status = os.waitpid(-1, 0)
    if got == pid:
        code = os.waitstatus_to_exitcode(status)
        open(out, "w").write("%d\n" % (code if code >= 0 else 128 - code))
        break
EOF
}

mkdir -p "$work/vol" "$work/ro" "$state"
echo read-only-data >"$work/ro/data"

echo "--- the sandbox"
script_sb='mkdir -p /www && echo sandbox-page >/www/index.html && httpd -p 127.0.0.1:8080 -h /www && echo sandbox-up && exec sleep 600'
bundle "$work/sb" "$script_sb" '
spec["hostname"] = "podhost"
spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
' || { echo "pod: cannot build the sandbox bundle"; exit 1; }
H create --bundle "$work/sb" --pid-file "$work/sb.pid" sb </dev/null >"$work/sb.out" 2>&1
checkv "sandbox created" 'cat "$work/sb.out"; logs sb' test "$(status_of sb)" = created
H start sb
checkv "sandbox running" 'logs sb' wait_for 60 grep -q sandbox-up "$work/sb.out"
sbpid=$(cat "$work/sb.pid")

echo "--- pod container c2"
script_c2='echo pod-out; hostname; echo pod-rootfs >/pod-file.txt; echo pod-volume >/vol/written.txt
if touch /ro/x 2>/dev/null; then echo ro-writable; else echo ro-refused; fi >/vol/ro.txt
wget -q -O - http://127.0.0.1:8080/index.html >/vol/page.txt 2>&1
echo late-write >/late/written.txt
echo pod-done; exec sleep 600'
bundle "$work/c2" "$script_c2" "$(pod_patch "$sbpid" "
spec['mounts'] += [
  {'destination': '/vol', 'type': 'bind', 'source': '$work/vol', 'options': ['rbind']},
  {'destination': '/ro', 'type': 'bind', 'source': '$work/ro', 'options': ['rbind', 'ro']},
  {'destination': '/late', 'type': 'bind', 'source': '$work/late', 'options': ['rbind']},
]
spec['linux']['cgroupsPath'] = '/$cg/c2'")" || { echo "pod: cannot build c2's bundle"; exit 1; }
# Mounts made after the sandbox's supervisor started, which its namespace never saw: c2's
# rootfs as an overlay (as the shim's snapshotter mounts it) and a tmpfs volume (kubelet's).
# The layers on a tmpfs: the test host's /tmp is itself an overlay, which cannot be an upper.
mkdir -p "$work/c2fs" "$work/late"
mount -t tmpfs c2fs "$work/c2fs" && mv "$work/c2/rootfs" "$work/c2fs/lower" &&
    mkdir -p "$work/c2/rootfs" "$work/c2fs/upper" "$work/c2fs/work" &&
    mount -t overlay overlay \
        -o "lowerdir=$work/c2fs/lower,upperdir=$work/c2fs/upper,workdir=$work/c2fs/work" "$work/c2/rootfs" &&
    mount -t tmpfs late "$work/late" || { echo "pod: cannot mount c2's overlay or tmpfs"; exit 1; }
reap "$work/c2.pid" "$work/c2.exit" -- "$husk" --root "$state" create --sandbox sb \
    --bundle "$work/c2" --pid-file "$work/c2.pid" c2 </dev/null >"$work/c2.out" 2>&1 &
reapers+=($!)
checkv "create --sandbox returns" 'cat "$work/c2.out" "$work/c2.exit" 2>/dev/null; logs sb' \
    wait_for 120 test -e "$work/c2.exit.created"
checkv "c2 created" 'H state c2; logs sb' test "$(status_of c2)" = created
c2pid=$(cat "$work/c2.pid" 2>/dev/null)
check "c2's pid is its stand-in (pid file = state pid, a husk process)" \
    bash -c "[ -n '$c2pid' ] && [ '$(pid_of c2)' = '$c2pid' ] && grep -q husk /proc/$c2pid/cmdline"
check "c2's rootfs is in the supervisor's namespace only" \
    bash -c "grep -qF '$state/sb/share/c2/rootfs' /proc/$sbpid/mountinfo && ! grep -qF '$state/sb/share/c2' /proc/self/mountinfo"
check "list shows c2" bash -c "'$husk' --root '$state' list -q | grep -qx c2"
H start c2
checkv "c2's output reaches the caller" 'cat "$work/c2.out"; logs sb' wait_for 60 grep -q pod-done "$work/c2.out"
checkv "c2 running" 'H state c2' test "$(status_of c2)" = running
check "c2's hostname is the sandbox's (UTS shared)" grep -qx podhost "$work/c2.out"
check "c2's rootfs write is on the host (its overlay's upper layer)" grep -qx pod-rootfs "$work/c2fs/upper/pod-file.txt"
check "c2's write to a tmpfs mounted after the sandbox started is on the host" grep -qx late-write "$work/late/written.txt"
check "c2's stand-in is in its linux.cgroupsPath cgroup" grep -qx "$c2pid" "/sys/fs/cgroup/$cg/c2/cgroup.procs"
check "c2's rw bind mount write is on the host" grep -qx pod-volume "$work/vol/written.txt"
check "c2's ro bind mount refuses writes" grep -qx ro-refused "$work/vol/ro.txt"
checkv "c2 fetches the sandbox's page over 127.0.0.1 (network shared)" 'cat "$work/vol/page.txt"' \
    grep -qx sandbox-page "$work/vol/page.txt"
for ns in net ipc uts; do
    a=$(H exec sb readlink /proc/1/ns/$ns 2>&1)
    b=$(H exec c2 readlink /proc/self/ns/$ns 2>&1)
    checkv "c2 is in the sandbox's $ns namespace" 'echo "sb: $a c2: $b"' \
        bash -c "[ -n '$a' ] && [ '$a' = '$b' ]"
done
check "exec in c2 sees its rootfs" bash -c "[ \"\$('$husk' --root '$state' exec c2 cat /pod-file.txt)\" = pod-rootfs ]"
H exec c2 sh -c 'exit 3' </dev/null
check "exec in c2 returns its exit code" test $? -eq 3
check "exec in the sandbox does not see c2's rootfs" bash -c "! '$husk' --root '$state' exec sb test -e /pod-file.txt"
H exec -d --pid-file "$work/c2exec.pid" c2 sleep 1 </dev/null
check "exec -d in c2 leaves a stand-in" test -s "$work/c2exec.pid"
H ps --format json c2 >"$work/ps.out" 2>&1
checkv "ps c2 lists its processes" 'cat "$work/ps.out"' grep -Eq '^\[[0-9]+(,[0-9]+)*\]$' "$work/ps.out"
H pause c2
checkv "pause c2" 'H state c2' test "$(status_of c2)" = paused
check "the sandbox keeps running while c2 is paused" test "$(status_of sb)" = running
H resume c2
checkv "resume c2" 'H state c2' test "$(status_of c2)" = running
check "update c2" H update --pids-limit 64 c2
H events --stats c2 >"$work/ev.out" 2>&1
checkv "events --stats c2" 'cat "$work/ev.out"' \
    bash -c "grep -q '\"type\":\"stats\"' '$work/ev.out' && grep -q '\"id\":\"c2\"' '$work/ev.out'"
del=$(H delete c2 2>&1)
checkv "delete refuses a running pod container" 'echo "$del"' \
    bash -c "grep -q 'not stopped' <<<'$del' && [ -d '$state/c2' ]"

sandbox_alive "pod container c3: exit code"
echo "--- pod container c3: exit code"
bundle "$work/c3" 'echo c3-ran; exit 7' "$(pod_patch "$sbpid")" || { echo "pod: cannot build c3's bundle"; exit 1; }
reap "$work/c3.pid" "$work/c3.exit" -- "$husk" --root "$state" create --sandbox sb \
    --bundle "$work/c3" --pid-file "$work/c3.pid" c3 </dev/null >"$work/c3.out" 2>&1 &
reapers+=($!)
checkv "c3 created" 'cat "$work/c3.out" "$work/c3.exit" 2>/dev/null' wait_for 120 test -e "$work/c3.exit.created"
H start c3
checkv "c3's stand-in exits with its status (7)" 'cat "$work/c3.exit" "$work/c3.out" 2>/dev/null' \
    wait_for 60 grep -qsx 7 "$work/c3.exit"
checkv "c3 stopped" 'H state c3' wait_for 10 test "$(status_of c3)" = stopped
check "c3's exit_status is 7" grep -qx 7 "$state/c3/exit_status"
check "c3's output reached the caller" grep -q c3-ran "$work/c3.out"
H delete c3
check "delete c3: no state" test ! -e "$state/c3"
check "delete c3: no mount in the supervisor's namespace" bash -c "! grep -qF '$state/sb/share/c3' /proc/$sbpid/mountinfo"
check "delete c3: no stub in the share" test ! -e "$state/sb/share/c3"

sandbox_alive "kill and delete c2"
echo "--- kill and delete c2"
H kill c2 KILL
checkv "kill c2: its stand-in exits 137" 'cat "$work/c2.exit"' wait_for 30 grep -qsx 137 "$work/c2.exit"
checkv "kill c2: stopped" 'H state c2' wait_for 10 test "$(status_of c2)" = stopped
check "the sandbox outlives c2" test "$(status_of sb)" = running
H delete c2
check "delete c2: no state" test ! -e "$state/c2"
check "delete c2: no mount in the supervisor's namespace" bash -c "! grep -qF '$state/sb/share/c2' /proc/$sbpid/mountinfo"
check "delete c2: no mount in any namespace" bash -c "! grep -qsF '$state/sb/share/c2' /proc/[0-9]*/mountinfo"
check "delete c2: the volume's data stays" grep -qx pod-volume "$work/vol/written.txt"
check "delete c2: its host cgroup is gone" test ! -e "/sys/fs/cgroup/$cg/c2"
check "delete c2: its overlay rootfs is untouched on the host" grep -qx pod-rootfs "$work/c2/rootfs/pod-file.txt"

sandbox_alive "pod container c7: a terminal through --console-socket"
echo "--- pod container c7: a terminal through --console-socket"
bundle "$work/c7" 'test -t 0 && echo c7-isatty; stty size; read line; echo "c7-read-$line"; exit 5' \
    "$(pod_patch "$sbpid" "spec['process']['terminal'] = True")" || exit 1
python3 "$recvtty" "$work/c7.sock" --size 21x77 --input $'hello\r' >"$work/c7.tty" &
rp=$!
for _ in $(seq 100); do [ -S "$work/c7.sock" ] && break; sleep 0.1; done
reap "$work/c7.pid" "$work/c7.exit" -- "$husk" --root "$state" create --sandbox sb \
    --bundle "$work/c7" --console-socket "$work/c7.sock" --pid-file "$work/c7.pid" c7 </dev/null >"$work/c7.out" 2>&1 &
reapers+=($!)
checkv "c7 created with a console socket" 'cat "$work/c7.out" "$work/c7.exit" 2>/dev/null' wait_for 120 test -e "$work/c7.exit.created"
python3 "$recvtty" "$work/c7e.sock" >"$work/c7e.tty" &
rpe=$!
for _ in $(seq 100); do [ -S "$work/c7e.sock" ] && break; sleep 0.1; done
H exec -t --console-socket "$work/c7e.sock" c7 sh -c 'test -t 1 && echo exec-tty; exit 4'
rc=$?
wait $rpe
check "exec -t in a pod container: a terminal and its exit code (4)" bash -c "[ $rc -eq 4 ] && grep -q exec-tty '$work/c7e.tty'"
H start c7
checkv "c7's stand-in exits with its status (5)" 'cat "$work/c7.exit" "$work/c7.tty" 2>/dev/null' wait_for 60 grep -qsx 5 "$work/c7.exit"
wait_for 10 grep -q c7-read "$work/c7.tty"
check "c7's stdin is the terminal" grep -q c7-isatty "$work/c7.tty"
check "c7's window size came from the console socket's pty (21 77)" grep -q '^21 77' "$work/c7.tty"
check "c7 read what was typed into its terminal" grep -q c7-read-hello "$work/c7.tty"
H delete c7
check "delete c7: no state, no mount" bash -c "[ ! -e '$state/c7' ] && ! grep -qF '$state/sb/share/c7' /proc/$sbpid/mountinfo"
checkv "c7's terminal hangs up by its delete at the latest" 'kill $rp' wait_for 10 bash -c "! [ -e /proc/$rp ] || grep -q ') Z' /proc/$rp/stat"

sandbox_alive "bad input (nothing left behind)"
echo "--- bad input (nothing left behind)"
bundle "$work/c5" 'exit 0' "$(pod_patch "$sbpid")" || exit 1
err=$(H create --sandbox nosuch --bundle "$work/c5" c5 2>&1 </dev/null)
checkv "a missing sandbox is named" 'echo "$err"' \
    bash -c "grep -q 'sandbox nosuch' <<<'$err' && [ ! -e '$state/c5' ]"
err=$(H create --sandbox sb --bundle "$work/c5" sb 2>&1 </dev/null)
checkv "the sandbox's own id is refused" 'echo "$err"' \
    bash -c "grep -q 'own sandbox' <<<'$err' && [ '$(status_of sb)' = running ]"
H create --sandbox sb --bundle "$work/c5" c5 </dev/null >/dev/null 2>&1
checkv "c5 created" 'H state c5' test "$(status_of c5)" = created
err=$(H create --sandbox sb --bundle "$work/c5" c5 2>&1 </dev/null)
checkv "an id in use is refused, the container kept" 'echo "$err"; H state c5' \
    bash -c "grep -q 'exists: c5' <<<'$err' && [ '$(status_of c5)' = created ] && grep -qF '$state/sb/share/c5/rootfs' /proc/$sbpid/mountinfo"
err=$(H create --sandbox sb --bundle "$work/nobundle" c6 2>&1 </dev/null)
checkv "a missing bundle is refused" 'echo "$err"' bash -c "[ -n '$err' ] && [ ! -e '$state/c6' ]"
err=$(H create --sandbox c5 --bundle "$work/c5" c6 2>&1 </dev/null)
checkv "a pod container is not a sandbox" 'echo "$err"' \
    bash -c "grep -q 'c5' <<<'$err' && grep -q 'not a sandbox' <<<'$err' && [ ! -e '$state/c6' ]"
H delete c5 >/dev/null 2>&1
# Refused by the supervisor (a host namespace path it does not map), after the files were
# attached: everything made so far goes again.
bundle "$work/c8" 'exit 0' "$(pod_patch "$sbpid" "
spec['linux']['namespaces'] = [n for n in spec['linux']['namespaces'] if n['type'] != 'ipc']
spec['linux']['namespaces'].append({'type': 'ipc', 'path': '/run/husk-nosuch/ipc'})")" || exit 1
H create --sandbox sb --bundle "$work/c8" c8 >"$work/c8.err" 2>&1 </dev/null
checkv "a create the sandbox refuses names why" 'cat "$work/c8.err"' \
    grep -q 'linux.namespaces\[.\].path: .*/run/husk-nosuch/ipc' "$work/c8.err"
check "a create the sandbox refuses leaves nothing (state, stubs, mounts)" \
    bash -c "[ ! -e '$state/c8' ] && [ ! -e '$state/sb/share/c8' ] && ! grep -qF '$state/sb/share/c8' /proc/$sbpid/mountinfo"
check "the sandbox runs on after a refused create" test "$(status_of sb)" = running
check "no stray share entries" bash -c "[ -z \"\$(ls '$state/sb/share' | grep -v '^sb\$')\" ]"

echo "--- delete -f of the sandbox with a pod container running"
bundle "$work/c4" 'exec sleep 600' "$(pod_patch "$sbpid")" || exit 1
reap "$work/c4.pid" "$work/c4.exit" -- "$husk" --root "$state" create --sandbox sb \
    --bundle "$work/c4" --pid-file "$work/c4.pid" c4 </dev/null >"$work/c4.out" 2>&1 &
reapers+=($!)
wait_for 120 test -e "$work/c4.exit.created"
H start c4
checkv "c4 running" 'H state c4' test "$(status_of c4)" = running
H delete -f sb
check "delete -f sb: no supervisor" bash -c "! kill -0 $sbpid 2>/dev/null"
check "delete -f sb: no virtiofsd" bash -c "! pgrep -f -- '[-]-shared-dir $state/sb/share' >/dev/null"
check "delete -f sb: no mount in any namespace" bash -c "! grep -qsF '$state/sb/' /proc/[0-9]*/mountinfo"
check "delete -f sb: no sandbox state" test ! -e "$state/sb"
checkv "c4's stand-in exits 255 with the sandbox" 'cat "$work/c4.exit"' wait_for 30 grep -qsx 255 "$work/c4.exit"
check "c4 reads stopped" test "$(status_of c4)" = stopped
H delete c4
check "delete c4 after its sandbox: nothing left" bash -c "[ ! -e '$state/c4' ] && [ -z \"\$(ls '$state')\" ]"

echo "pod: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
