#!/usr/bin/env bash
# Checks the lunar dates of the provisional holiday calendar against the Python
# `lunardate` package: scripts/check_lunar_dates.py. Installs lunardate when
# missing (system pip, then --break-system-packages, then the venv .venv-chart/
# that scripts/check-chart.sh uses). A missing tool fails; it is never skipped.
# Usage: check-lunar-dates.sh [FACEVAULT_BIN] (default target/debug/facevault)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${1:-${FACEVAULT_BIN:-target/debug/facevault}}"
PKG="lunardate>=0.3,<0.4"
PYTHON="${PYTHON:-python3}"
VENV=.venv-chart

if [ ! -x "$BIN" ]; then
  echo "check-lunar-dates: $BIN not found; build it first (cargo build)" >&2
  exit 1
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "check-lunar-dates: $PYTHON not found; install Python 3.10 or newer" >&2
  exit 1
fi

has_lunardate() {
  "$1" -c 'import lunardate' 2>/dev/null
}

if ! has_lunardate "$PYTHON"; then
  if [ -x "$VENV/bin/python" ] && has_lunardate "$VENV/bin/python"; then
    PYTHON="$VENV/bin/python"
  else
    echo "--- installing $PKG"
    pip_log="$(mktemp)"
    if "$PYTHON" -m pip install --quiet "$PKG" 2>"$pip_log" \
      || { grep -q externally-managed "$pip_log" \
           && "$PYTHON" -m pip install --quiet --break-system-packages "$PKG"; }; then
      :
    else
      cat "$pip_log" >&2 || true
      echo "--- system pip refused; using a venv in $VENV"
      [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
      "$VENV/bin/python" -m pip install --quiet "$PKG"
      PYTHON="$VENV/bin/python"
    fi
    rm -f "$pip_log"
    if ! has_lunardate "$PYTHON"; then
      echo "check-lunar-dates: lunardate did not install" >&2
      exit 1
    fi
  fi
fi

"$PYTHON" scripts/check_lunar_dates.py "$BIN"
