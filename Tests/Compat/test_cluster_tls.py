"""Issue 18 part 6, TLS1 (docs/INVARIANTS.md): in a cluster made by `aerodb cluster init --tls`,
members talk only over TLS with the cluster CA. Real `aerodb` processes on loopback: the
official Python client over https:// trusting the cluster CA (SSL_CERT_FILE), writes forwarded
by a replica over HTTPS, the replication port refusing plain TCP (even a valid HELLO with the
cluster token gets no byte of the protocol) and a member certificate of another CA (the refusal
logged with AERO_CLUSTER_TLS), replacement of a certificate with `aerodb cluster cert`, and a
failover with `aerodb promote` over https://."""
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import time
import urllib.request

import pytest
from supabase import create_client

from conftest import BINARY, READY_TIMEOUT_SECONDS, free_consecutive_ports, make_test_dir

DEADLINE_SECONDS = 30


class TLSCluster:
    def __init__(self, nodes=3):
        self.dir = make_test_dir("aerodb-compat-tls-cluster-")
        self.http, self.repl = free_consecutive_ports(nodes), free_consecutive_ports(nodes)
        self.init_output = subprocess.run(
            [BINARY, "cluster", "init", "--dir", self.dir, "--nodes", str(nodes), "--http-port", str(self.http),
             "--repl-port", str(self.repl), "--commit-mode", "sync", "--tls"], check=True, capture_output=True, text=True).stdout
        self.ca = os.path.join(self.dir, "cluster-ca", "ca.pem")
        self.context = ssl.create_default_context(cafile=self.ca)
        keys = json.loads(subprocess.run([BINARY, "keys", "--dir", self.node_dir(0), "--json"], check=True,
                                         capture_output=True).stdout)
        self.anon, self.service = keys["anon"], keys["service_role"]
        self.urls = [f"https://127.0.0.1:{self.http + i}" for i in range(nodes)]
        self.processes = [None] * nodes
        self.logs = [None] * nodes
        for i in range(nodes):
            self.start(i)
        for i in range(nodes):
            self.wait_ready(i)

    def node_dir(self, i):
        return os.path.join(self.dir, f"n{i + 1}")

    def log_path(self, i):
        return os.path.join(self.dir, f"n{i + 1}.log")

    def start(self, i):
        self.logs[i] = open(self.log_path(i), "ab")
        self.processes[i] = subprocess.Popen([BINARY, "start", "--dir", self.node_dir(i)], stdout=self.logs[i], stderr=self.logs[i])

    def wait_ready(self, i):
        deadline = time.time() + READY_TIMEOUT_SECONDS
        while True:
            try:
                with urllib.request.urlopen(self.urls[i] + "/ready", timeout=1, context=self.context) as r:
                    if r.status == 200:
                        return
            except OSError:
                if time.time() > deadline or self.processes[i].poll() is not None:
                    raise RuntimeError(f"{self.urls[i]} did not become ready")
                time.sleep(0.1)

    def stop(self, i, sig=signal.SIGTERM):
        p = self.processes[i]
        if p is None:
            return
        p.send_signal(sig)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self.logs[i].close()
        self.processes[i] = None

    def stop_all(self):
        for i in range(len(self.processes)):
            self.stop(i)

    def admin(self, i, method, path, body=None):
        request = urllib.request.Request(self.urls[i] + "/admin/v1/" + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {self.service}"})
        with urllib.request.urlopen(request, timeout=10, context=self.context) as r:
            return json.loads(r.read())

    def hello_probe(self):
        """A valid HELLO probe frame (docs/REPLICATION.md) carrying this cluster's HMAC token."""
        with open(os.path.join(self.node_dir(1), "secrets.json")) as f:
            secret_b64 = json.load(f)["jwt_secret"]
        secret = base64.urlsafe_b64decode(secret_b64 + "=" * (-len(secret_b64) % 4))
        with open(os.path.join(self.node_dir(1), "data", "authority.json")) as f:
            cluster_id = json.load(f)["cluster_id"]
        token = hmac.new(secret, ("aerodb-replication:" + cluster_id).encode(), hashlib.sha256).hexdigest()

        def string(s):
            b = s.encode()
            return struct.pack("<H", len(b)) + b
        body = (bytes([1]) + struct.pack("<I", 3) + bytes([1]) + string(cluster_id) + string("n2") + string(token)
                + struct.pack("<Q", 1) + string("n1") + struct.pack("<QQQ", 0, 0, 0))
        return struct.pack("<I", len(body)) + body


def read_all(sock, limit=1 << 16):
    data = b""
    sock.settimeout(3)
    try:
        while len(data) < limit:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) >= 5:
                (length,) = struct.unpack("<I", data[:4])
                if len(data) >= 4 + length:
                    break
    except (socket.timeout, ConnectionResetError, ssl.SSLError):
        pass
    return data


def wait_for(predicate, what):
    deadline = time.time() + DEADLINE_SECONDS
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {DEADLINE_SECONDS} s: {what}")


@pytest.fixture(scope="module")
def cluster():
    c = TLSCluster()
    c.admin(0, "POST", "collections", {"name": "notes", "fields": {"id": {"type": "text"}, "body": {"type": "text"}}})
    yield c
    c.stop_all()


def test_tls1_cluster_init_writes_a_ca_outside_the_members_and_0600_keys(cluster):
    assert "mutual TLS" in cluster.init_output
    assert oct(os.stat(os.path.join(cluster.dir, "cluster-ca", "ca-key.pem")).st_mode & 0o777) == "0o600"
    for i in range(3):
        tls = os.path.join(cluster.node_dir(i), "tls")
        assert sorted(os.listdir(tls)) == ["ca.pem", "node-key.pem", "node.pem"]
        assert oct(os.stat(os.path.join(tls, "node-key.pem")).st_mode & 0o777) == "0o600"
        for root, _, files in os.walk(cluster.node_dir(i)):
            assert "ca-key.pem" not in files, root  # the CA key is in no member directory
    text = subprocess.run(["openssl", "x509", "-in", os.path.join(cluster.node_dir(1), "tls", "node.pem"), "-noout", "-text"],
                          check=True, capture_output=True, text=True).stdout
    assert "IP Address:127.0.0.1" in text and "CN = n2" in text and "TLS Web Client Authentication" in text
    verify = subprocess.run(["openssl", "verify", "-CAfile", cluster.ca, os.path.join(cluster.node_dir(2), "tls", "node.pem")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_tls1_official_client_over_https_and_a_write_forwarded_by_a_tls_replica(cluster, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", cluster.ca)
    assert cluster.admin(1, "GET", "status")["role"] == "replica"
    replica = create_client(cluster.urls[1], cluster.service)
    # Forwarded by n2 to n1 over HTTPS; n2 answers once it applied the commit (read-your-writes).
    inserted = replica.table("notes").insert({"id": "f1", "body": "forwarded over https"}).execute().data
    assert inserted == [{"id": "f1", "body": "forwarded over https"}]
    assert replica.table("notes").select("id,body").eq("id", "f1").execute().data == inserted
    primary = create_client(cluster.urls[0], cluster.service)
    assert primary.table("notes").select("id,body").eq("id", "f1").execute().data == inserted
    # Replicated over mutual TLS to the third member.
    third = create_client(cluster.urls[2], cluster.anon)
    wait_for(lambda: third.table("notes").select("id").eq("id", "f1").execute().data == [{"id": "f1"}], "n3 has f1")
    status = cluster.admin(0, "GET", "cluster/status")
    assert [m["reachable"] for m in status["members"]] == [True, True, True]  # probes over mutual TLS
    # Without the CA the client refuses the member's certificate.
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(Exception) as failure:
        create_client(cluster.urls[1], cluster.anon).table("notes").select("id").execute()
    assert "certificate" in str(failure.value).lower() or "ssl" in str(failure.value).lower()


def test_tls1_plain_tcp_to_the_replication_port_gets_nothing(cluster):
    hello = cluster.hello_probe()
    # The same HELLO inside TLS with a member certificate is answered with a STATE frame (type 8):
    # the frame is valid, only the transport differs.
    context = ssl.create_default_context(cafile=cluster.ca)
    tls_dir = os.path.join(cluster.node_dir(1), "tls")
    context.load_cert_chain(os.path.join(tls_dir, "node.pem"), os.path.join(tls_dir, "node-key.pem"))
    with socket.create_connection(("127.0.0.1", cluster.repl), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(hello)
            answer = read_all(tls)
    assert len(answer) > 5 and answer[4] == 8, answer[:16]
    # Plain TCP: the listener treats the bytes as a TLS handshake and fails it; no protocol byte comes back
    # (at most a TLS alert record: content type 21, version 3.x).
    with socket.create_connection(("127.0.0.1", cluster.repl), timeout=5) as plain:
        plain.sendall(hello)
        answer = read_all(plain)
    assert answer == b"" or (answer[0] == 21 and answer[1] == 3), answer[:16]
    wait_for(lambda: "AERO_CLUSTER_TLS" in open(cluster.log_path(0), errors="replace").read(), "n1 logs the refused handshake")
    # TLS without a client certificate is refused as well.
    anonymous = ssl.create_default_context(cafile=cluster.ca)
    with socket.create_connection(("127.0.0.1", cluster.repl), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with anonymous.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(hello)
                if read_all(tls) == b"":
                    raise ssl.SSLError("closed without an answer")


def test_tls1_a_replica_with_a_certificate_of_another_ca_is_refused_then_replaced(cluster, monkeypatch):
    other = make_test_dir("aerodb-compat-other-ca-")
    subprocess.run([BINARY, "cluster", "init", "--dir", other, "--nodes", "2", "--tls", "--http-port", "20001",
                    "--repl-port", "20011"], check=True, stdout=subprocess.DEVNULL)
    other_ca = os.path.join(other, "cluster-ca")
    # n3 gets a certificate from another CA (its own bundle trusts both: the refusal is the primary's).
    cluster.stop(2)
    subprocess.run([BINARY, "cluster", "cert", "--ca", other_ca, "--dir", cluster.node_dir(2)], check=True, stdout=subprocess.DEVNULL)
    n1_log_before = len(open(cluster.log_path(0), errors="replace").read())
    cluster.start(2)
    # n3's HTTP port serves the foreign certificate: our clients do not trust it; ask over the other CA.
    foreign = ssl.create_default_context(cafile=os.path.join(other_ca, "ca.pem"))

    def n3_status():
        request = urllib.request.Request(cluster.urls[2] + "/admin/v1/status", headers={"Authorization": f"Bearer {cluster.service}"})
        try:
            with urllib.request.urlopen(request, timeout=2, context=foreign) as r:
                return json.loads(r.read())
        except OSError:
            return None
    def n3_state():
        return ((n3_status() or {}).get("replication") or {}).get("state", "")
    wait_for(lambda: n3_state().startswith("reconnecting"), "n3 reports it cannot follow")
    wait_for(lambda: "TLS" in n3_state(), "n3's state says why: " + n3_state())
    assert "AERO_CLUSTER_TLS" in open(cluster.log_path(2), errors="replace").read()
    wait_for(lambda: "AERO_CLUSTER_TLS" in open(cluster.log_path(0), errors="replace").read()[n1_log_before:],
             "the primary logs why it refused n3")
    refusals = [json.loads(line) for line in open(cluster.log_path(0), errors="replace").read()[n1_log_before:].splitlines()
                if "AERO_CLUSTER_TLS" in line]
    assert any("certificate" in r.get("error", "").lower() or "ca" in r.get("error", "").lower() for r in refusals), refusals
    # A write acknowledged meanwhile (sync: n2 flushed it) does not reach n3.
    monkeypatch.setenv("SSL_CERT_FILE", cluster.ca)
    create_client(cluster.urls[0], cluster.service).table("notes").insert({"id": "while-refused", "body": "x"}).execute()
    members = {m["node_id"]: m for m in cluster.admin(0, "GET", "cluster/status")["replicas"]}
    assert members["n3"]["connected"] is False
    # Replacing the certificate with one of the cluster CA (the runbook): n3 rejoins and catches up.
    cluster.stop(2)
    subprocess.run([BINARY, "cluster", "cert", "--ca", os.path.join(cluster.dir, "cluster-ca"), "--dir", cluster.node_dir(2)],
                   check=True, stdout=subprocess.DEVNULL)
    cluster.start(2)
    cluster.wait_ready(2)
    third = create_client(cluster.urls[2], cluster.anon)
    wait_for(lambda: third.table("notes").select("id").eq("id", "while-refused").execute().data == [{"id": "while-refused"}],
             "n3 caught up after its certificate was replaced")


def test_tls1_failover_with_promote_over_https(cluster, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", cluster.ca)
    primary = create_client(cluster.urls[0], cluster.service)
    primary.table("notes").insert({"id": "before-failover", "body": "acknowledged in sync mode"}).execute()
    cluster.stop(0, signal.SIGKILL)
    # `aerodb promote` over https://, trusting the tls.ca_file of --dir.
    promote = subprocess.run([BINARY, "promote", "--url", cluster.urls[1], "--dir", cluster.node_dir(1)],
                             capture_output=True, text=True, timeout=60)
    assert promote.returncode == 0, promote.stdout + promote.stderr
    assert "promoted: epoch 2" in promote.stdout, promote.stdout
    new_primary = create_client(cluster.urls[1], cluster.service)
    assert new_primary.table("notes").select("id").eq("id", "before-failover").execute().data == [{"id": "before-failover"}]
    # A write through n3 is forwarded to n2 over HTTPS and n3 follows n2 over mutual TLS.
    third = create_client(cluster.urls[2], cluster.service)
    third.table("notes").insert({"id": "after-failover", "body": "epoch 2"}).execute()
    assert new_primary.table("notes").select("id").eq("id", "after-failover").execute().data == [{"id": "after-failover"}]
    assert third.table("notes").select("id").eq("id", "after-failover").execute().data == [{"id": "after-failover"}]
    status = subprocess.run([BINARY, "status", "--url", cluster.urls[2], "--dir", cluster.node_dir(2), "--json"],
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    roles = {m["node_id"]: m.get("role") for m in json.loads(status.stdout)["members"]}
    assert roles["n2"] == "primary" and roles["n3"] == "replica"
