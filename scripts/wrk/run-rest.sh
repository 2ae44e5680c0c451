#!/usr/bin/env bash
# Measures the REST surface of a release node with wrk (64 connections, loopback), the way the
# supabase client calls it: GET by key, a filtered list of 20 rows, POST of one row (durable).
# Usage: scripts/wrk/run-rest.sh [seconds]   (needs: swift build -c release, or AERODB_BIN; apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
bin=${AERODB_BIN:-$(swift build -c release --show-bin-path)/aerodb}
dir=$(mktemp -d /tmp/aerodb-wrk-XXXXXX)
port=30490  # below the ephemeral port range
"$bin" init --dir "$dir/n1" --http 127.0.0.1:$port >/dev/null
"$bin" start --dir "$dir/n1" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$port/ready >/dev/null && break; sleep 0.1; done
key=$("$bin" keys --dir "$dir/n1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["service_role"])')
curl -sf -H "apikey: $key" -X POST http://127.0.0.1:$port/admin/v1/collections \
  -d '{"name":"items","fields":{"id":{"type":"text"},"name":{"type":"text"},"qty":{"type":"int"}},"indexes":[{"fields":["qty"]}]}' >/dev/null
python3 - "$port" "$key" <<'PY'
import json, sys, urllib.request
port, key = sys.argv[1], sys.argv[2]
for start in range(0, 10000, 1000):
    rows = [{"id": f"k{i}", "name": f"row {i}", "qty": i % 500} for i in range(start, start + 1000)]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/rest/v1/items", data=json.dumps(rows).encode(), method="POST",
                                 headers={"apikey": key, "Content-Type": "application/json", "Prefer": "return=minimal"})
    urllib.request.urlopen(req).read()
PY
common=(-t2 -c64 -d"${seconds}s" --latency -H "apikey: $key" -H "Authorization: Bearer $key" -H "Accept: */*" \
        -H "Accept-Profile: public" -H "Content-Type: application/json")
echo "== GET by key"; wrk "${common[@]}" "http://127.0.0.1:$port/rest/v1/items?select=*&id=eq.k4242" | grep -E 'Requests/sec|99%|Non-2xx'
echo "== GET 20 rows by filter"; wrk "${common[@]}" "http://127.0.0.1:$port/rest/v1/items?select=*&qty=eq.42&limit=20" | grep -E 'Requests/sec|99%|Non-2xx'
echo "== POST one row (durable)"; wrk "${common[@]}" -H "Prefer: return=representation" -s scripts/wrk/rest_insert.lua \
  "http://127.0.0.1:$port/rest/v1/items" | grep -E 'Requests/sec|99%|Non-2xx'
