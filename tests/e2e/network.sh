#!/usr/bin/env bash
# End-to-end: issue 10's networking in real microVMs. The caller's network namespace (named in
# the spec's linux.namespaces[type=network].path) is wired into the guest (a TAP per veth, tc
# mirred redirects both ways, runtime/src/net) and the guest NIC becomes that veth.
#   1. a plain netns + veth this suite sets up (boot 1): a busybox httpd in the container
#      serves a page the host fetches from the container's IP; inside, `ip addr`/`ip route`
#      show the veth's name, MAC, address, MTU and the default route;
#   2. the container reaches a server in another netns through its gateway (the host
#      forwards) and one on the host end of the veth (boots 1, 2);
#   3. podman (CNI, iptables-nft) with husk as the runtime: `--network bridge` + `-p 8080:80`
#      fetched from 127.0.0.1:8080 and from the container's IP; two husk containers on one
#      `podman network create` network reach each other by IP, and by name when podman's DNS
#      (the CNI dnsname plugin) is there (boots 6-8);
#   4. no TAP, no ingress qdisc on the veth and no husk/virtiofsd process left after `delete`
#      of a stopped container (boot 2), `delete -f` of a running one (boot 1), `kill -9` of the
#      supervisor then `delete` (boot 3); the namespace is reused by the next container;
#   5. `--network none` (a network namespace without a path): loopback only, no TAP (boot 4);
#      no network namespace at all (host network): loopback only and supervisor.log's warning
#      (boot 5).
#
# usage: tests/e2e/network.sh [--prepare]
#   --prepare  as tests/e2e/runc-cli.sh --prepare (husk release build, agent initramfs)
#   env HUSK_KERNEL, HUSK_BIN, HUSK_AGENT_INITRD as for runc-cli.sh; NO_PODMAN=1 skips 3.
#
# Needs root, ip, tc, curl (and podman, conmon, iptables for 3) and a KVM that boots stock
# kernels: run it through tests/with-kvm (the KVM test host loads sch_ingress, cls_u32,
# act_mirred and the netfilter modules podman's CNI plugins need).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
husk="${HUSK_BIN:-$target/release/husk}"
applets="sh echo cat sleep ls mkdir grep sed ip ifconfig route httpd wget nc true timeout"

if [ "${1:-}" = --prepare ]; then
    exec "$root/tests/e2e/runc-cli.sh" --prepare
fi

export HUSK_INITRD="${HUSK_AGENT_INITRD:-$target/guest-image/initramfs.cpio}"
export HUSK_KERNEL="${HUSK_KERNEL:-$("$root/kernel-config/build" | tail -n1)}"
for f in "$husk" "$HUSK_KERNEL" "$HUSK_INITRD" /bin/busybox; do
    [ -e "$f" ] || { echo "network: $f missing (run tests/e2e/network.sh --prepare on the host)"; exit 1; }
done
for c in ip tc curl python3; do
    command -v $c >/dev/null || { echo "network: $c not installed"; exit 1; }
done

work="$(mktemp -d)"
state="$work/root"
bundle="$work/bundle"
ns1=husk-e2e-c # the container's namespace
ns2=husk-e2e-o # another namespace, behind the host (the "outside")
hostsrv=
cleanup() {
    delete_all "$husk" "$state"
    [ -n "$hostsrv" ] && kill "$hostsrv" 2>/dev/null
    ip netns pids $ns2 2>/dev/null | xargs -r kill 2>/dev/null
    if [ -n "${podman_cleanup:-}" ]; then $podman_cleanup; fi
    ip netns del $ns1 2>/dev/null
    ip netns del $ns2 2>/dev/null
    ip link del hk-c 2>/dev/null
    ip link del hk-o 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

. "$root/tests/e2e/lib/harness.sh"
# harness.sh's check, but failing with the command (for `check ... || show more`).
check() {
    local name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; return 1; fi
}
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
logs() { # ID: the end of its husk logs, for a failure
    tail -n 20 "$state/$1/supervisor.log" "$state/$1/console.log" 2>/dev/null | sed 's/^/     /'
}
# spec ARGS_JSON NETNS: config.json from `husk spec`, no terminal, these process.args, the
# network namespace entry: NETNS a path, "none" (no path), or "host" (no entry).
spec() {
    python3 - "$work/spec.json" "$bundle/config.json" "$1" "$2" <<'EOF'
import json, sys
src, dst, args, net = sys.argv[1:]
s = json.load(open(src))
s["process"]["terminal"] = False
s["process"]["args"] = json.loads(args)
nss = [n for n in s["linux"]["namespaces"] if n["type"] != "network"]
if net == "none":
    nss.append({"type": "network"})
elif net != "host":
    nss.append({"type": "network", "path": net})
s["linux"]["namespaces"] = nss
json.dump(s, open(dst, "w"), indent=1)
EOF
}
# fetch URL: the body, retried for up to 60 s (the guest may still be starting httpd).
fetch() {
    local end=$((SECONDS + 60)) out
    while :; do
        out=$(curl -sS --max-time 10 "$1" 2>&1) && { printf '%s' "$out"; return 0; }
        [ $SECONDS -lt $end ] || { printf '%s' "$out"; return 1; }
        sleep 1
    done
}
# taps [NS]: the husk TAPs in NS (default: this namespace), one a line.
taps() {
    ip ${1:+-n "$1"} -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | grep '^husk'
}
# leftovers NS IFACE: what of the wiring is left in NS (TAPs, an ingress qdisc on IFACE) and
# any husk or virtiofsd process; empty when clean.
leftovers() {
    taps "$1" | sed 's/^/TAP /'
    tc -n "$1" qdisc show dev "$2" 2>/dev/null | grep -i ingress | sed 's/^/qdisc /'
    pgrep -a -x husk | sed 's/^/process /'
    pgrep -a -x virtiofsd | sed 's/^/process /'
}
# clean NS IFACE: leftovers is empty within 10 s; prints them otherwise.
clean() {
    local end=$((SECONDS + 10)) left
    while :; do
        left=$(leftovers "$1" "$2")
        [ -z "$left" ] && return 0
        [ $SECONDS -lt $end ] || { printf '%s\n' "$left" | sed 's/^/     left: /'; return 1; }
        sleep 0.5
    done
}

echo "--- namespaces: $ns1 (veth eth0 10.77.0.2/24, MTU 1400, default via 10.77.0.1) and $ns2 (10.78.0.2, behind the host)"
sysctl -qw net.ipv4.ip_forward=1
ip netns add $ns1 && ip link add hk-c mtu 1400 type veth peer name eth0 mtu 1400 netns $ns1 &&
    ip addr add 10.77.0.1/24 dev hk-c && ip link set hk-c up &&
    ip -n $ns1 link set lo up && ip -n $ns1 addr add 10.77.0.2/24 dev eth0 &&
    ip -n $ns1 link set eth0 up && ip -n $ns1 route add default via 10.77.0.1 &&
    ip netns add $ns2 && ip link add hk-o type veth peer name eth0 netns $ns2 &&
    ip addr add 10.78.0.1/24 dev hk-o && ip link set hk-o up &&
    ip -n $ns2 link set lo up && ip -n $ns2 addr add 10.78.0.2/24 dev eth0 &&
    ip -n $ns2 link set eth0 up && ip -n $ns2 route add default via 10.78.0.1 ||
    { echo "network: cannot set up the namespaces"; exit 1; }
mac=$(ip -n $ns1 -o link show eth0 | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)
netns="/var/run/netns/$ns1"
[ -e "$netns" ] || netns="/run/netns/$ns1"

# The bundle; a page for httpd in its rootfs.
busybox_rootfs "$bundle/rootfs" $applets && mkdir -p "$bundle/rootfs/www" &&
    echo hello-from-husk >"$bundle/rootfs/www/index.html" || { echo "network: cannot build the bundle"; exit 1; }
(cd "$bundle" && H spec) && mv "$bundle/config.json" "$work/spec.json" || exit 1
# The servers outside: one in $ns2 (through the gateway), one on the host end of the veth.
mkdir -p "$work/www" && echo hello-from-outside >"$work/www/o.html" && echo hello-from-host >"$work/www/h.html"
ip netns exec $ns2 busybox httpd -p 8081 -h "$work/www"
busybox httpd -f -p 10.77.0.1:8082 -h "$work/www" &
hostsrv=$!

echo "--- 1. httpd in the container, fetched from the host (boot 1)"
spec '["httpd", "-f", "-p", "80", "-h", "/www"]' "$netns"
H create -b "$bundle" c1 >"$work/c1.out" 2>&1 </dev/null
rc=$?
check "create with the netns path" test $rc -eq 0 || { cat "$work/c1.out"; logs c1; }
H start c1 >/dev/null 2>&1
check "start" wait_status c1 running 10
check "network.json records the wiring" grep -q "\"netns\":\"$netns\"" "$state/c1/network.json"
tap=$(taps $ns1 | head -n1)
check "a TAP in the namespace ($tap)" test -n "$tap"
qd=$(tc -n $ns1 filter show dev eth0 ingress 2>&1)
check "eth0's ingress redirects to the TAP" grep -q "Egress Redirect to device $tap" <<<"$qd" || echo "     $qd"
out=$(fetch http://10.77.0.2/index.html)
check "the host fetches the page from 10.77.0.2" test "$out" = hello-from-husk || { echo "     $out"; logs c1; }
addr=$(H exec c1 ip addr show eth0 2>&1)
check "guest eth0 is named after the veth" grep -q '^[0-9]*: eth0:' <<<"$addr" || echo "$addr" | sed 's/^/     /'
check "guest eth0 has the veth's MAC ($mac)" grep -q "link/ether $mac" <<<"$addr"
check "guest eth0 has 10.77.0.2/24" grep -q 'inet 10.77.0.2/24' <<<"$addr"
check "guest eth0 has MTU 1400" grep -q 'mtu 1400' <<<"$addr"
check "guest eth0 is up" grep -q '<.*[,<]UP[,>]' <<<"$addr" || echo "$addr" | sed 's/^/     /' 
routes=$(H exec c1 ip route 2>&1)
check "guest default route via 10.77.0.1 dev eth0" grep -q '^default via 10.77.0.1 dev eth0' <<<"$routes" || echo "$routes" | sed 's/^/     /'
check "guest link route 10.77.0.0/24 dev eth0" grep -q '^10.77.0.0/24 dev eth0' <<<"$routes"
lo=$(H exec c1 ip addr show lo 2>&1)
check "guest lo is up with 127.0.0.1" grep -q 'inet 127.0.0.1/8' <<<"$lo"

echo "--- 2. the container reaches out (boot 1)"
out=$(H exec c1 timeout 20 wget -q -O - http://10.77.0.1:8082/h.html 2>&1)
check "the host end of the veth (10.77.0.1:8082)" test "$out" = hello-from-host || echo "     $out"
out=$(H exec c1 timeout 20 wget -q -O - http://10.78.0.2:8081/o.html 2>&1)
check "a server in $ns2 through the gateway (10.78.0.2:8081)" test "$out" = hello-from-outside || echo "     $out"

echo "--- 4. delete -f of a running container"
H delete -f c1 >/dev/null 2>&1
check "delete -f" test $? -eq 0
check "nothing left after delete -f (TAP, qdisc, processes)" clean $ns1 eth0
check "the namespace and its veth stay" bash -c "ip -n $ns1 -o addr show eth0 | grep -q 10.77.0.2/24"

echo "--- 2/4. a container that reaches out and exits, then delete (boot 2)"
spec '["sh", "-c", "timeout 20 wget -q -O - http://10.78.0.2:8081/o.html && ip route"]' "$netns"
H create -b "$bundle" c2 >"$work/c2.out" 2>&1 </dev/null &&
    H start c2 >/dev/null 2>&1
check "the namespace is wired again (create + start)" test $? -eq 0 || logs c2
check "c2 stops" wait_status c2 stopped 120
check "c2 fetched from $ns2 as its first act" grep -qx hello-from-outside "$work/c2.out" ||
    { sed 's/^/     /' "$work/c2.out"; logs c2; }
H delete c2 >/dev/null 2>&1
check "delete" test $? -eq 0
check "nothing left after delete (TAP, qdisc, processes)" clean $ns1 eth0
check "state and network.json gone" test ! -e "$state/c2"

echo "--- 4. kill -9 of the supervisor, then delete (boot 3)"
spec '["sleep", "600"]' "$netns"
H create -b "$bundle" c3 >/dev/null 2>&1 </dev/null && H start c3 >/dev/null 2>&1
check "c3 runs" wait_status c3 running 10 || logs c3
sup=$(H state c3 | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
[ -n "$sup" ] && kill -9 "$sup"
check "stopped after kill -9 of the supervisor" wait_status c3 stopped 15
end=$((SECONDS + 15))
until [ -z "$(taps $ns1)" ] || [ $SECONDS -ge $end ]; do sleep 0.5; done
check "the TAP went with the VMM" test -z "$(taps $ns1)"
check "eth0's ingress qdisc stays until delete" bash -c "tc -n $ns1 qdisc show dev eth0 | grep -q ingress"
H delete c3 >/dev/null 2>&1
check "delete after kill -9" test $? -eq 0
check "nothing left after kill -9 + delete (TAP, qdisc, processes)" clean $ns1 eth0

echo "--- 5. --network none (boot 4) and the host network (boot 5)"
spec '["sh", "-c", "ls /sys/class/net"]' none
H run -b "$bundle" c4 >"$work/c4.out" 2>&1 </dev/null
check "network none: run" test $? -eq 0 || { cat "$work/c4.out"; }
check "network none: loopback only" test "$(cat "$work/c4.out")" = lo ||
    sed 's/^/     /' "$work/c4.out"
check "network none: no TAP on the host" test -z "$(taps)"
spec '["sh", "-c", "ls /sys/class/net"]' host
H create -b "$bundle" c5 >"$work/c5.out" 2>&1 </dev/null && H start c5 >/dev/null 2>&1
check "host network: c5 stops" wait_status c5 stopped 120
check "host network: loopback only" test "$(cat "$work/c5.out")" = lo || sed 's/^/     /' "$work/c5.out"
check "host network: supervisor.log warns" grep -q "cannot share the host's network stack" "$state/c5/supervisor.log"
H delete c5 >/dev/null 2>&1

if [ -n "${NO_PODMAN:-}" ] || ! command -v podman >/dev/null; then
    echo "--- 3. podman: skipped (NO_PODMAN or no podman)"
    echo "network: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
fi

echo "--- 3. podman with CNI (boots 6-8)"
mkdir -p "$work/storage" && mount -t tmpfs tmpfs "$work/storage" || { echo "network: no tmpfs for podman"; exit 1; }
# A short husk --root keeps <root>/<64-hex id>/<socket> well inside sun_path (107 bytes): with
# $work/husk-root, virtiofsd's socket (then virtiofsd.sock) did not fit.
proot=$(mktemp -d /run/hk.XXXX)
cat >"$work/husk" <<EOF
#!/bin/sh
export HUSK_KERNEL='$HUSK_KERNEL' HUSK_INITRD='$HUSK_INITRD'
exec '$husk' --root '$proot' "\$@"
EOF
chmod +x "$work/husk"
P() {
    timeout -k 10 "${PODMAN_TIMEOUT:-300}" podman --root "$work/storage" --runroot "$work/run" --storage-driver overlay \
        --cgroup-manager cgroupfs --events-backend file --runtime "$work/husk" "$@"
}
podman_done() {
    P rm -af -t 0 >/dev/null 2>&1
    P network rm -f husknet >/dev/null 2>&1
    delete_all "$husk" "$proot"
    umount -l "$work/storage" 2>/dev/null
    rm -rf "$proot"
}
podman_cleanup=podman_done
opts=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
plogs() { # the newest husk container's logs
    local d
    d=$(ls -td "$proot"/*/ 2>/dev/null | head -n1)
    [ -n "$d" ] && tail -n 15 "$d/supervisor.log" "$d/console.log" 2>/dev/null | sed 's/^/     /'
}
tar -C "$bundle/rootfs" -cf "$work/busybox.tar" . && P import -q "$work/busybox.tar" localhost/busybox >/dev/null
check "podman import" P image exists localhost/busybox
img=localhost/busybox
echo "     podman's network backend: $(P info --format '{{.Host.NetworkBackend}}' 2>&1)"

P run -d --name web --network bridge -p 8080:80 "${opts[@]}" $img httpd -f -p 80 -h /www >"$work/p1" 2>&1
check "podman run -d --network bridge -p 8080:80" test $? -eq 0 || { cat "$work/p1"; plogs; }
ip=$(P inspect -f '{{.NetworkSettings.IPAddress}}' web 2>/dev/null)
echo "     web's IP: $ip"
out=$(fetch http://127.0.0.1:8080/index.html)
check "the host fetches the page from 127.0.0.1:8080" test "$out" = hello-from-husk || { echo "     $out"; plogs; }
out=$(fetch "http://$ip/index.html")
check "the host fetches the page from the container's IP ($ip)" test "$out" = hello-from-husk || echo "     $out"
P rm -f -t 0 web >/dev/null 2>&1

P network create husknet >"$work/pn" 2>&1
check "podman network create husknet" test $? -eq 0 || cat "$work/pn"
dns=$(P network inspect -f '{{.DNSEnabled}}' husknet 2>&1)
echo "     husknet DNS: $dns"
P run -d --name srv --network husknet "${opts[@]}" $img httpd -f -p 80 -h /www >"$work/p2" 2>&1
check "server on husknet" test $? -eq 0 || { cat "$work/p2"; plogs; }
sip=$(P inspect -f '{{(index .NetworkSettings.Networks "husknet").IPAddress}}' srv 2>/dev/null)
echo "     srv's IP: $sip"
fetch "http://$sip/index.html" >/dev/null # srv's httpd is up
script="timeout 20 wget -q -O - http://$sip/index.html"
[ "$dns" = true ] && script="$script && timeout 20 wget -q -O - http://srv/index.html"
out=$(P run --rm --network husknet "${opts[@]}" $img sh -c "$script" 2>&1)
check "a second husk container reaches srv by IP ($sip)" grep -qx hello-from-husk <<<"$(head -n1 <<<"$out")" ||
    { echo "     $out"; plogs; }
if [ "$dns" = true ]; then
    check "... and by name (srv)" test "$(grep -c hello-from-husk <<<"$out")" -eq 2
else
    echo "     by name: not checked, podman's network has no DNS (the CNI dnsname plugin is not installed)"
fi
P rm -f -t 0 srv >/dev/null 2>&1
check "no husk container left by podman" test -z "$("$husk" --root "$proot" list -q 2>/dev/null)"
check "no husk process left by podman" test -z "$(pgrep -x husk; pgrep -x virtiofsd)"

echo "network: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
