#!/usr/bin/env bash
# Measures what a newcomer waits for (issue 13 part 4, figures in docs/OPERATIONS.md "Start-up,
# verify and rejoin times"): a three-node cluster on 127.0.0.1:27301-27303 (replication
# 28301-28303) in a temporary directory, 2,010 single-row commits through the primary (8
# writers), then
#   - a replica's restart until /ready (opening: newest checkpoint, then WAL replay),
#   - `aerodb verify` of that stopped replica,
#   - SIGKILL of the primary, `aerodb promote --force` of n2, `aerodb rejoin --no-start` of n1.
#   scripts/lib/measure-startup.sh [AERODB_BINARY]     (default: the debug build)
# Every node it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:-$(swift build --show-bin-path)/aerodb}
dir=$(mktemp -d /tmp/aerodb-measure-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
c=$dir/c
"$B" cluster init --dir "$c" --nodes 3 --http-port 27301 --repl-port 28301 >/dev/null
start() { "$B" start --dir "$c/n$1" 2>>"$c/n$1.log" & pid[$1]=$!; pids+=("$!"); }
ready() { local t=$((SECONDS + 120)); until curl -sf "http://127.0.0.1:$1/ready" >/dev/null; do
    [ $SECONDS -lt $t ] || { echo "port $1 not ready" >&2; exit 1; }; sleep 0.05; done; }
declare -A pid
for n in 1 2 3; do start $n; done
for p in 27301 27302 27303; do ready $p; done
KEY=$("$B" keys --dir "$c/n1" --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["service_role"])')
curl -sf -X POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' http://127.0.0.1:27301/admin/v1/collections \
    -d '{"name":"items","fields":{"id":{"type":"int"},"body":{"type":"text"}}}' >/dev/null
KEY=$KEY python3 - <<'PY'
import json, os, threading, urllib.request
key = os.environ["KEY"]
def writer(k):
    for i in range(k, 2010, 8):
        r = urllib.request.Request("http://127.0.0.1:27301/rest/v1/items", data=json.dumps({"id": i, "body": f"record {i}"}).encode(),
                                   method="POST", headers={"apikey": key, "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        urllib.request.urlopen(r, timeout=30).read()
threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print("2,010 single-row commits")
PY
sleep 1
kill "${pid[3]}"; wait "${pid[3]}" 2>/dev/null || true
t0=$(date +%s.%N); start 3; ready 27303; t1=$(date +%s.%N)
echo "restart of n3 until /ready: $(echo "$t1 - $t0" | bc) s"
grep -o '"msg":"database opened".*' "$c/n3.log" | tail -1
kill "${pid[3]}"; wait "${pid[3]}" 2>/dev/null || true
t0=$(date +%s.%N); "$B" verify --dir "$c/n3" | tail -1; t1=$(date +%s.%N)
echo "verify: $(echo "$t1 - $t0" | bc) s"
kill -9 "${pid[1]}"; wait "${pid[1]}" 2>/dev/null || true
"$B" promote --url http://127.0.0.1:27302 --dir "$c/n2" --force 2>&1 | grep '^promoted' || true
t0=$(date +%s.%N); "$B" rejoin --dir "$c/n1" --no-start 2>&1 | grep -v '^{' ; t1=$(date +%s.%N)
echo "rejoin --no-start: $(echo "$t1 - $t0" | bc) s"
