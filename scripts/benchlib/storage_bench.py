"""Storage benchmark (issue 15; scripts/bench --only storage): one release node on loopback beside
Debian's nginx on the same machine, same files, same clients.
- download of a 1 MiB object at 64 connections (wrk) from the public URL vs nginx serving the same
  file from disk (goal: at least 0.5x);
- upload of 1 MiB objects, durable (one client, x-upsert, sequential) vs nginx accepting the same
  body into a file (client_body_in_file_only, no fsync: an upper bound) and vs `dd oflag=dsync`
  of the same size (the raw durable write rate; goal: at least 0.5x);
- upload of a 100 MiB object vs `dd bs=1M oflag=dsync` of 100 MiB;
- RSS of a freshly restarted node before and at most during a 256 MiB (AERODB_BENCH_STORAGE_RSS_MIB)
  upload and download (goal: grows < 64 MB).
Every server is started here and stopped by pid."""
import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request

PORT = 30530  # below the ephemeral port range
NGINX_PORT = 30531
MiB = 1024 * 1024
# Size of the RSS run (the issue asks for 1 GiB; 256 MiB keeps the default bench short).
RSS_MIB = int(os.environ.get("AERODB_BENCH_STORAGE_RSS_MIB", "256"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wrk_rps(url, seconds, connections=64, headers=None):
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, int(seconds))}s"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd + [url], check=True, capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError("wrk printed no rate: " + out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed responses from {url}")
    return float(m.group(1))


def post_loop(host, port, path, body, headers, seconds):
    """Sequential POSTs of `body` on one keep-alive connection for `seconds`; MiB/s."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    sent, start = 0, time.time()
    while time.time() - start < seconds:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status not in (200, 201, 204):
            raise RuntimeError(f"upload to {path}: {r.status}")
        sent += len(body)
    conn.close()
    return sent / MiB / (time.time() - start)


def dd_dsync_mibs(directory, size_mib):
    path = os.path.join(directory, "dd.bin")
    start = time.time()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={size_mib}", "oflag=dsync"], check=True,
                   capture_output=True)
    elapsed = time.time() - start
    os.remove(path)
    return size_mib / elapsed


def start_node(binary, node_dir, log):
    return subprocess.Popen([binary, "start", "--dir", node_dir], stdout=log, stderr=log)


def stop_node(node, seconds=20):
    """SIGTERM, then SIGKILL if the process has not exited within `seconds` (s3_bench uses it too)."""
    node.send_signal(signal.SIGTERM)
    try:
        node.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        node.kill()
        node.wait()


def wait_ready():
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/ready", timeout=1):
                return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError("aerodb did not become ready")
            time.sleep(0.1)


def run(binary, seconds):
    work = tempfile.mkdtemp(prefix="aerodb-storage-bench-")
    node_dir = os.path.join(work, "node")
    subprocess.run([binary, "init", "--dir", node_dir, "--http", f"127.0.0.1:{PORT}"], check=True, stdout=subprocess.DEVNULL)
    key = json.loads(subprocess.run([binary, "keys", "--dir", node_dir, "--json"], check=True, capture_output=True).stdout)["service_role"]
    log = open(os.path.join(work, "node.log"), "wb")
    node = start_node(binary, node_dir, log)
    www = os.path.join(work, "www")
    os.makedirs(os.path.join(www, "upload"))
    nginx_conf = os.path.join(work, "nginx.conf")
    with open(nginx_conf, "w") as f:
        # Workers run as the invoking user (root under sudo/CI: `user` keeps them able to read the
        # 0700 temp directory; ignored with a warning otherwise).
        f.write(f"""{"user root root; " if os.geteuid() == 0 else ""}worker_processes 2; pid {work}/nginx.pid; error_log {work}/nginx.err; daemon off;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {work}/body; client_max_body_size 200m;
  server {{ listen 127.0.0.1:{NGINX_PORT}; root {www};
    location /upload {{ client_body_in_file_only clean; client_body_buffer_size 64k; return 201; }} }} }}
""")
    nginx = subprocess.Popen(["nginx", "-c", nginx_conf, "-p", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    try:
        wait_ready()
        auth = {"Authorization": f"Bearer {key}", "apikey": key}
        req = urllib.request.Request(f"http://127.0.0.1:{PORT}/storage/v1/bucket", method="POST",
                                     data=json.dumps({"id": "bench", "public": True}).encode(),
                                     headers={**auth, "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()
        one = os.urandom(MiB)
        with open(os.path.join(www, "one.bin"), "wb") as f:
            f.write(one)
        up = {**auth, "Content-Type": "application/octet-stream", "x-upsert": "true"}
        post_loop("127.0.0.1", PORT, "/storage/v1/object/bench/one.bin", one, up, 0.5)
        # Downloads: the same 1 MiB, 64 connections.
        ours = wrk_rps(f"http://127.0.0.1:{PORT}/storage/v1/object/public/bench/one.bin", seconds)
        theirs = wrk_rps(f"http://127.0.0.1:{NGINX_PORT}/one.bin", seconds)
        out["download_1m_mibs"], out["nginx_download_1m_mibs"] = ours, theirs  # 1 MiB per request
        # Uploads of 1 MiB, one client, sequential.
        out["upload_1m_mibs"] = post_loop("127.0.0.1", PORT, "/storage/v1/object/bench/up.bin", one, up, seconds)
        out["nginx_upload_1m_mibs"] = post_loop("127.0.0.1", NGINX_PORT, "/upload", one, {"Content-Type": "application/octet-stream"}, seconds)
        # dd with 1 MiB writes, each durable, repeated: the raw rate for 1 MiB objects.
        start, n = time.time(), 0
        while time.time() - start < seconds:
            subprocess.run(["dd", "if=/dev/zero", f"of={work}/dd1.bin", "bs=1M", "count=1", "oflag=dsync"], check=True,
                           capture_output=True)
            n += 1
        out["dd_dsync_1m_mibs"] = n / (time.time() - start)
        # 100 MiB: one upload vs dd of 100 MiB.
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            for _ in range(100):
                f.write(os.urandom(MiB))
        start = time.time()
        subprocess.run(["curl", "-sf", "-o", "/dev/null", "-X", "POST", "-H", f"Authorization: Bearer {key}",
                        "-H", "Content-Type: application/octet-stream", "-T", big,
                        f"http://127.0.0.1:{PORT}/storage/v1/object/bench/big.bin"], check=True)
        out["upload_100m_mibs"] = 100 / (time.time() - start)
        out["dd_dsync_100m_mibs"] = dd_dsync_mibs(work, 100)
        # RSS during an RSS_MIB upload and download.
        huge = os.path.join(work, "huge.bin")
        with open(huge, "wb") as f:
            for _ in range(RSS_MIB):
                f.write(os.urandom(MiB))
        os.remove(big)
        # On a freshly started node: after the downloads above at 64 connections, the node's RSS
        # already holds their buffers, and the growth from there said nothing (0.125 MB in one run).
        stop_node(node)
        node = start_node(binary, node_dir, log)
        wait_ready()
        before = rss_kb(node.pid)
        peak = [before]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kb(node.pid))
                time.sleep(0.05)
        t = threading.Thread(target=sample)
        t.start()
        subprocess.run(["curl", "-sf", "-o", "/dev/null", "-X", "POST", "-H", f"Authorization: Bearer {key}",
                        "-H", "Content-Type: application/octet-stream", "-T", huge,
                        f"http://127.0.0.1:{PORT}/storage/v1/object/bench/huge.bin"], check=True)
        subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{PORT}/storage/v1/object/public/bench/huge.bin"], check=True)
        stop.set()
        t.join()
        out["rss_before_kb"], out["rss_peak_kb"], out["rss_run_mib"] = before, peak[0], RSS_MIB
        return out
    finally:
        for p in (nginx, node):
            stop_node(p)
        log.close()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    import sys
    print(json.dumps(run(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 5), indent=1))
