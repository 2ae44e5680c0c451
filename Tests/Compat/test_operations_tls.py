"""Issue 18, TLS: the official Python client works against `https://` with the node's
certificate and key files (aerodb.json `tls`), trusting its CA through SSL_CERT_FILE; without
the CA the client refuses the connection. Every answer carries X-Request-Id."""
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.request

import pytest
from supabase import create_client

from conftest import BINARY, READY_TIMEOUT_SECONDS, free_port, make_test_dir


@pytest.fixture
def tls_node():
    root = make_test_dir("aerodb-tls-")
    node = os.path.join(root, "n1")
    port = free_port()
    subprocess.run([BINARY, "init", "--dir", node, "--http", f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
    cert, key = os.path.join(root, "cert.pem"), os.path.join(root, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", key, "-out", cert,
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config_path = os.path.join(node, "aerodb.json")
    with open(config_path) as f:
        config = json.load(f)
    config["tls"] = {"cert_file": cert, "key_file": key}
    with open(config_path, "w") as f:
        json.dump(config, f)
    keys = json.loads(subprocess.run([BINARY, "keys", "--dir", node, "--json"], check=True, capture_output=True).stdout)
    log = open(os.path.join(root, "node.log"), "wb")
    process = subprocess.Popen([BINARY, "start", "--dir", node], stdout=log, stderr=log)
    context = ssl.create_default_context(cafile=cert)
    url = f"https://127.0.0.1:{port}"
    deadline = time.time() + READY_TIMEOUT_SECONDS
    while True:
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1, context=context) as r:
                if r.status == 200:
                    break
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError("aerodb with tls did not become ready")
            time.sleep(0.1)
    request = urllib.request.Request(url + "/admin/v1/collections", method="POST",
                                     data=json.dumps({"name": "notes", "fields": {"id": {"type": "text"}, "body": {"type": "text"}}}).encode(),
                                     headers={"Authorization": f"Bearer {keys['service_role']}"})
    with urllib.request.urlopen(request, timeout=10, context=context) as r:
        assert r.status == 201
        assert r.headers["X-Request-Id"]
    yield {"url": url, "cert": cert, "service": keys["service_role"]}
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def test_official_client_over_https(tls_node, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", tls_node["cert"])
    client = create_client(tls_node["url"], tls_node["service"])
    client.table("notes").insert({"id": "n1", "body": "over tls"}).execute()
    assert client.table("notes").select("id,body").eq("id", "n1").execute().data == [{"id": "n1", "body": "over tls"}]


def test_client_refuses_an_untrusted_certificate(tls_node, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    client = create_client(tls_node["url"], tls_node["service"])
    with pytest.raises(Exception) as failure:
        client.table("notes").select("id").execute()
    assert "certificate" in str(failure.value).lower() or "ssl" in str(failure.value).lower()
