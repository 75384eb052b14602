#!/usr/bin/env bash
# End-to-end: the husk CLI replays the runc walkthrough of the seed ("Demystifying Containers,
# part II") in its order on a busybox bundle whose config.json is `husk spec`'s, unmodified
# (terminal, sh, runc's ambient capabilities), each container in a real microVM: spec ->
# create --console-socket (tests/e2e/recvtty.py) -> list -> state (created) -> ps -> exec -t
# "Hello, world!" into the created container -> start -> list (running) -> pause/resume ->
# events --stats -> leaving the recvtty session stops it -> delete. Around it: exec exit codes,
# stdin, `exec -t` with the window size forwarded, `exec -d --pid-file` leaving a stand-in
# that exits with the status; `update` by flags and `-r -` seen in `events --stats`, an
# OOM-killed exec reported as an `oom` event; `features`; `husk run` propagating exit codes
# and stdout and removing the container; `husk run --keep` with process.terminal through a
# console socket; `kill USR1` reaching init, then `kill -9` of a supervisor leaving a stopped
# container that `delete` cleans up; a bad config.json rejected naming the field, with nothing
# left behind; checkpoint refused; `--preserve-fds` (run: fd 3 in, fd 4 out; exec: a host
# pipe, a stream socket both ways; a listening socket whose connections reach the container's
# accept(); a datagram socket, a read-write file and a missing fd refused by number). Six
# guest boots in all.
#
# usage: tests/e2e/runc-cli.sh [--prepare]
#   --prepare  build husk (release) and the agent initramfs on the host (don't compile under TCG)
#   env HUSK_KERNEL (tests/run-all exports it), HUSK_BIN (default target/release/husk),
#   HUSK_AGENT_INITRD (default target/guest-image/initramfs.cpio).
#
# Needs root and a KVM that boots stock kernels: run it through tests/with-kvm.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
applets="sh echo cat sleep ls hostname ps true false id env stty tty dd touch"
recvtty="$root/tests/e2e/recvtty.py"

# A static helper the container runs for socket activation (busybox cannot accept on an
# inherited socket): accepts N connections on fd 3, answers each with "got:" and what it read.
accept_echo="$target/e2e/accept-echo"
build_accept_echo() {
    mkdir -p "$(dirname "$accept_echo")" &&
        gcc -static -O2 -o "$accept_echo" -x c - <<'C'
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1;
    for (int i = 0; i < n; i++) {
        int c = accept(3, 0, 0);
        if (c < 0) return 1;
        char buf[4096];
        size_t len = 0;
        ssize_t r;
        while (len < sizeof buf && (r = read(c, buf + len, sizeof buf - len)) > 0) len += r;
        if (write(c, "got:", 4) != 4 || write(c, buf, len) != (ssize_t)len) return 2;
        close(c);
    }
    return 0;
}
C
}

if [ "${1:-}" = --prepare ]; then
    (cd "$root" && cargo build --release --locked -p husk) >&2 || exit 1
    build_accept_echo || echo "runc-cli: no static accept-echo (gcc -static); its check will be skipped" >&2
    "$root/guest-image/build" | tail -n1
    exit $?
fi

# The agent initramfs, not run-all's boot-test one.
export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
for f in "$husk" "$HUSK_KERNEL" "$HUSK_INITRD" /bin/busybox; do
    [ -e "$f" ] || { echo "runc-cli: $f missing (run tests/e2e/runc-cli.sh --prepare on the host)"; exit 1; }
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
status_of() { H state "$1" 2>/dev/null | sed -n 's/.*"status": "\(.*\)".*/\1/p'; }
wait_status() { # ID STATUS SECONDS
    local end=$((SECONDS + $3))
    while :; do
        [ "$(status_of "$1")" = "$2" ] && return 0
        [ $SECONDS -lt $end ] || return 1
        sleep 0.2
    done
}
# runc's default spec, ambient capabilities included, with other process.args and no terminal.
set_args() { # 'JSON ARRAY ITEMS': config.json from `husk spec` with these process.args, no tty
    sed -e 's|"terminal": true|"terminal": false|' \
        -e "s|^\t\t\t\"sh\"\$|\t\t\t$1|" "$work/spec.json" >"$bundle/config.json"
}

# The bundle: busybox rootfs like the seed's, config.json from `husk spec`.
busybox_rootfs "$bundle/rootfs" $applets || { echo "runc-cli: cannot build the bundle"; exit 1; }

echo "--- spec"
(cd "$bundle" && H spec)
check "spec writes runc's config.json" grep -q '"hostname": "runc"' "$bundle/config.json"
check "spec refuses to overwrite" bash -c "! (cd '$bundle' && '$husk' spec 2>/dev/null)"
cp "$bundle/config.json" "$work/spec.json"

echo "--- bad config.json (no boot)"
set_args ""
err=$(H create -b "$bundle" badc 2>&1 </dev/null)
rc=$?
[ $rc -ne 0 ] && [[ "$err" == *process.args* ]] && ok "bad config.json rejected naming the field" || bad "bad config.json rejected naming the field" "rc=$rc err=$err"
check "nothing left behind by the bad create" test ! -e "$state/badc"
feat=$(H features)
check "features: runc's JSON (cgroup v2, seccomp, namespaces)" python3 -c '
import json, sys
f = json.loads(sys.argv[1])
assert f["linux"]["cgroup"]["v2"] and f["linux"]["seccomp"]["enabled"]
assert "pid" in f["linux"]["namespaces"] and "CAP_KILL" in f["linux"]["capabilities"]' "$feat"
err=$(echo '{"memory": 5}' | H update -r - nope 2>&1)
[[ $? -ne 0 && "$err" == *"linux.resources"* ]] && ok "update -r refuses what is not linux.resources" || bad "update -r refuses what is not linux.resources" "$err"
err=$(H checkpoint c1 2>&1)
[[ $? -ne 0 && "$err" == *"not supported"* ]] && ok "checkpoint refused" || bad "checkpoint refused" "$err"
# --preserve-fds: what a byte relay cannot stand in for is refused by fd number, before
# anything is made.
err=$(python3 -c '
import os, socket, subprocess, sys
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
os.dup2(d.fileno(), 3)
r = subprocess.run(sys.argv[1:], pass_fds=[3], stdin=subprocess.DEVNULL, capture_output=True, text=True)
print(r.returncode, r.stderr)' "$husk" --root "$state" run -b "$bundle" --preserve-fds 1 pfl 2>&1)
[[ "$err" == "1 "* && "$err" == *"--preserve-fds: fd 3 is a datagram socket"* ]] && ok "--preserve-fds: a datagram socket is refused by fd number" || bad "--preserve-fds: a datagram socket is refused by fd number" "$err"
err=$(H run -b "$bundle" --preserve-fds 1 pfl 3<>"$work/spec.json" 2>&1 </dev/null)
[[ $? -ne 0 && "$err" == *"fd 3 is a file open for reading and writing"* ]] && ok "--preserve-fds: a read-write file is refused" || bad "--preserve-fds: a read-write file is refused" "$err"
err=$(H run -b "$bundle" --preserve-fds 2 pfl 3</dev/null 2>&1 </dev/null)
[[ $? -ne 0 && "$err" == *"fd 4 is not open"* ]] && ok "--preserve-fds: a missing fd is named" || bad "--preserve-fds: a missing fd is named" "$err"
check "nothing left behind by the refused --preserve-fds" test ! -e "$state/pfl"

echo "--- the walkthrough (boot 1): husk spec's config.json as is, a terminal through recvtty"
# As the seed: `husk spec` unmodified (terminal, sh, runc's capabilities with ambient ones),
# recvtty on the console socket; what it types now waits in the guest's terminal for sh.
cp "$work/spec.json" "$bundle/config.json"
python3 "$recvtty" "$work/c1.sock" --input $'echo typed-$((6 * 7))\r' >"$work/c1.tty" &
c1tty=$!
for _ in $(seq 100); do [ -S "$work/c1.sock" ] && break; sleep 0.1; done
t0=$(date +%s.%N)
H create -b "$bundle" --console-socket "$work/c1.sock" --pid-file "$work/c1.pid" c1 >"$work/c1.out" 2>"$work/c1.err" </dev/null
rc=$?
t1=$(date +%s.%N)
if [ $rc -eq 0 ]; then ok "create --console-socket ($(echo "$t1 - $t0" | bc) s)"; else
    bad create "rc=$rc: $(cat "$work/c1.err")"
    tail -n 30 "$state/c1/console.log" "$state/c1/supervisor.log" 2>/dev/null
    echo "runc-cli: $passed passed, $((failed + 1)) failed (stopped: no container to walk through)"
    exit 1
fi
H list
check "list shows c1 created" bash -c "'$husk' --root '$state' list | grep -Eq '^c1 +[0-9]+ +created +$bundle'"
check "state says created" test "$(status_of c1)" = created
pid=$(cat "$work/c1.pid" 2>/dev/null)
check "pid file holds the state's pid" test -n "$pid" -a "$pid" = "$(H state c1 | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')"
check "ps lists init" bash -c "'$husk' --root '$state' ps --format json c1 | grep -Eq '^\[[0-9]+\]$'"
# The seed's `runc exec -t container echo "Hello, world!"`, before start.
python3 "$recvtty" "$work/h.sock" >"$work/h.tty" &
rp=$!
for _ in $(seq 100); do [ -S "$work/h.sock" ] && break; sleep 0.1; done
H exec -t --console-socket "$work/h.sock" c1 echo "Hello, world!"
rc=$?
wait $rp
check "exec -t into the created container: Hello, world!" test $rc -eq 0 -a "$(tr -d '\r' <"$work/h.tty")" = "Hello, world!"
out=$(H exec c1 echo "Hello, world!" 2>&1)
check "exec without a terminal before start" test "$out" = "Hello, world!"
check "still created after the execs" test "$(status_of c1)" = created
grep -hoE '(rootfs disk ready|agent ready|container created).*' "$state/c1/supervisor.log" | sed 's/^/     /'
H start c1
check "start" test $? -eq 0
check "state says running" wait_status c1 running 10
check "input typed at create reaches sh after start" bash -c "end=\$((SECONDS + 20)); until grep -q '^typed-42' '$work/c1.tty'; do [ \$SECONDS -lt \$end ] || exit 1; sleep 0.2; done"
check "list shows c1 running" bash -c "'$husk' --root '$state' list | grep -Eq '^c1 +[0-9]+ +running +$bundle'"
H exec c1 sh -c 'exit 7'
rc=$?
check "exec propagates the exit code" test $rc -eq 7
out=$(echo piped | H exec c1 cat)
check "exec relays stdin" test "$out" = piped
check "exec sees the container's hostname" test "$(H exec c1 hostname)" = runc
python3 "$recvtty" "$work/e.sock" --size 33x111 >"$work/e.tty" &
rp=$!
for _ in $(seq 100); do [ -S "$work/e.sock" ] && break; sleep 0.1; done
H exec -t --console-socket "$work/e.sock" c1 sh -c 'sleep 1; test -t 0 && echo isatty; stty size; exit 6'
rc=$?
wait $rp
check "exec -t --console-socket: exit code (6)" test $rc -eq 6
check "exec -t: stdin is a terminal in the guest" grep -q '^isatty' "$work/e.tty"
check "exec -t: the window size reaches the guest (33 111)" grep -q '^33 111' "$work/e.tty"
# conmon's way: exec -d --pid-file, then wait for that pid as a subreaper.
st=$(python3 -c '
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
subprocess.run(sys.argv[1:], check=True)
_, st = os.waitpid(int(open(sys.argv[-5]).read()), 0)
print(os.waitstatus_to_exitcode(st))' "$husk" --root "$state" exec -d --pid-file "$work/x.pid" c1 sh -c 'sleep 1; exit 9')
check "exec -d --pid-file: the stand-in exits with the status (9)" test "$st" = 9
check "ps lists sh (init) and no more" bash -c "'$husk' --root '$state' ps --format json c1 | grep -Eq '^\[[0-9]+\]$'"
H pause c1 && check "pause" test "$(status_of c1)" = paused
H resume c1 && check "resume" test "$(status_of c1)" = running
ev=$(H events --stats c1)
check "events --stats" bash -c "[[ '$ev' == *'\"type\":\"stats\"'* && '$ev' == *'\"cpu\"'* ]]"
H update --memory 32m --pids-limit 50 c1
check "update --memory 32m --pids-limit 50" test $? -eq 0
ev=$(H events --stats c1)
check "events --stats shows the new limits" bash -c "[[ '$ev' == *'\"limit\":33554432'* && '$ev' == *'\"limit\":50'* ]]" || echo "     $ev"
echo '{"pids": {"limit": 60}}' | H update -r - c1
ev=$(H events --stats c1)
check "update -r - (linux.resources JSON on stdin)" bash -c "[[ '$ev' == *'\"limit\":60'* ]]"
H events --interval 1s c1 >"$work/ev.out" 2>&1 &
evp=$!
sleep 1
H exec c1 dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null
check "a 64 MiB dd over the 32 MiB limit is OOM-killed (137)" test $? -eq 137
check "events reports the oom event" bash -c "end=\$((SECONDS + 20)); until grep -qx '{\"type\":\"oom\",\"id\":\"c1\"}' '$work/ev.out'; do [ \$SECONDS -lt \$end ] || exit 1; sleep 0.2; done"
check "events streams stats too" grep -q '"type":"stats"' "$work/ev.out"
kill $evp 2>/dev/null
wait $evp 2>/dev/null
err=$(H delete c1 2>&1)
[[ $? -ne 0 && "$err" == *"not stopped"* ]] && ok "delete refuses a running container" || bad "delete refuses a running container" "$err"
# The seed stops the container by leaving the recvtty session: the terminal hangs up, sh
# reads EOF and exits 0.
kill "$c1tty"
check "leaving the recvtty session stops it" wait_status c1 stopped 30
check "list shows c1 stopped with pid 0" bash -c "'$husk' --root '$state' list | grep -Eq '^c1 +0 +stopped'"
H delete c1
check "delete removes it" bash -c "test -z \"\$('$husk' --root '$state' list -q)\" && test ! -e '$state/c1'"

echo "--- husk run (boot 2)"
set_args '"sh", "-c", "echo out; echo err >\&2; exit 3"'
out=$(H run -b "$bundle" r1 2>"$work/r1.err" </dev/null)
rc=$?
check "run propagates the exit code (3)" test $rc -eq 3
check "run relays stdout" test "$out" = out
check "run relays stderr" grep -qx err "$work/r1.err"
check "run removes the stopped container (no --keep)" bash -c "test -z \"\$('$husk' --root '$state' list -q)\" && test ! -e '$state/r1'"

echo "--- husk run with a terminal through a console socket (boot 3)"
sed -e "s|^\t\t\t\"sh\"\$|\t\t\t\"sh\", \"-c\", \"sleep 1; test -t 0 \&\& echo isatty; stty size; read x; echo got \$x; exit 4\"|" \
    "$work/spec.json" >"$bundle/config.json"
python3 "$recvtty" "$work/t.sock" --size 25x90 --input $'hello\r' >"$work/t.tty" &
rp=$!
for _ in $(seq 100); do [ -S "$work/t.sock" ] && break; sleep 0.1; done
H run -b "$bundle" --keep --console-socket "$work/t.sock" t1 </dev/null
rc=$?
wait $rp
check "run --console-socket: exit code (4)" test $rc -eq 4
check "run: init's stdin is a terminal in the guest" grep -q '^isatty' "$work/t.tty"
check "run: the window size reaches the guest (25 90)" grep -q '^25 90' "$work/t.tty"
check "run: typed input reaches init" grep -q '^got hello' "$work/t.tty" || cat -A "$work/t.tty" | sed 's/^/     /'
check "run --keep leaves the stopped container" test "$(status_of t1)" = stopped
H delete t1

echo "--- --preserve-fds: extra fds relayed into the guest (boot 4)"
set_args '"sh", "-c", "cat <\&3 >\&4; exec 3<\&- 4>\&-; sleep 120"'
printf 'line one\nline two\n' >"$work/pf.in"
H run -d -b "$bundle" --preserve-fds 2 pf1 3<"$work/pf.in" 4>"$work/pf.out" </dev/null >/dev/null 2>&1
check "run -d --preserve-fds 2" test "$(status_of pf1)" = running
check "run --preserve-fds: the container reads fd 3 and writes fd 4 (cat <&3 >&4)" bash -c "end=\$((SECONDS + 20)); until cmp -s '$work/pf.in' '$work/pf.out'; do [ \$SECONDS -lt \$end ] || exit 1; sleep 0.2; done"
out=$(H exec --preserve-fds 1 pf1 sh -c 'echo via-exec >&3; echo not-this' 3>&1 >/dev/null </dev/null)
check "exec --preserve-fds 1: fd 3 reaches a host pipe, which then sees EOF" test "$out" = via-exec
out=$(python3 -c '
import os, socket, subprocess, sys
pad = [os.open("/dev/null", os.O_RDONLY) for _ in range(3)]  # the pair lands above fd 3
a, b = socket.socketpair()
os.dup2(b.fileno(), 3); b.close()
p = subprocess.Popen(sys.argv[1:], pass_fds=[3], stdin=subprocess.DEVNULL)
os.close(3)
a.sendall(b"ping\n"); a.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = a.recv(100)
    if not d: break
    got += d
print(got.decode().strip(), p.wait())' "$husk" --root "$state" exec --preserve-fds 1 pf1 sh -c 'read l <&3; echo "both:$l" >&3' 2>&1)
check "exec --preserve-fds 1: a stream socket goes both ways" test "$out" = "both:ping 0" || echo "     $out"
H kill pf1 KILL
check "stopped after kill" wait_status pf1 stopped 20
H delete pf1

echo "--- --preserve-fds: a listening socket (socket activation, boot 5)"
if [ -x "$accept_echo" ] || build_accept_echo 2>/dev/null; then
    cp "$accept_echo" "$bundle/rootfs/bin/accept-echo"
    set_args '"accept-echo", "2"'
    out=$(python3 - "$work/act.sock" "$husk" --root "$state" run -d -b "$bundle" --preserve-fds 1 act <<'PY' 2>&1
import os, socket, subprocess, sys
l = socket.socket(socket.AF_UNIX)
l.bind(sys.argv[1]); l.listen()
os.dup2(l.fileno(), 3)
# The container's stdio must not be a pipe this script reads to EOF (the container keeps it).
with open(sys.argv[1] + ".err", "w+") as err:
    r = subprocess.run(sys.argv[2:], pass_fds=[3], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=err)
    if r.returncode:
        err.seek(0)
        sys.exit("run: %d %s" % (r.returncode, err.read()))
got = []
for i in (1, 2):
    c = socket.socket(socket.AF_UNIX)
    c.connect(sys.argv[1])
    c.sendall(b"ping%d" % i); c.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        d = c.recv(100)
        if not d: break
        data += d
    got.append(data.decode())
print(" ".join(got))
PY
)
    check "run --preserve-fds 1 with a listening socket: each connection reaches the container's accept()" test "$out" = "got:ping1 got:ping2" || echo "     $out"
    check "the container exits after its two connections" wait_status act stopped 30
    H delete act
    rm -f "$bundle/rootfs/bin/accept-echo"
else
    echo "SKIP socket activation: no static accept-echo (gcc -static)"
fi

echo "--- kill, then kill -9 of a supervisor (boot 6)"
set_args '"sh", "-c", "trap '\''touch /dev/shm/usr1'\'' USR1; while :; do sleep 1; done"'
H run -d -b "$bundle" --pid-file "$work/r2.pid" r2 >/dev/null 2>&1 </dev/null
check "run --detach" test "$(status_of r2)" = running
# A pid namespace's init ignores signals it has no handler for: until sh has set its trap,
# USR1 is lost, so send it again until the trap ran.
check "kill USR1 reaches init's trap" bash -c "end=\$((SECONDS + 20)); until '$husk' --root '$state' exec r2 sh -c 'test -f /dev/shm/usr1'; do [ \$SECONDS -lt \$end ] || exit 1; '$husk' --root '$state' kill r2 USR1 || exit 1; sleep 1; done"
kill -9 "$(cat "$work/r2.pid")"
check "state says stopped after kill -9" wait_status r2 stopped 10
H delete r2
check "delete cleans up" test ! -e "$state/r2"
check "nothing left in the state root" bash -c "test -z \"\$(ls -A '$state')\""

echo "runc-cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
