#!/usr/bin/env bash
# One command to a running local facevault: dev PKI and keys under ./dev, a private
# redis-server, the service on 127.0.0.1:50051. Extra arguments go to `facevault dev`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-redis.sh
cargo run --locked --release -- dev "$@"
