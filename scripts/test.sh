#!/usr/bin/env bash
# The whole test suite: unit tests and the API tests (real redis-server per test,
# real mTLS clients), a bench smoke run, the Helm chart checks, the Python client
# (an independent HPKE), the README's grpcurl walkthrough against a real server,
# and the release binary in a container image run as the chart runs it
# (scripts/container-test.sh). Installs what a fresh machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

# Both lockfiles must already match their manifests: a build that rewrites one
# would change a tracked file, and the fuzz build comes last, so check it first.
echo "--- lockfiles are current"
if ! (cd fuzz && cargo metadata --locked --format-version 1 >/dev/null); then
  echo "fuzz/Cargo.lock is stale: run 'cargo update -w --manifest-path fuzz/Cargo.toml' and commit it" >&2
  exit 1
fi

# Without a terminal cargo prints nothing while it compiles one large crate
# (minutes for this one in release): a line every 25 s shows the run is alive.
with_heartbeat() {
  local started=$SECONDS beat status
  ( while sleep 25; do echo "    ... still running ($((SECONDS - started)) s): $*"; done ) &
  beat=$!
  status=0
  "$@" || status=$?
  kill "$beat" 2>/dev/null || true
  wait "$beat" 2>/dev/null || true
  return "$status"
}

scripts/ensure-redis.sh
echo "--- cargo test (unit and API tests)"
with_heartbeat cargo test --locked --all-targets "$@"

echo "--- check-config on examples/facevault.toml (the README's production quick-start)"
example_dir=$(mktemp -d)
cp examples/facevault.toml "$example_dir/"
target/debug/facevault keygen --dir "$example_dir/keys" >/dev/null
target/debug/facevault pki init --dir "$example_dir/pki" --trust-domain example.org >/dev/null
target/debug/facevault pki server --dir "$example_dir/pki" --dns localhost >/dev/null
# Run from elsewhere: the example's relative paths are the config file's.
bin="$PWD/target/debug/facevault"
(cd / && env -u FACEVAULT_CONFIG FACEVAULT_REDIS_URL=redis://127.0.0.1:6379 \
  "$bin" check-config --config "$example_dir/facevault.toml")
rm -rf "$example_dir"

echo "--- lunar dates of the provisional calendar against Python lunardate"
scripts/check-lunar-dates.sh target/debug/facevault

echo "--- bench smoke (so the load generator cannot rot)"
target/debug/facevault bench --duration 1s --subjects 200 --concurrency 8 --rewrap --json > target/bench-smoke.json
python3 - <<'PY'
import json
r = json.load(open("target/bench-smoke.json"))
for phase in ("verify", "verify_session"):
    assert r[phase]["calls"] > 0 and r[phase]["errors"] == 0, (phase, r[phase])
for k in ("verify_vs_health", "verify_session_vs_health", "verify_p99_vs_health_p99",
          "protected_vs_unprotected", "session_protected_vs_unprotected"):
    assert r["ratios"][k] is not None, k
cpu = r["cpu_us_per_call"]
for phase in ("enroll", "health", "redis_get", "verify", "verify_session", "baseline_verify"):
    for process in ("server", "redis", "loadgen", "baseline"):
        assert cpu[phase][process] >= 0, (phase, process, cpu[phase])
    assert cpu[phase]["loadgen"] > 0, (phase, cpu[phase])
for phase in ("verify", "verify_session", "enroll"):
    assert cpu[phase]["server"] > 0 and cpu[phase]["redis"] > 0, (phase, cpu[phase])
assert cpu["baseline_verify"]["baseline"] > 0, cpu["baseline_verify"]
assert any(c["command"] == "evalsha" for c in r["redis_commands_per_call"]["verify_session"])
w = r["rewrap"]
assert w["deks"] == 200 and w["deks_per_second"] > 0 and w["during"]["errors"] == 0, w
print("bench smoke ok:", r["ratios"], "re-wrap", round(w["deks_per_second"]), "DEKs/s")
PY
target/debug/facevault bench --suite xwing --duration 1s --subjects 100 --concurrency 4 --json > target/bench-smoke-xwing.json
python3 - <<'PY'
import json
r = json.load(open("target/bench-smoke-xwing.json"))
assert r["settings"]["suite"] == "xwing-sha256-aes256gcm", r["settings"]
for phase in ("verify", "verify_session"):
    assert r[phase]["calls"] > 0 and r[phase]["errors"] == 0, (phase, r[phase])
    assert r["cpu_us_per_call"][phase]["server"] > 0, r["cpu_us_per_call"]
print("bench smoke with X-Wing ok:", r["verify"]["calls"], "verifies,", r["verify_session"]["calls"], "in sessions")
PY
target/debug/facevault bench --redis-cluster --duration 1s --subjects 200 --concurrency 8 --json > target/bench-smoke-cluster.json
python3 - <<'PY'
import json
r = json.load(open("target/bench-smoke-cluster.json"))
assert r["settings"]["redis_cluster"], r["settings"]
assert r["verify"]["calls"] > 0 and r["verify"]["errors"] == 0, r["verify"]
print("bench smoke on a Redis Cluster ok:", r["verify"]["calls"], "verifies")
PY
target/debug/facevault bench --audit-events 2000 --json > target/bench-smoke-audit.json
python3 - <<'PY'
import json
a = json.load(open("target/bench-smoke-audit.json"))["audit_log"]
assert a["events"] == 2000 and a["fill"]["events_per_second"] > 0, a["fill"]
assert a["signed_tree_head"]["median_ms"] > 0, a["signed_tree_head"]
for k in ("inclusion_proof_first", "inclusion_proof_last_of_burst", "inclusion_proof_last",
          "consistency_proof_1_to_n"):
    assert a[k]["verified"] is True, (k, a[k])
assert a["inclusion_proof_last"]["leaf_index"] == 1999, a["inclusion_proof_last"]
l = a["list_events_unknown_subject"]
assert l["events_found"] == 0 and l["calls_to_page_through"] == 1, l
v = a["verify_full"]
assert v["intact"] and v["full"] and v["events_checked"] >= 2000, v
for k, walked in (("verify_incremental_0", 0), ("verify_incremental_1000", 1000)):
    i = a[k]
    assert i["all_intact"] and i["all_incremental"], (k, i)
    # Each run also walks the server's own events of the auditor's calls before it.
    assert all(walked <= w <= walked + 30 for w in i["events_walked"]), (k, i)
print("bench audit smoke ok: fill", round(a["fill"]["events_per_second"]), "events/s, full verify",
      round(v["ms"]), "ms for", v["events_checked"], "events")
PY
target/debug/facevault bench --decommission 500 --json > target/bench-smoke-decommission.json
python3 - <<'PY'
import json
d = json.load(open("target/bench-smoke-decommission.json"))["decommission"]
assert d["subjects"] == 500 and d["receipt_verified"] is True, d
assert d["subjects_per_second"] > 0 and d["cpu_us_per_subject"]["server"] > 0, d
print("bench decommission smoke ok:", round(d["subjects_per_second"]), "subjects/s")
PY

echo "--- Helm chart: lint, render, schema-validate, assert"
scripts/check-chart.sh

echo "--- Python client (independent HPKE) against a real server"
FACEVAULT_BIN="$PWD/target/debug/facevault" clients/python/run-example.sh
FACEVAULT_BIN="$PWD/target/debug/facevault" clients/node/run-example.sh

echo "--- README grpcurl walkthrough, run as written"
if python3 -c "import socket; [socket.create_server(('127.0.0.1', p)).close() for p in (50051, 50052)]" 2>/dev/null; then
  FACEVAULT_BIN="$PWD/target/debug/facevault" scripts/walkthrough-test.sh
else
  FACEVAULT_BIN="$PWD/target/debug/facevault" scripts/walkthrough-test.sh --isolated
fi

echo "--- release build (the binary the container image carries)"
with_heartbeat cargo build --release --locked --bin facevault

echo "--- the container image, run read-only as user 65532 the way the chart runs it"
scripts/container-test.sh target/release/facevault

echo "--- fuzz smoke (cargo fuzz on the nightly toolchain)"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "the fuzz smoke needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
(
  cd fuzz
  # Built first with cargo's own progress lines; the runs then print one line each.
  with_heartbeat cargo +nightly fuzz build
  for target in open_envelope decode_payload parse_requests holiday_file; do
    log=$(mktemp)
    if ! cargo +nightly fuzz run "$target" -- -max_total_time=15 >"$log" 2>&1; then
      tail -40 "$log"
      exit 1
    fi
    echo "$target: $(grep -E '^Done' "$log")"
    rm -f "$log"
  done
)

# In CI the run starts from a clean clone: it must leave every tracked file as
# it found it (a stale lockfile rewritten by a build would show up here).
if [ "${CI:-}" = "true" ] && git rev-parse --git-dir >/dev/null 2>&1; then
  echo "--- the run modified no tracked file"
  if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    git status --short --untracked-files=no >&2
    echo "the tests modified tracked files" >&2
    exit 1
  fi
fi
