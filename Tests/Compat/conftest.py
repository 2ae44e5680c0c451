"""Starts a real `aerodb` node for the compatibility tests (loopback only, stopped by pid)."""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("AERODB_BIN", os.path.join(ROOT, ".build", "debug", "aerodb"))
READY_TIMEOUT_SECONDS = 30

# Node directories made by this run, removed when the run ends (a run leaves nothing in /tmp:
# many runs filled the disk before). AERODB_KEEP_TEST_DIRS=1 keeps them to read the node logs.
_made_dirs = []


def make_test_dir(prefix):
    path = tempfile.mkdtemp(prefix=prefix)
    _made_dirs.append(path)
    return path


@atexit.register
def _remove_test_dirs():
    if os.environ.get("AERODB_KEEP_TEST_DIRS") == "1":
        return
    for path in _made_dirs:
        shutil.rmtree(path, ignore_errors=True)  # best effort at exit; a node killed late may still write


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, auth=None, settings=None):
        self.dir = make_test_dir("aerodb-compat-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        node = os.path.join(self.dir, "n1")
        subprocess.run([BINARY, "init", "--dir", node, "--http", f"127.0.0.1:{self.port}"], check=True,
                       stdout=subprocess.DEVNULL)
        if auth is not None or settings:
            config_path = os.path.join(node, "aerodb.json")
            with open(config_path) as f:
                config = json.load(f)
            if auth is not None:
                config["auth"] = auth
            config.update(settings or {})  # e.g. {"db_aggregates_enabled": True}
            with open(config_path, "w") as f:
                json.dump(config, f)
        keys = json.loads(subprocess.run([BINARY, "keys", "--dir", node, "--json"], check=True,
                                         capture_output=True).stdout)
        self.anon, self.service = keys["anon"], keys["service_role"]
        self.log = open(os.path.join(self.dir, "node.log"), "wb")
        self.process = subprocess.Popen([BINARY, "start", "--dir", node], stdout=self.log, stderr=self.log)
        deadline = time.time() + READY_TIMEOUT_SECONDS
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("aerodb did not become ready")

    def admin(self, method, path, body=None):
        request = urllib.request.Request(self.url + "/admin/v1/" + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {self.service}"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="session")
def node():
    n = Node()
    yield n
    n.stop()


def free_consecutive_ports(count):
    """`count` consecutive free loopback ports below the ephemeral range."""
    import random
    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        try:
            sockets = []
            for p in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free ports")


class Cluster:
    """`aerodb cluster init` + one `aerodb start` per member (n1 primary), loopback only."""

    def __init__(self, nodes=2, commit_mode="sync"):
        self.dir = make_test_dir("aerodb-compat-cluster-")
        http, repl = free_consecutive_ports(nodes), free_consecutive_ports(nodes)
        subprocess.run([BINARY, "cluster", "init", "--dir", self.dir, "--nodes", str(nodes), "--http-port", str(http),
                        "--repl-port", str(repl), "--commit-mode", commit_mode], check=True, stdout=subprocess.DEVNULL)
        keys = json.loads(subprocess.run([BINARY, "keys", "--dir", os.path.join(self.dir, "n1"), "--json"], check=True,
                                         capture_output=True).stdout)
        self.anon, self.service = keys["anon"], keys["service_role"]
        self.urls = [f"http://127.0.0.1:{http + i}" for i in range(nodes)]
        self.logs, self.processes = [], []
        for i in range(nodes):
            log = open(os.path.join(self.dir, f"n{i + 1}.log"), "wb")
            self.logs.append(log)
            self.processes.append(subprocess.Popen([BINARY, "start", "--dir", os.path.join(self.dir, f"n{i + 1}")],
                                                   stdout=log, stderr=log))
        deadline = time.time() + READY_TIMEOUT_SECONDS
        for url in self.urls:
            while True:
                try:
                    with urllib.request.urlopen(url + "/ready", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError(f"{url} did not become ready")
                    time.sleep(0.1)

    def admin(self, i, method, path, body=None):
        request = urllib.request.Request(self.urls[i] + "/admin/v1/" + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {self.service}"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())

    def stop(self):
        for p in self.processes:
            p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in self.logs:
            log.close()
