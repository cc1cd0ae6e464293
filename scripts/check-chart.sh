#!/usr/bin/env bash
# Lints and renders the Helm chart (helm/facevault) with the real Helm v4
# engine, validates every manifest against the Kubernetes schemas and asserts
# the chart's security properties: scripts/check_chart.py. No cluster, no helm
# binary, no container engine needed; the Python packages come from the test
# virtual environment (scripts/python-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=$(scripts/python-env.sh)

exec "$PYTHON" scripts/check_chart.py "$@"
