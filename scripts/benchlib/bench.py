#!/usr/bin/env python3
"""Side-by-side benchmarks: AeroDB against PostgreSQL 15 and SQLite on this machine, in one run.

Called by scripts/bench (which installs the packages and builds the release binary). Every
workload runs AeroDB and its peer one after the other with the same durability (a commit returns
after fdatasync on both sides) and prints one line per comparison, exactly:

    RATIO <workload> aerodb/<peer> = <x.xx> (aerodb <value> <unit>, <peer> <value> <unit>)

where a ratio above 1 always means AeroDB is better (latencies are inverted). Every figure also
goes to a JSON file (.bench/results-<UTC time>.json). PostgreSQL runs from Debian's binaries as
the `postgres` user in a temporary directory on two free 127.0.0.1 ports from 30540 up (so two
benches can run at once), stopped at the end.
No figure here is ever an assertion; see docs/BENCHMARKS.md.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from ccompile import compile_c

PGBIN = "/usr/lib/postgresql/15/bin"
import socket


def free_port_pair(first=30540, last=32766):
    """Two adjacent ports nobody listens on, below Linux's ephemeral range (32768-60999), so no
    client connection can take them meanwhile: the first pair from `first` both of which bind."""
    for port in range(first, last, 2):
        try:
            for p in (port, port + 1):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", p))
            return (port, port + 1)
        except OSError:
            continue
    raise SystemExit(f"no two free ports in {first}-{last} for PostgreSQL")


PG_PORTS = free_port_pair()
# A promoted PostgreSQL replica that accepts no write within this is a failed run, not a hang.
PROMOTE_WAIT_SECONDS = 30
RESULTS = {"machine": {}, "workloads": {}}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def ratio(workload, peer, ours, theirs, unit, higher_is_better=True, note=None):
    x = (ours / theirs if higher_is_better else theirs / ours) if ours and theirs else 0.0
    print(f"RATIO {workload} aerodb/{peer} = {x:.2f} (aerodb {ours:.6g} {unit}, {peer} {theirs:.6g} {unit})", flush=True)
    RESULTS["workloads"].setdefault(workload, {})[peer] = {
        "aerodb": ours, peer: theirs, "unit": unit, "ratio": round(x, 3), "higher_is_better": higher_is_better,
        "note": note}


def run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, cmd, done.stdout, done.stderr[-2000:])
    return done.stdout


def describe(error):
    if isinstance(error, subprocess.CalledProcessError):
        return f"{' '.join(map(str, error.cmd))} exited with {error.returncode}: {error.stderr or error.output}"
    return str(error)


def field(pattern, text, what):
    m = re.search(pattern, text)
    if not m:
        raise RuntimeError(f"{what}: no match for {pattern!r} in:\n{text}")
    return float(m.group(1))


# ----------------------------------------------------------------------------- AeroDB

class AeroDB:
    def __init__(self, binary, scratch):
        self.binary, self.scratch = binary, scratch

    def bench(self, *args):
        return run([self.binary, "bench", "--dir", tempfile.mkdtemp(dir=self.scratch), *args])

    def commits(self, writers, seconds):
        out = self.bench("--workload", "commit", "--writers", str(writers), "--seconds", str(seconds))
        return field(r"rate=(\d+)/s", out, "aerodb commit")

    def reads(self, documents, seconds):
        out = self.bench("--workload", "read", "--documents", str(documents), "--seconds", str(seconds))
        planned = field(r"rate=(\d+)/s \(query", out, "aerodb read")
        return planned

    def restart(self, documents):
        out = self.bench("--workload", "restart", "--documents", str(documents))
        return field(r"wal_replay=([\d.]+)s", out, "aerodb restart"), field(r"([\d.]+) MB/s", out, "aerodb replay rate")

    def cluster(self, seconds, promotions):
        return self.bench("--workload", "cluster", "--seconds", str(seconds), "--promotions", str(promotions),
                          "--port-base", "30200")

    def idle_rss_kb(self):
        d = tempfile.mkdtemp(dir=self.scratch)
        run([self.binary, "init", "--dir", d + "/n", "--http", "127.0.0.1:30390"])
        p = subprocess.Popen([self.binary, "start", "--dir", d + "/n"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            time.sleep(3)
            return rss_kb(p.pid)
        finally:
            p.terminate()
            p.wait(timeout=20)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


# ----------------------------------------------------------------------------- PostgreSQL

def as_postgres(cmd, **kw):
    return run(["runuser", "-u", "postgres", "--", *cmd], **kw)


class Postgres:
    """One PostgreSQL 15 instance in a temporary directory, on 127.0.0.1."""

    BASE_CONFIG = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sock}'
shared_buffers = 256MB
max_connections = 100
fsync = on
synchronous_commit = on
wal_level = replica
max_wal_senders = 8
hot_standby = on
max_wal_size = 8GB
checkpoint_timeout = 30min
"""

    def __init__(self, root, name, port):
        self.root, self.dir, self.port = root, f"{root}/{name}", port
        self.log = f"{root}/{name}.log"

    def init(self):
        as_postgres([f"{PGBIN}/initdb", "-D", self.dir, "-A", "trust", "-U", "postgres", "--no-sync"])
        self.configure()

    def configure(self, extra=""):
        with open(f"{self.dir}/postgresql.conf", "a") as f:
            f.write(self.BASE_CONFIG.format(port=self.port, sock=self.root) + extra)

    def start(self):
        as_postgres([f"{PGBIN}/pg_ctl", "-D", self.dir, "-l", self.log, "-w", "-t", "60", "start"])

    def stop(self, mode="fast"):
        subprocess.run(["runuser", "-u", "postgres", "--", f"{PGBIN}/pg_ctl", "-D", self.dir, "-m", mode, "-w", "stop"],
                       capture_output=True, stdin=subprocess.DEVNULL)

    def sql(self, query):
        return run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-At",
                    "-v", "ON_ERROR_STOP=1", "-c", query]).strip()

    def pgbench(self, script, clients, seconds, rate=None):
        path = f"{self.root}/bench-{time.monotonic_ns()}.sql"
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, 0o644)
        cmd = [f"{PGBIN}/pgbench", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-n", "-M", "prepared",
               "-f", path, "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds), "postgres"]
        if rate:
            cmd[cmd.index("-T"):cmd.index("-T")] = ["-R", str(rate)]
        out = run(cmd)
        return field(r"tps = ([\d.]+)", out, "pgbench")

    def discard(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def reset_docs(self):
        self.sql("DROP TABLE IF EXISTS docs; CREATE TABLE docs(id bigserial PRIMARY KEY, n bigint, body text)")

    def backend_rss_kb(self):
        pid = int(open(f"{self.dir}/postmaster.pid").readline())
        children = run(["ps", "-o", "pid=", "--ppid", str(pid)]).split()
        return rss_kb(pid) + sum(rss_kb(int(c)) for c in children if os.path.exists(f"/proc/{c}"))


INSERT = "INSERT INTO docs(n, body) VALUES (1, repeat('x', 980));\n"


def replica_of(primary, name, port, synchronous):
    replica = Postgres(primary.root, name, port)
    as_postgres([f"{PGBIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                 "-D", replica.dir, "-R", "-X", "stream", "-c", "fast"])
    with open(f"{replica.dir}/postgresql.auto.conf", "a") as f:
        f.write(f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user=postgres application_name={name}'\n")
    replica.configure()
    replica.start()
    for _ in range(200):
        if primary.sql(f"SELECT count(*) FROM pg_stat_replication WHERE application_name = '{name}' AND state = 'streaming'") == "1":
            break
        time.sleep(0.05)
    if synchronous:
        primary.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{name}'")
        primary.sql("SELECT pg_reload_conf()")
        for _ in range(100):
            if primary.sql(f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{name}'") == "sync":
                break
            time.sleep(0.05)
    return replica


# ----------------------------------------------------------------------------- SQLite

class SQLite:
    def __init__(self, binary, scratch):
        self.binary, self.scratch = binary, scratch

    def _db(self):
        return tempfile.mkdtemp(dir=self.scratch) + "/bench.db"

    def commits(self, threads, seconds):
        return field(r"rate=(\d+)", run([self.binary, "commit", self._db(), str(threads), str(seconds)]), "sqlite commit")

    def reads(self, documents, seconds):
        return field(r"rate=(\d+)", run([self.binary, "read", self._db(), str(documents), str(seconds)]), "sqlite read")

    def raw_fdatasync(self, seconds):
        return field(r"rate=(\d+)", run([self.binary, "fsync", self._db(), "1", str(seconds)]), "raw fdatasync")


# ----------------------------------------------------------------------------- workloads

def w_commit(ctx, writers):
    name = f"commit_{writers}w"
    ours = ctx.aerodb.commits(writers, ctx.seconds)
    ctx.pg.reset_docs()
    theirs = ctx.pg.pgbench(INSERT, writers, ctx.seconds)
    ratio(name, "postgresql", ours, theirs, "commits/s")
    ratio(name, "sqlite", ours, ctx.sqlite.commits(writers, ctx.seconds), "commits/s")
    if writers == 1:  # SPEC §8: one writer within 1.5x of one raw fdatasync per commit (ratio >= 0.67)
        ratio(name, "raw_fdatasync", ours, ctx.sqlite.raw_fdatasync(ctx.seconds), "commits/s",
              note="4 KiB pwrite + fdatasync per append in C into a preallocated file: the floor a durable commit pays")


def w_point_read(ctx):
    docs = 100_000
    ours = ctx.aerodb.reads(docs, ctx.seconds)
    ratio("point_read", "sqlite", ours, ctx.sqlite.reads(docs, ctx.seconds), "reads/s")
    ctx.pg.reset_docs()
    ctx.pg.sql(f"INSERT INTO docs(n, body) SELECT g, repeat('x', 980) FROM generate_series(1, {docs}) g")
    theirs = ctx.pg.pgbench(f"\\set k random(1, {docs})\nSELECT n, body FROM docs WHERE id = :k;\n", 1, ctx.seconds)
    ratio("point_read", "postgresql", ours, theirs, "reads/s")


# The sections scripts/wrk/run-rest.sh prints ("== <section>: <request>", then wrk's lines), in order.
REST_SINGLE, REST_BASELINE = "single node", "bare Hummingbird route"
REST_PRIMARY, REST_REPLICA = "the cluster's primary", "through the replica"
REST_GET, REST_FILTER, REST_POST = "GET by key", "GET 20 rows by filter", "POST one row (durable)"
REST_EXPECTED = [(REST_SINGLE, REST_GET), (REST_SINGLE, REST_FILTER), (REST_SINGLE, REST_POST),
                 (REST_BASELINE, REST_GET),
                 (REST_PRIMARY, REST_POST),
                 (REST_REPLICA, REST_GET), (REST_REPLICA, REST_FILTER), (REST_REPLICA, REST_POST)]
WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_rest(out):
    """scripts/wrk/run-rest.sh's output -> {(section, request): {"rps": x, "p99_ms": y}}.

    Every expected measurement exactly once, each with its rate and p99; a section with non-2xx
    answers, a missing or an unknown section is an error (a silently skipped figure is how the
    REST rows once went stale). tests: Tests/Bench/test_bench_parse.py on recorded outputs."""
    found, current = {}, None
    for line in out.splitlines():
        header = re.match(r"^== (.+?): (.+)$", line)
        if header:
            current = (header.group(1), header.group(2))
            if current not in REST_EXPECTED:
                raise RuntimeError(f"run-rest.sh: unknown section {line!r}")
            if current in found:
                raise RuntimeError(f"run-rest.sh: section {line!r} twice")
            found[current] = {}
            continue
        if current is None:
            continue
        rate = re.match(r"^Requests/sec:\s+([\d.]+)\s*$", line)
        p99 = re.match(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", line)
        errors = re.match(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", line)
        if rate:
            found[current]["rps"] = float(rate.group(1))
        elif p99:
            found[current]["p99_ms"] = float(p99.group(1)) * WRK_UNITS_MS[p99.group(2)]
        elif errors:
            raise RuntimeError(f"run-rest.sh: {current[0]}: {current[1]}: {errors.group(1)} non-2xx answers")
    missing = [f"{s}: {r}" for (s, r) in REST_EXPECTED if (s, r) not in found or set(found[(s, r)]) != {"rps", "p99_ms"}]
    if missing:
        raise RuntimeError(f"run-rest.sh: no rate and p99 for {', '.join(missing)} in:\n{out}")
    return found


def w_rest(ctx):
    out = run(["scripts/wrk/run-rest.sh", str(ctx.seconds)], env={**os.environ, "AERODB_BIN": ctx.aerodb.binary})
    rest = parse_rest(out)
    RESULTS["workloads"].setdefault("rest", {})["wrk"] = {f"{s}: {r}": v for (s, r), v in rest.items()}
    ctx.pg.reset_docs()
    ctx.pg.sql("INSERT INTO docs(n, body) SELECT g, repeat('x', 980) FROM generate_series(1, 10000) g")
    pg_get = ctx.pg.pgbench("\\set k random(1, 10000)\nSELECT n, body FROM docs WHERE id = :k;\n", 64, ctx.seconds)
    pg_insert = ctx.pg.pgbench(INSERT, 64, ctx.seconds)
    note = "aerodb: /rest/v1 over HTTP with wrk -c64 and the supabase client's headers; postgresql: pgbench at 64 clients"
    ratio("rest_get", "postgresql", rest[(REST_SINGLE, REST_GET)]["rps"], pg_get, "req/s", note=note)
    ratio("rest_get", "hummingbird_baseline", rest[(REST_SINGLE, REST_GET)]["rps"], rest[(REST_BASELINE, REST_GET)]["rps"], "req/s",
          note="the bench's own bare Hummingbird route answering the same JSON bytes without the database "
               "(aerodb bench --workload http-baseline), wrk -c64 right after the node's run; goal >= 0.75")
    ratio("rest_insert", "postgresql", rest[(REST_SINGLE, REST_POST)]["rps"], pg_insert, "req/s", note=note)
    forwarded = "POST sent to the replica of an async 2-node cluster (forwarded, answered once applied there) "
    ratio("rest_insert_forwarded", "direct_post", rest[(REST_REPLICA, REST_POST)]["rps"], rest[(REST_PRIMARY, REST_POST)]["rps"], "req/s",
          note=forwarded + "vs the same POST sent straight to that cluster's primary, right before; goal >= 0.5")
    ratio("rest_insert_forwarded", "single_node_post", rest[(REST_REPLICA, REST_POST)]["rps"], rest[(REST_SINGLE, REST_POST)]["rps"], "req/s",
          note=forwarded + "vs the same POST to a single node, which ships to no replica (direct_post's denominator until 2026-12-06)")


def cluster_figures(ctx):
    if ctx.cluster_out is None:
        log("aerodb cluster workload (kernel and HTTP inserts, lag, promotions)")
        ctx.cluster_out = ctx.aerodb.cluster(ctx.seconds, ctx.promotions)
        RESULTS["aerodb_cluster_output"] = ctx.cluster_out.splitlines()
    return ctx.cluster_out


def cluster_match(ctx, pattern, what):
    m = re.search(pattern, cluster_figures(ctx))
    if not m:
        raise RuntimeError(f"no {what} line in:\n{ctx.cluster_out}")
    return m


def w_sync_commit(ctx):
    out = cluster_figures(ctx)
    ours = field(r"kernel inserts sync\s+8 writers:\s+(\d+)", out, "aerodb sync 8 writers")
    ctx.pg.reset_docs()
    replica = replica_of(ctx.pg, "replica1", PG_PORTS[1], synchronous=True)
    try:
        theirs = ctx.pg.pgbench(INSERT, 8, ctx.seconds)
    finally:
        ctx.pg.sql("ALTER SYSTEM RESET synchronous_standby_names")
        ctx.pg.sql("SELECT pg_reload_conf()")
        replica.discard()
    ratio("sync_commit_8w", "postgresql", ours, theirs, "commits/s")
    # The floor of the row on this machine: the same commits (8 writers, ~1 KiB records, durable
    # on a primary and on one replica process over loopback TCP before the ack) with nothing of
    # AeroDB's or PostgreSQL's own, in C (scripts/benchlib/sync_floor.c): serial ships what is
    # durable, as both systems do; parallel writes locally while the replica writes.
    floor = sync_floor_binary(ctx.aerodb.scratch)
    for mode in ("serial", "parallel"):
        rate = sync_floor(floor, mode, 8, ctx.seconds, tempfile.mkdtemp(dir=ctx.aerodb.scratch))["rate"]
        RESULTS["workloads"]["sync_commit_8w"][f"c_floor_{mode}_over_postgresql"] = round(rate / theirs, 3)
        log(f"sync_floor {mode}: {rate:.0f} commits/s = {rate / theirs:.2f}x PostgreSQL's")
        ratio("sync_commit_8w", f"c_floor_{mode}", ours, rate, "commits/s",
              note="scripts/benchlib/sync_floor.c: 8 writers, group commit, O_DIRECT|O_DSYNC logs, one replica process over loopback TCP")


SYNC_FLOOR = r"^sync_floor: mode=(serial|parallel) writers=(\d+) commits=(\d+) seconds=([\d.]+) rate=(\d+) batches=(\d+)$"


def sync_floor(binary, mode, writers, seconds, directory):
    """Runs sync_floor.c's model; returns its figures (the one line it prints, parsed whole)."""
    out = run([binary, mode, str(writers), str(seconds), directory])
    m = re.fullmatch(SYNC_FLOOR, out.strip())
    if not m:
        raise RuntimeError(f"sync_floor {mode}: unexpected output {out!r}")
    return {"mode": m.group(1), "writers": int(m.group(2)), "commits": int(m.group(3)),
            "seconds": float(m.group(4)), "rate": float(m.group(5)), "batches": int(m.group(6))}


def sync_floor_binary(out_dir):
    """Compiles scripts/benchlib/sync_floor.c into out_dir; returns the binary's path."""
    return compile_c("sync_floor", out_dir, "-pthread")


LAG_BATCH = r"kernel replica visibility lag at (\d+) commits/s.*?p50 ([\d.]+) ms\s+p99 ([\d.]+) ms"
LAG_PROBE = r"kernel replica visibility probe at (\d+) commits/s.*?p50 ([\d.]+) ms\s+p99 ([\d.]+) ms\s+max [\d.]+ ms\s+\((\d+) samples\)"


def parse_lag(out):
    """The kernel lag phase's two figures from `aerodb bench --workload cluster`: per shipped batch
    (the primary's sender read -> the replica's ACK) and the probe measured as PostgreSQL's side
    is (a row committed every 10 ms, read on the replica until found). Each must be there once."""
    figures = {}
    for name, pattern in (("batch", LAG_BATCH), ("probe", LAG_PROBE)):
        found = re.findall(pattern, out)
        if len(found) != 1:
            raise RuntimeError(f"expected one kernel lag {name} line, found {len(found)} in:\n{out}")
        figures[name] = {"rate": int(found[0][0]), "p50_ms": float(found[0][1]), "p99_ms": float(found[0][2])}
        if name == "probe":
            figures[name]["samples"] = int(found[0][3])
    return figures


def w_replica_lag(ctx):
    lag = parse_lag(cluster_figures(ctx))
    ours_p50, ours_p99 = lag["batch"]["p50_ms"], lag["batch"]["p99_ms"]
    import psycopg
    ctx.pg.reset_docs()
    replica = replica_of(ctx.pg, "replica1", PG_PORTS[1], synchronous=False)
    samples = []
    try:
        ctx.pg.sql("CREATE TABLE IF NOT EXISTS probe(id bigserial PRIMARY KEY, at double precision)")
        load_errors = []

        def run_load():
            try:
                ctx.pg.pgbench(INSERT, 8, ctx.seconds, rate=10_000)
            except Exception as e:  # re-raised after join: a failed load fails the workload
                load_errors.append(e)

        load = threading.Thread(target=run_load)
        with psycopg.connect(f"host=127.0.0.1 port={ctx.pg.port} user=postgres dbname=postgres", autocommit=True) as p, \
             psycopg.connect(f"host=127.0.0.1 port={replica.port} user=postgres dbname=postgres", autocommit=True) as r:
            # The asynchronous standby replays CREATE TABLE later: probing before it failed the
            # workload once with 'relation "probe" does not exist'.
            deadline = time.monotonic() + 30
            while r.execute("SELECT to_regclass('probe')").fetchone()[0] is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the PostgreSQL standby did not replay CREATE TABLE probe within 30 s")
                time.sleep(0.01)
            load.start()
            end = time.monotonic() + ctx.seconds - 0.5
            while time.monotonic() < end:
                (pid,) = p.execute("INSERT INTO probe(at) VALUES (0) RETURNING id").fetchone()
                t0 = time.monotonic()
                while r.execute("SELECT 1 FROM probe WHERE id = %s", (pid,)).fetchone() is None:
                    pass
                samples.append((time.monotonic() - t0) * 1000)
                time.sleep(0.01)
        load.join()
        if load_errors:
            raise load_errors[0]
    finally:
        replica.discard()
    samples.sort()
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    RESULTS["workloads"].setdefault("replica_lag", {})["postgresql_samples"] = len(samples)
    RESULTS["workloads"]["replica_lag"]["aerodb_probe_samples"] = lag["probe"]["samples"]
    ratio("replica_lag_p50", "postgresql", ours_p50, p50, "ms", higher_is_better=False)
    ratio("replica_lag_p99", "postgresql", ours_p99, p99, "ms", higher_is_better=False,
          note="aerodb: per shipped batch at 10k commits/s, measured by the primary; postgresql: probe row every 10 ms under pgbench -R 10000")
    # Both sides measured the same way: a row committed on the primary every 10 ms under the
    # 10k/s load, read on the replica until found (AeroDB's over REST, PostgreSQL's over SQL).
    ratio("replica_lag_probe_p50", "postgresql", lag["probe"]["p50_ms"], p50, "ms", higher_is_better=False)
    ratio("replica_lag_probe_p99", "postgresql", lag["probe"]["p99_ms"], p99, "ms", higher_is_better=False,
          note="both: a row committed on the primary every 10 ms at 10k commits/s, read on the replica until found")


def w_promote(ctx):
    m = cluster_match(ctx, r"promotion to first accepted write \((\d+) runs.*?p50 ([\d.]+) ms\s+max ([\d.]+) ms", "promotion")
    ours_p50, ours_max = float(m.group(2)), float(m.group(3))
    ctx.pg.reset_docs()
    times = []
    for run_number in range(ctx.promotions):
        replica = replica_of(ctx.pg, f"promo{run_number}", PG_PORTS[1], synchronous=False)
        try:
            ctx.pg.stop("immediate")
            t0 = time.monotonic()
            as_postgres([f"{PGBIN}/pg_ctl", "-D", replica.dir, "-W", "promote"])
            while True:
                try:
                    replica.sql("INSERT INTO docs(n, body) VALUES (0, 'promoted')")
                    break
                except subprocess.CalledProcessError as e:
                    if time.monotonic() - t0 > PROMOTE_WAIT_SECONDS:
                        raise RuntimeError(f"the promoted replica accepted no write in {PROMOTE_WAIT_SECONDS} s: {e.stderr}")
                    time.sleep(0.001)
            times.append((time.monotonic() - t0) * 1000)
        finally:
            replica.discard()
            ctx.pg.start()
    times.sort()
    note = f"command to first accepted write after killing the primary, {len(times)} runs"
    ratio("promote_p50", "postgresql", ours_p50, times[len(times) // 2], "ms", higher_is_better=False, note=note)
    ratio("promote_max", "postgresql", ours_max, times[-1], "ms", higher_is_better=False, note=note)


def w_recovery(ctx):
    docs = ctx.recovery_documents
    ours_s, ours_rate = ctx.aerodb.restart(docs)
    ctx.pg.reset_docs()
    ctx.pg.sql("CHECKPOINT")
    before = ctx.pg.sql("SELECT pg_current_wal_lsn()")
    ctx.pg.sql(f"INSERT INTO docs(n, body) SELECT g, repeat('x', 980) FROM generate_series(1, {docs}) g")
    wal_bytes = int(ctx.pg.sql(f"SELECT pg_current_wal_lsn() - '{before}'::pg_lsn"))
    ctx.pg.stop("immediate")
    t0 = time.monotonic()
    ctx.pg.start()
    theirs_s = time.monotonic() - t0
    note = f"restart after {docs} documents of about 1 KiB written since the last checkpoint (WAL replay)"
    ratio("recovery", "postgresql", ours_s, theirs_s, "s", higher_is_better=False, note=note)
    ratio("recovery_replay", "postgresql", ours_rate, wal_bytes / 1e6 / theirs_s, "MB/s", note=note)


def w_idle_rss(ctx):
    ours = ctx.aerodb.idle_rss_kb() / 1024
    theirs = ctx.pg_idle_rss_kb / 1024  # measured right after it started, before any workload
    ratio("idle_rss", "postgresql", ours, theirs, "MB", higher_is_better=False,
          note="resident memory at idle: a freshly started aerodb node; the freshly started postmaster and its children")


def w_functions(ctx):
    """Functions (docs/FUNCTIONS.md): scripts/benchlib/functions_bench.py."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import functions_bench
    f = functions_bench.run(ctx.aerodb.binary, ctx.seconds)
    RESULTS["workloads"]["functions"] = f
    ratio("functions_hello", "rest_get", f["hello_rps"], f["rest_get_rps"], "req/s",
          note="warm invocations of hello (POST {\"a\":1}) vs REST GET by key, same node, wrk -c64; goal >= 0.5")
    ratio("functions_cold_100k", "goal_50ms", f["cold_100k_ms"], 50.0, "ms", higher_is_better=False,
          note="first invocation after deploy of a 100 KB module (median of 5)")
    ratio("functions_cold_1m", "goal_50ms", f["cold_1m_ms"], 50.0, "ms", higher_is_better=False,
          note="first invocation after deploy of a 1 MB module (median of 5)")
    ratio("functions_compute", "native_c", f["compute_wasm_s"], f["compute_native_s"], "s", higher_is_better=False,
          note="examples/functions/compute/compute.c: fuel-metered WasmKit interpreter vs gcc -O2 (invocation over HTTP)")


def w_storage(ctx):
    """Storage (docs/STORAGE.md): scripts/benchlib/storage_bench.py (Debian's nginx beside the node)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import storage_bench
    f = storage_bench.run(ctx.aerodb.binary, ctx.seconds)
    RESULTS["workloads"]["storage"] = f
    ratio("storage_download_1m", "nginx", f["download_1m_mibs"], f["nginx_download_1m_mibs"], "MiB/s",
          note="the same 1 MiB file: public URL vs nginx from disk, wrk -c64; goal >= 0.5")
    ratio("storage_upload_1m", "dd_dsync", f["upload_1m_mibs"], f["dd_dsync_1m_mibs"], "MiB/s",
          note="sequential durable 1 MiB uploads (x-upsert) vs dd bs=1M count=1 oflag=dsync repeated; goal >= 0.5")
    ratio("storage_upload_1m", "nginx", f["upload_1m_mibs"], f["nginx_upload_1m_mibs"], "MiB/s",
          note="nginx stores the body in a file without fsync (client_body_in_file_only): not durable, an upper bound")
    ratio("storage_upload_100m", "dd_dsync", f["upload_100m_mibs"], f["dd_dsync_100m_mibs"], "MiB/s",
          note="one 100 MiB upload (curl -T) vs dd bs=1M count=100 oflag=dsync; goal >= 0.5")
    ratio(f"storage_rss_{f['rss_run_mib']}m", "goal_64mb", max(f["rss_peak_kb"] - f["rss_before_kb"], 1) / 1024, 64.0, "MB", higher_is_better=False,
          note="RSS growth of a freshly restarted node during one upload then download of that many MiB")


def w_s3(ctx):
    """S3 (docs/STORAGE.md "S3"): scripts/benchlib/s3_bench.py, aws s3 cp up and down vs dd."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import s3_bench
    f = s3_bench.run(ctx.aerodb.binary, quick=ctx.quick)
    RESULTS["workloads"]["s3"] = f
    ratio(f"s3_upload_{f['size_mib']}m", "dd_dsync", f["upload_mibs"], f["dd_dsync_mibs"], "MiB/s",
          note="aws s3 cp (multipart, 8 MB parts) up vs dd bs=1M oflag=dsync of the same size")
    ratio(f"s3_download_{f['size_mib']}m", "dd_read", f["download_mibs"], f["dd_read_mibs"], "MiB/s",
          note="aws s3 cp down vs dd bs=1M iflag=direct of the same size")


def w_backup(ctx):
    """Backup and restore (docs/OPERATIONS.md): scripts/benchlib/backup_bench.py."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import backup_bench
    docs = ctx.recovery_documents
    ours = backup_bench.aerodb(ctx.aerodb.binary, ctx.aerodb.scratch, docs, 30260)
    theirs = backup_bench.postgres(ctx.pg, PGBIN, as_postgres, docs, PG_PORTS[1])
    RESULTS["workloads"]["backup"] = {"aerodb": ours, "postgresql": theirs, "documents": docs}
    note = f"{docs} documents of about 1 KiB on a running node: aerodb backup vs pg_basebackup -X stream -c fast"
    ratio("backup", "postgresql", ours["backup_s"], theirs["backup_s"], "s", higher_is_better=False, note=note)
    ratio("backup_size", "postgresql", ours["backup_bytes"] / 1e6, theirs["backup_bytes"] / 1e6, "MB", higher_is_better=False, note=note)
    ratio("restore", "postgresql", ours["restore_s"], theirs["restore_s"], "s", higher_is_better=False,
          note="aerodb restore into a new node directory vs pg_ctl start on the base backup (until it accepts connections)")


def w_realtime_fanout(ctx):
    """Realtime (docs/REALTIME.md): scripts/benchlib/realtime_bench.py, beside PostgreSQL LISTEN/NOTIFY."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import realtime_bench
    subscribers, matching = (2_000, 200) if ctx.quick else (10_000, 1_000)
    rate = 1_000
    f = realtime_bench.fanout(ctx.aerodb.binary, subscribers, matching, rate, ctx.seconds)
    listeners = min(matching, realtime_bench.PG_LISTENERS_MAX)
    pg = Postgres(ctx.aerodb.scratch, "realtime", PG_PORTS[1])
    pg.init()
    pg.configure(f"max_connections = {listeners + 20}\n")
    pg.start()
    try:
        p = realtime_bench.pg_fanout(pg, listeners, rate, ctx.seconds)
    finally:
        pg.discard()
    RESULTS["workloads"]["realtime_fanout"] = {"aerodb": f, "postgresql": p}
    note = (f"target {rate} changes/s for {ctx.seconds} s, {realtime_bench.WRITERS} writers; aerodb: {subscribers} subscribers, "
            f"{matching} matching, achieved {f['achieved_rate']:.0f} changes/s "
            f"({f['events']} of {f['expected']} events delivered); postgresql: {listeners} LISTEN connections, "
            f"achieved {p['achieved_rate']:.0f} changes/s ({p['events']} of {p['expected']} notifications); "
            f"subscribers in {realtime_bench.SUBSCRIBER_PROCESSES} processes each side")
    ratio("realtime_fanout_p50", "postgresql", f["p50_ms"], p["p50_ms"], "ms", higher_is_better=False, note=note)
    ratio("realtime_fanout_p99", "postgresql", f["p99_ms"], p["p99_ms"], "ms", higher_is_better=False, note=note)
    ratio("realtime_fanout_p99", "goal_20ms", f["p99_ms"], 20.0, "ms", higher_is_better=False, note=note)
    ratio("realtime_idle_memory", "goal_20mb", f["rss_added_per_1000_idle_mb"], 20.0, "MB", higher_is_better=False,
          note="RSS the node adds per 1,000 idle joined subscribers (goal: 10k in under 200 MB)")


def w_realtime_resume(ctx):
    """Replay of missed events to a subscriber resuming after an LSN (config.resume_after_lsn)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import realtime_bench
    events = 20_000 if ctx.quick else 100_000
    f = realtime_bench.resume(ctx.aerodb.binary, events)
    RESULTS["workloads"]["realtime_resume"] = f
    goal = 10.0 * events / 100_000
    ratio("realtime_resume", f"goal_{goal:g}s", f["seconds"], goal, "s", higher_is_better=False,
          note=f"{events} missed events replayed from the WAL to one resuming subscriber (join to last event)")


WORKLOADS = {
    "commit_1w": lambda c: w_commit(c, 1), "commit_32w": lambda c: w_commit(c, 32), "point_read": w_point_read,
    "rest": w_rest, "sync_commit_8w": w_sync_commit, "replica_lag": w_replica_lag, "promote": w_promote,
    "recovery": w_recovery, "idle_rss": w_idle_rss, "functions": w_functions,
    "storage": w_storage, "s3": w_s3, "backup": w_backup, "realtime_fanout": w_realtime_fanout, "realtime_resume": w_realtime_resume,
}


class Context:
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs: the whole set in under 5 minutes")
    ap.add_argument("--only", choices=sorted(WORKLOADS), help="one workload")
    ap.add_argument("--aerodb", required=True, help="the release aerodb binary")
    ap.add_argument("--sqlite-bench", required=True, help="the compiled scripts/benchlib/sqlite_bench.c")
    ap.add_argument("--out", default=".bench")
    args = ap.parse_args()
    ctx = Context()
    ctx.seconds = 3 if args.quick else 10
    ctx.quick = args.quick
    ctx.promotions = 5 if args.quick else 20
    ctx.recovery_documents = 100_000 if args.quick else 1_000_000
    ctx.cluster_out = None
    scratch = tempfile.mkdtemp(prefix="aerodb-bench-")
    os.chmod(scratch, 0o755)
    shutil.chown(scratch, "postgres", "postgres")
    ctx.aerodb = AeroDB(args.aerodb, scratch)
    ctx.sqlite = SQLite(args.sqlite_bench, scratch)
    ctx.pg = Postgres(scratch, "primary", PG_PORTS[0])
    RESULTS["machine"] = {"nproc": os.cpu_count(), "uname": " ".join(os.uname()), "quick": args.quick,
                          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    failed = []
    try:
        ctx.pg.init()
        ctx.pg.start()
        time.sleep(2)
        ctx.pg_idle_rss_kb = ctx.pg.backend_rss_kb()
        names = [args.only] if args.only else list(WORKLOADS)
        bench_started = time.monotonic()
        for n, name in enumerate(names, 1):
            # Progress (issue 13 part 4): a line as each workload starts and ends, on stderr.
            log(f"workload {name} ({n}/{len(names)}) starting, {time.monotonic() - bench_started:.0f} s into the run")
            started = time.monotonic()
            try:
                WORKLOADS[name](ctx)
                log(f"workload {name} ({n}/{len(names)}) done in {time.monotonic() - started:.1f} s")
            except Exception as e:  # report and go on: one broken workload must not hide the others
                failed.append(name)
                log(f"workload {name} ({n}/{len(names)}) FAILED after {time.monotonic() - started:.1f} s: {describe(e)}")
                RESULTS["workloads"].setdefault(name, {})["error"] = describe(e)
    finally:
        ctx.pg.stop("fast")
        shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    path = f"{args.out}/results-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    with open(path, "w") as f:
        json.dump(RESULTS, f, indent=1)
    log(f"figures: {path}")
    if failed:
        log(f"failed workloads: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
