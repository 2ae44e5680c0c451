"""S3 benchmark (issue 21; scripts/bench --only s3): `aws s3 cp` (awscli 1.46.2, 8 MB multipart
parts, its default 10 threads) of one large file up to and down from a release node on loopback,
against the raw disk: `dd bs=1M oflag=dsync` (durable write) and `dd bs=1M iflag=direct` (read)
of the same size on the same file system. Size: AERODB_BENCH_S3_MIB (default 1024; --quick 100).
The node is started here and stopped by pid."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from storage_bench import stop_node  # noqa: E402

PORT = 30532  # below the ephemeral port range


def dd_mibs(args, size_mib):
    start = time.time()
    out = subprocess.run(["dd", *args], check=True, capture_output=True, text=True).stderr
    m = re.search(r"copied, ([\d.]+) s", out)
    seconds = float(m.group(1)) if m else time.time() - start
    return size_mib / seconds


def run(binary, quick=False):
    size_mib = 100 if quick else int(os.environ.get("AERODB_BENCH_S3_MIB", "1024"))
    work = tempfile.mkdtemp(prefix="aerodb-bench-s3-")
    node_dir = os.path.join(work, "n1")
    url = f"http://127.0.0.1:{PORT}"
    subprocess.run([binary, "init", "--dir", node_dir, "--http", f"127.0.0.1:{PORT}"], check=True, stdout=subprocess.DEVNULL)
    log = open(os.path.join(work, "node.log"), "wb")
    node = subprocess.Popen([binary, "start", "--dir", node_dir], stdout=log, stderr=log)
    out = {"size_mib": size_mib}
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("the node did not become ready")
                time.sleep(0.2)
        key = json.loads(subprocess.run([binary, "storage", "keys", "create", "--url", url, "--dir", node_dir, "--json"],
                                        check=True, capture_output=True, text=True).stdout)
        aws = os.path.join(os.path.dirname(sys.executable), "aws")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key["access_key_id"], AWS_SECRET_ACCESS_KEY=key["secret_access_key"],
                   AWS_DEFAULT_REGION="local", AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")

        def s3(*args):
            subprocess.run([aws, "--endpoint-url", url + "/storage/v1/s3", "s3", *args], env=env, check=True,
                           stdout=subprocess.DEVNULL, timeout=1800)

        s3("mb", "s3://bench")
        src = os.path.join(work, "src.bin")
        with open(src, "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(1 << 20))
        start = time.time()
        s3("cp", src, "s3://bench/big.bin")
        out["upload_mibs"] = size_mib / (time.time() - start)
        back = os.path.join(work, "back.bin")
        start = time.time()
        s3("cp", "s3://bench/big.bin", back)
        out["download_mibs"] = size_mib / (time.time() - start)
        if os.path.getsize(back) != size_mib << 20:
            raise RuntimeError("the downloaded file has the wrong size")
        os.unlink(back)
        out["dd_dsync_mibs"] = dd_mibs(["if=/dev/zero", f"of={work}/dd.bin", "bs=1M", f"count={size_mib}", "oflag=dsync"], size_mib)
        out["dd_read_mibs"] = dd_mibs([f"if={src}", "of=/dev/null", "bs=1M", "iflag=direct"], size_mib)
    finally:
        stop_node(node, seconds=30)
        log.close()
        subprocess.run(["rm", "-rf", work], check=False)
    return out


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], quick="--quick" in sys.argv)))
