#!/usr/bin/env bash
# End-to-end: husk-vmm boots husk's stock minimal vmlinux with the busybox test initramfs
# (tests/guest-boot/make-initramfs) on real KVM, and ends with the right status.
#
# usage: tests/e2e/linux-boot.sh
#   env HUSK_VMM     husk-vmm binary        (default: target/release/husk-vmm)
#       HUSK_KERNEL  vmlinux                (default: kernel-config/build's output)
#       HUSK_INITRD  test initramfs         (default: tests/guest-boot/make-initramfs's output)
#       HUSK_BZIMAGE a stock distribution bzImage to boot too (default: the Debian kernel the
#                    KVM test host caches; the test is skipped, saying so, when there is none)
#
# Needs a host that boots stock kernels (hardware KVM, or inside tests/kvm-host/run); run it
# through tests/with-kvm, which picks. Prints "N passed, M failed" and exits non-zero on failure.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
vmm="${HUSK_VMM:-$root/target/release/husk-vmm}"
kernel="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
initrd="${HUSK_INITRD:-$("$root/tests/guest-boot/make-initramfs" | tail -n1)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
. "$root/tests/e2e/lib/harness.sh"

# Generous: under the nested test host a boot takes tens of seconds.
boot_limit="${HUSK_BOOT_LIMIT:-300}"

# boot NAME VCPUS EXPECTED_STATUS [extra cmdline words]; output in $work/NAME.{out,err,json}
# The kernel is $boot_kernel (default: husk's vmlinux).
boot() {
    local name=$1 vcpus=$2 want=$3
    shift 3
    local start end status
    start=$(date +%s.%N)
    timeout -k 10 "$boot_limit" "$vmm" --kernel "${boot_kernel:-$kernel}" --initrd "$initrd" --vcpus "$vcpus" \
        --memory-mib 256 --append "$*" --report-json "$work/$name.json" \
        >"$work/$name.out" 2>"$work/$name.err"
    status=$?
    end=$(date +%s.%N)
    printf '  %s: exit %s in %.1f s\n' "$name" "$status" "$(echo "$end - $start" | bc)"
    if [ "$status" != "$want" ]; then
        echo "    expected exit $want; stderr:"
        sed 's/^/    | /' "$work/$name.err" | tail -n 20
        echo "    console:"
        tr -d '\r' <"$work/$name.out" | sed 's/^/    | /' | tail -n 20
        return 1
    fi
}

expect() { # FILE PATTERN: the file must contain the fixed string
    if ! tr -d '\r' <"$1" | grep -qF -- "$2"; then
        echo "    missing '$2' in $(basename "$1"):"
        tr -d '\r' <"$1" | sed 's/^/    | /' | tail -n 20
        return 1
    fi
}


reboot_with() { # VCPUS
    local n=$1
    boot "reboot-$n" "$n" 0 &&
        expect "$work/reboot-$n.out" "HUSK-GUEST-INIT-OK cpus=$n" &&
        expect "$work/reboot-$n.out" "HUSK-GUEST-REBOOT" &&
        expect "$work/reboot-$n.err" "guest rebooted" &&
        expect "$work/reboot-$n.err" "boot complete" &&
        expect "$work/reboot-$n.json" '"exit_code":0' &&
        ! grep -q '"kernel_entry_to_marker_ms":null' "$work/reboot-$n.json"
}

poweroff_ends_vm() {
    boot poweroff 1 0 husk_test=poweroff &&
        expect "$work/poweroff.out" "HUSK-GUEST-POWEROFF" &&
        expect "$work/poweroff.err" "guest powered off"
}

panic_is_reported() {
    boot panic 1 3 husk_test=panic &&
        expect "$work/panic.out" "HUSK-GUEST-PANIC" &&
        expect "$work/panic.err" "guest kernel panicked"
}

missing_init_is_a_panic() {
    boot no-init 1 3 rdinit=/does-not-exist init=/does-not-exist &&
        expect "$work/no-init.err" "guest kernel panicked"
}

debian_bzimage_boots() {
    local bz="${HUSK_BZIMAGE:-}"
    if [ -z "$bz" ]; then
        bz=$(ls "${HUSK_CACHE:-/var/cache/husk}"/kvm-host/*/vmlinuz 2>/dev/null | head -n1)
    fi
    if [ -z "$bz" ] || [ ! -f "$bz" ]; then
        echo "    SKIP: no distribution bzImage found (set HUSK_BZIMAGE)"
        return 0
    fi
    echo "    bzImage: $bz"
    boot_kernel="$bz" boot bzimage 2 0 &&
        expect "$work/bzimage.out" "HUSK-GUEST-INIT-OK cpus=2" &&
        expect "$work/bzimage.err" "guest rebooted"
}

echo "linux-boot: $vmm"
echo "  kernel $kernel ($(stat -c %s "$kernel") bytes), initrd $initrd ($(stat -c %s "$initrd") bytes)"
check boots_and_reboots_with_1_vcpu reboot_with 1
check boots_and_reboots_with_2_vcpus reboot_with 2
check poweroff_ends_the_vm poweroff_ends_vm
check panic_exits_with_status_3 panic_is_reported
check missing_init_panics missing_init_is_a_panic
check stock_debian_bzimage_boots debian_bzimage_boots
for f in "$work"/reboot-*.json; do
    [ -f "$f" ] && echo "  $(basename "$f" .json): $(cat "$f")"
done
echo "linux-boot: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
