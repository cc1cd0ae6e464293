#!/usr/bin/env bash
# Lints and renders the Helm chart (helm/facevault) with the real Helm v4
# engine, validates every manifest against the Kubernetes schemas and asserts
# the chart's security properties: scripts/check_chart.py. No cluster, no helm
# binary, no container engine needed; the Python packages are installed when
# missing (system pip, then --break-system-packages, then a venv .venv-chart/).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=("helm-python-sdk>=0.2.2,<0.3" "kubernetes-validate>=1.32" "pyyaml>=6")
PYTHON="${PYTHON:-python3}"
VENV=.venv-chart

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "check-chart: $PYTHON not found; install Python 3.10 or newer" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  PKGS+=("tomli>=2")
fi

has_packages() {
  "$1" - <<'PY' 2>/dev/null
import helm_python, kubernetes_validate, yaml
try:
    import tomllib
except ImportError:
    import tomli
from importlib.metadata import version
major, minor = (int(x) for x in version("helm-python-sdk").split(".")[:2])
assert (major, minor) == (0, 2)
PY
}

if ! has_packages "$PYTHON"; then
  if [ -x "$VENV/bin/python" ] && has_packages "$VENV/bin/python"; then
    PYTHON="$VENV/bin/python"
  else
    echo "--- installing ${PKGS[*]}"
    pip_log="$(mktemp)"
    if "$PYTHON" -m pip install --quiet "${PKGS[@]}" 2>"$pip_log" \
      || { grep -q externally-managed "$pip_log" \
           && "$PYTHON" -m pip install --quiet --break-system-packages "${PKGS[@]}"; }; then
      :
    else
      cat "$pip_log" >&2 || true
      echo "--- system pip refused; using a venv in $VENV"
      "$PYTHON" -m venv "$VENV"
      "$VENV/bin/python" -m pip install --quiet --upgrade pip
      "$VENV/bin/python" -m pip install --quiet "${PKGS[@]}"
      PYTHON="$VENV/bin/python"
    fi
    rm -f "$pip_log"
    if ! has_packages "$PYTHON"; then
      echo "check-chart: the packages did not install (${PKGS[*]})" >&2
      exit 1
    fi
  fi
fi

exec "$PYTHON" scripts/check_chart.py "$@"
