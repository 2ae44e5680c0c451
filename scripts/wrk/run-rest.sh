#!/usr/bin/env bash
# Measures the REST surface of release nodes with wrk (64 connections, loopback), the way the
# supabase client calls it: GET by key, a filtered list of 20 rows, POST of one row (durable).
# First a single node, then a two-node cluster (async commit mode): the POST sent straight to its
# primary, then the same three requests sent to its replica: reads are served by the replica, the
# POST is forwarded to the primary and answered once the replica applied it (read-your-writes).
# The forwarded POST is set against the one to the same cluster's primary (both pay for shipping
# and the replica's apply on these shared cores; a single node pays for neither). Between the
# single node and the cluster, GET by key against a bare Hummingbird route answering the node's
# same JSON bytes (the HTTP stack's ceiling on this box).
# Usage: scripts/wrk/run-rest.sh [seconds]   (needs: swift build -c release, or AERODB_BIN; apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
bin=${AERODB_BIN:-$(swift build -c release --show-bin-path)/aerodb}
dir=$(mktemp -d /tmp/aerodb-wrk-XXXXXX)
# Ports port..port+15 (nodes, the baseline route, replication), all free, below the ephemeral
# range (32768-60999), from a random start so that two runs at once do not pick the same ones;
# AERODB_REST_PORT_BASE chooses them instead.
port=${AERODB_REST_PORT_BASE:-$(python3 -c '
import random, socket
def free(p):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
            return True
        except OSError:
            return False
bases = list(range(20000, 32768 - 16, 16))
random.shuffle(bases)
print(next(b for b in bases if all(free(b + i) for i in range(16))))
')}
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null || true; wait $p 2>/dev/null || true; done; rm -rf "$dir"' EXIT  # also after a node died

start() {  # start DIR PORT
    "$bin" start --dir "$1" 2>/dev/null &
    pids+=($!)
    local deadline=$((SECONDS + 60))  # a loaded machine (or a debug build) starts slowly
    while [ $SECONDS -lt $deadline ]; do
        curl -sf "http://127.0.0.1:$2/ready" >/dev/null && return
        kill -0 "${pids[-1]}" 2>/dev/null || { echo "node $1 exited at start" >&2; exit 1; }
        sleep 0.1
    done
    echo "node $1 did not start within 60 s" >&2; exit 1
}

load() {  # load PORT KEY: the collection and 10,000 rows
    curl -sf -H "apikey: $2" -X POST "http://127.0.0.1:$1/admin/v1/collections" \
      -d '{"name":"items","fields":{"id":{"type":"text"},"name":{"type":"text"},"qty":{"type":"int"}},"indexes":[{"fields":["qty"]}]}' >/dev/null
    python3 - "$1" "$2" <<'PY'
import json, sys, urllib.request
port, key = sys.argv[1], sys.argv[2]
for start in range(0, 10000, 1000):
    rows = [{"id": f"k{i}", "name": f"row {i}", "qty": i % 500} for i in range(start, start + 1000)]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/rest/v1/items", data=json.dumps(rows).encode(), method="POST",
                                 headers={"apikey": key, "Content-Type": "application/json", "Prefer": "return=minimal"})
    urllib.request.urlopen(req).read()
PY
}

get_by_key() {  # get_by_key PORT KEY LABEL: a random key of the 10,000 per request (get_by_key.lua)
    echo "== $3: GET by key"; wrk "${common[@]}" -s scripts/wrk/get_by_key.lua "http://127.0.0.1:$1/rest/v1/items" | grep -E 'Requests/sec|^ +99%|Non-2xx'
}

post() {  # post PORT KEY LABEL ROW_PREFIX: one new row per request (rest_insert.lua), ids from ROW_PREFIX
    echo "== $3: POST one row (durable)"; ROW_PREFIX=$4 wrk "${common[@]}" -H "Prefer: return=representation" -s scripts/wrk/rest_insert.lua \
      "http://127.0.0.1:$1/rest/v1/items" | grep -E 'Requests/sec|^ +99%|Non-2xx'
}

headers() {  # headers KEY: what the supabase client sends, and wrk's settings
    common=(-t2 -c64 -d"${seconds}s" --latency -H "apikey: $1" -H "Authorization: Bearer $1" -H "Accept: */*"
            -H "Accept-Profile: public" -H "Content-Type: application/json")
}

measure() {  # measure PORT KEY LABEL ROW_PREFIX
    headers "$2"
    get_by_key "$@"
    echo "== $3: GET 20 rows by filter"; wrk "${common[@]}" "http://127.0.0.1:$1/rest/v1/items?select=*&qty=eq.42&limit=20" | grep -E 'Requests/sec|^ +99%|Non-2xx'
    post "$@"
}

key_of() { "$bin" keys --dir "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["service_role"])'; }

"$bin" init --dir "$dir/single" --http 127.0.0.1:$port >/dev/null
start "$dir/single" $port
key=$(key_of "$dir/single")
load $port "$key"
measure $port "$key" "single node" w
# The same JSON bytes the node answered, captured before it stops
curl -sf -H "apikey: $key" -H "Authorization: Bearer $key" -H "Accept: */*" -H "Accept-Profile: public" \
    -o "$dir/get-by-key.json" "http://127.0.0.1:$port/rest/v1/items?select=*&id=eq.k4242"
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true; pids=()

# A bare Hummingbird route of the bench's own (aerodb bench --workload http-baseline) answering
# those bytes without any database, middleware or key check: the ceiling of the HTTP stack here.
baseline=$((port + 3))
"$bin" bench --workload http-baseline --port-base $baseline --body-file "$dir/get-by-key.json" --seconds $((seconds * 3 + 60)) 2>/dev/null &
pids+=($!)
for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$baseline/rest/v1/items" && break; sleep 0.1; done
get_by_key $baseline "$key" "bare Hummingbird route"
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true; pids=()

primary=$((port + 1)); replica=$((port + 2))
"$bin" cluster init --dir "$dir/cluster" --nodes 2 --http-port $primary --repl-port $((port + 11)) --commit-mode async >/dev/null
start "$dir/cluster/n1" $primary
start "$dir/cluster/n2" $replica
key=$(key_of "$dir/cluster/n1")
load $primary "$key"
for _ in $(seq 1 600); do  # the replica has every row
    n=$(curl -sf -H "apikey: $key" -H "Prefer: count=exact" -H "Range: 0-0" -D - -o /dev/null "http://127.0.0.1:$replica/rest/v1/items?select=id" \
        | tr -d '\r' | sed -n 's/^[Cc]ontent-[Rr]ange: .*\///p')
    [ "$n" = "10000" ] && break; sleep 0.1
done
# The direct POST first: the forwarded one then inserts into the larger collection.
headers "$key"
post $primary "$key" "the cluster's primary" p
measure $replica "$key" "through the replica" r
