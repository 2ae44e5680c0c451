"""Functions benchmark (issue 16; scripts/bench --only functions): one release node on loopback.
- warm invocations/s of `hello` (wrk -c64, POST of a small JSON body) beside REST GET by key on
  the same node (goal: at least 0.5x);
- cold start: the first invocation after deploy of a 100 KB and a 1 MB module (goal: under 50 ms
  for 100 KB); the median of 5 deploys each;
- fuel-metered compute: examples/functions/compute/compute.c as a function against the same C
  compiled natively (gcc -O2).
Needs wrk, gcc, and scripts/build-examples (wabt, clang)."""
import base64
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORT = 30520  # below the ephemeral port range


def call(url, method="GET", body=None, key=None, headers=None):
    h = {"apikey": key, "Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    h.update(headers or {})
    req = urllib.request.Request(url, method=method, data=body, headers=h)
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


def wat_module(size):
    pages = size // 65536 + 2
    text = ('(module (import "aerodb" "response_write" (func $w (param i32 i32) (result i32))) '
            f'(memory (export "memory") {pages}) (data (i32.const 0) "ok") '
            f'(data (i32.const 16) "{"z" * size}") '
            '(func (export "handle") (result i32) (drop (call $w (i32.const 0) (i32.const 2))) (i32.const 0)))')
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "m.wat"), os.path.join(d, "m.wasm")
        open(src, "w").write(text)
        subprocess.run(["wat2wasm", src, "-o", out], check=True)
        return open(out, "rb").read()


def wrk(url, key, seconds, body=None):
    args = ["wrk", "-t2", "-c64", f"-d{seconds}s", "-H", f"apikey: {key}", "-H", f"Authorization: Bearer {key}",
            "-H", "Content-Type: application/json"]
    script = None
    if body is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n')
        script.close()
        args += ["-s", script.name]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    if script:
        os.unlink(script.name)
    if re.search(r"Non-2xx", out):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def run(binary, seconds):
    subprocess.run([os.path.join(ROOT, "scripts", "build-examples")], check=True, stdout=subprocess.DEVNULL)
    build = os.path.join(ROOT, "examples", "functions", "build")
    d = tempfile.mkdtemp(prefix="aerodb-fnbench-")
    node = os.path.join(d, "n1")
    subprocess.run([binary, "init", "--dir", node, "--http", f"127.0.0.1:{PORT}"], check=True, stdout=subprocess.DEVNULL)
    key = json.loads(subprocess.run([binary, "keys", "--dir", node, "--json"], check=True, capture_output=True).stdout)["service_role"]
    log = open(os.path.join(d, "node.log"), "wb")
    proc = subprocess.Popen([binary, "start", "--dir", node], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{PORT}"
    out = {}
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.1)

        def deploy(name, module, **extra):
            body = {"name": name, "module": base64.b64encode(module).decode()}
            body.update(extra)
            call(base + "/admin/v1/functions", "POST", json.dumps(body).encode(), key)

        deploy("hello", open(os.path.join(build, "hello.wasm"), "rb").read())
        deploy("compute", open(os.path.join(build, "compute.wasm"), "rb").read(), limits={"fuel": 10_000_000_000, "wall_ms": 60_000})
        call(base + "/admin/v1/collections", "POST", json.dumps({"name": "items", "fields": {"id": {"type": "text"}, "qty": {"type": "int"}}}).encode(), key)
        call(base + "/rest/v1/items", "POST", json.dumps([{"id": f"k{i}", "qty": i} for i in range(1000)]).encode(), key,
             {"Prefer": "return=minimal"})
        call(base + "/functions/v1/hello", "POST", b'{"a":1}', key)  # warm
        out["hello_rps"] = wrk(base + "/functions/v1/hello", key, seconds, body='{"a":1}')
        out["rest_get_rps"] = wrk(base + "/rest/v1/items?select=*&id=eq.k42", key, seconds)
        for label, size in (("cold_100k_ms", 100_000), ("cold_1m_ms", 1_000_000)):
            module = wat_module(size)
            times = []
            for i in range(5):
                deploy(f"cold{size}x{i}", module)
                started = time.perf_counter()
                call(base + f"/functions/v1/cold{size}x{i}", "GET", None, key)
                times.append((time.perf_counter() - started) * 1000)
            out[label] = statistics.median(times)
        started = time.perf_counter()
        wasm_answer = call(base + "/functions/v1/compute?n=20000000", "GET", None, key).decode()
        out["compute_wasm_s"] = time.perf_counter() - started
        native = os.path.join(d, "compute-native")
        subprocess.run(["gcc", "-O2", "-DNATIVE", "-o", native, os.path.join(ROOT, "examples", "functions", "compute", "compute.c")], check=True)
        started = time.perf_counter()
        native_answer = subprocess.run([native, "20000000"], capture_output=True, text=True, check=True).stdout.strip()
        out["compute_native_s"] = time.perf_counter() - started
        if wasm_answer != native_answer:
            raise RuntimeError(f"compute answers differ: wasm {wasm_answer}, native {native_answer}")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
        subprocess.run(["rm", "-rf", d])
    return out


if __name__ == "__main__":
    import sys
    print(json.dumps(run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3), indent=1))
