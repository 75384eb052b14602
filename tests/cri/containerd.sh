# shellcheck shell=bash
# Sourced by tests/e2e/cri.sh and tests/bench/cri.sh: a private containerd 1.6 with its CRI
# plugin, two runtime handlers (runc: io.containerd.runc.v2; husk: io.containerd.husk.v2, the
# shim found on PATH in the target dir, its options' ConfigPath a husk config file giving
# VMs $CRI_HUSK_MEMORY MiB), a CNI bridge network, and the busybox images
# imported offline. Everything (root, state, socket, CNI config and IPAM leases, pod logs)
# lives under one tmpfs at $CRI_WORK, so overlayfs works (the KVM test host's / is itself an
# overlay) and nothing outlives the run.
#
#   cri_setup WORK TARGET   write the config, the CNI conflist and the OCI image archive
#   cri_start               start containerd (bounded: CRI_START_TIMEOUT s, default 120),
#                           import the images, wait for RuntimeReady + NetworkReady
#   cri_stop                stop every pod, stop containerd by its PID, unmount the tmpfs
#   C ARGS...               husk-cri on the private socket (tests/cri)
#   cri_pod_opts POD        POD_OPTS=(the options runp and create both take: name, uid, logs,
#                           cgroup parent /kubepods/besteffort/pod<uid>)
#
# Images: $CRI_IMAGE (busybox, /www/index.html says hello-from-cri) and $CRI_PAUSE (the
# same rootfs whose entrypoint is `sleep`, the sandbox image). Network: bridge hkcri0,
# 10.89.0.0/24 (host-local IPAM), no masquerade.

CRI_IMAGE=localhost/husk-cri/busybox:1
CRI_PAUSE=localhost/husk-cri/pause:1
CRI_SUBNET_PREFIX=10.89.0.
CRI_BRIDGE=hkcri0
# The husk handler's options table names a husk config file (ConfigPath, as Kata's users
# point at configuration.toml): its VMs get this much memory instead of husk's default 256.
CRI_HUSK_MEMORY=${CRI_HUSK_MEMORY:-288}

# cri_setup WORK TARGET
cri_setup() {
    CRI_WORK=$1
    CRI_TARGET=$2
    CRI_SOCK=$CRI_WORK/containerd.sock
    CRI_STATE=$CRI_WORK/state
    CRI_ROOT=$CRI_WORK/root
    CRI_LOGS=$CRI_WORK/logs
    CRI_BIN=${HUSK_CRI_BIN:-$CRI_TARGET/release/husk-cri}
    CRI_PID=
    mkdir -p "$CRI_WORK" && mount -t tmpfs -o mode=0711 hkcri "$CRI_WORK" || {
        echo "cri: cannot mount a tmpfs at $CRI_WORK"
        return 1
    }
    mkdir -p "$CRI_WORK"/{cni,cni-ipam,opt,logs,image} || return 1
    printf 'memory_mib = %s\n' "$CRI_HUSK_MEMORY" >"$CRI_WORK/husk-config.toml" || return 1
    cat >"$CRI_WORK/config.toml" <<EOF
version = 2
root = "$CRI_ROOT"
state = "$CRI_STATE"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "$CRI_SOCK"

[ttrpc]
  address = "$CRI_SOCK.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CRI_WORK/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$CRI_PAUSE"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.husk]
  runtime_type = "io.containerd.husk.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.husk.options]
  ConfigPath = "$CRI_WORK/husk-config.toml"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "$CRI_WORK/cni"
  max_conf_num = 1
EOF
    cat >"$CRI_WORK/cni/10-hkcri.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "hkcri",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CRI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "${CRI_SUBNET_PREFIX}0/24" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$CRI_WORK/cni-ipam"
      }
    }
  ]
}
EOF
    cri_image_archive "$CRI_WORK/image" "$CRI_WORK/images.tar"
}

# cri_image_archive DIR OUT: an OCI image layout (one uncompressed layer: busybox-static with
# all its applets, /www/index.html) holding two manifests, $CRI_IMAGE (entrypoint sh) and
# $CRI_PAUSE (entrypoint sleep), tarred for `ctr images import`.
cri_image_archive() {
    local dir=$1 out=$2 r=$1/rootfs a
    mkdir -p "$r"/{bin,etc,proc,sys,dev,tmp,root,run,www} && cp /bin/busybox "$r/bin/" || return 1
    for a in $("$r/bin/busybox" --list); do
        [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
    printf 'root:x:0:\n' >"$r/etc/group"
    echo hello-from-cri >"$r/www/index.html"
    tar -C "$r" --numeric-owner --owner=0 --group=0 -cf "$dir/layer.tar" . || return 1
    python3 - "$dir" "$CRI_IMAGE" "$CRI_PAUSE" <<'PY' || return 1
import hashlib, json, os, shutil, sys
d, image, pause = sys.argv[1:]
lay = os.path.join(d, "layout")
blobs = os.path.join(lay, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)
def put(data):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, h), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + h, "size": len(data)}
with open(os.path.join(d, "layer.tar"), "rb") as f:
    layer = f.read()
ld = put(layer)
manifests = []
for name, entry in ((image, ["/bin/sh"]), (pause, ["/bin/sleep", "2147483647"])):
    cfg = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entry, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [ld["digest"]]},
    }
    cd = put(json.dumps(cfg).encode())
    man = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **cd),
        "layers": [dict(mediaType="application/vnd.oci.image.layer.v1.tar", **ld)],
    }
    md = put(json.dumps(man).encode())
    manifests.append(dict(
        mediaType="application/vnd.oci.image.manifest.v1+json", **md,
        platform={"architecture": "amd64", "os": "linux"},
        annotations={"io.containerd.image.name": name,
                     "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}))
with open(os.path.join(lay, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": manifests}, f)
with open(os.path.join(lay, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
PY
    tar -C "$dir/layout" -cf "$out" . && rm -rf "$dir/layer.tar" "$dir/layout"
}

C() { "$CRI_BIN" --socket "$CRI_SOCK" "$@"; }

# cri_pod_opts POD: sets the array POD_OPTS to the options naming pod POD (runp and create
# take the same). (No process substitution: the KVM test host's /dev has no /dev/fd.)
# The cgroup parent is kubelet's with its cgroupfs driver for a best-effort pod.
cri_pod_opts() {
    POD_OPTS=(--pod-name "$1" --pod-uid "$1-uid" --log-dir "$CRI_LOGS/$1"
        --cgroup-parent "/kubepods/besteffort/pod$1-uid")
}

# cri_start: containerd in the background (its log: $CRI_WORK/containerd.log), the images,
# the CRI's readiness. PATH starts with the target dir (containerd-shim-husk-v2, husk) and
# containerd's environment (HUSK_KERNEL, HUSK_INITRD) reaches the shims it starts.
cri_start() {
    local limit=${CRI_START_TIMEOUT:-120} end
    PATH="$CRI_TARGET/release:$PATH" containerd --config "$CRI_WORK/config.toml" \
        >"$CRI_WORK/containerd.log" 2>&1 </dev/null &
    CRI_PID=$!
    end=$((SECONDS + limit))
    until [ -S "$CRI_SOCK" ] && ctr -a "$CRI_SOCK" version >/dev/null 2>&1; do
        if ! kill -0 "$CRI_PID" 2>/dev/null || [ $SECONDS -ge $end ]; then
            echo "cri: containerd did not come up within $limit s; its log:"
            tail -n 30 "$CRI_WORK/containerd.log" | sed 's/^/     /'
            return 1
        fi
        sleep 0.5
    done
    if ! timeout 300 ctr -a "$CRI_SOCK" -n k8s.io images import "$CRI_WORK/images.tar" >"$CRI_WORK/import.log" 2>&1; then
        echo "cri: ctr images import failed:"
        sed 's/^/     /' "$CRI_WORK/import.log"
        return 1
    fi
    C ready --wait $((end > SECONDS ? end - SECONDS : 1)) >"$CRI_WORK/ready.json" || {
        echo "cri: the CRI plugin is not ready; containerd's log:"
        grep -iE 'error|warn|fail' "$CRI_WORK/containerd.log" | tail -n 20 | sed 's/^/     /'
        return 1
    }
}

# cri_stop: remove every pod (containerd stops their shims), stop containerd (SIGTERM, then
# SIGKILL after 20 s) and unmount the tmpfs.
cri_stop() {
    local id end
    if [ -n "$CRI_PID" ] && kill -0 "$CRI_PID" 2>/dev/null; then
        for id in $(C --timeout 60 pods 2>/dev/null | jq -r '.[].id' 2>/dev/null); do
            C --timeout 60 stopp "$id" >/dev/null 2>&1
            C --timeout 60 rmp "$id" >/dev/null 2>&1
        done
        kill "$CRI_PID" 2>/dev/null
        end=$((SECONDS + 20))
        while kill -0 "$CRI_PID" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.5; done
        kill -9 "$CRI_PID" 2>/dev/null
        wait "$CRI_PID" 2>/dev/null
    fi
    CRI_PID=
    ip link del "$CRI_BRIDGE" 2>/dev/null
    if [ -n "${CRI_WORK:-}" ]; then
        grep -o " $CRI_WORK/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
        umount -l "$CRI_WORK" 2>/dev/null
    fi
}
