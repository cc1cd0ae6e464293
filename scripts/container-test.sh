#!/usr/bin/env bash
# Runs the facevault container image the way the Helm chart runs it, and checks
# that it serves.
#
#   scripts/container-test.sh [BINARY]     # default target/release/facevault
#
# Base images cannot be pulled everywhere the tests run, so the image is
# assembled here with the runtime layout of the Dockerfile's distroless stage
# (gcr.io/distroless/cc-debian12:nonroot): `FROM scratch` with BINARY at
# /usr/local/bin/facevault, the glibc libraries it links (found with ldd), the
# CA certificates, /etc/passwd and /etc/group with nonroot = 65532, user
# 65532:65532, no shell, entrypoint `facevault serve`, FACEVAULT_CONFIG as in
# the Dockerfile.
#
# It then starts the image with podman (runtime runc, as root) read-only, as
# user 65532, without capabilities, with the config, keys and certificates
# mounted read-only where helm/facevault mounts them (templates/deployment.yaml:
# /etc/facevault/facevault.toml, /var/run/facevault/{tls,keys/*}/, Secret files
# 0440 group 65532 as with the chart's fsGroup) and an in-memory /tmp, against a
# real redis-server this script starts on a free port. Keys come from `facevault
# keygen`, certificates from the dev PKI `facevault dev` writes. It checks health
# SERVING on the plaintext health port (and the `liveness` service the chart's
# liveness probe asks for), then an Enroll and two Verifies (MATCH and NO_MATCH)
# through the mTLS port with `facevault seal ... | grpcurl`, as the README's
# walkthrough does. It prints the image size and the time from `podman run` to
# SERVING. The container, the image, the temporary directory and Redis are
# removed on exit, failed or not.
#
# Needs: root (podman runs containers as root here), podman and runc (installed
# with apt-get when missing), redis-server (scripts/ensure-redis.sh), grpcurl
# (from the test virtual environment, scripts/python-env.sh, when not on PATH).
# Environment: KEEP_TMP=1 keeps the temporary directory.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${1:-$repo/target/release/facevault}
started_at=$(date +%s)

say() { printf 'container-test: [%3ds] %s\n' "$(($(date +%s) - started_at))" "$*" >&2; }
die() {
    say "FAILED: $*"
    exit 1
}

[[ -x $bin ]] || die "no facevault binary at $bin; build it with 'cargo build --release --locked --bin facevault'"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

# --- tools ------------------------------------------------------------------------
if [[ $(id -u) != 0 ]]; then
    die "podman runs the container as root here (rootless podman needs user namespaces \
and a cgroup setup this test does not assume); run it as root, e.g. 'sudo $0 $*'"
fi

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 \
        || die "podman and runc are missing and there is no apt-get to install them: install \
podman (>= 4) and runc with your package manager"
    say "podman or runc not found; installing them with apt-get (this prints apt's progress)"
    export DEBIAN_FRONTEND=noninteractive
    # The lock timeout lets a parallel apt run finish instead of failing this one.
    apt-get -o DPkg::Lock::Timeout=300 update \
        || die "apt-get update failed; install podman and runc by hand: apt-get install podman runc"
    apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends podman runc \
        || die "apt-get could not install podman and runc; install them by hand: apt-get install podman runc"
    command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 \
        || die "podman or runc still missing after apt-get install"
fi
"$repo/scripts/ensure-redis.sh"
command -v ldd >/dev/null 2>&1 || die "ldd is missing (Debian: apt-get install libc-bin)"

# shellcheck source=scripts/ensure-grpcurl.sh
source "$repo/scripts/ensure-grpcurl.sh"
ensure_grpcurl
say "using $(podman --version), runc $(runc --version | awk 'NR == 1 { print $3 }'), $(grpcurl -version 2>&1 | head -1), $bin"

# --- clean-up, whatever happens ----------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/facevault-container.XXXXXX")
chmod 0755 "$work" # the container's user reads the bind mounts below it
tag=localhost/facevault-container-test:$$-$RANDOM
container=facevault-container-test-$$-$RANDOM
redis_pid=
dev_pid=
image_built=0

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if podman container exists "$container" 2>/dev/null; then
        if [[ $status != 0 ]]; then
            say "the container's log (last 40 lines):"
            podman logs --tail 40 "$container" >&2 2>&1 || true
        fi
        podman --runtime runc rm -f -t 5 "$container" >/dev/null 2>&1 || say "could not remove container $container"
    fi
    if [[ $image_built == 1 ]]; then
        podman rmi -f "$tag" >/dev/null 2>&1 || say "could not remove image $tag"
    fi
    for pid in $dev_pid $redis_pid; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        say "kept $work"
    else
        rm -rf "$work"
    fi
    if [[ $status == 0 ]]; then
        say "passed"
    else
        say "failed (exit $status)"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command, saying every 15 s that it still runs (CI shows progress).
with_progress() { # what command...
    local what=$1 pid waited=0
    shift
    "$@" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        waited=$((waited + 1))
        ((waited % 15 != 0)) || say "$what: still running ($waited s)"
    done
    wait "$pid"
}

free_ports() { # count
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
}
read -r redis_port grpc_port health_port < <(free_ports 3)

# --- the image -----------------------------------------------------------------------
say "assembling the image (FROM scratch, the distroless runtime layout)"
ctx=$work/image
rootfs=$ctx/rootfs
install -D -m 0755 "$bin" "$rootfs/usr/local/bin/facevault"
# The binary's shared libraries and the ELF interpreter, at the paths ldd names.
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
[[ -n $libs ]] || die "ldd found no shared libraries in $bin: is it a dynamically linked glibc binary?"
for lib in $libs; do
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -f $ca_bundle ]] || die "no CA bundle at $ca_bundle (Debian: apt-get install ca-certificates)"
install -D -m 0644 "$ca_bundle" "$rootfs$ca_bundle"
# distroless's accounts; no login shell exists in the image.
install -d -m 0755 "$rootfs/etc"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$rootfs/etc/group"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
install -d -m 1777 "$rootfs/tmp"
install -d -m 0700 -o 65532 -g 65532 "$rootfs/home/nonroot"
cat >"$ctx/Containerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
USER 65532:65532
EXPOSE 50051 8081
ENV FACEVAULT_CONFIG=/etc/facevault/facevault.toml
ENTRYPOINT ["/usr/local/bin/facevault", "serve"]
EOF
with_progress "podman build" podman build --quiet --pull=never -t "$tag" -f "$ctx/Containerfile" "$ctx" \
    >/dev/null || die "podman build failed"
image_built=1
size=$(podman image inspect --format '{{.Size}}' "$tag")
user=$(podman image inspect --format '{{.Config.User}}' "$tag")
[[ $user == 65532:65532 ]] || die "the image's user is '$user', not 65532:65532"
# No shell: starting /bin/sh must fail for want of the file (exit 127), not for
# another reason.
shell_status=0
shell_out=$(podman --runtime runc run --rm --pull=never --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    --network none --entrypoint /bin/sh "$tag" -c true 2>&1) || shell_status=$?
[[ $shell_status == 127 && $shell_out == *"/bin/sh: no such file or directory"* ]] \
    || die "the image must have no shell, but starting /bin/sh gave exit $shell_status: $shell_out"
say "image $tag: $(awk -v b="$size" 'BEGIN { printf "%.1f MB", b / 1e6 }') ($size bytes), user $user, no shell"

# --- keys, certificates, config, mounted as the chart mounts them --------------------
say "keys from 'facevault keygen', certificates from the dev PKI"
"$bin" keygen --dir "$work/keys" >/dev/null
# `facevault dev` writes its PKI and sample embeddings, then starts a server: it is
# pointed at a port where no Redis listens (it never touches the test's Redis)
# and stopped as soon as it is up.
(cd "$work" && exec "$bin" dev --dir dev --listen 127.0.0.1:0 --health-listen 127.0.0.1:0 \
    --redis-url "redis://127.0.0.1:$(free_ports 1)") >"$work/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 1 300); do
    grep -q 'facevault dev is up' "$work/dev.log" && break
    kill -0 "$dev_pid" 2>/dev/null || break
    sleep 0.1
done
kill -TERM "$dev_pid" 2>/dev/null || true
wait "$dev_pid" 2>/dev/null || true
dev_pid=
pki=$work/dev
for f in ca.pem server.pem server.key app.pem app.key samples/alice.json; do
    [[ -f $pki/$f ]] || { tail -20 "$work/dev.log" >&2; die "facevault dev did not write $pki/$f"; }
done

mnt=$work/mnt # one directory per volume of the chart's pod
# A Secret volume with defaultMode 0440 and fsGroup 65532: root-owned files the
# group reads, nothing for others (the service refuses key files others may read).
secret_file() { # source destination
    install -D -m 0440 -o 0 -g 65532 "$1" "$2"
    chmod 0750 "$(dirname "$2")"
    chgrp 65532 "$(dirname "$2")"
}
secret_file "$pki/server.pem" "$mnt/tls/tls.crt"
secret_file "$pki/server.key" "$mnt/tls/tls.key"
secret_file "$pki/ca.pem" "$mnt/tls/ca.crt" # the chart's default client CA: ca.crt of the TLS Secret
secret_file "$work/keys/keyring.json" "$mnt/keyring/keyring.json"
secret_file "$work/keys/transform.key" "$mnt/transform/transform.key"
secret_file "$work/keys/sealing-keys.json" "$mnt/sealing/sealing-keys.json"
secret_file "$work/keys/receipt-signing.key" "$mnt/receipt/receipt-signing.key"
# The ConfigMap: the chart's paths; ports on the loopback, as the container shares
# the host's network here.
install -d -m 0755 "$mnt/config"
cat >"$mnt/config/facevault.toml" <<EOF
[server]
listen = "127.0.0.1:$grpc_port"
health_listen = "127.0.0.1:$health_port"
trust_domain = "facevault.dev"

[tls]
cert = "/var/run/facevault/tls/tls.crt"
key = "/var/run/facevault/tls/tls.key"
client_ca = "/var/run/facevault/tls/ca.crt"

[keys]
keyring = "/var/run/facevault/keys/keyring/keyring.json"
transform_secret = "/var/run/facevault/keys/transform/transform.key"
sealing_keys = "/var/run/facevault/keys/sealing/sealing-keys.json"
receipt_signing_key = "/var/run/facevault/keys/receipt/receipt-signing.key"

[redis]
url = "redis://127.0.0.1:$redis_port"

[[models]]
id = "demo-512"
dimension = 512
threshold = 0.6

[tenants.demo]

[logging]
format = "json"
level = "info"
EOF
chmod 0644 "$mnt/config/facevault.toml"

# --- Redis ------------------------------------------------------------------------------
install -d "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/redis" \
    >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    kill -0 "$redis_pid" 2>/dev/null || { cat "$work/redis.log" >&2; die "redis-server exited"; }
    sleep 0.1
done
redis-cli -p "$redis_port" ping >/dev/null 2>&1 || die "redis-server did not answer on port $redis_port"
say "redis-server on 127.0.0.1:$redis_port"

# --- run ---------------------------------------------------------------------------------
health() { # service: prints SERVING, NOT_SERVING, ... or nothing
    grpcurl -plaintext -connect-timeout 1 -max-time 2 -import-path "$repo/proto/grpc/health/v1" \
        -proto health.proto -d "{\"service\":\"$1\"}" "127.0.0.1:$health_port" grpc.health.v1.Health/Check \
        2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin).get("status", ""))' 2>/dev/null || true
}

say "podman run: read-only, user 65532:65532, no capabilities, gRPC 127.0.0.1:$grpc_port, health 127.0.0.1:$health_port"
run_started=$(date +%s%N)
podman --runtime runc run -d --name "$container" --pull=never \
    --read-only --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host \
    --tmpfs /tmp:rw,size=16m,mode=1777 \
    -v "$mnt/config:/etc/facevault:ro" \
    -v "$mnt/tls:/var/run/facevault/tls:ro" \
    -v "$mnt/keyring:/var/run/facevault/keys/keyring:ro" \
    -v "$mnt/transform:/var/run/facevault/keys/transform:ro" \
    -v "$mnt/sealing:/var/run/facevault/keys/sealing:ro" \
    -v "$mnt/receipt:/var/run/facevault/keys/receipt:ro" \
    "$tag" >/dev/null || die "podman run failed"

serving_ms=
next_note=$(($(date +%s) + 10))
while :; do
    if [[ $(health "") == SERVING ]]; then
        serving_ms=$((($(date +%s%N) - run_started) / 1000000))
        break
    fi
    state=$(podman inspect --format '{{.State.Status}}' "$container" 2>/dev/null || echo gone)
    [[ $state == running || $state == created ]] || die "the container is $state before SERVING"
    elapsed_ms=$((($(date +%s%N) - run_started) / 1000000))
    ((elapsed_ms < 60000)) || die "not SERVING 60 s after podman run"
    if (($(date +%s) >= next_note)); then
        say "waiting for SERVING on 127.0.0.1:$health_port ($((elapsed_ms / 1000)) s)"
        next_note=$(($(date +%s) + 10))
    fi
    sleep 0.1
done
say "health SERVING $serving_ms ms after podman run"

# What the kubelet would see: the liveness probe's service, and the process's identity.
[[ $(health liveness) == SERVING ]] || die "health service 'liveness' (the chart's liveness probe) is not SERVING"
[[ $(health facevault.v1.FaceVault) == SERVING ]] || die "health service facevault.v1.FaceVault is not SERVING"
pid=$(podman inspect --format '{{.State.Pid}}' "$container")
uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
gids=$(awk '/^Gid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
[[ $uids == "65532 65532 65532 65532" && $gids == "65532 65532 65532 65532" ]] \
    || die "the service runs as uid '$uids' gid '$gids', not 65532"
[[ $(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status") == 0000000000000000 ]] \
    || die "the service has effective capabilities"
[[ $(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$container") == true ]] \
    || die "the container's root filesystem is writable"
say "the service runs as 65532:65532 with no capabilities on a read-only root filesystem"

# --- enroll and verify through the container ---------------------------------------------
tls=(-cacert "$pki/ca.pem" -cert "$pki/app.pem" -key "$pki/app.key")
call() { # method < body
    grpcurl "${tls[@]}" -max-time 10 -d @ "127.0.0.1:$grpc_port" "facevault.v1.FaceVault/$1"
}
seal() { # op subject sample [more seal args]
    "$bin" seal --keys "$work/keys/sealing-public.json" --op "$1" --subject "$2" --purpose login \
        --embedding "$pki/samples/$3.json" "${@:4}"
}
field() { # name < json
    python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"
}

enrolled=$(seal enroll alice alice --off-device-storage | call Enroll) || die "Enroll failed"
[[ $(field templatesHeld <<<"$enrolled") == 1 ]] || die "Enroll answered $enrolled"
say "Enroll alice: templatesHeld 1"
match=$(seal verify alice alice-probe | call Verify) || die "Verify failed"
[[ $(field decision <<<"$match") == MATCH ]] || die "Verify of alice's second capture answered $match"
say "Verify alice (second capture): MATCH"
no_match=$(seal verify alice mallory | call Verify) || die "Verify failed"
[[ $(field decision <<<"$no_match") == NO_MATCH ]] || die "Verify of mallory as alice answered $no_match"
say "Verify mallory as alice: NO_MATCH"

# --- figures ----------------------------------------------------------------------------
say "image size $(awk -v b="$size" 'BEGIN { printf "%.1f MB", b / 1e6 }') ($size bytes); podman run to SERVING ${serving_ms} ms"
