"""TUS resumable uploads (`/storage/v1/upload/resumable`) with the real `tuspy` client beside the
official one (storage3 from supabase==2.34.1) against real `aerodb` processes: a whole upload,
resumption after the client is interrupted (between chunks and in the middle of one) and after
the node is killed and restarted, policies at creation and at completion, the protocol's
refusals, an upload through a replica, and list_v2 (cursor, delimiter)."""
import hashlib
import http.client as httpclient
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from supabase import ClientOptions, create_client
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from conftest import BINARY, READY_TIMEOUT_SECONDS, Cluster, Node

MiB = 1024 * 1024


def http(method, url, data=None, headers=None):
    request = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def tus(url, key, upsert=False):
    headers = {"Authorization": f"Bearer {key}", "apikey": key}
    if upsert:
        headers["x-upsert"] = "true"
    return tus_client.TusClient(url + "/storage/v1/upload/resumable", headers=headers)


def meta(bucket, name, content_type="application/octet-stream", cache_control="3600"):
    return {"bucketName": bucket, "objectName": name, "contentType": content_type, "cacheControl": cache_control}


def write_file(tmp_path, name, size):
    body = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(body)
    return str(path), body


def head(url, key):
    return http("HEAD", url, headers={"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"})


def restart(node, kill=False):
    """Stops the node (SIGKILL: nothing flushed at exit) and starts it again on the same directory."""
    if kill:
        node.process.kill()
    else:
        node.process.send_signal(signal.SIGTERM)
    node.process.wait(timeout=20)
    node.process = subprocess.Popen([BINARY, "start", "--dir", os.path.join(node.dir, "n1")], stdout=node.log, stderr=node.log)
    deadline = time.time() + READY_TIMEOUT_SECONDS
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(node.url + "/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("aerodb did not become ready after the restart")


@pytest.fixture(scope="module")
def node():
    n = Node()
    yield n
    n.stop()


@pytest.fixture(scope="module")
def storage(node):
    s = create_client(node.url, node.service).storage
    s.create_bucket("tus", options={"public": False})
    s.create_bucket("small", options={"public": False, "file_size_limit": 1024, "allowed_mime_types": ["text/plain"]})
    return s


def test_tus_options_and_whole_upload(node, storage, tmp_path):
    status, h, _ = http("OPTIONS", node.url + "/storage/v1/upload/resumable")
    assert status == 204
    assert h["tus-resumable"] == "1.0.0" and h["tus-version"] == "1.0.0"
    assert set(h["tus-extension"].split(",")) >= {"creation", "termination", "expiration", "creation-with-upload"}
    path, body = write_file(tmp_path, "whole.bin", 5 * MiB + 123)
    md = {**meta("tus", "dir/whole.bin", "application/x-test", "60"), "metadata": json.dumps({"camera": "x100"})}
    uploader = tus(node.url, node.service).uploader(path, chunk_size=MiB, metadata=md)
    uploader.upload()
    assert "/storage/v1/upload/resumable/" in uploader.url
    files = storage.from_("tus")
    assert hashlib.sha256(files.download("dir/whole.bin")).digest() == hashlib.sha256(body).digest()
    info = files.info("dir/whole.bin")
    assert (info["size"], info["content_type"], info["cache_control"]) == (len(body), "application/x-test", "60")
    assert info["metadata"] == {"camera": "x100"}
    assert [e["name"] for e in files.list("dir")] == ["whole.bin"]
    # a finished upload is gone: its URL answers 404, and nothing is left in the parts directory
    assert head(uploader.url, node.service)[0] == 404
    assert os.listdir(os.path.join(node.dir, "n1", "data", "blobs", "resumable")) == []


def test_tus_resume_after_the_client_is_interrupted(node, storage, tmp_path):
    path, body = write_file(tmp_path, "resume.bin", 4 * MiB + 5)
    first = tus(node.url, node.service).uploader(path, chunk_size=MiB, metadata=meta("tus", "resume.bin"))
    first.upload(stop_at=2 * MiB)  # the client stops after two chunks
    assert first.offset == 2 * MiB
    assert storage.from_("tus").exists("resume.bin") is False  # nothing half-written is visible
    # the client is cut in the middle of a chunk: the bytes that arrived are kept
    u = urllib.parse.urlparse(first.url)
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.putrequest("PATCH", u.path)
    for k, v in {"Authorization": f"Bearer {node.service}", "Tus-Resumable": "1.0.0", "Upload-Offset": str(2 * MiB),
                 "Content-Type": "application/offset+octet-stream", "Content-Length": str(MiB)}.items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(body[2 * MiB:2 * MiB + 300_000])
    time.sleep(0.3)
    conn.sock.close()
    deadline = time.time() + 15
    offset = 2 * MiB
    while time.time() < deadline:
        status, h, _ = head(first.url, node.service)
        offset = int(h.get("upload-offset", "0"))
        if status == 200 and offset > 2 * MiB:
            break
        time.sleep(0.1)
    assert 2 * MiB < offset <= 2 * MiB + 300_000
    # a new client resumes from the server's offset (HEAD), not from the start
    second = tus(node.url, node.service).uploader(path, chunk_size=MiB, url=first.url)
    assert second.offset == offset
    second.upload()
    assert hashlib.sha256(storage.from_("tus").download("resume.bin")).digest() == hashlib.sha256(body).digest()


def test_tus_resume_after_the_node_is_killed_and_restarted(node, storage, tmp_path):
    path, body = write_file(tmp_path, "restart.bin", 3 * MiB + 77)
    first = tus(node.url, node.service).uploader(path, chunk_size=MiB, metadata=meta("tus", "restart.bin", "video/mp4"))
    first.upload(stop_at=2 * MiB)
    restart(node, kill=True)
    status, h, _ = head(first.url, node.service)
    assert status == 200, h
    assert (int(h["upload-offset"]), int(h["upload-length"])) == (2 * MiB, len(body))
    second = tus(node.url, node.service).uploader(path, chunk_size=MiB, url=first.url)
    assert second.offset == 2 * MiB
    second.upload()
    files = create_client(node.url, node.service).storage.from_("tus")
    assert hashlib.sha256(files.download("restart.bin")).digest() == hashlib.sha256(body).digest()
    assert files.info("restart.bin")["content_type"] == "video/mp4"


def test_tus_protocol_refusals(node, storage, tmp_path):
    base = node.url + "/storage/v1/upload/resumable"
    auth = {"Authorization": f"Bearer {node.service}"}

    def create(length, metadata, extra=None):
        md = ",".join(f"{k} {__import__('base64').b64encode(v.encode()).decode()}" for k, v in metadata.items())
        return http("POST", base, b"", {**auth, "Tus-Resumable": "1.0.0", "Upload-Length": str(length), "Upload-Metadata": md, **(extra or {})})

    assert http("POST", base, b"", {**auth, "Upload-Length": "3"})[0] == 412  # no Tus-Resumable
    assert create(3, {"objectName": "x"})[0] == 400  # no bucket
    assert create(3, meta("nope", "x"))[0] == 404
    assert create(3, meta("tus", "../x"))[0] == 400
    status, h, text = create(2048, meta("small", "big.txt", "text/plain"))
    assert status == 413 and h["x-aerodb-error-code"] == "AERO_STORAGE_TOO_LARGE", text
    assert create(10, meta("small", "a.png", "image/png"))[0] == 415
    status, h, _ = create(5, meta("small", "ok.txt", "text/plain"))
    assert status == 201
    url = node.url + h["location"]
    patch = {**auth, "Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    assert http("PATCH", url, b"ab", {**patch, "Upload-Offset": "1"})[0] == 409  # wrong offset
    assert http("PATCH", url, b"ab", {**patch, "Content-Type": "text/plain", "Upload-Offset": "0"})[0] == 415
    assert http("PATCH", url, b"abcdefgh", {**patch, "Upload-Offset": "0"})[0] == 413  # past Upload-Length
    status, h, _ = http("PATCH", url, b"ab", {**patch, "Upload-Offset": "0"})
    assert (status, h["upload-offset"]) == (204, "2")
    assert http("DELETE", url, None, {**auth, "Tus-Resumable": "1.0.0"})[0] == 204
    assert head(url, node.service)[0] == 404
    assert head(base + "/not-an-id", node.service)[0] == 404
    # a duplicate without x-upsert is refused at creation; with it, the upload replaces the object
    storage.from_("small").upload("dup.txt", b"old", {"content-type": "text/plain"})
    assert create(3, meta("small", "dup.txt", "text/plain"))[0] == 409
    path, body = write_file(tmp_path, "dup.txt", 3)
    tus(node.url, node.service, upsert=True).uploader(path, metadata=meta("small", "dup.txt", "text/plain")).upload()
    assert storage.from_("small").download("dup.txt") == body
    # an empty object completes at creation
    status, h, _ = create(0, meta("tus", "empty.bin"))
    assert status == 201 and h.get("tus-complete") == "1"
    assert storage.from_("tus").download("empty.bin") == b""


def test_tus_policies_at_creation_and_completion(node, storage, tmp_path):
    policy = {"name": "tus_own_folder", "operation": "all", "roles": ["authenticated"],
              "using": "bucket_id = 'tus' and storage.foldername(name)[1] = auth.uid()"}
    svc = {"Authorization": f"Bearer {node.service}", "Content-Type": "application/json"}
    assert http("POST", f"{node.url}/storage/v1/policies", json.dumps(policy).encode(), svc)[0] == 201
    admin = create_client(node.url, node.service).auth.admin
    tokens = {}
    for email in ("tus-a@example.com", "tus-b@example.com"):
        admin.create_user({"email": email, "password": "tus pw 1", "email_confirm": True})
        sb = create_client(node.url, node.anon, options=ClientOptions(auto_refresh_token=False, persist_session=False))
        s = sb.auth.sign_in_with_password({"email": email, "password": "tus pw 1"}).session
        tokens[email] = (s.access_token, s.user.id)
    token_a, uid_a = tokens["tus-a@example.com"]
    token_b, _ = tokens["tus-b@example.com"]
    path, body = write_file(tmp_path, "mine.bin", 2 * MiB + 1)
    # anon and another user's folder: refused at creation
    with pytest.raises(TusCommunicationError) as e:
        tus(node.url, node.anon).uploader(path, metadata=meta("tus", f"{uid_a}/anon.bin")).upload()
    assert e.value.status_code == 403
    with pytest.raises(TusCommunicationError) as e:
        tus(node.url, token_b).uploader(path, metadata=meta("tus", f"{uid_a}/b.bin")).upload()
    assert e.value.status_code == 403
    # the user uploads under its own folder; another user cannot see or continue its upload
    up = tus(node.url, token_a).uploader(path, chunk_size=MiB, metadata=meta("tus", f"{uid_a}/mine.bin"))
    up.upload(stop_at=MiB)
    assert head(up.url, token_b)[0] == 404
    assert head(up.url, token_a)[0] == 200
    # the policy is checked again at completion: dropped meanwhile, the last chunk is refused,
    # the bytes stay, and once allowed again an empty PATCH at the end completes the object
    assert http("DELETE", f"{node.url}/storage/v1/policies/tus_own_folder", None, svc)[0] == 200
    with pytest.raises(TusCommunicationError) as e:
        tus(node.url, token_a).uploader(path, chunk_size=4 * MiB, url=up.url).upload()
    assert e.value.status_code == 403
    status, h, _ = head(up.url, token_a)
    assert (status, int(h["upload-offset"])) == (200, len(body))
    assert storage.from_("tus").exists(f"{uid_a}/mine.bin") is False
    assert http("POST", f"{node.url}/storage/v1/policies", json.dumps(policy).encode(), svc)[0] == 201
    status, h, _ = http("PATCH", up.url, b"", {"Authorization": f"Bearer {token_a}", "Tus-Resumable": "1.0.0",
                                               "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(len(body))})
    assert (status, h.get("tus-complete")) == (204, "1")
    info = storage.from_("tus").info(f"{uid_a}/mine.bin")
    assert info["size"] == len(body)
    assert hashlib.sha256(storage.from_("tus").download(f"{uid_a}/mine.bin")).digest() == hashlib.sha256(body).digest()


def test_tus_signed_upload_url(node, storage, tmp_path):
    signed = storage.from_("tus").create_signed_upload_url("signed/tus.bin")
    path, body = write_file(tmp_path, "signed.bin", MiB + 3)
    client = tus_client.TusClient(node.url + "/storage/v1/upload/resumable/sign", headers={"x-signature": signed["token"]})
    up = client.uploader(path, chunk_size=512 * 1024, metadata=meta("tus", "signed/tus.bin"))
    up.upload()
    assert storage.from_("tus").download("signed/tus.bin") == body
    bad = tus_client.TusClient(node.url + "/storage/v1/upload/resumable/sign", headers={"x-signature": signed["token"] + "x"})
    with pytest.raises(TusCommunicationError) as e:
        bad.uploader(path, metadata=meta("tus", "signed/other.bin")).upload()
    assert e.value.status_code == 400


def test_list_v2_cursor_and_delimiter(storage):
    files = storage.from_("tus")
    for name in ["v2/a.txt", "v2/b.txt", "v2/c.txt", "v2/sub/d.txt", "v2/sub/e.txt", "v2/tub/f.txt"]:
        files.upload(name, name.encode(), {"content-type": "text/plain"})
    page = files.list_v2({"prefix": "v2/", "limit": 2, "with_delimiter": True})
    assert page.hasNext is True and page.nextCursor
    seen_objects, seen_folders = [o.name for o in page.objects], [f.name for f in page.folders]
    while page.hasNext:
        page = files.list_v2({"prefix": "v2/", "limit": 2, "with_delimiter": True, "cursor": page.nextCursor})
        seen_objects += [o.name for o in page.objects]
        seen_folders += [f.name for f in page.folders]
    assert seen_objects == ["v2/a.txt", "v2/b.txt", "v2/c.txt"]
    assert seen_folders == ["v2/sub/", "v2/tub/"]
    flat = files.list_v2({"prefix": "v2/sub", "limit": 10})
    assert [(o.name, o.key) for o in flat.objects] == [("v2/sub/d.txt", "d.txt"), ("v2/sub/e.txt", "e.txt")]
    assert flat.hasNext is False
    assert flat.objects[0].metadata["size"] == len("v2/sub/d.txt")


def test_tus_upload_through_a_replica(tmp_path):
    c = Cluster(nodes=2)
    try:
        create_client(c.urls[0], c.service).storage.create_bucket("shared")
        path, body = write_file(tmp_path, "replica.bin", 3 * MiB + 11)
        up = tus(c.urls[1], c.service).uploader(path, chunk_size=MiB, metadata=meta("shared", "via/n2.bin"))
        up.upload(stop_at=MiB)
        assert up.url.startswith(c.urls[1])  # the client keeps talking to the replica
        # HEAD through the replica reads the primary's offset; the parts live on the primary
        status, h, _ = head(up.url, c.service)
        assert (status, h["upload-offset"]) == (200, str(MiB))
        assert os.listdir(os.path.join(c.dir, "n2", "data", "blobs", "resumable")) == []
        tus(c.urls[1], c.service).uploader(path, chunk_size=MiB, url=up.url).upload()
        sha = hashlib.sha256(body).digest()
        for url in c.urls:
            assert hashlib.sha256(create_client(url, c.service).storage.from_("shared").download("via/n2.bin")).digest() == sha
    finally:
        c.stop()
