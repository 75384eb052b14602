# shellcheck shell=bash
# Sourced by the tests/e2e suites: pass/fail bookkeeping, one line per check.
#   ok NAME                 record a pass
#   bad NAME [DETAIL]       record a failure
#   check NAME COMMAND...   a pass when COMMAND succeeds, else a failure
# Each suite ends with: echo "<suite>: $passed passed, $failed failed" and a non-zero exit
# status when $failed is not 0.
passed=0
failed=0
ok() { echo "test $1 ... ok"; passed=$((passed + 1)); }
bad() { echo "test $1 ... FAILED${2:+: $2}"; failed=$((failed + 1)); }
check() {
    local name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}
