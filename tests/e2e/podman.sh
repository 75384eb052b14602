#!/usr/bin/env bash
# End-to-end: podman 4.3 (Debian's, with conmon) driving husk as its OCI runtime, every
# container in a real microVM: `podman run --rm` (stdout, exit codes); through the sandbox's
# virtio-fs share, podman's file bind mounts (/etc/hostname, /etc/hosts, /run/.containerenv),
# a read-only volume (refusing writes) and a read-write one (`-v hostdir:/data`: written in the
# container, read on the host), and what the container wrote into its rootfs seen by
# `podman cp` out of the stopped container, `podman diff` and `podman commit`; `run -d` +
# `ps` + `exec` (stdout, exit code) + `stop` + `rm`, and `run -it` driven through tmux.
# The image is a busybox rootfs imported offline (`podman import`); storage is overlay on a
# private tmpfs; network none; cgroupfs; file events. Five guest boots.
#
# usage: tests/e2e/podman.sh [--prepare]
#   --prepare  as tests/e2e/runc-cli.sh --prepare (husk release build, agent initramfs)
#   env HUSK_KERNEL (tests/run-all exports it), HUSK_BIN (default target/release/husk),
#   HUSK_AGENT_INITRD (default target/guest-image/initramfs.cpio).
#
# Needs root, podman and conmon (tests/setup installs them) and a KVM that boots stock
# kernels: run it through tests/with-kvm.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"

if [ "${1:-}" = --prepare ]; then
    exec "$root/tests/e2e/runc-cli.sh" --prepare
fi

export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
for f in "$husk" "$HUSK_KERNEL" "$HUSK_INITRD" /bin/busybox; do
    [ -e "$f" ] || { echo "podman: $f missing (run tests/e2e/podman.sh --prepare on the host)"; exit 1; }
done
for c in podman conmon tmux; do
    command -v $c >/dev/null || { echo "podman: $c not installed (tests/setup installs it)"; exit 1; }
done

work="$(mktemp -d)"
# Overlay storage needs an upper dir on a real filesystem (the KVM test host's root is itself
# an overlay): a private tmpfs.
mkdir -p "$work/storage" && mount -t tmpfs tmpfs "$work/storage" ||
    { echo "podman: cannot mount a tmpfs for the storage"; exit 1; }
# podman starts conmon, which starts the runtime, with a scrubbed environment: the runtime is
# a wrapper that carries husk's settings.
cat >"$work/husk" <<EOF
#!/bin/sh
export HUSK_KERNEL='$HUSK_KERNEL' HUSK_INITRD='$HUSK_INITRD'
exec '$husk' --root '$work/husk-root' "\$@"
EOF
chmod +x "$work/husk"
P() { # podman with husk; a call that hangs fails after PODMAN_TIMEOUT seconds (default 300)
    timeout -k 10 "${PODMAN_TIMEOUT:-300}" podman --root "$work/storage" --runroot "$work/run" --storage-driver overlay \
        --cgroup-manager cgroupfs --events-backend file --runtime "$work/husk" "$@"
}
run_opts=(--network none --ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
cleanup() {
    tmux kill-session -t husk-podman 2>/dev/null
    P rm -af -t 0 >/dev/null 2>&1
    for id in $("$husk" --root "$work/husk-root" list -q 2>/dev/null); do
        "$husk" --root "$work/husk-root" delete --force "$id" >/dev/null 2>&1
    done
    umount -l "$work/storage" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

. "$root/tests/e2e/lib/harness.sh"
logs() { # the newest container's husk logs, for a failure
    local d
    d=$(ls -td "$work/husk-root"/*/ 2>/dev/null | head -n1)
    [ -n "$d" ] && tail -n 15 "$d/supervisor.log" "$d/console.log" 2>/dev/null | sed 's/^/     /'
}

echo "--- image (offline busybox)"
mkdir -p "$work/rootfs" && (
    cd "$work/rootfs" && mkdir -p bin etc proc sys dev tmp root run &&
        cp /bin/busybox bin/ && for a in $(./bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "bin/$a"; done &&
        printf 'root:x:0:0:root:/root:/bin/sh\n' >etc/passwd && printf 'root:x:0:\n' >etc/group
) && tar -C "$work/rootfs" -cf "$work/busybox.tar" . || { echo "podman: cannot build the rootfs"; exit 1; }
P import -q "$work/busybox.tar" localhost/busybox >/dev/null
check "podman import of a busybox rootfs" P image exists localhost/busybox
img=localhost/busybox

echo "--- podman run --rm (boots 1, 2)"
out=$(P run --rm "${run_opts[@]}" $img echo hello from husk 2>"$work/err1")
rc=$?
[ $rc -eq 0 ] && [ "$out" = "hello from husk" ] && ok "run --rm relays stdout" ||
    { bad "run --rm relays stdout" "rc=$rc out=$out err=$(cat "$work/err1")"; logs; }
P run --rm "${run_opts[@]}" $img sh -c 'exit 42' 2>"$work/err2"
rc=$?
check "run --rm propagates the exit code (42)" test $rc -eq 42

echo "--- volumes, cp, diff, commit (boot 3)"
mkdir -p "$work/vol/sub" "$work/data" && echo volume-data >"$work/vol/sub/f"
out=$(P run --name w1 "${run_opts[@]}" --hostname hk -v "$work/vol:/vol:ro" -v "$work/data:/data" $img \
    sh -c 'echo "hostname=$(cat /etc/hostname)"; grep -q hk /etc/hosts && echo hosts-ok; test -f /run/.containerenv && echo containerenv; cat /vol/sub/f; touch /vol/x 2>/dev/null || echo ro-refused; echo written-in-rootfs >/written.txt; echo written-in-volume >/data/out.txt' 2>&1)
check "/etc/hostname" grep -qx hostname=hk <<<"$out"
check "/etc/hosts names the host" grep -qx hosts-ok <<<"$out"
check "/run/.containerenv" grep -qx containerenv <<<"$out"
check "read-only directory volume readable" grep -qx volume-data <<<"$out" || echo "     $out"
check "read-only directory volume refuses writes" grep -qx ro-refused <<<"$out"
check "-v hostdir:/data: the container's write is on the host" grep -qx written-in-volume "$work/data/out.txt"
P cp w1:/written.txt "$work/cp.txt" >/dev/null 2>&1
check "podman cp out of the stopped container" grep -qx written-in-rootfs "$work/cp.txt"
out=$(P diff w1 2>&1)
check "podman diff shows the container's write" grep -qx 'A /written.txt' <<<"$out" || echo "     $out"
P commit -q w1 localhost/committed >/dev/null 2>&1
P create --name c2 localhost/committed true >/dev/null 2>&1
P cp c2:/written.txt "$work/committed.txt" >/dev/null 2>&1
check "podman commit keeps the container's write" grep -qx written-in-rootfs "$work/committed.txt"
P rm w1 c2 >/dev/null 2>&1
check "rm of the stopped containers" test -z "$(P ps -aq 2>&1)"

echo "--- run -d, ps, exec, stop, rm (boot 4)"
P run -d --name d1 "${run_opts[@]}" $img sleep 600 >/dev/null 2>"$work/err4"
check "run -d" test $? -eq 0 || { cat "$work/err4"; logs; }
st=$(P ps --format '{{.Names}} {{.Status}}' 2>&1)
check "podman ps shows d1 up" grep -q '^d1 Up' <<<"$st" || echo "     $st"
out=$(P exec d1 echo in-exec 2>&1)
check "exec relays stdout" test "$out" = in-exec || echo "     $out"
P exec d1 sh -c 'exit 3' 2>/dev/null
check "exec propagates the exit code (3)" test $? -eq 3
out=$(P exec d1 ps 2>&1)
check "exec sees the container's processes" grep -q 'sleep 600' <<<"$out"
# podman stats reads the host cgroup (linux.cgroupsPath) that holds the supervisor, the VMM
# (guest memory and vCPUs) and virtiofsd: a busy loop in the guest shows as host CPU.
P exec -d d1 sh -c 'end=$(($(date +%s) + 20)); while [ $(date +%s) -lt $end ]; do :; done' >/dev/null 2>&1
sleep 3
out=$(P stats --no-stream --format '{{.CPUPerc}} {{.MemUsage}}' d1 2>&1)
cpu=${out%% *}
check "podman stats: non-zero CPU ($cpu)" bash -c "[[ '$cpu' =~ ^[0-9.]+%$ && '$cpu' != 0.00% ]]" || echo "     $out"
check "podman stats: non-zero memory" bash -c "[[ '$out' =~ %\ [1-9][0-9.]*[kMG]B ]]" || echo "     $out"
P stop -t 2 d1 >/dev/null 2>&1
check "stop" test $? -eq 0
st=$(P ps -a --format '{{.Names}} {{.Status}}' 2>/dev/null)
check "podman ps -a shows d1 exited (137)" grep -q '^d1 Exited (137)' <<<"$st" || echo "     $st"
P rm d1 >/dev/null 2>&1
check "rm" test -z "$(P ps -aq 2>&1)"
check "no husk container left" bash -c "test -z \"\$('$husk' --root '$work/husk-root' list -q)\""

echo "--- run -it through tmux (boot 5)"
cat >"$work/it.sh" <<EOF
#!/bin/sh
podman --root '$work/storage' --runroot '$work/run' --storage-driver overlay --cgroup-manager cgroupfs \
    --events-backend file --runtime '$work/husk' run -it --rm ${run_opts[*]} $img sh
echo "podman-exit=\$?" >'$work/it.rc'
EOF
chmod +x "$work/it.sh"
tmux new-session -d -s husk-podman -x 120 -y 40 "$work/it.sh" \; set-option -t husk-podman remain-on-exit on
end=$((SECONDS + 120))
# tmux capture-pane drops the prompt's trailing blank: "/ #", not "/ # ".
until tmux capture-pane -p -t husk-podman 2>/dev/null | grep -q '^/ #'; do
    [ $SECONDS -lt $end ] || break
    sleep 1
done
tmux send-keys -t husk-podman 'echo tty-$((6 * 7)); stty size; test -t 0 && echo isatty' Enter
sleep 3
tmux send-keys -t husk-podman 'exit 5' Enter
end=$((SECONDS + 60))
until [ -s "$work/it.rc" ] || [ $SECONDS -ge $end ]; do sleep 1; done
pane=$(tmux capture-pane -p -t husk-podman 2>/dev/null; cat "$work/it.rc" 2>/dev/null)
check "run -it: the shell's prompt and echo" grep -q '^tty-42' <<<"$pane"
check "run -it: the window size reaches the guest (40 120)" grep -q '^40 120' <<<"$pane"
check "run -it: stdin is a terminal in the guest" grep -q '^isatty' <<<"$pane"
check "run -it: exit code (5)" grep -qx podman-exit=5 "$work/it.rc" || echo "$pane" | tail -n 8 | sed 's/^/     /'

echo "podman: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
