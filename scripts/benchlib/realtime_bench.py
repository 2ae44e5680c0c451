"""Realtime benchmarks (issue 14; scripts/bench --only realtime_fanout / realtime_resume).

realtime_fanout: one release node on loopback; `subscribers` WebSocket clients in another process
(raw Phoenix vsn 1.0.0 frames, asyncio), each joined with one postgres_changes binding on the
collection `fan`: `matching` of them filter `grp=eq.1`, the rest `grp=eq.2`. A writer inserts
`rate` rows per second of grp 1 (REST, batches of 10) for `seconds`. Figures:
  - commit-to-delivery latency p50/p99 over every delivered event (receive time minus the event's
    `commit_timestamp`, both this machine's clock);
  - RSS the node adds per 1,000 idle joined subscribers.
Beside it PostgreSQL LISTEN/NOTIFY: `pg_listeners` psycopg connections LISTEN on one channel, a
writer runs `INSERT ...; NOTIFY fan, '<epoch seconds>'` at the same rate; latency = receive time
minus the NOTIFY's timestamp. PostgreSQL forks a backend per listener, so its listener count is
capped (PG_LISTENERS_MAX); the ratio line says which counts were compared.

realtime_resume: 100,000 rows inserted while a subscriber is away; the time from its join with
`config.resume_after_lsn` to its 100,000th replayed event (beside a goal of 10 s).

Every server is started here and stopped by pid; no figure is an assertion (docs/BENCHMARKS.md).
"""
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime

PORT = 30533  # below the ephemeral port range
PG_LISTENERS_MAX = 1_000  # one backend process each: more does not fit a 2-core CI machine

CLIENT = r'''
import asyncio, json, sys, time
from datetime import datetime
import websockets

url, total, matching, seconds_max, expect = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
latencies, joined = [], 0

def commit_time(text):
    return datetime.fromisoformat(text).timestamp()

async def one(i, start_gate, done):
    global joined
    grp = 1 if i < matching else 2
    for attempt in range(50):
        try:
            ws = await websockets.connect(url, max_size=None, ping_interval=None, open_timeout=60)
            break
        except Exception:
            await asyncio.sleep(0.2 + attempt * 0.1)
    else:
        raise RuntimeError("could not connect")
    await ws.send(json.dumps({"event": "phx_join", "topic": f"realtime:fan-{i}", "ref": "1", "join_ref": "1", "payload": {
        "config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "fan", "filter": f"grp=eq.{grp}"}]}}}))
    while True:
        frame = json.loads(await ws.recv())
        if frame["event"] == "phx_reply":
            if frame["payload"]["status"] != "ok":
                await asyncio.sleep(1.0)  # join rate limit: retry
                await ws.send(json.dumps({"event": "phx_join", "topic": f"realtime:fan-{i}", "ref": "2", "join_ref": "2",
                                          "payload": {"config": {"postgres_changes": [{"event": "INSERT", "schema": "public",
                                                      "table": "fan", "filter": f"grp=eq.{grp}"}]}}}))
                continue
            break
    joined += 1
    got = 0
    async def heartbeat():
        while True:
            await asyncio.sleep(20)
            await ws.send(json.dumps({"event": "heartbeat", "topic": "phoenix", "payload": {}, "ref": "h", "join_ref": None}))
    hb = asyncio.create_task(heartbeat())
    try:
        while grp == 1 and not done.is_set():
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except asyncio.TimeoutError:
                continue
            if frame["event"] == "postgres_changes":
                latencies.append(time.time() - commit_time(frame["payload"]["data"]["commit_timestamp"]))
                got += 1
        await done.wait()
    finally:
        hb.cancel()
        await ws.close()

async def main():
    done = asyncio.Event()
    tasks = []
    for i in range(total):
        tasks.append(asyncio.create_task(one(i, None, done)))
        if i % 100 == 99:
            await asyncio.sleep(0.25)  # under the node's 500 joins/s
    report = time.time() + 10
    while joined < total:
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            print(f"FAILED {failed[0].exception()!r}", flush=True)
            sys.exit(1)
        await asyncio.sleep(0.1)
        if time.time() > report:
            print(f"[realtime_bench] {joined} of {total} subscribers joined", file=sys.stderr, flush=True)
            report = time.time() + 10
    print("JOINED", flush=True)
    sys.stdin.readline()  # the parent measured idle memory and starts writing
    written = int(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
    deadline = time.time() + seconds_max
    while len(latencies) < written * matching and time.time() < deadline:
        await asyncio.sleep(0.1)
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies.sort()
    n = len(latencies)
    print("RESULT " + json.dumps({"events": n, "expected": written * matching,
                                  "p50_ms": latencies[n // 2] * 1000 if n else 0,
                                  "p99_ms": latencies[min(n - 1, n * 99 // 100)] * 1000 if n else 0}), flush=True)

asyncio.run(main())
'''


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Node:
    def __init__(self, binary, root):
        self.dir = os.path.join(root, "rt")
        subprocess.run([binary, "init", "--dir", self.dir, "--http", f"127.0.0.1:{PORT}"], check=True,
                       stdout=subprocess.DEVNULL)
        keys = json.loads(subprocess.run([binary, "keys", "--dir", self.dir, "--json"], check=True,
                                         capture_output=True).stdout)
        self.service = keys["service_role"]
        self.url = f"http://127.0.0.1:{PORT}"
        self.process = subprocess.Popen([binary, "start", "--dir", self.dir], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the node did not become ready")

    def request(self, method, path, body=None, prefer=None):
        headers = {"apikey": self.service, "Authorization": f"Bearer {self.service}", "Content-Type": "application/json"}
        if prefer:
            headers["Prefer"] = prefer
        r = urllib.request.Request(self.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                   headers=headers)
        with urllib.request.urlopen(r, timeout=60) as answer:
            return answer.status, answer.headers, answer.read()

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def paced(rate, seconds, action):
    """Calls action(i) `rate` times per second (in ticks of 10) for `seconds`."""
    per_tick, tick = max(1, rate // 100), 0.01
    start, i = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        action(i, per_tick)
        i += per_tick
        next_at = start + (i / per_tick) * tick
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return i


def fanout(binary, subscribers, matching, rate, seconds):
    root = tempfile.mkdtemp(prefix="aerodb-rtbench-")
    node = Node(binary, root)
    client = None
    try:
        node.request("POST", "/admin/v1/collections", {"name": "fan", "fields": {
            "id": {"type": "int"}, "grp": {"type": "int"}}})
        before = rss_kb(node.process.pid)
        expect = int(rate * seconds)
        script = os.path.join(root, "client.py")
        with open(script, "w") as f:
            f.write(CLIENT)
        ws = f"ws://127.0.0.1:{PORT}/realtime/v1/websocket?apikey={node.service}&vsn=1.0.0"
        client = subprocess.Popen([sys.executable, script, ws, str(subscribers), str(matching), "60", str(expect)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = client.stdout.readline()
        if not line.startswith("JOINED"):
            raise RuntimeError(f"subscribers did not join: {line!r}")
        time.sleep(2)
        idle = rss_kb(node.process.pid)
        client.stdin.write("go\n")
        client.stdin.flush()

        def insert(i, n):
            node.request("POST", "/rest/v1/fan", [{"id": i + k, "grp": 1} for k in range(n)], prefer="return=minimal")
        written = paced(rate, seconds, insert)
        client.stdin.write(f"{written}\n")
        client.stdin.flush()
        result = None
        for line in client.stdout:
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
        client.wait(timeout=120)
        if result is None:
            raise RuntimeError("the subscriber process printed no result")
        result.update({"subscribers": subscribers, "matching": matching, "written": written,
                       "rss_added_per_1000_idle_mb": (idle - before) / 1024 / (subscribers / 1000)})
        return result
    finally:
        if client and client.poll() is None:
            client.kill()
        node.stop()
        shutil.rmtree(root, ignore_errors=True)


def pg_fanout(pg, listeners, rate, seconds):
    """PostgreSQL LISTEN/NOTIFY: `listeners` psycopg connections on one channel."""
    import psycopg
    conns = [psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres", autocommit=True)
             for _ in range(listeners)]
    latencies, lock, stop = [], threading.Lock(), threading.Event()
    for c in conns:
        c.execute("LISTEN fan")

    def listen(chunk):
        import selectors
        sel = selectors.DefaultSelector()
        for c in chunk:
            sel.register(c.fileno(), selectors.EVENT_READ, c)
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                for n in key.data.notifies(timeout=0, stop_after=100):
                    with lock:
                        latencies.append(time.time() - float(n.payload))
    threads = [threading.Thread(target=listen, args=(conns[i::4],), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    writer = psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres", autocommit=True)
    writer.execute("DROP TABLE IF EXISTS fan; CREATE TABLE fan(id bigint PRIMARY KEY, grp int)")

    def insert(i, n):
        with writer.transaction():
            for k in range(n):
                writer.execute("INSERT INTO fan VALUES (%s, 1)", (i + k,))
                writer.execute("SELECT pg_notify('fan', %s)", (repr(time.time()),))
    written = paced(rate, seconds, insert)
    deadline = time.time() + 60
    while len(latencies) < written * listeners and time.time() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=5)
    for c in conns + [writer]:
        c.close()
    latencies.sort()
    n = len(latencies)
    return {"listeners": listeners, "events": n, "expected": written * listeners,
            "p50_ms": latencies[n // 2] * 1000 if n else 0, "p99_ms": latencies[min(n - 1, n * 99 // 100)] * 1000 if n else 0}


def resume(binary, events):
    """Time to replay `events` missed events to a subscriber resuming after an LSN."""
    import websockets
    root = tempfile.mkdtemp(prefix="aerodb-rtbench-")
    node = Node(binary, root)
    try:
        node.request("POST", "/admin/v1/collections", {"name": "missed", "fields": {"id": {"type": "int"}}})
        status, headers, _ = node.request("POST", "/rest/v1/missed", [{"id": -1}], prefer="return=minimal")
        start_lsn = int(headers.get("X-AeroDB-LSN", "0"))
        for base in range(0, events, 1000):
            node.request("POST", "/rest/v1/missed", [{"id": base + k} for k in range(1000)], prefer="return=minimal")

        async def replay():
            url = f"ws://127.0.0.1:{PORT}/realtime/v1/websocket?apikey={node.service}&vsn=1.0.0"
            async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
                started = time.monotonic()
                await ws.send(json.dumps({"event": "phx_join", "topic": "realtime:resume", "ref": "1", "join_ref": "1", "payload": {
                    "config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "missed"}],
                               "resume_after_lsn": str(start_lsn)}}}))
                got = 0
                while got < events:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if frame["event"] == "postgres_changes":
                        got += 1
                    elif frame["event"] == "system" and frame["payload"].get("status") == "error":
                        raise RuntimeError(frame["payload"]["message"])
                return time.monotonic() - started
        return {"events": events, "seconds": asyncio.run(replay()), "after_lsn": start_lsn}
    finally:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)
