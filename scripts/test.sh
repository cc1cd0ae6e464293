#!/usr/bin/env bash
# The whole test suite: unit tests and the API tests (real redis-server per test,
# real mTLS clients). Installs what a fresh machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-redis.sh
cargo test --locked --all-targets "$@"
