#!/usr/bin/env bash
# Schemathesis against a real `cascade serve` (API keys configured) on a generated world:
# every operation of /openapi.json, at least MIN_CASES generated cases, and the checks
# not_a_server_error, status_code_conformance, response_schema_conformance and
# content_type_conformance must all pass. Usage: run.sh CASCADE_BIN SCHEMATHESIS [MIN_CASES]
set -euo pipefail
BIN="$1"; ST="$2"; MIN_CASES="${3:-10000}"
WORK="$(mktemp -d -t cascade-schemathesis-XXXXXX)"
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN" generate --out "$WORK/world" --items 400 --users 80 --events 8000 --seed 7 >/dev/null
"$BIN" import --data-dir "$WORK/data" --format jsonl "$WORK/world" >/dev/null
cat > "$WORK/cascade.toml" <<TOML
[auth]
read_keys = ["fuzz-read-key"]
write_keys = ["fuzz-write-key"]
admin_keys = ["fuzz-admin-key"]
TOML
CASCADE_LOG=warn "$BIN" serve --addr 127.0.0.1:0 --data-dir "$WORK/data" \
  --config "$WORK/cascade.toml" > "$WORK/serve.out" 2> "$WORK/serve.err" &
SERVER_PID=$!
BASE=""
for _ in $(seq 1 300); do
  BASE="$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$WORK/serve.out" | head -1)"
  [ -n "$BASE" ] && curl -fs "$BASE/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
[ -n "$BASE" ] || { echo "cascade serve did not start"; cat "$WORK/serve.err"; exit 1; }

set +e
cd "$WORK"  # schemathesis keeps its cache in the working directory
"$ST" --no-color run "$BASE/openapi.json" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
  --header "X-API-Key: fuzz-admin-key" --max-examples 350 --seed 20261208 \
  > "$WORK/st.out" 2>&1
RC=$?
set -e
tail -40 "$WORK/st.out"
CASES="$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$WORK/st.out" | tail -1)"
echo "schemathesis: exit $RC, ${CASES:-0} cases generated (at least $MIN_CASES required)"
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "the server died under fuzzing"; cat "$WORK/serve.err"; exit 1
fi
[ "$RC" -eq 0 ] || { grep -A25 "FAILURES" "$WORK/st.out" | head -120; exit 1; }
[ "${CASES:-0}" -ge "$MIN_CASES" ] || exit 1
