"""Storage (`/storage/v1`) through the official client (storage3 from supabase==2.34.1) against
real `aerodb` nodes: buckets, uploads (multipart and raw), downloads (authenticated, public,
signed; Range and ETag), listing with folders, info/exists, move/copy/remove, signed upload
URLs, bad input in Supabase's error shape, policies (own folder), and a three-node cluster
(upload through n2, byte-identical download from n3)."""
import hashlib
import json
import os
import time
import urllib.error
import urllib.request

import pytest
from storage3.exceptions import StorageApiError
from supabase import ClientOptions, create_client

from conftest import Cluster, Node


def http(method, url, data=None, headers=None):
    request = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def node():
    n = Node()
    yield n
    n.stop()


@pytest.fixture(scope="module")
def storage(node):
    return create_client(node.url, node.service).storage


def test_buckets(storage):
    storage.create_bucket("docs", options={"public": False, "file_size_limit": 1024, "allowed_mime_types": ["text/plain", "image/*"]})
    storage.create_bucket("pics", options={"public": True})
    b = storage.get_bucket("docs")
    assert (b.id, b.name, b.public, b.file_size_limit, b.allowed_mime_types) == ("docs", "docs", False, 1024, ["text/plain", "image/*"])
    assert {"docs", "pics"} <= {x.id for x in storage.list_buckets()}
    storage.update_bucket("docs", {"public": False, "file_size_limit": 2048, "allowed_mime_types": ["text/plain", "image/*"]})
    assert storage.get_bucket("docs").file_size_limit == 2048
    with pytest.raises(StorageApiError) as e:
        storage.create_bucket("docs")
    assert (e.value.status, e.value.code) == ("409", "Duplicate")
    with pytest.raises(StorageApiError) as e:
        storage.get_bucket("nope")
    assert e.value.status == "404"


def test_upload_download_info_exists(storage, node):
    files = storage.from_("docs")
    r = files.upload("a/hello.txt", b"hello world", {"content-type": "text/plain", "cache-control": "60"})
    assert r.full_path == "docs/a/hello.txt"
    assert files.download("a/hello.txt") == b"hello world"
    info = files.info("a/hello.txt")
    assert info["size"] == 11 and info["content_type"] == "text/plain" and info["cache_control"] == "60"
    assert files.exists("a/hello.txt") is True
    assert files.exists("a/missing.txt") is False
    with pytest.raises(StorageApiError) as e:  # duplicate without upsert
        files.upload("a/hello.txt", b"other", {"content-type": "text/plain"})
    assert (e.value.status, e.value.code) == ("409", "Duplicate")
    files.upload("a/hello.txt", b"replaced", {"content-type": "text/plain", "upsert": "true"})
    assert files.download("a/hello.txt") == b"replaced"
    files.update("a/hello.txt", b"updated!", {"content-type": "text/plain"})
    assert files.download("a/hello.txt") == b"updated!"
    # anon sees nothing of a private bucket without a policy
    anon = create_client(node.url, node.anon).storage.from_("docs")
    with pytest.raises(StorageApiError):
        anon.download("a/hello.txt")
    assert anon.list("a") == []


def test_raw_upload_range_etag(node, storage):
    body = os.urandom(300_000)
    status, _, answer = http("POST", f"{node.url}/storage/v1/object/pics/raw.bin", body,
                             {"Authorization": f"Bearer {node.service}", "Content-Type": "image/png"})
    assert status == 200 and json.loads(answer)["Key"] == "pics/raw.bin"
    url = storage.from_("pics").get_public_url("raw.bin")
    status, headers, got = http("GET", url)
    assert status == 200 and got == body and headers["Content-Type"] == "image/png"
    etag = headers["ETag"]
    assert http("GET", url, headers={"If-None-Match": etag})[0] == 304
    status, headers, part = http("GET", url, headers={"Range": "bytes=100-199"})
    assert status == 206 and part == body[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(body)}"
    status, _, tail = http("GET", url, headers={"Range": "bytes=-10"})
    assert status == 206 and tail == body[-10:]
    assert http("GET", url, headers={"Range": f"bytes={len(body)}-"})[0] == 416


def test_list_folders_search_sort(storage):
    files = storage.from_("pics")
    for name in ["f/one.png", "f/two.png", "f/sub/three.png", "f/Other.png"]:
        files.upload(name, b"x" * 3, {"content-type": "image/png"})
    names = [e["name"] for e in files.list("f")]
    assert names == ["Other.png", "one.png", "sub", "two.png"]
    sub = [e for e in files.list("f") if e["name"] == "sub"][0]
    assert sub["id"] is None and sub["metadata"] is None
    one = [e for e in files.list("f") if e["name"] == "one.png"][0]
    assert one["metadata"]["size"] == 3 and one["metadata"]["mimetype"] == "image/png"
    assert [e["name"] for e in files.list("f", {"search": "o", "limit": 10})] == ["Other.png", "one.png"]
    assert [e["name"] for e in files.list("f", {"limit": 2, "offset": 1})] == ["one.png", "sub"]
    desc = [e["name"] for e in files.list("f", {"sortBy": {"column": "name", "order": "desc"}})]
    assert desc == ["two.png", "sub", "one.png", "Other.png"]


def test_move_copy_remove_and_bucket_lifecycle(storage):
    storage.create_bucket("tmp")
    files = storage.from_("tmp")
    files.upload("x/a.txt", b"A", {"content-type": "text/plain"})
    files.move("x/a.txt", "y/b.txt")
    assert files.exists("x/a.txt") is False and files.download("y/b.txt") == b"A"
    files.copy("y/b.txt", "y/c.txt")
    assert files.download("y/c.txt") == b"A"
    with pytest.raises(StorageApiError) as e:
        storage.delete_bucket("tmp")
    assert e.value.status == "409"
    removed = files.remove(["y/b.txt", "y/c.txt", "y/none.txt"])
    assert sorted(r["name"] for r in removed) == ["y/b.txt", "y/c.txt"]
    files.upload("z.txt", b"Z", {"content-type": "text/plain"})
    storage.empty_bucket("tmp")
    assert files.list() == []
    storage.delete_bucket("tmp")
    with pytest.raises(StorageApiError):
        storage.get_bucket("tmp")


def test_signed_urls(storage, node):
    files = storage.from_("docs")
    files.upload("s/secret.txt", b"top secret", {"content-type": "text/plain"})
    url = files.create_signed_url("s/secret.txt", 60)["signedURL"]
    status, _, body = http("GET", url)
    assert status == 200 and body == b"top secret"
    status, headers, _ = http("GET", url + "&download=x.txt")
    assert headers.get("Content-Disposition") == 'attachment; filename="x.txt"'
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    status, _, body = http("GET", tampered)
    assert status == 400 and json.loads(body)["error"] == "InvalidJWT"
    other = url.replace("s/secret.txt", "a/hello.txt")
    assert http("GET", other)[0] == 400
    batch = files.create_signed_urls(["s/secret.txt", "s/none.txt"], 60)
    assert batch[0]["error"] is None and http("GET", batch[0]["signedURL"])[2] == b"top secret"
    assert batch[1]["signedURL"] is None and batch[1]["error"]
    short = files.create_signed_url("s/secret.txt", 1)["signedURL"]
    time.sleep(2.1)
    status, _, body = http("GET", short)
    assert status == 400 and "expired" in json.loads(body)["message"]
    # private bucket: no public access
    assert http("GET", files.get_public_url("s/secret.txt"))[0] == 400


def test_signed_upload_url(storage):
    files = storage.from_("docs")
    signed = files.create_signed_upload_url("up/via-token.txt")
    files.upload_to_signed_url("up/via-token.txt", signed["token"], b"via token", {"content-type": "text/plain"})
    assert files.download("up/via-token.txt") == b"via token"
    with pytest.raises(StorageApiError) as e:  # the token names one object
        files.upload_to_signed_url("up/other.txt", signed["token"], b"x", {"content-type": "text/plain"})
    assert e.value.status == "400"


def test_bad_input(storage, node):
    files = storage.from_("docs")
    with pytest.raises(StorageApiError) as e:  # MIME type not allowed
        files.upload("bad.json", b"{}", {"content-type": "application/json"})
    assert (e.value.status, e.value.code) == ("415", "invalid_mime_type")
    with pytest.raises(StorageApiError) as e:  # over the bucket's limit (2048)
        files.upload("big.txt", b"x" * 4096, {"content-type": "text/plain"})
    assert e.value.status == "413"
    assert files.exists("big.txt") is False
    auth = {"Authorization": f"Bearer {node.service}", "Content-Type": "text/plain"}
    for name in ["a/%2E%2E/b.txt", "%2Fabs.txt", "nul%00.txt", "x" * 1100]:
        status, _, body = http("POST", f"{node.url}/storage/v1/object/docs/{name}", b"x", auth)
        err = json.loads(body)
        assert status == 400 and set(err) >= {"statusCode", "error", "message"}, (name, status, body)
    status, _, body = http("POST", f"{node.url}/storage/v1/object/nobucket/x.txt", b"x", auth)
    assert status == 404 and json.loads(body)["error"] == "Bucket not found"
    # a cut multipart body never becomes an object
    cut = b'--B\r\nContent-Disposition: form-data; name="file"; filename="c.txt"\r\nContent-Type: text/plain\r\n\r\npartial'
    status, _, body = http("POST", f"{node.url}/storage/v1/object/docs/cut.txt", cut,
                           {"Authorization": f"Bearer {node.service}", "Content-Type": "multipart/form-data; boundary=B"})
    assert status == 400
    assert files.exists("cut.txt") is False


def test_policies_own_folder(node, storage):
    policy = {"name": "own_folder", "operation": "all", "roles": ["authenticated"],
              "using": "bucket_id = 'docs' and storage.foldername(name)[1] = auth.uid()"}
    status, _, body = http("POST", f"{node.url}/storage/v1/policies", json.dumps(policy).encode(),
                           {"Authorization": f"Bearer {node.service}", "Content-Type": "application/json"})
    assert status == 201, body
    admin = create_client(node.url, node.service).auth.admin
    admin.create_user({"email": "files@example.com", "password": "files pw 1", "email_confirm": True})
    sb = create_client(node.url, node.anon, options=ClientOptions(auto_refresh_token=False, persist_session=False))
    session = sb.auth.sign_in_with_password({"email": "files@example.com", "password": "files pw 1"}).session
    uid = session.user.id
    user = sb.storage.from_("docs")
    user.upload(f"{uid}/mine.txt", b"mine", {"content-type": "text/plain"})
    assert user.download(f"{uid}/mine.txt") == b"mine"
    assert [e["name"] for e in user.list(uid)] == ["mine.txt"]
    with pytest.raises(StorageApiError) as e:
        user.upload("someone-else/x.txt", b"no", {"content-type": "text/plain"})
    assert e.value.status == "403"
    with pytest.raises(StorageApiError):
        user.download("s/secret.txt")
    anon = create_client(node.url, node.anon).storage.from_("docs")
    with pytest.raises(StorageApiError):
        anon.download(f"{uid}/mine.txt")
    # a public bucket is readable by anyone, writable by no one without a policy
    with pytest.raises(StorageApiError) as e:
        create_client(node.url, node.anon).storage.from_("pics").upload("anon.png", b"x", {"content-type": "image/png"})
    assert (e.value.status, e.value.code) == ("403", "Unauthorized")
    # the user removes only what its policy allows: another folder's object is skipped
    assert user.remove(["s/secret.txt"]) == []
    assert storage.from_("docs").exists("s/secret.txt") is True
    # bucket management needs the service key
    with pytest.raises(StorageApiError) as e:
        sb.storage.create_bucket("mine")
    assert e.value.status == "403"


def test_cluster_upload_through_n2_download_from_n3():
    c = Cluster(nodes=3)
    try:
        create_client(c.urls[0], c.service).storage.create_bucket("shared")
        body = os.urandom(40 * 1024 * 1024 + 17)  # past the 32 MiB a collected forward would take
        n2 = create_client(c.urls[1], c.service).storage.from_("shared")
        assert n2.upload("big/blob.bin", body, {"content-type": "application/octet-stream"}).full_path == "shared/big/blob.bin"
        n3 = create_client(c.urls[2], c.service).storage.from_("shared")
        deadline = time.time() + 10
        while not n3.list("big") and time.time() < deadline:
            time.sleep(0.1)
        got = n3.download("big/blob.bin")
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(body).hexdigest()
        # the bytes were pushed before the metadata: n3 holds the blob file itself
        sha = hashlib.sha256(body).hexdigest()
        path = os.path.join(c.dir, "n3", "data", "blobs", sha[:2], sha)
        assert os.path.exists(path)
        # a replica that lacks the bytes (a missed push) never lists the object, and fetches the
        # bytes from the primary on a download
        os.remove(path)
        assert n3.list("big") == []
        assert hashlib.sha256(n3.download("big/blob.bin")).hexdigest() == sha
        assert os.path.exists(path) and [e["name"] for e in n3.list("big")] == ["blob.bin"]
    finally:
        c.stop()
