#!/usr/bin/env bash
# Checks the lunar dates of the provisional holiday calendar against the Python
# `lunardate` package: scripts/check_lunar_dates.py, run in the test virtual
# environment (scripts/python-env.sh). A missing tool fails; it is never skipped.
# Usage: check-lunar-dates.sh [FACEVAULT_BIN] (default target/debug/facevault)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${1:-${FACEVAULT_BIN:-target/debug/facevault}}"

if [ ! -x "$BIN" ]; then
  echo "check-lunar-dates: $BIN not found; build it first (cargo build)" >&2
  exit 1
fi
PYTHON=$(scripts/python-env.sh)
"$PYTHON" scripts/check_lunar_dates.py "$BIN"
