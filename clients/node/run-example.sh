#!/usr/bin/env bash
# Runs the Node.js client end to end: installs its packages with `npm ci`
# (exactly package-lock.json), type-checks it, checks the sealing test vectors
# (X25519 and X-Wing, byte for byte, and the X-Wing KEM against the draft's
# vectors, and the sealing-session vector), starts `facevault dev` in a
# temporary directory on free ports, runs example.ts against it four times
# (x25519 and xwing, each one-shot and with --sealing-sessions: the server
# opens what @hpke/* sealed), and stops the server again.
#
#   clients/node/run-example.sh
#   FACEVAULT_BIN=/path/to/facevault clients/node/run-example.sh
#
# Environment: FACEVAULT_BIN (default <repo>/target/release/facevault),
# KEEP_TMP=1 keeps the temporary directory. Needs Node.js >= 20 and npm; without
# them it fails (exit 2) with an install hint, it never skips.
# Exit status: 0 when everything passes, else that of the first failing step.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${FACEVAULT_BIN:-$repo/target/release/facevault}

say() { echo "run-example (node): $*"; }
fail() {
    local status=$1
    shift
    echo "run-example (node): FAILED: $*" >&2
    exit "$status"
}

# --- requirements ---------------------------------------------------------------
install_hint="install Node.js 20 or newer with npm, e.g. 'apt-get install nodejs npm' (Debian/Ubuntu), \
'brew install node@20' (macOS) or from https://nodejs.org/; then run this again"
command -v node >/dev/null 2>&1 || fail 2 "node is not on PATH: $install_hint"
command -v npm >/dev/null 2>&1 || fail 2 "npm is not on PATH: $install_hint"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[[ $node_major -ge 20 ]] || fail 2 "Node.js $(node --version) is too old (need >= 20): $install_hint"
say "node $(node --version), npm $(npm --version)"

if [[ ! -x $bin ]]; then
    fail 2 "no facevault binary at $bin; build it with 'cargo build --release' in $repo, or set FACEVAULT_BIN"
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

cd "$here"
say "npm ci"
npm ci --no-audit --no-fund --loglevel=error || fail 1 "npm ci"
say "type check (tsc --noEmit)"
npm run --silent typecheck || fail 1 "tsc --noEmit"

# --- vectors (offline) --------------------------------------------------------------
say "sealing test vectors"
npm run --silent test-vectors || fail 1 "test-vectors.ts"

# --- server ---------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/facevault-node-example.XXXXXX")
server_pid=

# shellcheck source=scripts/stop-server.sh
source "$repo/scripts/stop-server.sh"

cleanup() {
    local status=$?
    stop_server
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        echo "run-example (node): kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

read -r grpc_port health_port < <(node -e '
const net = require("node:net");
const servers = [net.createServer(), net.createServer()];
let ready = 0;
for (const s of servers) s.listen(0, "127.0.0.1", () => {
  if (++ready === 2) {
    console.log(servers.map((x) => x.address().port).join(" "));
    for (const x of servers) x.close();
  }
});')

say "starting facevault dev on 127.0.0.1:$grpc_port (health $health_port), dir $tmp/dev"
"$bin" dev --dir "$tmp/dev" --listen "127.0.0.1:$grpc_port" --health-listen "127.0.0.1:$health_port" \
    >"$tmp/server.log" 2>&1 &
server_pid=$!

healthy=
for _ in $(seq 1 120); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "run-example (node): the server exited; its log:" >&2
        cat "$tmp/server.log" >&2
        exit 1
    fi
    if [[ $(node --import tsx health-check.ts "127.0.0.1:$health_port" 2>/dev/null) == SERVING ]]; then
        healthy=1
        break
    fi
    sleep 0.5
done
if [[ -z $healthy ]]; then
    echo "run-example (node): the server did not become healthy in 60 s; its log:" >&2
    tail -50 "$tmp/server.log" >&2
    exit 1
fi
say "health SERVING"

# --- the example: each suite, one-shot and in sealing sessions ----------------------
run=0
for suite in x25519 xwing; do
    for mode in "" --sealing-sessions; do
        run=$((run + 1))
        say "[$run/4] example.ts --suite $suite${mode:+ $mode}"
        status=0
        started=$SECONDS
        npm run --silent example -- --target "localhost:$grpc_port" --tenant demo --suite "$suite" $mode \
            --ca "$tmp/dev/ca.pem" --cert "$tmp/dev/app.pem" --key "$tmp/dev/app.key" || status=$?
        if [[ $status -ne 0 ]]; then
            echo "run-example (node): example.ts --suite $suite${mode:+ $mode} FAILED ($status); server log tail:" >&2
            tail -20 "$tmp/server.log" >&2
            exit "$status"
        fi
        say "[$run/4] passed in $((SECONDS - started)) s"
    done
done
say "passed (vectors; example with x25519 and xwing, one-shot and in sealing sessions)"
