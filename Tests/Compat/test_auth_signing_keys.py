"""Asymmetric signing keys through the official client: before any key, HS256 tokens; after
`aerodb auth keys rotate`, ES256 tokens with a kid that `auth.get_claims()` verifies through
/auth/v1/.well-known/jwks.json; a second rotation during which old and new tokens both verify;
the legacy HS256 anon and service keys keep working; an unknown kid or a forged signature is
refused; in a cluster a token signed on one node verifies on another."""
import base64
import json
import subprocess
import urllib.error
import urllib.request

import pytest
from supabase import ClientOptions, create_client

from conftest import BINARY, Node
from test_auth import SETTINGS, email


def client(url, key):
    return create_client(url, key, options=ClientOptions(auto_refresh_token=False, persist_session=False))


def header(token):
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def rotate(url, service):
    out = subprocess.run([BINARY, "auth", "keys", "rotate", "--url", url, "--key", service], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def rest_status(url, anon, token, path="notes?select=id"):
    request = urllib.request.Request(f"{url}/rest/v1/{path}", headers={"apikey": anon, "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def sign_in(url, anon, service):
    address = email()
    client(url, service).auth.admin.create_user({"email": address, "password": "correct horse 1", "email_confirm": True})
    c = client(url, anon)
    c.auth.sign_in_with_password({"email": address, "password": "correct horse 1"})
    return c


@pytest.fixture(scope="module")
def node():
    n = Node(auth=SETTINGS)
    n.admin("POST", "collections", {"name": "notes", "fields": {"id": {"type": "text"}}})
    yield n
    n.stop()


def test_rotation_switches_to_es256_and_old_and_new_tokens_verify(node):
    before = sign_in(node.url, node.anon, node.service)
    hs = before.auth.get_session().access_token
    assert header(hs)["alg"] == "HS256"
    with urllib.request.urlopen(node.url + "/auth/v1/.well-known/jwks.json", timeout=10) as r:
        assert json.loads(r.read()) == {"keys": []}

    assert "rotated" in rotate(node.url, node.service)
    first = sign_in(node.url, node.anon, node.service)
    es1 = first.auth.get_session().access_token
    assert header(es1)["alg"] == "ES256" and header(es1)["kid"]
    claims = first.auth.get_claims()  # verified by the client with the JWKS public key
    assert claims["claims"]["sub"] == first.auth.get_user().user.id and claims["headers"]["kid"] == header(es1)["kid"]
    assert rest_status(node.url, node.anon, es1) == 200
    assert rest_status(node.url, node.anon, hs) == 200  # HS256 tokens issued before still verify
    assert rest_status(node.url, node.anon, node.anon) == 200 and rest_status(node.url, node.anon, node.service) == 200

    rotate(node.url, node.service)
    second = sign_in(node.url, node.anon, node.service)
    es2 = second.auth.get_session().access_token
    assert header(es2)["kid"] != header(es1)["kid"]
    with urllib.request.urlopen(node.url + "/auth/v1/.well-known/jwks.json", timeout=10) as r:
        kids = [k["kid"] for k in json.loads(r.read())["keys"]]
    assert kids == [header(es2)["kid"], header(es1)["kid"]]  # current first, previous within its window
    assert rest_status(node.url, node.anon, es1) == 200 and rest_status(node.url, node.anon, es2) == 200
    assert second.auth.get_claims()["claims"]["sub"] == second.auth.get_user().user.id
    # A refresh signs with the current key.
    assert header(first.auth.refresh_session().session.access_token)["kid"] == header(es2)["kid"]

    listed = subprocess.run([BINARY, "auth", "keys", "list", "--url", node.url, "--key", node.service, "--json"],
                            capture_output=True, text=True, timeout=60)
    statuses = sorted(k["status"] for k in json.loads(listed.stdout)["keys"])
    assert statuses == ["current", "previous"] and "private" not in listed.stdout


def test_unknown_kid_and_forged_signatures_are_refused(node):
    rotate(node.url, node.service)
    c = sign_in(node.url, node.anon, node.service)
    token = c.auth.get_session().access_token
    h, p, s = token.split(".")
    forged_header = base64.urlsafe_b64encode(json.dumps({**header(token), "kid": "not-a-key"}, separators=(",", ":")).encode()).decode().rstrip("=")
    assert rest_status(node.url, node.anon, f"{forged_header}.{p}.{s}") == 401
    flipped = s[:10] + ("A" if s[10] != "A" else "B") + s[11:]
    assert rest_status(node.url, node.anon, f"{h}.{p}.{flipped}") == 401
    none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    assert rest_status(node.url, node.anon, f"{none}.{p}.") == 401


def test_cluster_a_token_signed_on_one_node_verifies_on_the_others():
    from conftest import Cluster
    cluster = Cluster(nodes=3)
    try:
        cluster.admin(0, "POST", "collections", {"name": "notes", "fields": {"id": {"type": "text"}}})
        rotate(cluster.urls[2], cluster.service)  # forwarded to the primary
        c = sign_in(cluster.urls[1], cluster.anon, cluster.service)
        token = c.auth.get_session().access_token
        assert header(token)["alg"] == "ES256"
        for url in cluster.urls:
            assert rest_status(url, cluster.anon, token) == 200
    finally:
        cluster.stop()
