"""Backup and restore (issue 18): `aerodb backup` of a running node holding N documents of about
1 KiB beside `pg_basebackup` of a PostgreSQL table of the same rows, and `aerodb restore` (a new
node directory, recovered) beside starting PostgreSQL on the base backup (WAL replay until it
accepts connections). Used by scripts/benchlib/bench.py (workload `backup`)."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

BATCH = 1000  # documents per transaction while loading


def _request(url, key, body=None, method="GET", timeout=120):
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _run(argv):
    """Runs a CLI command; a failure raises with what it printed (the CLI prints errors on stdout)."""
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} exited with {done.returncode}: {(done.stdout + done.stderr).strip()[-2000:]}")
    return done


def aerodb(binary, scratch, documents, port):
    root = tempfile.mkdtemp(dir=scratch, prefix="backup-")
    node = f"{root}/n1"
    subprocess.run([binary, "init", "--dir", node, "--http", f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
    key = json.loads(subprocess.run([binary, "keys", "--dir", node, "--json"], check=True, capture_output=True).stdout)["service_role"]
    log = open(f"{root}/node.log", "wb")
    process = subprocess.Popen([binary, "start", "--dir", node], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        _request(url + "/admin/v1/collections", key, {"name": "docs", "fields": {"id": {"type": "int"}, "n": {"type": "int"}, "body": {"type": "text"}}}, "POST")
        body = "x" * 980
        for start in range(0, documents, BATCH):
            ops = [{"op": "insert", "collection": "docs", "doc": {"id": i, "n": i, "body": body}} for i in range(start, min(documents, start + BATCH))]
            _request(url + "/admin/v1/transactions", key, {"ops": ops}, "POST")
        out = f"{root}/backup"
        t0 = time.monotonic()
        _run([binary, "backup", "--url", url, "--key", key, "--out", out])
        backup_s = time.monotonic() - t0
        backup_bytes = _dir_bytes(out)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log.close()
    t0 = time.monotonic()
    _run([binary, "restore", "--from", out, "--dir", f"{root}/restored"])
    restore_s = time.monotonic() - t0
    shutil.rmtree(root, ignore_errors=True)
    return {"backup_s": backup_s, "backup_bytes": backup_bytes, "restore_s": restore_s}


def postgres(pg, pgbin, as_postgres, documents, port):
    """`pg` is bench.py's running Postgres; the base backup is started as a second instance."""
    pg.reset_docs()
    pg.sql(f"INSERT INTO docs(n, body) SELECT g, repeat('x', 980) FROM generate_series(1, {documents}) g")
    target = f"{pg.root}/basebackup"
    t0 = time.monotonic()
    as_postgres([f"{pgbin}/pg_basebackup", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-D", target,
                 "-X", "stream", "-c", "fast"])
    backup_s = time.monotonic() - t0
    backup_bytes = _dir_bytes(target)
    with open(f"{target}/postgresql.conf", "a") as f:
        f.write(f"\nport = {port}\n")
    t0 = time.monotonic()
    as_postgres([f"{pgbin}/pg_ctl", "-D", target, "-l", f"{pg.root}/basebackup.log", "-w", "-t", "600", "start"])
    restore_s = time.monotonic() - t0
    subprocess.run(["runuser", "-u", "postgres", "--", f"{pgbin}/pg_ctl", "-D", target, "-m", "fast", "-w", "stop"],
                   capture_output=True, stdin=subprocess.DEVNULL)
    shutil.rmtree(target, ignore_errors=True)
    pg.reset_docs()
    return {"backup_s": backup_s, "backup_bytes": backup_bytes, "restore_s": restore_s}
