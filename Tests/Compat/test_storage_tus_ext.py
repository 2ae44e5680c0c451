"""TUS extensions and the resumable bounds, with the real `tuspy` client and raw requests against a
real `aerodb` process: creation-defer-length, the checksum extension (sha1 as tuspy sends it, md5; 460 and the chunk
discarded on a mismatch), extensions not built refused and not advertised, each owner's share
of the upload slots (ST5), a failed creation-with-upload freeing its slot, and anonymous
callers never reaching a user's or a signed upload; image transformations refused (not built)."""
import base64
import hashlib
import json

import pytest
from storage3.exceptions import StorageApiError
from supabase import ClientOptions, create_client

from conftest import Node
from test_storage_tus import MiB, head, http, meta, tus, write_file

SHARE_UPLOADS_MAX = 100  # StorageLimits.resumableUploadsPerShareMax


@pytest.fixture(scope="module")
def node():
    n = Node()
    yield n
    n.stop()


@pytest.fixture(scope="module")
def storage(node):
    s = create_client(node.url, node.service).storage
    s.create_bucket("ext", options={"public": False})
    s.create_bucket("anonup", options={"public": False})
    return s


def b64(data):
    return base64.b64encode(data).decode()


def create(node, key, length, metadata, extra=None, body=b"", path="/storage/v1/upload/resumable"):
    md = ",".join(f"{k} {b64(v.encode())}" for k, v in metadata.items())
    headers = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0", "Upload-Length": str(length), "Upload-Metadata": md}
    if body:
        headers["Content-Type"] = "application/offset+octet-stream"
    return http("POST", node.url + path, body, {**headers, **(extra or {})})


def patch(url, key, offset, body, extra=None):
    return http("PATCH", url, body, {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0",
                                     "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset), **(extra or {})})


def test_tus_checksum_extension_with_tuspy_and_raw_requests(node, storage, tmp_path):
    status, h, _ = http("OPTIONS", node.url + "/storage/v1/upload/resumable")
    extensions = set(h["tus-extension"].split(","))
    assert status == 204 and "checksum" in extensions
    assert "sha1" in h["tus-checksum-algorithm"].split(",") and "md5" in h["tus-checksum-algorithm"].split(",")
    # only what is built is advertised
    assert "creation-defer-length" in extensions and "concatenation" not in extensions
    # tuspy sends `Upload-Checksum: sha1 <base64>` with every chunk
    path, body = write_file(tmp_path, "sum.bin", 3 * MiB + 7)
    uploader = tus(node.url, node.service).uploader(path, chunk_size=MiB, metadata=meta("ext", "sum.bin"), upload_checksum=True)
    uploader.upload()
    assert hashlib.sha256(storage.from_("ext").download("sum.bin")).digest() == hashlib.sha256(body).digest()
    # raw: a wrong digest is 460 and the chunk is discarded; the right one counts
    status, h, _ = create(node, node.service, 8, meta("ext", "raw.bin"))
    url = node.url + h["location"]
    wrong = "sha1 " + b64(hashlib.sha1(b"abcdX").digest())
    status, h, text = patch(url, node.service, 0, b"abcd", {"Upload-Checksum": wrong})
    assert (status, h["x-aerodb-error-code"]) == (460, "AERO_STORAGE_CHECKSUM_MISMATCH"), text
    assert head(url, node.service)[1]["upload-offset"] == "0"
    assert patch(url, node.service, 0, b"abcd", {"Upload-Checksum": "crc32 AAAAAA=="})[0] == 400
    assert patch(url, node.service, 0, b"abcd", {"Upload-Checksum": "sha1 notbase64!"})[0] == 400
    status, h, _ = patch(url, node.service, 0, b"abcd", {"Upload-Checksum": "sha1 " + b64(hashlib.sha1(b"abcd").digest())})
    assert (status, h["upload-offset"]) == (204, "4")
    status, h, _ = patch(url, node.service, 4, b"efgh", {"Upload-Checksum": "md5 " + b64(hashlib.md5(b"efgh").digest())})
    assert (status, h.get("tus-complete")) == (204, "1")
    assert storage.from_("ext").download("raw.bin") == b"abcdefgh"
    # extensions not built: refused with a stable code
    status, h, _ = create(node, node.service, 4, meta("ext", "concat.bin"), {"Upload-Concat": "partial"})
    assert (status, h["x-aerodb-error-code"]) == (400, "AERO_STORAGE_RESUMABLE_UNSUPPORTED")


def test_tus_creation_defer_length(node, storage):
    storage.create_bucket("deferred", options={"public": False, "file_size_limit": 64})
    status, h, _ = create(node, node.service, 0, meta("deferred", "d.txt", "text/plain"), {"Upload-Defer-Length": "1"}, body=b"0123")
    # (create() sends Upload-Length too: both at once are refused)
    assert status == 400
    md = ",".join(f"{k} {b64(v.encode())}" for k, v in meta("deferred", "d.txt", "text/plain").items())
    base = {"Authorization": f"Bearer {node.service}", "Tus-Resumable": "1.0.0", "Upload-Metadata": md}
    assert http("POST", node.url + "/storage/v1/upload/resumable", b"", {**base, "Upload-Defer-Length": "2"})[0] == 400
    status, h, _ = http("POST", node.url + "/storage/v1/upload/resumable", b"0123",
                        {**base, "Upload-Defer-Length": "1", "Content-Type": "application/offset+octet-stream"})
    assert status == 201 and h["upload-offset"] == "4" and "tus-complete" not in h
    url = node.url + h["location"]
    status, h, _ = head(url, node.service)
    assert (h["upload-offset"], h.get("upload-defer-length"), h.get("upload-length")) == ("4", "1", None)
    # chunks without a length: never complete, bounded by the bucket's limit (64)
    assert patch(url, node.service, 4, b"4567")[1]["upload-offset"] == "8"
    assert patch(url, node.service, 8, b"x" * 60)[0] == 413
    assert storage.from_("deferred").exists("d.txt") is False
    # a length below the offset or above the limit is refused; a valid one is set once and completes
    assert patch(url, node.service, 8, b"", {"Upload-Length": "7"})[0] == 400
    assert patch(url, node.service, 8, b"", {"Upload-Length": "65"})[0] == 400
    status, h, _ = patch(url, node.service, 8, b"89", {"Upload-Length": "10"})
    assert (status, h["upload-offset"], h.get("tus-complete")) == (204, "10", "1")
    assert storage.from_("deferred").download("d.txt") == b"0123456789"
    # set without a chunk, then HEAD shows it, then the last chunk completes
    status, h, _ = http("POST", node.url + "/storage/v1/upload/resumable", b"", {**base, "Upload-Defer-Length": "1", "x-upsert": "true"})
    url = node.url + h["location"]
    assert patch(url, node.service, 0, b"", {"Upload-Length": "3"})[0] == 204
    assert head(url, node.service)[1]["upload-length"] == "3"
    assert patch(url, node.service, 0, b"abc", {"Upload-Length": "4"})[0] == 400  # a known length does not change
    assert patch(url, node.service, 0, b"abc")[1].get("tus-complete") == "1"
    assert storage.from_("deferred").download("d.txt") == b"abc"


def test_tus_slots_are_shared_per_owner_and_a_failed_creation_frees_its_slot(node, storage):
    svc = {"Authorization": f"Bearer {node.service}", "Content-Type": "application/json"}
    policy = {"name": "anon_writes_anonup", "operation": "all", "roles": ["anon", "authenticated"],
              "using": "bucket_id = 'anonup'", "check": "bucket_id = 'anonup'"}
    assert http("POST", f"{node.url}/storage/v1/policies", json.dumps(policy).encode(), svc)[0] == 201
    admin = create_client(node.url, node.service).auth.admin
    admin.create_user({"email": "share@example.com", "password": "share pw 1", "email_confirm": True})
    sb = create_client(node.url, node.anon, options=ClientOptions(auto_refresh_token=False, persist_session=False))
    user = sb.auth.sign_in_with_password({"email": "share@example.com", "password": "share pw 1"}).session.access_token
    # every anonymous caller is one share: it fills up to its bound, minus one
    urls = []
    for i in range(SHARE_UPLOADS_MAX - 1):
        status, h, text = create(node, node.anon, 4, meta("anonup", f"a/{i}.bin"))
        assert status == 201, text
        urls.append(node.url + h["location"])
    # a creation-with-upload whose first chunk fails (checksum): 460, and its slot is freed
    status, h, _ = create(node, node.anon, 4, meta("anonup", "a/failed.bin"), {"Upload-Checksum": "sha1 " + b64(hashlib.sha1(b"zzzz").digest())},
                          body=b"abcd")
    assert (status, h["x-aerodb-error-code"]) == (460, "AERO_STORAGE_CHECKSUM_MISMATCH")
    status, h, _ = create(node, node.anon, 4, meta("anonup", "a/last.bin"))
    assert status == 201
    status, h, text = create(node, node.anon, 4, meta("anonup", "a/over.bin"))
    assert (status, h["x-aerodb-error-code"]) == (429, "AERO_STORAGE_UPLOADS_SHARE_FULL"), text
    # another owner is not affected, and its upload is not reachable by anonymous callers
    status, h, _ = create(node, user, 4, meta("anonup", "u/mine.bin"))
    assert status == 201
    mine = node.url + h["location"]
    assert head(mine, node.anon)[0] == 404 and head(mine, user)[0] == 200
    assert patch(mine, node.anon, 0, b"abcd")[0] == 404
    # nor an upload made through a signed upload URL (it is reachable under /sign only)
    signed = storage.from_("anonup").create_signed_upload_url("s/signed.bin")
    status, h, _ = create(node, node.anon, 4, meta("anonup", "s/signed.bin"), {"x-signature": signed["token"]},
                          path="/storage/v1/upload/resumable/sign")
    assert status == 201
    sign_url = node.url + h["location"]
    assert head(sign_url.replace("/resumable/sign/", "/resumable/"), node.anon)[0] == 404
    assert http("HEAD", sign_url, headers={"x-signature": signed["token"], "Tus-Resumable": "1.0.0"})[0] == 200
    # the user's own upload completes; deleting anonymous uploads frees the anonymous share
    assert patch(mine, user, 0, b"abcd")[0] == 204
    assert storage.from_("anonup").download("u/mine.bin") == b"abcd"
    for url in urls[:3]:
        assert http("DELETE", url, None, {"Authorization": f"Bearer {node.anon}", "Tus-Resumable": "1.0.0"})[0] == 204
    assert create(node, node.anon, 4, meta("anonup", "a/again.bin"))[0] == 201


def test_image_transformations_are_refused_with_a_stable_code(node, storage):
    files = storage.from_("ext")
    files.upload("img/a.png", b"\x89PNG\r\n\x1a\n not really", {"content-type": "image/png"})
    transform = {"width": 100, "height": 80, "resize": "cover", "quality": 70, "format": "origin"}
    # download with transform: storage3 calls /render/image/authenticated/...
    with pytest.raises(StorageApiError) as e:
        files.download("img/a.png", {"transform": transform})
    assert e.value.status == 501 or str(e.value.status) == "501"
    # a signed URL with transform is refused when it is asked for, never handed out to fail later
    with pytest.raises(StorageApiError) as e:
        files.create_signed_url("img/a.png", 60, {"transform": transform})
    assert str(e.value.status) == "501"
    # a public render URL: the same error shape over plain HTTP, nothing served untransformed
    storage.create_bucket("pub", options={"public": True})
    storage.from_("pub").upload("b.png", b"png bytes", {"content-type": "image/png"})
    url = storage.from_("pub").get_public_url("b.png", {"transform": {"width": 10}})
    assert "/render/image/public/pub/b.png" in url
    status, h, body = http("GET", url)
    err = json.loads(body)
    assert (status, err["statusCode"], err["code"]) == (501, "501", "AERO_STORAGE_TRANSFORM_UNSUPPORTED")
    assert "image transformations are not supported" in err["message"]
    # without transform the same object is served as always
    assert storage.from_("pub").download("b.png") == b"png bytes"
