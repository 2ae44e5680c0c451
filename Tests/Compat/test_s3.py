"""The S3 endpoint /storage/v1/s3 (issue 21) with the real clients from PyPI: boto3 and the aws CLI
(awscli==1.46.2, boto3==1.44.8), against real `aerodb` processes on loopback.

Keys come from `aerodb storage keys create` (and /admin/v1/storage/s3-keys); the session form
signs with the anon key and carries a user's JWT as the session token, so storage policies apply."""
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from supabase import ClientOptions, create_client

from conftest import BINARY, Cluster, Node

REGION = "local"
AWS = os.path.join(os.path.dirname(sys.executable), "aws")


def client(url, key_id, secret, token=None):
    return boto3.client("s3", endpoint_url=url + "/storage/v1/s3", region_name=REGION, aws_access_key_id=key_id,
                        aws_secret_access_key=secret, aws_session_token=token,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def cli_key(node_dir, url):
    out = subprocess.run([BINARY, "storage", "keys", "create", "--description", "compat", "--url", url, "--dir", node_dir, "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def node():
    n = Node()
    yield n
    n.stop()


@pytest.fixture(scope="module")
def key(node):
    return cli_key(os.path.join(node.dir, "n1"), node.url)


@pytest.fixture(scope="module")
def s3(node, key):
    return client(node.url, key["access_key_id"], key["secret_access_key"])


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_buckets_and_objects_every_operation(s3):
    s3.create_bucket(Bucket="ops")
    assert "ops" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="ops")
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket="ops")
    assert code(e) == "BucketAlreadyOwnedByYou"
    body = os.urandom(100_000)
    put = s3.put_object(Bucket="ops", Key="dir/a.bin", Body=body, ContentType="application/x-test", Metadata={"k": "v"})
    head = s3.head_object(Bucket="ops", Key="dir/a.bin")
    assert head["ContentLength"] == len(body) and head["ContentType"] == "application/x-test"
    assert head["Metadata"] == {"k": "v"} and head["ETag"] == put["ETag"]
    got = s3.get_object(Bucket="ops", Key="dir/a.bin")
    assert got["Body"].read() == body
    assert s3.get_object(Bucket="ops", Key="dir/a.bin", Range="bytes=10-19")["Body"].read() == body[10:20]
    assert s3.get_object(Bucket="ops", Key="dir/a.bin", Range="bytes=-5")["Body"].read() == body[-5:]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ops", Key="dir/a.bin", Range="bytes=200000-")
    assert code(e) == "InvalidRange"
    # Conditional reads.
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ops", Key="dir/a.bin", IfNoneMatch=put["ETag"])
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ops", Key="dir/a.bin", IfMatch='"0000"')
    assert code(e) == "PreconditionFailed"
    assert s3.get_object(Bucket="ops", Key="dir/a.bin", IfMatch=put["ETag"])["Body"].read() == body
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ops", Key="dir/a.bin", IfModifiedSince=head["LastModified"])
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    # Copy, list with prefix, delimiter, pages.
    s3.copy_object(Bucket="ops", Key="dir/copy.bin", CopySource={"Bucket": "ops", "Key": "dir/a.bin"})
    assert s3.get_object(Bucket="ops", Key="dir/copy.bin")["Body"].read() == body
    for i in range(7):
        s3.put_object(Bucket="ops", Key=f"page/{i:02d}.txt", Body=f"n{i}".encode())
    odd = "odd/a b+c%d é.txt"  # boto3 lists with encoding-type=url and decodes
    s3.put_object(Bucket="ops", Key=odd, Body=b"odd")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="ops", Prefix="odd/")["Contents"]] == [odd]
    assert s3.get_object(Bucket="ops", Key=odd)["Body"].read() == b"odd"
    s3.delete_object(Bucket="ops", Key=odd)
    top = s3.list_objects_v2(Bucket="ops", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["dir/", "page/"] and "Contents" not in top
    keys, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket="ops", Prefix="page/", MaxKeys=3, **kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        assert page["KeyCount"] <= 3
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert keys == [f"page/{i:02d}.txt" for i in range(7)]
    paginated = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="ops", PaginationConfig={"PageSize": 2})
                 for o in p.get("Contents", [])]
    assert len(paginated) == 9
    # Deletes.
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="ops")
    assert code(e) == "BucketNotEmpty"
    s3.delete_object(Bucket="ops", Key="dir/copy.bin")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="ops", Key="dir/copy.bin")
    assert code(e) == "NoSuchKey"
    deleted = s3.delete_objects(Bucket="ops", Delete={"Objects": [{"Key": k} for k in keys + ["dir/a.bin"]]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == sorted(keys + ["dir/a.bin"])
    assert s3.list_objects_v2(Bucket="ops")["KeyCount"] == 0
    s3.delete_bucket(Bucket="ops")
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket="ops")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket="ops")
    assert code(e) == "NoSuchBucket"


def test_multipart_operations(s3):
    s3.create_bucket(Bucket="mp")
    up = s3.create_multipart_upload(Bucket="mp", Key="m.bin", ContentType="application/x-mp")["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="mp")["Uploads"]] == [up]
    a, b = os.urandom(5 << 20), os.urandom(1000)
    s3.put_object(Bucket="mp", Key="src.bin", Body=b)
    e1 = s3.upload_part(Bucket="mp", Key="m.bin", UploadId=up, PartNumber=1, Body=a)["ETag"]
    e2 = s3.upload_part_copy(Bucket="mp", Key="m.bin", UploadId=up, PartNumber=2, CopySource={"Bucket": "mp", "Key": "src.bin"},
                             CopySourceRange="bytes=100-599")["CopyPartResult"]["ETag"]
    parts = s3.list_parts(Bucket="mp", Key="m.bin", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, len(a)), (2, 500)]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket="mp", Key="m.bin", UploadId=up,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e2}]})
    assert code(e) == "InvalidPart"
    s3.complete_multipart_upload(Bucket="mp", Key="m.bin", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    got = s3.get_object(Bucket="mp", Key="m.bin")
    assert got["Body"].read() == a + b[100:600] and got["ContentType"] == "application/x-mp"
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket="mp", Key="m.bin", UploadId=up)
    assert code(e) == "NoSuchUpload"
    up2 = s3.create_multipart_upload(Bucket="mp", Key="gone.bin")["UploadId"]
    s3.upload_part(Bucket="mp", Key="gone.bin", UploadId=up2, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket="mp", Key="gone.bin", UploadId=up2)
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="mp", Key="gone.bin", UploadId=up2, PartNumber=2, Body=b"x")
    assert code(e) == "NoSuchUpload"
    assert "Uploads" not in s3.list_multipart_uploads(Bucket="mp")


def signed(node, key, method, path, body=b"", headers=None, send_body=None, trailer=False):
    """A request signed by botocore's own SigV4 signer, sent with urllib: (status, body).
    trailer: signed as STREAMING-UNSIGNED-PAYLOAD-TRAILER (as botocore does over https)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    url = node.url + "/storage/v1/s3" + path
    aws = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    if trailer:
        aws.context["checksum"] = {"request_algorithm": {"in": "trailer"}}
    S3SigV4Auth(Credentials(key["access_key_id"], key["secret_access_key"]), "s3", REGION).add_auth(aws)
    data = body if send_body is None else send_body
    request = urllib.request.Request(url, data=data if method in ("PUT", "POST") else None, method=method)
    for k, v in aws.headers.items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_checksums_are_verified_bad_digest_stores_nothing(node, key, s3):
    """x-amz-checksum-* (header and aws-chunked trailer forms) and Content-MD5 are verified against
    the bytes received; a mismatch is BadDigest and no object is stored."""
    import base64
    import hashlib
    import zlib
    s3.create_bucket(Bucket="sums")
    body = os.urandom(300_000)
    crc32 = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    # boto3's default: it computes a CRC32 and sends it; the node verifies it and echoes it.
    put = s3.put_object(Bucket="sums", Key="default.bin", Body=body)
    assert put["ChecksumCRC32"] == crc32
    assert s3.get_object(Bucket="sums", Key="default.bin")["Body"].read() == body
    for alg in ["CRC32", "SHA1", "SHA256"]:  # CRC32C and CRC64NVME need awscrt in botocore: raw below
        s3.put_object(Bucket="sums", Key=f"ok-{alg}.bin", Body=body, ChecksumAlgorithm=alg)
        assert s3.get_object(Bucket="sums", Key=f"ok-{alg}.bin")["Body"].read() == body
    # CRC32C and CRC64NVME (reflected CRCs computed here bit by bit, checked on their check values).
    def crc(data, poly, bits):
        mask = (1 << bits) - 1
        c = mask
        for b in data:
            c ^= b
            for _ in range(8):
                c = (c >> 1) ^ poly if c & 1 else c >> 1
        return c ^ mask
    crc32c = lambda d: crc(d, 0x82F63B78, 32)
    crc64 = lambda d: crc(d, 0x9A6C9329AC4BC9B5, 64)
    assert crc32c(b"123456789") == 0xE3069283 and crc64(b"123456789") == 0xAE8B14860A799888
    small = os.urandom(3000)
    for name, value in [("crc32c", crc32c(small).to_bytes(4, "big")), ("crc64nvme", crc64(small).to_bytes(8, "big"))]:
        good_value = base64.b64encode(value).decode()
        bad_value = base64.b64encode(bytes([value[0] ^ 1]) + value[1:]).decode()
        status, answer = signed(node, key, "PUT", f"/sums/{name}.bin", body=small, headers={f"x-amz-checksum-{name}": bad_value})
        assert status == 400 and b"<Code>BadDigest</Code>" in answer
        with pytest.raises(ClientError):
            s3.head_object(Bucket="sums", Key=f"{name}.bin")
        status, answer = signed(node, key, "PUT", f"/sums/{name}.bin", body=small, headers={f"x-amz-checksum-{name}": good_value})
        assert status == 200, answer
        assert s3.get_object(Bucket="sums", Key=f"{name}.bin")["Body"].read() == small
    # A wrong value given to boto3 is sent as is: BadDigest, nothing stored.
    wrong = base64.b64encode((zlib.crc32(body) ^ 1).to_bytes(4, "big")).decode()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="sums", Key="bad.bin", Body=body, ChecksumCRC32=wrong)
    assert code(e) == "BadDigest" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="sums", Key="bad.bin")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    wrong_sha = base64.b64encode(hashlib.sha256(body + b"x").digest()).decode()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="sums", Key="bad.bin", Body=body, ChecksumSHA256=wrong_sha)
    assert code(e) == "BadDigest"
    # Content-MD5.
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="sums", Key="bad.bin", Body=body, ContentMD5=base64.b64encode(hashlib.md5(b"x").digest()).decode())
    assert code(e) == "BadDigest"
    s3.put_object(Bucket="sums", Key="md5.bin", Body=body, ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode())
    # A part with a wrong checksum is refused too; the right one is echoed.
    up = s3.create_multipart_upload(Bucket="sums", Key="m.bin")["UploadId"]
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="sums", Key="m.bin", UploadId=up, PartNumber=1, Body=body, ChecksumCRC32=wrong)
    assert code(e) == "BadDigest"
    assert "Parts" not in s3.list_parts(Bucket="sums", Key="m.bin", UploadId=up)
    assert s3.upload_part(Bucket="sums", Key="m.bin", UploadId=up, PartNumber=1, Body=body)["ChecksumCRC32"] == crc32
    s3.abort_multipart_upload(Bucket="sums", Key="m.bin", UploadId=up)
    # The trailer form (aws-chunked, STREAMING-UNSIGNED-PAYLOAD-TRAILER), right and wrong.
    data = b"hello trailer"
    good = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    for value, expect in [(wrong, 400), (good, 200)]:
        chunked = b"%x\r\n" % len(data) + data + b"\r\n0\r\nx-amz-checksum-crc32:" + value.encode() + b"\r\n\r\n"
        status, answer = signed(node, key, "PUT", "/sums/trailer.bin", body=chunked, trailer=True,
                                headers={"Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
                                         "x-amz-decoded-content-length": str(len(data))})
        assert status == expect, answer
        if expect == 400:
            assert b"<Code>BadDigest</Code>" in answer
            with pytest.raises(ClientError):
                s3.head_object(Bucket="sums", Key="trailer.bin")
    assert s3.get_object(Bucket="sums", Key="trailer.bin")["Body"].read() == data
    # Two checksum headers, or a value that is not a digest: 400, nothing stored.
    status, _ = signed(node, key, "PUT", "/sums/two.bin", body=data, headers={"x-amz-checksum-crc32": good, "x-amz-checksum-sha1": good})
    assert status == 400
    status, _ = signed(node, key, "PUT", "/sums/two.bin", body=data, headers={"x-amz-checksum-crc32": "not base64!"})
    assert status == 400


def test_malformed_xml_is_400_not_500(node, key, s3):
    s3.create_bucket(Bucket="xml")
    for body in [b"<Delete><Object><Key>a</Key></Object>", b"<" * 100, b"<a>" * 50 + b"</a>" * 50, b"<!DOCTYPE x [<!ENTITY a 'b'>]><Delete/>",
                 b"<Other/>", b"\xff\xfe"]:
        status, answer = signed(node, key, "POST", "/xml?delete", body)
        assert status == 400 and b"<Code>MalformedXML</Code>" in answer, (body, answer)


def test_bad_input_answers_s3_errors_never_500(node, key, s3):
    s3.create_bucket(Bucket="bad")
    up = s3.create_multipart_upload(Bucket="bad", Key="k")["UploadId"]
    cases = [
        ("PUT", f"/bad/k?partNumber=0&uploadId={up}", b"x", {}, "InvalidArgument"),
        ("PUT", f"/bad/k?partNumber=99999999999999999999&uploadId={up}", b"x", {}, "InvalidArgument"),
        ("PUT", "/bad/k?partNumber=1&uploadId=nope", b"x", {}, "NoSuchUpload"),
        ("POST", f"/bad/k?uploadId={up}", b"<CompleteMultipartUpload></CompleteMultipartUpload>", {}, "MalformedXML"),
        ("POST", f"/bad/k?uploadId={up}", b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber></Part></CompleteMultipartUpload>", {}, "MalformedXML"),
        ("GET", "/bad?list-type=2&max-keys=-1", b"", {}, "InvalidArgument"),
        ("GET", "/bad?list-type=2&continuation-token=%21%21%21", b"", {}, "InvalidArgument"),
        ("GET", "/bad?list-type=2&delimiter=x", b"", {}, "NotImplemented"),
        ("PUT", "/bad/a/../b", b"x", {}, "InvalidArgument"),
        ("PUT", "/bad/copy", b"", {"x-amz-copy-source": "nobucket"}, "InvalidArgument"),
        ("PUT", "/bad/copy", b"", {"x-amz-copy-source": "/bad/missing"}, "NoSuchKey"),
        ("GET", "/missing-bucket/k", b"", {}, "NoSuchBucket"),
        ("PUT", "/bad/k?tagging", b"<Tagging/>", {}, "NotImplemented"),
        ("PUT", "/bad/k", b"x" * 10, {"x-amz-meta-" + "m" * 10: "v" * 20000}, "MetadataTooLarge"),
    ]
    for method, path, body, headers, expected in cases:
        status, answer = signed(node, key, method, path, body, headers)
        assert 400 <= status < 500 or status == 501, (path, status, answer)
        assert f"<Code>{expected}</Code>".encode() in answer, (path, answer)
    # A body that does not hash to its signed x-amz-content-sha256 is refused and not stored.
    status, answer = signed(node, key, "PUT", "/bad/lie", b"true body", send_body=b"fake body")
    assert status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in answer, answer
    status, _ = signed(node, key, "GET", "/bad/lie")
    assert status == 404


def test_wrong_secret_expired_presigned_and_revoked_key_are_refused(node, key, s3):
    s3.create_bucket(Bucket="auth")
    s3.put_object(Bucket="auth", Key="f.txt", Body=b"secret bytes")
    bad = client(node.url, key["access_key_id"], "x" * 40)
    with pytest.raises(ClientError) as e:
        bad.get_object(Bucket="auth", Key="f.txt")
    assert code(e) == "SignatureDoesNotMatch"
    unknown = client(node.url, "AKNOSUCHKEY000000000", key["secret_access_key"])
    with pytest.raises(ClientError) as e:
        unknown.list_buckets()
    assert code(e) == "InvalidAccessKeyId"
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "auth", "Key": "f.txt"}, ExpiresIn=60)
    assert urllib.request.urlopen(url, timeout=10).read() == b"secret bytes"
    tampered = url.replace("f.txt", "g.txt")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(tampered, timeout=10)
    assert e.value.code == 403
    short = s3.generate_presigned_url("get_object", Params={"Bucket": "auth", "Key": "f.txt"}, ExpiresIn=1)
    time.sleep(2.5)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(short, timeout=10)
    assert e.value.code == 403 and b"expired" in e.value.read()
    too_long = s3.generate_presigned_url("get_object", Params={"Bucket": "auth", "Key": "f.txt"}, ExpiresIn=8 * 86400)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(too_long, timeout=10)
    assert e.value.code == 400
    # A revoked key (CLI) is refused.
    extra = cli_key(os.path.join(node.dir, "n1"), node.url)
    other = client(node.url, extra["access_key_id"], extra["secret_access_key"])
    assert other.get_object(Bucket="auth", Key="f.txt")["Body"].read() == b"secret bytes"
    listed = subprocess.run([BINARY, "storage", "keys", "list", "--url", node.url, "--dir", os.path.join(node.dir, "n1"), "--json"],
                            check=True, capture_output=True, text=True).stdout
    assert extra["access_key_id"] in listed and extra["secret_access_key"] not in listed
    subprocess.run([BINARY, "storage", "keys", "revoke", extra["access_key_id"], "--url", node.url, "--dir", os.path.join(node.dir, "n1")],
                   check=True, capture_output=True)
    with pytest.raises(ClientError) as e:
        other.get_object(Bucket="auth", Key="f.txt")
    assert code(e) == "InvalidAccessKeyId"
    # The secret is never listed, nor stored in the clear (sealed with AES-GCM): no file of the
    # node's directory (WAL, checkpoints) holds its bytes.
    rows = node.admin("GET", "storage/s3-keys")
    assert all("secret_access_key" not in r for r in rows)
    secret = key["secret_access_key"].encode()
    for root, _, files in os.walk(os.path.join(node.dir, "n1")):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert secret not in f.read(), os.path.join(root, name)


def test_supabase_client_and_s3_read_each_others_objects(node, s3):
    sb = create_client(node.url, node.service)
    sb.storage.create_bucket("shared")
    data = os.urandom(300_000)
    s3.put_object(Bucket="shared", Key="from-s3/x.bin", Body=data)
    assert sb.storage.from_("shared").download("from-s3/x.bin") == data
    other = os.urandom(200_000)
    sb.storage.from_("shared").upload("from-sb/y.bin", other, {"content-type": "application/octet-stream"})
    assert s3.get_object(Bucket="shared", Key="from-sb/y.bin")["Body"].read() == other


def test_session_form_applies_storage_policies(node):
    admin = create_client(node.url, node.service)
    admin.auth.admin.create_user({"email": "s3user@example.com", "password": "s3 user pw 1", "email_confirm": True})
    admin.storage.create_bucket("private")
    admin.storage.from_("private").upload("alice/a.txt", b"alice's", {"content-type": "text/plain"})
    sb = create_client(node.url, node.anon, options=ClientOptions(auto_refresh_token=False, persist_session=False))
    session = sb.auth.sign_in_with_password({"email": "s3user@example.com", "password": "s3 user pw 1"}).session
    user = client(node.url, "aerodb", node.anon, token=session.access_token)
    # No policy: the user sees nothing and may write nothing.
    with pytest.raises(ClientError) as e:
        user.get_object(Bucket="private", Key="alice/a.txt")
    assert code(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        user.put_object(Bucket="private", Key="mine/x.txt", Body=b"x")
    assert code(e) == "AccessDenied"
    # A policy letting authenticated users read and write the bucket.
    req = urllib.request.Request(node.url + "/storage/v1/policies", method="POST",
                                 data=json.dumps({"name": "s3_private", "operation": "all", "roles": ["authenticated"],
                                                  "using": "bucket_id = 'private'"}).encode(),
                                 headers={"Authorization": f"Bearer {node.service}", "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()
    assert user.get_object(Bucket="private", Key="alice/a.txt")["Body"].read() == b"alice's"
    user.put_object(Bucket="private", Key="mine/x.txt", Body=b"x")
    # A wrong anon key (secret) is refused.
    wrong = client(node.url, "aerodb", node.anon + "x", token=session.access_token)
    with pytest.raises(ClientError) as e:
        wrong.list_objects_v2(Bucket="private")
    assert code(e) == "SignatureDoesNotMatch"


def aws(node_url, key, *args, timeout=120, check=True):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key["access_key_id"], AWS_SECRET_ACCESS_KEY=key["secret_access_key"],
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    return subprocess.run([AWS, "--endpoint-url", node_url + "/storage/v1/s3", "s3", *args], env=env, check=check,
                          capture_output=True, text=True, timeout=timeout).stdout


SYNC_FILES = 1000


def test_aws_cli_mb_cp_sync_ls_rm(node, key, tmp_path):
    aws(node.url, key, "mb", "s3://cli")
    src = tmp_path / "big.bin"
    data = os.urandom(12 << 20)  # over the CLI's 8 MB multipart threshold
    src.write_bytes(data)
    aws(node.url, key, "cp", str(src), "s3://cli/big.bin")
    back = tmp_path / "back.bin"
    aws(node.url, key, "cp", "s3://cli/big.bin", str(back))
    assert back.read_bytes() == data
    folder = tmp_path / "many"
    for i in range(SYNC_FILES):
        d = folder / f"d{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(f"file {i}\n".encode())
    started = time.time()
    aws(node.url, key, "sync", str(folder), "s3://cli/many", timeout=300)
    print(f"aws s3 sync of {SYNC_FILES} files: {time.time() - started:.1f} s")
    listing = aws(node.url, key, "ls", "--recursive", "s3://cli/many/")
    assert len(listing.strip().splitlines()) == SYNC_FILES
    assert "PRE many/" in aws(node.url, key, "ls", "s3://cli/")
    # A second sync uploads nothing.
    assert aws(node.url, key, "sync", str(folder), "s3://cli/many").strip() == ""
    aws(node.url, key, "rm", "--recursive", "s3://cli/many")
    assert aws(node.url, key, "ls", "--recursive", "s3://cli/many/", check=False).strip() == ""  # exit 1: nothing listed
    assert [o["Key"] for o in client(node.url, key["access_key_id"], key["secret_access_key"])
            .list_objects_v2(Bucket="cli").get("Contents", [])] == ["big.bin"]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(nodes=3)
    yield c
    c.stop()


def test_multipart_and_range_through_a_replica_of_three_nodes(cluster):
    """ST7: an acknowledged CompleteMultipartUpload sent to a replica (forwarded to the primary)
    is an object every member serves; 100 MB in 8 MB parts (the issue's case)."""
    assert cluster.admin(1, "GET", "status")["role"] == "replica"
    key = cli_key(os.path.join(cluster.dir, "n1"), cluster.urls[1])
    s3 = client(cluster.urls[1], key["access_key_id"], key["secret_access_key"])
    s3.create_bucket(Bucket="big")
    data = os.urandom(100 * 1000 * 1000)
    from boto3.s3.transfer import TransferConfig
    s3.upload_fileobj(io.BytesIO(data), "big", "hundred.bin",
                      Config=TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4))
    for url in cluster.urls:
        other = client(url, key["access_key_id"], key["secret_access_key"])
        assert other.head_object(Bucket="big", Key="hundred.bin")["ContentLength"] == len(data)
        got = other.get_object(Bucket="big", Key="hundred.bin", Range="bytes=70000000-70999999")["Body"].read()
        assert got == data[70_000_000:71_000_000]
    whole = io.BytesIO()
    s3.download_fileobj("big", "hundred.bin", whole)
    assert whole.getvalue() == data


def test_an_acknowledged_complete_multipart_upload_survives_kill_9_of_the_primary_and_a_failover():
    """ST7: CompleteMultipartUpload acknowledged (sync commit mode), then the primary is killed
    with SIGKILL at once and a replica promoted with `aerodb promote`: the object is whole and
    byte-identical on the new primary and on the other live member."""
    c = Cluster(nodes=3)
    try:
        key = cli_key(os.path.join(c.dir, "n1"), c.urls[0])
        s3 = client(c.urls[1], key["access_key_id"], key["secret_access_key"])  # through a replica
        s3.create_bucket(Bucket="crash")
        parts_data = [os.urandom(5 << 20), os.urandom(5 << 20), os.urandom(1 << 20)]
        upload = s3.create_multipart_upload(Bucket="crash", Key="whole.bin")["UploadId"]
        parts = []
        for number, chunk in enumerate(parts_data, start=1):
            etag = s3.upload_part(Bucket="crash", Key="whole.bin", UploadId=upload, PartNumber=number, Body=chunk)["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
        s3.complete_multipart_upload(Bucket="crash", Key="whole.bin", UploadId=upload, MultipartUpload={"Parts": parts})
        c.processes[0].kill()  # kill -9 the primary right after the acknowledgement
        c.processes[0].wait(timeout=10)
        promoted, reports = None, []
        for candidate in (1, 2):
            out = subprocess.run([BINARY, "promote", "--url", c.urls[candidate], "--key", c.service, "--json"],
                                 capture_output=True, text=True, timeout=60)
            reports.append(out.stdout + out.stderr)
            if out.returncode == 0:
                promoted = candidate
                break
        assert promoted is not None, reports
        data = b"".join(parts_data)
        for i in (1, 2):
            member = client(c.urls[i], key["access_key_id"], key["secret_access_key"])
            deadline = time.time() + 30
            while True:
                try:
                    got = member.get_object(Bucket="crash", Key="whole.bin")["Body"].read()
                    break
                except ClientError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)  # the other member follows the new primary
            assert got == data, f"n{i + 1} serves {len(got)} bytes, not the acknowledged {len(data)}"
    finally:
        c.stop()
