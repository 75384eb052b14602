# shellcheck shell=bash
# Sourced by the tests/e2e suites: pass/fail bookkeeping, one line per check.
#   ok NAME                 record a pass
#   bad NAME [DETAIL]       record a failure (the first one also prints the kernel log's tail
#                           and, when the suite's husk root is $state, its sandboxes' logs)
#   check NAME COMMAND...   a pass when COMMAND succeeds, else a failure
# Each suite ends with: echo "<suite>: $passed passed, $failed failed" and a non-zero exit
# status when $failed is not 0.
passed=0
failed=0
ok() { echo "test $1 ... ok"; passed=$((passed + 1)); }
bad() {
    echo "test $1 ... FAILED${2:+: $2}"
    failed=$((failed + 1))
    # The first failure also shows the kernel's last words (inside the KVM test host: the L1's),
    # where a lost VM leaves its trace: a seccomp kill (type=1326), a KVM or soft-lockup report.
    if [ "$failed" -eq 1 ]; then
        echo "     kernel log at the first failure:"
        dmesg 2>/dev/null | tail -n 15 | sed 's/^/       /'
        # A suite's husk root ($state): each sandbox's last words (a lost VM says why there).
        local f
        for f in "${state:-/nonexistent}"/*/supervisor.log "${state:-/nonexistent}"/*/console.log; do
            [ -f "$f" ] || continue
            echo "     $f (last lines):"
            tail -n 8 "$f" | sed 's/^/       /'
        done
    fi
}
check() {
    local name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}

# HUSK_SECCOMP_AUDIT=1: when the suite exits (after its own EXIT trap, so teardown counts),
# print the kernel's seccomp audit records of the run (`audit: type=1326`: a syscall that a
# filter in log mode let through, such as HUSK_SUPERVISOR_SECCOMP=log or HUSK_VMM_SECCOMP=log,
# or one that killed a process), one line per executable, thread name and syscall, with the
# syscall's name and a count. The kernel log is followed from the start (`dmesg -w`), so that
# records do not fall out of its ring buffer, and the kernel's printk rate limit (10 per 5 s
# when no audit daemon runs), which drops records, is lifted for the run.
seccomp_audit_report() {
    local tbl=/usr/include/x86_64-linux-gnu/asm/unistd_64.h
    local lines
    sleep 0.5
    kill "$seccomp_audit_follow" 2>/dev/null
    wait "$seccomp_audit_follow" 2>/dev/null
    lines=$(grep 'type=1326' "$seccomp_audit_file" | tail -n +"$((seccomp_audit_seen + 1))")
    rm -f "$seccomp_audit_file"
    [ -n "$seccomp_audit_limit" ] && sysctl -qw kernel.printk_ratelimit="$seccomp_audit_limit"
    echo "--- seccomp audit (type=1326): $(printf '%s' "$lines" | grep -c .) records"
    dmesg 2>/dev/null | grep -E 'audit: (printk limit exceeded|audit_lost)' | tail -n 3
    [ -n "$lines" ] || return 0
    printf '%s\n' "$lines" | awk -v tbl="$tbl" '
        BEGIN {
            while ((getline l < tbl) > 0) {
                split(l, f, " ")
                if (f[1] == "#define" && f[2] ~ /^__NR_/) name[f[3]] = substr(f[2], 6)
            }
        }
        {
            comm = exe = nr = sig = ""
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^comm=/) comm = substr($i, 6)
                else if ($i ~ /^exe=/) exe = substr($i, 5)
                else if ($i ~ /^syscall=/) nr = substr($i, 9)
                else if ($i ~ /^sig=/) sig = substr($i, 5)
            }
            k = exe " " comm " syscall=" nr " (" ((nr in name) ? name[nr] : "?") ")"
            if (sig != "" && sig != "0") k = k " KILLED sig=" sig
            n[k]++
        }
        END { for (k in n) print "seccomp-audit: " k " x" n[k] }' | sort
}
if [ "${HUSK_SECCOMP_AUDIT:-}" = 1 ]; then
    seccomp_audit_seen=$(dmesg 2>/dev/null | grep -c 'type=1326')
    seccomp_audit_limit=$(sysctl -n kernel.printk_ratelimit 2>/dev/null)
    sysctl -qw kernel.printk_ratelimit=0 2>/dev/null || seccomp_audit_limit=""
    seccomp_audit_file=$(mktemp)
    dmesg -w >"$seccomp_audit_file" 2>/dev/null &
    seccomp_audit_follow=$!
    seccomp_audit_prev=$(trap -p EXIT)
    seccomp_audit_prev=${seccomp_audit_prev#trap -- }
    seccomp_audit_prev=${seccomp_audit_prev% EXIT}
    eval "seccomp_audit_prev=${seccomp_audit_prev:-''}"
    # shellcheck disable=SC2064 # the previous trap's text is meant to be expanded now
    trap "${seccomp_audit_prev:+$seccomp_audit_prev; }seccomp_audit_report" EXIT
fi

# busybox_rootfs DIR APPLET...: the suites' minimal rootfs: busybox-static with the applets as
# links, the usual top-level directories, root in /etc/passwd and /etc/group.
busybox_rootfs() {
    local dir=$1
    shift
    mkdir -p "$dir" && (
        cd "$dir" &&
            mkdir -p bin etc proc sys dev tmp root &&
            cp /bin/busybox bin/ &&
            for a in "$@"; do ln -s busybox "bin/$a"; done &&
            printf 'root:x:0:0:root:/root:/bin/sh\n' >etc/passwd &&
            printf 'root:x:0:\n' >etc/group
    )
}

# delete_all HUSK ROOT: force-deletes every container under a husk --root (the suites'
# cleanup traps).
delete_all() {
    local id
    for id in $("$1" --root "$2" list -q 2>/dev/null); do
        "$1" --root "$2" delete --force "$id" >/dev/null 2>&1
    done
}
