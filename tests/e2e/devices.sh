#!/usr/bin/env bash
# End-to-end: husk-vmm's virtio devices with a real Linux guest (husk's vmlinux, the busybox
# test initramfs plus an overlay from tests/e2e/devices/: an /init that exercises the devices
# and a static vsock-echo helper).
#
#   disk   the guest reads a sector the host wrote, writes one the host then checks, reads
#          its serial, and cannot write the read-only second disk;
#   rng    /dev/hwrng is virtio_rng and gives bytes;
#   vsock  host -> guest (CONNECT 1024 over the Unix socket, echo) and guest -> host
#          (connect to CID 2 port 2000 = <uds>_2000, echo);
#   net    the guest pings 10.77.0.1, the far end of a TAP inside a network namespace this
#          test creates (husk-vmm runs inside that namespace and opens the TAP by name);
#   fs     (a second boot, jailed, seccomp kill) the guest mounts a virtio-fs share served by
#          virtiofsd, reads a host file and writes one the host then reads.
#
# usage: tests/e2e/devices.sh [--prepare]
#   --prepare  only build the guest helper and overlay (do this outside the KVM test host:
#              compiling under TCG is slow); prints the overlay path.
#   env HUSK_VMM, HUSK_KERNEL, HUSK_INITRD as for tests/e2e/linux-boot.sh; HUSK_BOOT_LIMIT.
#
# Needs root (netns, TAP) and a KVM that boots stock kernels: run it through tests/with-kvm.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tests/e2e/devices"
cache="${HUSK_CACHE:-/var/cache/husk}/devices-e2e"

overlay() { # builds (or reuses) the overlay cpio; prints its path
    local key dir
    key=$(cat "$here/vsock-echo.rs" "$here/init" | sha256sum | cut -c1-16)
    dir="$cache/$key"
    if [ ! -f "$dir/overlay.cpio.gz" ]; then
        mkdir -p "$dir/root" >&2
        rustc -O -C target-feature=+crt-static -o "$dir/root/vsock-echo" "$here/vsock-echo.rs" >&2 || return 1
        cp "$here/init" "$dir/root/init" && chmod 755 "$dir/root/init"
        (cd "$dir/root" && printf 'init\nvsock-echo\n' | cpio -o -H newc --quiet | gzip -9) >"$dir/overlay.cpio.gz.tmp" &&
            mv "$dir/overlay.cpio.gz.tmp" "$dir/overlay.cpio.gz"
    fi
    echo "$dir/overlay.cpio.gz"
}

if [ "${1:-}" = --prepare ]; then
    overlay
    exit $?
fi

vmm="${HUSK_VMM:-$root/target/release/husk-vmm}"
kernel="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
base_initrd="${HUSK_INITRD:-$("$root/tests/guest-boot/make-initramfs" | tail -n1)}"
limit="${HUSK_BOOT_LIMIT:-400}"
work="$(mktemp -d)"
ns="husk-e2e-$$"
tap=huskt0
cleanup() {
    [ -n "${echo_pid:-}" ] && kill "$echo_pid" 2>/dev/null
    ip netns del "$ns" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
. "$root/tests/e2e/lib/harness.sh"

ov=$(overlay | tail -n1) || { echo "cannot build the guest overlay"; exit 1; }
cat "$base_initrd" "$ov" >"$work/initrd.cpio.gz"

# Disks: the host writes a marker in sector 0; the guest writes one in sector 1.
truncate -s 1M "$work/disk.img"
printf 'HUSK-HOST-WROTE-THIS' | dd of="$work/disk.img" conv=notrunc status=none
truncate -s 64K "$work/ro.img"

# Network: a namespace with a TAP at 10.77.0.1/24.
ip netns add "$ns" || { echo "cannot create a network namespace (need root)"; exit 1; }
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip tuntap add dev "$tap" mode tap
ip netns exec "$ns" ip addr add 10.77.0.1/24 dev "$tap"
ip netns exec "$ns" ip link set "$tap" up

# vsock: a guest -> host echo server on <uds>_2000.
uds="$work/v.sock"
python3 - "$uds" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1] + "_2000"); s.listen(1)
c, _ = s.accept()
while True:
    d = c.recv(4096)
    if not d: break
    c.sendall(d)
PY
echo_pid=$!
# Python starts slowly under TCG: the guest must find the socket there.
for _ in $(seq 240); do
    [ -S "${uds}_2000" ] && break
    sleep 0.5
done

echo "devices: $vmm"
start=$(date +%s)
ip netns exec "$ns" timeout -k 10 "$limit" "$vmm" --kernel "$kernel" --initrd "$work/initrd.cpio.gz" \
    --memory-mib 256 --serial "$work/console.out" \
    --disk "path=$work/disk.img,serial=husk-e2e" --disk "path=$work/ro.img,ro=on" \
    --vsock "cid=3,uds=$uds" --net "tap=$tap,mac=02:00:00:00:77:02" --rng \
    2>"$work/vmm.err" &
vmm_pid=$!

# Host -> guest vsock once the guest listens.
h2g=fail
for _ in $(seq "$limit"); do
    if grep -q HUSK-VSOCK-LISTENING "$work/console.out" 2>/dev/null; then
        h2g=$(python3 - "$uds" <<'PY'
import socket, sys, time
for _ in range(50):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(60)
        s.connect(sys.argv[1]); s.sendall(b"CONNECT 1024\n")
        line = b""
        while not line.endswith(b"\n"): line += s.recv(1)
        if not line.startswith(b"OK "): raise OSError(line)
        s.sendall(b"hello-from-host"); got = b""
        while len(got) < 15: got += s.recv(15 - len(got))
        print("ok" if got == b"hello-from-host" else "mismatch"); break
    except OSError:
        time.sleep(0.2)
else:
    print("fail")
PY
)
        break
    fi
    kill -0 "$vmm_pid" 2>/dev/null || break
    sleep 1
done
wait "$vmm_pid"
status=$?
echo "  husk-vmm exit $status after $(($(date +%s) - start)) s"

has() { tr -d '\r' <"$work/console.out" | grep -qF -- "$1"; }

check vmm_exits_cleanly [ "$status" = 0 ]
check disk_serial has HUSK-DISK-SERIAL-OK
check disk_guest_reads_host_data has HUSK-DISK-READ-OK
check disk_host_sees_guest_write sh -c "dd if='$work/disk.img' bs=512 skip=1 count=1 status=none | grep -q HUSK-GUEST-WROTE-THIS"
check disk_read_only_refuses_writes has HUSK-DISK-RO-REFUSED
check rng_feeds_hwrng has HUSK-RNG-OK
check vsock_guest_to_host_echo has HUSK-VSOCK-G2H-OK
check vsock_host_to_guest_echo [ "$h2g" = ok ]
check net_ping_over_tap has HUSK-NET-PING-OK

# virtio-fs: a second boot, of the plain test initramfs in its husk_test=virtiofs mode (it
# mounts tag "hostshare", reads host.txt, writes guest.txt), guest RAM in a memfd, a virtiofsd
# serving $work/share, and the VMM jailed under its seccomp lists (kill), as the runtime runs it.
vfsd="${HUSK_VIRTIOFSD:-$(command -v virtiofsd || echo "$HOME/.cargo/bin/virtiofsd")}"
if [ ! -x "$vfsd" ]; then
    echo "test virtiofs ... skipped: virtiofsd is not installed (tests/setup installs it)"
else
    mkdir -p "$work/share" && mkdir -m 0700 "$work/jail"
    echo "hello from the host" >"$work/share/host.txt"
    "$vfsd" --socket-path "$work/vfs.sock" --shared-dir "$work/share" --sandbox namespace \
        >"$work/virtiofsd.log" 2>&1 &
    vfsd_pid=$!
    trap 'kill "$vfsd_pid" 2>/dev/null; cleanup' EXIT
    for _ in $(seq 100); do
        [ -S "$work/vfs.sock" ] && break
        sleep 0.2
    done
    fs_start=$(date +%s)
    timeout -k 10 "$limit" "$vmm" --kernel "$kernel" --initrd "$base_initrd" --memory-mib 256 \
        --append husk_test=virtiofs --serial "$work/fs-console.out" --memfd \
        --fs "socket=$work/vfs.sock,tag=hostshare" --jail "$work/jail" --seccomp kill \
        2>"$work/fs-vmm.err"
    fs_status=$?
    echo "  husk-vmm (virtio-fs) exit $fs_status after $(($(date +%s) - fs_start)) s"
    # virtiofsd serves one frontend and exits when it leaves.
    vfsd_exited=no
    for _ in $(seq 50); do
        kill -0 "$vfsd_pid" 2>/dev/null || { vfsd_exited=yes; break; }
        sleep 0.2
    done
    fshas() { tr -d '\r' <"$work/fs-console.out" | grep -qF -- "$1"; }
    fs_failed_before=$failed
    check virtiofs_vmm_exits_cleanly [ "$fs_status" = 0 ]
    check virtiofs_guest_reads_host_file fshas "HUSK-FS-HOST-SAYS hello from the host"
    check virtiofs_guest_unmounts_after_writing fshas HUSK-FS-WROTE
    check virtiofs_host_sees_guest_write grep -qx "written by the guest" "$work/share/guest.txt"
    check virtiofsd_exits_with_the_vm [ "$vfsd_exited" = yes ]
    if [ "$failed" != "$fs_failed_before" ]; then
        echo "  virtio-fs console:"
        tr -d '\r' <"$work/fs-console.out" | sed 's/^/  | /' | tail -n 30
        echo "  husk-vmm stderr:"
        sed 's/^/  | /' "$work/fs-vmm.err" | tail -n 20
        echo "  virtiofsd:"
        sed 's/^/  | /' "$work/virtiofsd.log" | tail -n 20
    fi
fi
if [ "$failed" != 0 ]; then
    echo "  console:"
    tr -d '\r' <"$work/console.out" | sed 's/^/  | /' | tail -n 40
    echo "  husk-vmm stderr:"
    sed 's/^/  | /' "$work/vmm.err" | tail -n 20
fi
echo "devices: $passed passed, $failed failed"
[ "$failed" = 0 ]
