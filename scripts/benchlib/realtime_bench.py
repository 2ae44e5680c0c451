"""Realtime benchmarks (issue 14; scripts/bench --only realtime_fanout / realtime_resume).

realtime_fanout: one release node on loopback; `subscribers` WebSocket clients split over
SUBSCRIBER_PROCESSES other processes running rt_subscribers.c (compiled here with gcc -O2: one
epoll loop per process, raw Phoenix vsn 1.0.0 frames, the event's `commit_timestamp` found by
byte search; a C client because two asyncio processes could not read the million frames a
second of the full run and the bench measured its own client), each joined with one
postgres_changes binding on the collection `fan`: `matching` of them filter `grp=eq.1`, the rest
`grp=eq.2`. WRITERS writer threads, each with its
own keep-alive HTTP connection, insert `rate` rows per second of grp 1 between them (REST, batches
of BATCH_ROWS) for `seconds`; a request that falls behind its schedule is sent at once (up to
WRITERS in flight), none is sent after `seconds`. Figures:
  - the rate achieved (rows committed / the writers' elapsed time) beside the target;
  - commit-to-delivery latency p50/p99 over every delivered event (receive time minus the event's
    `commit_timestamp`, both this machine's clock), from a histogram with 0.1 ms buckets up to
    1 s and 1 ms buckets above, merged over the processes;
  - RSS the node adds per 1,000 idle joined subscribers.
Beside it PostgreSQL LISTEN/NOTIFY, treated the same way: `pg_listeners` psycopg connections LISTEN
on one channel, split over SUBSCRIBER_PROCESSES processes (each one loop over its sockets with
psycopg's libpq layer, pq.PGconn.consume_input/notifies, the receive time taken once per read);
WRITERS writer connections each run transactions of BATCH_ROWS inserts plus one NOTIFY per row
(payload: the row id and clock_timestamp() taken in the transaction, delivered at its commit);
latency = receive time minus that timestamp. PostgreSQL forks a backend per listener, so its
listener count is capped (PG_LISTENERS_MAX); the ratio line says which counts were compared.

realtime_resume: 100,000 rows inserted while a subscriber is away; the time from its join with
`config.resume_after_lsn` to its 100,000th replayed event (beside a goal of 10 s).

Every server is started here and stopped by pid; no figure is an assertion (docs/BENCHMARKS.md).
The listener processes are this file run as a script (`pg-listeners`); the subscriber processes
are rt_subscribers.c.
"""
import asyncio
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from ccompile import compile_c

PORT = 30533  # below the ephemeral port range
PG_LISTENERS_MAX = 1_000  # one backend process each: more does not fit a 2-core CI machine
SUBSCRIBER_PROCESSES = 2  # each side: the C subscribers or the psycopg listeners
WRITERS = 4  # writer connections, each paced at rate / WRITERS
BATCH_ROWS = 10  # rows per request (AeroDB) or transaction (PostgreSQL)
JOINS_PER_SECOND = 400  # all subscriber processes together: under the node's 500 joins/s
DELIVERY_WAIT_SECONDS = 60  # after the last write, how long the subscribers wait for the rest


# ---- latency histogram (mergeable across processes) ----

# Keys (written inline in the receive loops): 0.1 ms buckets below 1 s, 1 ms buckets above,
# in 0.1 ms units: int(ms * 10) if ms < 1000 else int(ms) * 10.

def hist_merge(hists):
    out = {}
    for h in hists:
        for k, v in h.items():
            out[int(k)] = out.get(int(k), 0) + v
    return out


def hist_quantile(hist, q):
    n = sum(hist.values())
    if n == 0:
        return 0.0
    target, seen = max(1, int(n * q + 0.999999)), 0
    for k in sorted(hist):
        seen += hist[k]
        if seen >= target:
            return k / 10
    return max(hist) / 10


# ---- the subscriber processes: rt_subscribers.c (compiled here) ----

def build_subscriber_client(out_dir):
    """Compiles rt_subscribers.c into out_dir; returns the binary's path."""
    return compile_c("rt_subscribers", out_dir)


# ---- the PostgreSQL listener process (python realtime_bench.py pg-listeners ...) ----

def pg_listeners_main(argv):
    import psycopg
    import selectors
    port, count = int(argv[0]), int(argv[1])
    conns = [psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True)
             for _ in range(count)]
    for c in conns:
        c.execute("LISTEN fan")
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.fileno(), selectors.EVENT_READ, c)
    print("JOINED", flush=True)
    sys.stdin.readline()
    state = {"expected": None}

    def read_written():
        state["expected"] = int(sys.stdin.readline()) * count
    threading.Thread(target=read_written, daemon=True).start()
    hist, events, deadline = {}, 0, None
    # psycopg's libpq layer (pq.PGconn: consume_input, notifies), not Connection.notifies(): the
    # generator costs a Python frame and a Notify object per notification, and the listeners are
    # not the side under test. The receive time is taken once per socket read, as rt_subscribers
    # takes it once per read() call.
    pgconns = {c.fileno(): c.pgconn for c in conns}
    while True:
        if state["expected"] is not None:
            deadline = deadline or time.time() + DELIVERY_WAIT_SECONDS
            if events >= state["expected"] or time.time() > deadline:
                break
        for key, _ in sel.select(timeout=0.05):
            pgconn = pgconns[key.fd]
            pgconn.consume_input()
            now = time.time()
            while (n := pgconn.notifies()) is not None:
                ms = (now - float(n.extra.split(b" ", 1)[1])) * 1000
                k = int(ms * 10) if ms < 1000 else int(ms) * 10
                hist[k] = hist.get(k, 0) + 1
                events += 1
    for c in conns:
        c.close()
    print("RESULT " + json.dumps({"events": events, "expected": state["expected"], "hist": hist, "failed": None}), flush=True)


# ---- the parent side ----

def paced_writers(rate, seconds, make_writer):
    """WRITERS threads, each calling its writer(ids) with BATCH_ROWS new ids on a schedule of
    rate / WRITERS rows per second; a late call is made at once, none after `seconds`.
    Returns (rows written, elapsed seconds)."""
    per_writer = rate / WRITERS
    interval = BATCH_ROWS / per_writer
    counts, errors = [0] * WRITERS, []

    def run(w, start):
        try:
            write = make_writer(w)
            k = 0
            while True:
                at = start + (k + w / WRITERS) * interval
                now = time.monotonic()
                if at - start >= seconds or now - start >= seconds:
                    return
                if at > now:
                    time.sleep(at - now)
                base = (w * 10_000_000) + k * BATCH_ROWS
                write(list(range(base, base + BATCH_ROWS)))
                counts[w] += BATCH_ROWS
                k += 1
        except Exception as e:  # reported, never swallowed
            errors.append(e)
    start = time.monotonic() + 0.05
    threads = [threading.Thread(target=run, args=(w, start)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"a writer failed: {errors[0]!r}")
    return sum(counts), time.monotonic() - start


def _spawn(kind, args, binary=None):
    command = [binary] if binary else [sys.executable, os.path.abspath(__file__), kind]
    return subprocess.Popen(command + [str(a) for a in args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _gather(procs, written):
    """Tells every process how many rows were written and merges their RESULT lines."""
    for p in procs:
        p.stdin.write(f"{written}\n")
        p.stdin.flush()
    results = []
    for p in procs:
        result = None
        for line in p.stdout:
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
        p.wait(timeout=DELIVERY_WAIT_SECONDS + 60)
        if result is None:
            raise RuntimeError("a subscriber process printed no result")
        if result["failed"]:
            raise RuntimeError(f"a subscriber process failed: {result['failed']}")
        results.append(result)
    hist = hist_merge(r["hist"] for r in results)
    return {"events": sum(r["events"] for r in results), "expected": sum(r["expected"] for r in results),
            "p50_ms": hist_quantile(hist, 0.50), "p99_ms": hist_quantile(hist, 0.99),
            "max_ms": max(hist) / 10 if hist else 0.0}


def _wait_joined(procs):
    for p in procs:
        line = p.stdout.readline()
        if not line.startswith("JOINED"):
            raise RuntimeError(f"subscribers did not join: {line!r}")


def _go(procs):
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()


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


def fanout(binary, subscribers, matching, rate, seconds):
    root = tempfile.mkdtemp(prefix="aerodb-rtbench-")
    node = Node(binary, root)
    procs = []
    try:
        node.request("POST", "/admin/v1/collections", {"name": "fan", "fields": {
            "id": {"type": "int"}, "grp": {"type": "int"}}})
        before = rss_kb(node.process.pid)
        path = f"/realtime/v1/websocket?apikey={node.service}&vsn=1.0.0"
        client = build_subscriber_client(root)
        procs = [_spawn("ws-subscribers", ["127.0.0.1", PORT, path, k, SUBSCRIBER_PROCESSES, subscribers, matching,
                                           JOINS_PER_SECOND // SUBSCRIBER_PROCESSES], binary=client)
                 for k in range(SUBSCRIBER_PROCESSES)]
        _wait_joined(procs)
        time.sleep(2)
        idle = rss_kb(node.process.pid)
        _go(procs)
        headers = {"apikey": node.service, "Authorization": f"Bearer {node.service}", "Content-Type": "application/json",
                   "Prefer": "return=minimal"}

        def make_writer(w):
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)

            def write(ids):
                conn.request("POST", "/rest/v1/fan", json.dumps([{"id": i, "grp": 1} for i in ids]), headers)
                answer = conn.getresponse()
                body = answer.read()
                if answer.status >= 300:
                    raise RuntimeError(f"insert answered {answer.status}: {body[:200]!r}")
            return write
        written, elapsed = paced_writers(rate, seconds, make_writer)
        result = _gather(procs, written)
        result.update({"subscribers": subscribers, "matching": matching, "written": written,
                       "target_rate": rate, "achieved_rate": written / elapsed, "writers": WRITERS,
                       "subscriber_processes": SUBSCRIBER_PROCESSES,
                       "rss_added_per_1000_idle_mb": (idle - before) / 1024 / (subscribers / 1000)})
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        node.stop()
        shutil.rmtree(root, ignore_errors=True)


def pg_fanout(pg, listeners, rate, seconds):
    """PostgreSQL LISTEN/NOTIFY: `listeners` psycopg connections on one channel, in
    SUBSCRIBER_PROCESSES processes; WRITERS writer connections."""
    import psycopg
    setup = psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres", autocommit=True)
    setup.execute("DROP TABLE IF EXISTS fan; CREATE TABLE fan(id bigint PRIMARY KEY, grp int)")
    setup.close()
    shares = [listeners // SUBSCRIBER_PROCESSES + (1 if k < listeners % SUBSCRIBER_PROCESSES else 0)
              for k in range(SUBSCRIBER_PROCESSES)]
    procs = [_spawn("pg-listeners", [pg.port, n]) for n in shares if n > 0]
    try:
        _wait_joined(procs)
        _go(procs)

        def make_writer(w):
            conn = psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres", autocommit=True)

            def write(ids):
                with conn.transaction():
                    conn.execute("INSERT INTO fan SELECT g, 1 FROM unnest(%s::bigint[]) g", (ids,))
                    # One notification per row (distinct payloads: NOTIFY folds identical ones), stamped
                    # inside the transaction and delivered at its commit.
                    conn.execute("SELECT pg_notify('fan', g || ' ' || extract(epoch from clock_timestamp())) "
                                 "FROM unnest(%s::bigint[]) g", (ids,))
            return write
        written, elapsed = paced_writers(rate, seconds, make_writer)
        result = _gather(procs, written)
        result.update({"listeners": listeners, "written": written, "target_rate": rate,
                       "achieved_rate": written / elapsed, "writers": WRITERS, "subscriber_processes": len(procs)})
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


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


if __name__ == "__main__":
    if sys.argv[1] == "pg-listeners":
        pg_listeners_main(sys.argv[2:])
    else:
        sys.exit(f"unknown role {sys.argv[1]!r}")
