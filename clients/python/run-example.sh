#!/usr/bin/env bash
# Runs the Python client end to end: in the test virtual environment
# (scripts/python-env.sh, which installs requirements.txt),
# starts `facevault dev` in a temporary directory on free ports, waits for
# health, checks the sealing test vector, runs example.py against the server,
# then checks the audit log: the audit-log test vector, and against the live
# server its anchor file, a consistency proof between two anchored heads, an
# inclusion proof and the erasure proof of the example's deletion ticket (each
# also tampered with, which must fail), and stops the server again.
#
#   clients/python/run-example.sh
#   FACEVAULT_BIN=/path/to/facevault clients/python/run-example.sh
#
# Environment: FACEVAULT_BIN (default <repo>/target/release/facevault),
# PYTHON (default: the test virtual environment's), KEEP_TMP=1 keeps the temporary directory.
# Exit status: the example's; if the example passed, the first failing check's
# (sealing vector, audit-log vector, live audit proofs); 0 when all pass.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${FACEVAULT_BIN:-$repo/target/release/facevault}
python=${PYTHON:-python3}
export PYTHONDONTWRITEBYTECODE=1

if [[ ! -x $bin ]]; then
    echo "run-example: no facevault binary at $bin" >&2
    echo "  build it with 'cargo build --release' in $repo, or set FACEVAULT_BIN" >&2
    exit 2
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

# --- requirements -------------------------------------------------------------
# The repository's one test virtual environment (under target/), which holds
# requirements.txt; PYTHON, when set, is used as it is.
if [[ -z ${PYTHON:-} ]]; then
    python=$("$repo/scripts/python-env.sh")
fi
"$python" -c 'import grpc, grpc_tools.protoc, google.protobuf, pyhpke, cryptography' || {
    echo "run-example: $python lacks the packages of $here/requirements.txt" >&2
    exit 2
}

# --- server ---------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/facevault-example.XXXXXX")
server_pid=

# shellcheck source=scripts/stop-server.sh
source "$repo/scripts/stop-server.sh"

cleanup() {
    local status=$?
    stop_server
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        echo "run-example: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

read -r grpc_port health_port < <("$python" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)

echo "run-example: starting facevault dev on 127.0.0.1:$grpc_port (health $health_port), dir $tmp/dev"
"$bin" dev --dir "$tmp/dev" --listen "127.0.0.1:$grpc_port" --health-listen "127.0.0.1:$health_port" \
    >"$tmp/server.log" 2>&1 &
server_pid=$!

healthy=
for _ in $(seq 1 120); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "run-example: the server exited; its log:" >&2
        cat "$tmp/server.log" >&2
        exit 1
    fi
    status=$( (cd "$here" && exec "$python" -c \
        "import facevault_client as fv; print(fv.health_check('127.0.0.1:$health_port', 1.0))") 2>/dev/null) \
        || status=
    if [[ $status == SERVING ]]; then
        healthy=1
        break
    fi
    sleep 0.5
done
if [[ -z $healthy ]]; then
    echo "run-example: the server did not become healthy in 60 s; its log:" >&2
    tail -50 "$tmp/server.log" >&2
    exit 1
fi
echo "run-example: health SERVING"

# --- checks ---------------------------------------------------------------------
cd "$here"
vector_status=0
"$python" test_vector.py || vector_status=$?

example_status=0
"$python" example.py --target "localhost:$grpc_port" --tenant demo \
    --ca "$tmp/dev/ca.pem" --cert "$tmp/dev/app.pem" --key "$tmp/dev/app.key" \
    | tee "$tmp/example.out" || example_status=$?
# The same story sealed through a sealing session (its output is not used below).
if [[ $example_status -eq 0 ]]; then
    echo "run-example: again, with --sealing-sessions"
    "$python" example.py --target "localhost:$grpc_port" --tenant demo --sealing-sessions \
        --ca "$tmp/dev/ca.pem" --cert "$tmp/dev/app.pem" --key "$tmp/dev/app.key" \
        > "$tmp/example-sessions.out" || example_status=$?
    tail -3 "$tmp/example-sessions.out"
fi

if [[ $example_status -ne 0 ]]; then
    echo "run-example: example.py FAILED ($example_status); server log tail:" >&2
    tail -20 "$tmp/server.log" >&2
    exit "$example_status"
fi
if [[ $vector_status -ne 0 ]]; then
    echo "run-example: test_vector.py FAILED ($vector_status)" >&2
    exit "$vector_status"
fi

# --- audit log -------------------------------------------------------------------
echo "run-example: audit-log test vector"
audit_vector_status=0
"$python" verify_audit_log.py vector "$repo/docs/test-vectors/audit-log.json" || audit_vector_status=$?
if [[ $audit_vector_status -ne 0 ]]; then
    echo "run-example: verify_audit_log.py vector FAILED ($audit_vector_status)" >&2
    exit "$audit_vector_status"
fi

echo "run-example: audit proofs against the live server (verify_audit_log.py)"
audit_status=0
"$python" audit_proofs_live.py --target "localhost:$grpc_port" --tenant demo --dev-dir "$tmp/dev" \
    --example-output "$tmp/example.out" --out "$tmp/audit-proofs" --wait 30 || audit_status=$?
if [[ $audit_status -ne 0 ]]; then
    echo "run-example: audit_proofs_live.py FAILED ($audit_status); server log tail:" >&2
    tail -20 "$tmp/server.log" >&2
    exit "$audit_status"
fi
echo "run-example: passed"
