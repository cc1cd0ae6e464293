#!/usr/bin/env bash
# Generates the facevault.v1 Python modules from ../../proto into OUT_DIR
# (default: ./gen, which git ignores). facevault_client.py does the same by
# itself into a cache directory, so running this is optional; it is here for
# tools (IDEs, type checkers) that want the generated files at a fixed place.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here/gen}
python=${PYTHON:-python3}
mkdir -p "$out"
cd "$here/../../proto"
"$python" -m grpc_tools.protoc -I . \
    --python_out="$out" --grpc_python_out="$out" \
    facevault/v1/*.proto
touch "$out/facevault/__init__.py" "$out/facevault/v1/__init__.py"
echo "generated into $out (add it to PYTHONPATH, or set FACEVAULT_PY_GEN_DIR=$out)"
