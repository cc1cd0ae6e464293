#!/usr/bin/env bash
# The test suite's one Python environment: a virtual environment under target/
# holding scripts/requirements-test.txt. Creates or updates it when the
# requirements changed, then prints its interpreter's path on stdout (progress
# goes to stderr):
#
#   PYTHON=$(scripts/python-env.sh)
#
# Its bin/ also holds grpcurl. FACEVAULT_VENV overrides the location. Nothing is
# installed into the system interpreter.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${FACEVAULT_VENV:-$repo/target/test-venv}
requirements=$repo/scripts/requirements-test.txt
base=${PYTHON_FOR_VENV:-python3}

if ! command -v "$base" >/dev/null 2>&1; then
  echo "python-env: $base not found; install Python 3.10 or newer (apt-get install python3 python3-venv)" >&2
  exit 1
fi

stamp=$venv/.requirements.sha256
wanted=$(cat "$requirements" "$repo/clients/python/requirements.txt" | sha256sum | cut -d' ' -f1)
if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$wanted" ]]; then
  echo "$venv/bin/python"
  exit 0
fi

if [[ ! -x $venv/bin/python ]]; then
  echo "--- creating the test virtual environment in ${venv#"$repo"/}" >&2
  if ! "$base" -m venv "$venv" >&2; then
    echo "python-env: '$base -m venv' failed; install the venv module (apt-get install python3-venv)" >&2
    exit 1
  fi
fi
echo "--- installing scripts/requirements-test.txt into ${venv#"$repo"/}" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
(cd "$repo/scripts" && "$venv/bin/python" -m pip install --progress-bar off --disable-pip-version-check \
  -r requirements-test.txt) >&2
echo "$wanted" >"$stamp"
echo "$venv/bin/python"
