#!/usr/bin/env bash
# Runs the README's commands exactly as written against a fresh `facevault dev`
# and checks their answers:
#
#   * every line of the sh block under "## grpcurl walkthrough";
#   * the receipt lines under "## Consent and deletion" (the block with
#     `facevault receipt verify`), `<id>` replaced by the id of a ticket this
#     script obtains from CancelAccount;
#   * the auditor lines under "## Audit and observability": the `A=` line and the
#     `grpcurl $A` lines (ListEvents, VerifyChain). The `facevault audit verify /
#     export --config /etc/facevault/...` lines are for a production install and
#     are not run.
#
# The blocks are extracted from README.md at run time, so the test follows the
# README. They run with `set -e -o pipefail` in a temporary working directory
# where `facevault dev` (defaults: ./dev, 127.0.0.1:50051, health 127.0.0.1:50052)
# is running, with the directory of $FACEVAULT_BIN first on PATH.
#
#   scripts/walkthrough-test.sh              # needs 50051/50052 free
#   scripts/walkthrough-test.sh --isolated   # in a private network namespace
#                                            # (unshare; root or user namespaces)
#   scripts/walkthrough-test.sh --keep       # keep the working directory
#
# Environment: FACEVAULT_BIN (default <repo>/target/release/facevault).
# Needs grpcurl (from the test virtual environment, scripts/python-env.sh, when
# it is not on PATH) and redis-server (scripts/ensure-redis.sh).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readme=$repo/README.md
self=$repo/scripts/$(basename "${BASH_SOURCE[0]}")
bin=${FACEVAULT_BIN:-$repo/target/release/facevault}

isolated=0
keep=0
in_netns=0
args=()
for arg in "$@"; do
    case $arg in
        --isolated) isolated=1 ;;
        --keep) keep=1; args+=("$arg") ;;
        --in-netns) in_netns=1 ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$self"; exit 0 ;;
        *) echo "walkthrough-test: unknown argument $arg" >&2; exit 2 ;;
    esac
done

say() { printf 'walkthrough-test: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if [[ ! -x $bin ]]; then
    die "no facevault binary at $bin; build it with 'cargo build --release' or set FACEVAULT_BIN"
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
export FACEVAULT_BIN=$bin

# --- tools ------------------------------------------------------------------------
# shellcheck source=scripts/ensure-grpcurl.sh
source "$repo/scripts/ensure-grpcurl.sh"

if [[ $in_netns == 0 ]]; then # installs need the network: before any namespace
    ensure_grpcurl
    "$repo/scripts/ensure-redis.sh"
    say "using $(grpcurl -version 2>&1 | head -1), $bin"
fi

# --- a private network namespace, on request ------------------------------------
if [[ $isolated == 1 && $in_netns == 0 ]]; then
    command -v unshare >/dev/null || die "--isolated needs unshare (util-linux)"
    command -v ip >/dev/null || die "--isolated needs ip (iproute2) to bring up loopback"
    userns=()
    [[ $(id -u) == 0 ]] || userns=(--map-root-user)
    say "re-running in a private network namespace"
    # shellcheck disable=SC2016 # expanded by the inner bash
    exec unshare --net "${userns[@]}" -- bash -c 'ip link set lo up && exec bash "$0" --in-netns "$@"' \
        "$self" "${args[@]}"
fi

# --- ports ------------------------------------------------------------------------
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 50051 50052; do
    if port_busy "$port"; then
        die "127.0.0.1:$port is in use (another facevault dev?). The README's lines name \
ports 50051/50052, so this test needs them: stop whatever listens there, or run \
'scripts/walkthrough-test.sh --isolated' to use a private network namespace."
    fi
done

# --- working directory and server ----------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/facevault-walkthrough.XXXXXX")
server_pid=

# shellcheck source=scripts/stop-server.sh
source "$repo/scripts/stop-server.sh"

cleanup() {
    local status=$?
    stop_server
    if [[ $keep == 1 ]]; then
        say "kept $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# `facevault` on PATH, as the README asks.
bindir=$(dirname "$bin")
if [[ $(basename "$bin") != facevault ]]; then
    mkdir -p "$work/.bin"
    ln -s "$bin" "$work/.bin/facevault"
    bindir=$work/.bin
fi
export PATH=$bindir:$PATH

cd "$work"
say "working directory $work; starting 'facevault dev'"
facevault dev >"$work/server.log" 2>&1 &
server_pid=$!

healthy=
for _ in $(seq 1 120); do
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "facevault dev exited"; }
    if [[ -f dev/health.proto ]] && grpcurl -plaintext -import-path dev -proto health.proto \
        127.0.0.1:50052 grpc.health.v1.Health/Check 2>/dev/null | grep -q '"SERVING"'; then
        healthy=1
        break
    fi
    sleep 0.5
done
[[ -n $healthy ]] || { tail -40 "$work/server.log" >&2; die "facevault dev did not become healthy in 60 s"; }
say "facevault dev is SERVING"

# --- the README's blocks -----------------------------------------------------------
# Prints the ```sh blocks under "## <heading>", each followed by a line "#@@end".
sh_blocks() {
    awk -v want="## $1" '
        /^```/ {
            if (!fence) { fence = 1; keep = (section && $0 == "```sh"); next }
            fence = 0; if (keep) print "#@@end"; keep = 0; next
        }
        fence { if (keep) print; next }
        /^## / { section = ($0 == want) }
    ' "$readme"
}
mkdir -p "$work/readme" "$work/out"

sh_blocks "grpcurl walkthrough" | grep -v '^#@@end$' >"$work/readme/walkthrough.sh" || true
# The receipt block: the one running `facevault receipt verify`.
sh_blocks "Consent and deletion" | awk '
    /^#@@end$/ { if (block ~ /receipt verify/) printf "%s", block; block = ""; next }
    { block = block $0 "\n" }' >"$work/readme/receipt.sh"
# The auditor lines: `A=...`, `grpcurl $A ...` (heads, ListEvents, VerifyChain)
# and the audit CLI.
# shellcheck disable=SC2016 # a literal $A
sh_blocks "Audit and observability" | grep -E '^(A=|grpcurl \$A |facevault audit )' >"$work/readme/audit.sh" || true
# The deadline lines, shown with a `$ ` prompt.
sh_blocks "Consent and deletion" | sed -n 's/^\$ \(facevault deadline .*\)/\1/p' >"$work/readme/deadline.sh"

grep -q 'FaceVault/Verify' "$work/readme/walkthrough.sh" || die "README.md: no grpcurl walkthrough block found"
grep -q '<id>' "$work/readme/receipt.sh" || die "README.md: no receipt block with <id> under 'Consent and deletion'"
grep -q 'AuditLog/ListEvents' "$work/readme/audit.sh" || die "README.md: no ListEvents line under 'Audit and observability'"
grep -q 'AuditLog/VerifyChain' "$work/readme/audit.sh" || die "README.md: no VerifyChain line under 'Audit and observability'"
grep -q 'facevault audit verify' "$work/readme/audit.sh" || die "README.md: no 'facevault audit verify' line under 'Audit and observability'"
grep -q 'facevault deadline' "$work/readme/deadline.sh" || die "README.md: no '\$ facevault deadline' line under 'Consent and deletion'"

# --- a ticket for the receipt lines (not a README line) --------------------------------
# A subject that is enrolled and then cancels their account; the receipt block
# reads its ticket once the deletion worker has completed it.
say "preparing a deletion ticket: enroll 'walkthrough-bob', CancelAccount, wait for COMPLETED"
mtls=(-cacert dev/ca.pem -cert dev/app.pem -key dev/app.key)
facevault seal --keys dev/keys/sealing-public.json --op enroll --subject walkthrough-bob \
    --purpose login --off-device-storage --embedding dev/samples/mallory.json \
    | grpcurl "${mtls[@]}" -d @ 127.0.0.1:50051 facevault.v1.FaceVault/Enroll >"$work/out/prep-enroll.json"
grpcurl "${mtls[@]}" -d '{"subjectId":"walkthrough-bob","reason":"walkthrough test"}' \
    127.0.0.1:50051 facevault.v1.FaceVault/CancelAccount >"$work/out/prep-cancel.json"
ticket_id=$(sed -n 's/^ *"ticketId": "\([A-Za-z0-9_-]*\)".*/\1/p' "$work/out/prep-cancel.json" | head -1)
[[ -n $ticket_id ]] || { cat "$work/out/prep-cancel.json" >&2; die "CancelAccount returned no ticketId"; }
completed=
for _ in $(seq 1 60); do
    if grpcurl "${mtls[@]}" -d "{\"ticketId\":\"$ticket_id\"}" 127.0.0.1:50051 \
        facevault.v1.FaceVault/GetDeletionTicket | grep -q '"state": "COMPLETED"'; then
        completed=1
        break
    fi
    sleep 0.5
done
[[ -n $completed ]] || die "ticket $ticket_id did not complete within 30 s"
say "ticket $ticket_id COMPLETED; it replaces <id> in the receipt lines"
sed -i "s/<id>/$ticket_id/g" "$work/readme/receipt.sh"

# --- the runner: each README command verbatim, its stdout kept per step -------------
to_steps() { # section-name < block
    awk -v section="$1" -v manifest="$work/steps.tsv" '
        function shq(s) { gsub(/\047/, "\047\\\047\047", s); return "\047" s "\047" }
        {
            if (cmd == "" && ($0 ~ /^[ \t]*$/ || $0 ~ /^[ \t]*#/)) next
            cmd = (cmd == "" ? $0 : cmd "\n" $0)
            if ($0 ~ /\\$/) next
            n = ++count
            id = section "-" n
            one = cmd; gsub(/\\\n[ \t]*/, "", one)
            printf "%s\t%s\t%s\n", id, section, one >> manifest
            printf "step %s %s\n{\n%s\n} >\"$FV_OUT/%s.out\"\nshow %s\n", id, shq(cmd), cmd, id, id
            cmd = ""
        }
        END { if (cmd != "") { print "echo \"unterminated command in " section "\" >&2; exit 1" } }
    '
}
: >"$work/steps.tsv"
runner=$work/runner.sh
{
    cat <<'PRELUDE'
# Generated from README.md by scripts/walkthrough-test.sh.
set -e -o pipefail
step() { FV_STEP=$1; FV_CMD=$2; printf '\n[%s]\n%s\n' "$1" "$2" | sed '3,$s/^/  /'; }
show() { sed 's/^/    | /' "$FV_OUT/$1.out"; }
trap 'echo "walkthrough-test: step $FV_STEP FAILED (exit $?):" >&2; printf "%s\n" "$FV_CMD" >&2' ERR
PRELUDE
    to_steps walkthrough <"$work/readme/walkthrough.sh"
    to_steps receipt <"$work/readme/receipt.sh"
    to_steps audit <"$work/readme/audit.sh"
    to_steps deadline <"$work/readme/deadline.sh"
} >"$runner"

say "running $(wc -l <"$work/steps.tsv") README commands"
FV_OUT=$work/out bash "$runner" || die "a README command failed (see above); server log: $work/server.log"

# --- what the answers must say ------------------------------------------------------
failures=0
passes=0
checked=" "
expect() { # fixed-string-in-command section regex-in-output description
    local needle=$1 section=$2 pattern=$3 what=$4 id found=
    while IFS=$'\t' read -r id sec cmd; do
        [[ $sec == "$section" && $cmd == *"$needle"* ]] || continue
        found=1
        checked+="$id "
        if grep -Eq -- "$pattern" "$work/out/$id.out"; then
            passes=$((passes + 1))
            printf '  ok   %-12s %s\n' "$id" "$what"
        else
            failures=$((failures + 1))
            printf '  FAIL %-12s %s: no /%s/ in its output\n' "$id" "$what" "$pattern"
        fi
    done <"$work/steps.tsv"
    if [[ -z $found ]]; then
        failures=$((failures + 1))
        printf '  FAIL %s: no README command in %s contains %s\n' "$what" "$section" "$needle"
    fi
}
echo
echo "checks:"
expect ' list' walkthrough 'facevault\.v1\.FaceVault' "list names facevault.v1.FaceVault"
expect 'describe facevault.v1.FaceVault' walkthrough 'rpc Verify' "describe shows the service"
expect 'grpc.health.v1.Health/Check' walkthrough '"status": "SERVING"' "health is SERVING"
expect 'FaceVault/GetSealingKeys' walkthrough '"suite": "x25519-sha256-aes256gcm"' "GetSealingKeys lists an X25519 key"
expect 'FaceVault/Enroll' walkthrough '"templatesHeld": 1' "Enroll returns templatesHeld"
expect 'alice-probe.json' walkthrough '"decision": "MATCH"' "alice's second capture: MATCH"
expect 'mallory.json' walkthrough '"decision": "NO_MATCH"' "mallory: NO_MATCH"
expect 'FaceVault/DeleteSubject' walkthrough '"state": "COMPLETED"' "DeleteSubject: COMPLETED"
expect 'FaceVault/GetSubjectRecord' walkthrough '"model": ' "GetSubjectRecord lists alice's template"
expect 'Admin/GetDeploymentReport' walkthrough '"filingThreshold": "100000"' "GetDeploymentReport as the operator"
expect 'receipt verify' receipt '"valid": true' "the receipt verifies offline"
expect 'receipt verify' receipt "\"ticket_id\": \"$ticket_id\"" "the receipt names the cancelled ticket"
expect 'AuditLog/ListEvents' audit '"op": "Verify"' "ListEvents as auditor returns a Verify event"
expect 'AuditLog/VerifyChain' audit '"intact": true' "VerifyChain: intact"
expect 'FaceVault/CancelAccount' walkthrough '"state": "PENDING"' "CancelAccount opens a PENDING ticket"
expect 'AuditLog/GetSignedTreeHead' audit '"rootHash": ' "GetSignedTreeHead as auditor"
expect 'facevault audit verify' audit 'intact' "the audit CLI finds the log intact"
expect 'facevault deadline --from 2025-09-26T10:00:00+08:00' deadline '^2025-10-23T23:59:59\.999\+08:00$|"deadline": "2025-10-23T23:59:59\.999\+08:00"' "the worked example's deadline"
expect 'json' deadline '"working_days_counted"' "deadline --json lists the days counted"
# Commands whose answer goes to a file: the file is checked.
expect_file() { # fixed-string-in-command section file regex description
    local needle=$1 section=$2 file=$3 pattern=$4 what=$5 id
    while IFS=$'\t' read -r id sec cmd; do
        [[ $sec == "$section" && $cmd == *"$needle"* ]] || continue
        checked+="$id "
    done <"$work/steps.tsv"
    if grep -Eq -- "$pattern" "$work/$file" 2>/dev/null; then
        passes=$((passes + 1))
        printf '  ok   %-12s %s\n' "$file" "$what"
    else
        failures=$((failures + 1))
        printf '  FAIL %-12s %s: no /%s/ in it\n' "$file" "$what" "$pattern"
    fi
}
expect_file 'GetSealingKeys > keys.json' receipt keys.json '"receiptVerificationKey": ' "keys.json holds the receipt verification key"
expect_file 'GetDeletionTicket > ticket.json' receipt ticket.json '"state": "COMPLETED"' "ticket.json is COMPLETED"
expect_file 'audit export' audit demo.jsonl '"op":' "the export is JSON Lines of events"

# Every README command has its answer checked: a new line without a check fails.
# Assignments (`T=...`) have no answer.
while IFS=$'\t' read -r id _ cmd; do
    [[ $cmd =~ ^[A-Z]+=\" ]] && continue
    if [[ $checked != *" $id "* ]]; then
        failures=$((failures + 1))
        printf '  FAIL %-12s no check of its answer: %s\n' "$id" "$cmd"
    fi
done <"$work/steps.tsv"

echo
echo "walkthrough: $passes passed, $failures failed"
[[ $failures -eq 0 ]]
