"""Starts a real `aerodb` node for the compatibility tests (loopback only, stopped by pid)."""
import json
import os
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, auth=None):
        self.dir = tempfile.mkdtemp(prefix="aerodb-compat-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        node = os.path.join(self.dir, "n1")
        subprocess.run([BINARY, "init", "--dir", node, "--http", f"127.0.0.1:{self.port}"], check=True,
                       stdout=subprocess.DEVNULL)
        if auth is not None:
            config_path = os.path.join(node, "aerodb.json")
            with open(config_path) as f:
                config = json.load(f)
            config["auth"] = auth
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
