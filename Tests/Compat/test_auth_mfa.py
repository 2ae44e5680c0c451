"""TOTP multi-factor through the official client (`auth.mfa.*`, `auth.admin.mfa.*`) with codes
computed by pyotp (a real RFC 6238 implementation), against a real node: enroll, challenge,
verify (aal1 -> aal2, amr), a policy that requires aal2, replay and wrong codes refused,
unenroll needing aal2, the admin's recovery of a user who lost the device, a cluster where a
factor enrolled on n2 is verified on n3."""
import base64
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request

import pyotp
import pytest
from supabase import ClientOptions, create_client
from supabase_auth.errors import AuthApiError

from conftest import Node
from test_auth import SETTINGS, email


def client(url, key):
    return create_client(url, key, options=ClientOptions(auto_refresh_token=False, persist_session=False))


def claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def decode_qr(data_url):
    """The text of the SVG QR code the client got (data:image/svg+xml;utf-8,<svg>), read by a real
    decoder: the modules are drawn 8 pixels each into a PBM image for zbarimg (Debian zbar-tools)."""
    svg = data_url.split(",", 1)[1]
    size = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1))
    dark = {(int(x), int(y)) for x, y in re.findall(r"M(\d+) (\d+)h1v1h-1z", svg)}
    scale = 8
    rows = []
    for y in range(size * scale):
        rows.append(" ".join("1" if (x // scale, y // scale) in dark else "0" for x in range(size * scale)))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "qr.pbm")
        with open(path, "w") as f:
            f.write(f"P1\n{size * scale} {size * scale}\n" + "\n".join(rows) + "\n")
        out = subprocess.run(["zbarimg", "--quiet", "--raw", path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def fresh_code(totp, used):
    """The current code, waiting for the next 30 s step when this one was already used (a step
    is accepted once per factor)."""
    while True:
        code = totp.now()
        if code not in used:
            used.add(code)
            return code
        time.sleep(1)


@pytest.fixture(scope="module")
def node():
    n = Node(auth=SETTINGS)
    n.admin("POST", "collections", {"name": "vault", "fields": {"id": {"type": "text"}, "owner": {"type": "uuid"}}})
    n.admin("POST", "collections/vault/policies", {"name": "owner_with_mfa", "operation": "all", "roles": ["authenticated"],
                                                    "using": "owner = auth.uid() and auth.jwt() ->> 'aal' = 'aal2'",
                                                    "check": "owner = auth.uid() and auth.jwt() ->> 'aal' = 'aal2'"})
    n.admin("POST", "collections/vault/rls", {"enabled": True})
    yield n
    n.stop()


def signed_in(node):
    address, password = email(), "correct horse 1"
    client(node.url, node.service).auth.admin.create_user({"email": address, "password": password, "email_confirm": True})
    c = client(node.url, node.anon)
    c.auth.sign_in_with_password({"email": address, "password": password})
    return c


def test_enroll_challenge_verify_raises_the_session_to_aal2_and_a_policy_requires_it(node):
    c = signed_in(node)
    user_id = c.auth.get_user().user.id
    assert c.auth.mfa.get_authenticator_assurance_level().current_level == "aal1"
    enrolled = c.auth.mfa.enroll({"factor_type": "totp", "friendly_name": "phone", "issuer": "AeroDB test"})
    assert enrolled.type == "totp" and enrolled.totp.uri.startswith("otpauth://totp/AeroDB%20test:")
    assert f"secret={enrolled.totp.secret}" in enrolled.totp.uri
    assert decode_qr(enrolled.totp.qr_code) == enrolled.totp.uri  # a real QR decoder reads the URI
    totp, used = pyotp.TOTP(enrolled.totp.secret), set()
    # Before verification the factor is unverified; the session is still aal1 and the vault is closed.
    assert [f.status for f in c.auth.mfa.list_factors().all] == ["unverified"]
    with pytest.raises(Exception):
        c.table("vault").insert({"id": "v1", "owner": user_id}).execute()

    challenge = c.auth.mfa.challenge({"factor_id": enrolled.id})
    assert challenge.expires_at > time.time()
    with pytest.raises(AuthApiError) as wrong:
        c.auth.mfa.verify({"factor_id": enrolled.id, "challenge_id": challenge.id, "code": "000000" if totp.now() != "000000" else "111111"})
    assert wrong.value.code == "mfa_verification_failed"
    code = fresh_code(totp, used)
    c.auth.mfa.verify({"factor_id": enrolled.id, "challenge_id": challenge.id, "code": code})
    level = c.auth.mfa.get_authenticator_assurance_level()
    assert level.current_level == "aal2" and level.next_level == "aal2"
    assert [m.method for m in level.current_authentication_methods][:2] == ["totp", "password"]
    assert [f.status for f in c.auth.mfa.list_factors().totp] == ["verified"]
    c.table("vault").insert({"id": "v1", "owner": user_id}).execute()
    assert [r["id"] for r in c.table("vault").select("*").execute().data] == ["v1"]

    # The same code again (a replay) is refused even on a new challenge.
    again = c.auth.mfa.challenge({"factor_id": enrolled.id})
    with pytest.raises(AuthApiError) as replay:
        c.auth.mfa.verify({"factor_id": enrolled.id, "challenge_id": again.id, "code": code})
    assert replay.value.code == "mfa_verification_failed"

    # A refresh keeps aal2; a new password sign-in is aal1 again and sees nothing in the vault.
    refreshed = c.auth.refresh_session()
    assert claims(refreshed.session.access_token)["aal"] == "aal2"
    other = client(node.url, node.anon)
    other.auth.sign_in_with_password({"email": c.auth.get_user().user.email, "password": "correct horse 1"})
    assert claims(other.auth.get_session().access_token)["aal"] == "aal1"
    assert other.auth.mfa.get_authenticator_assurance_level().next_level == "aal2"
    assert other.table("vault").select("*").execute().data == []
    # An aal1 session may neither unenroll the verified factor nor enroll another.
    with pytest.raises(AuthApiError) as weak:
        other.auth.mfa.unenroll({"factor_id": enrolled.id})
    assert weak.value.code == "insufficient_aal"
    with pytest.raises(AuthApiError):
        other.auth.mfa.enroll({"factor_type": "totp"})
    # The aal2 session may.
    assert c.auth.mfa.unenroll({"factor_id": enrolled.id}).id == enrolled.id
    assert c.auth.mfa.list_factors().all == []


def test_admin_recovers_a_user_who_lost_the_device(node):
    c = signed_in(node)
    user_id = c.auth.get_user().user.id
    enrolled = c.auth.mfa.enroll({"factor_type": "totp"})
    c.auth.mfa.challenge_and_verify({"factor_id": enrolled.id, "code": pyotp.TOTP(enrolled.totp.secret).now()})
    admin = client(node.url, node.service).auth.admin
    listed = admin.mfa.list_factors({"user_id": user_id})
    assert [f.id for f in listed] == [enrolled.id]
    admin.mfa.delete_factor({"user_id": user_id, "id": enrolled.id})
    assert admin.mfa.list_factors({"user_id": user_id}) == []
    # The factor is gone: the user signs in at aal1 with nothing more to reach.
    assert c.auth.mfa.list_factors().all == []


def test_bad_requests_are_clear_errors(node):
    c = signed_in(node)
    with pytest.raises(AuthApiError) as phone:
        c.auth.mfa.enroll({"factor_type": "phone", "phone": "+15555550100"})
    assert phone.value.code == "mfa_phone_enroll_not_enabled"
    with pytest.raises(AuthApiError) as missing:
        c.auth.mfa.challenge({"factor_id": "00000000-0000-0000-0000-000000000000"})
    assert missing.value.code == "mfa_factor_not_found"
    enrolled = c.auth.mfa.enroll({"factor_type": "totp", "friendly_name": "a"})
    with pytest.raises(AuthApiError) as dup:
        c.auth.mfa.enroll({"factor_type": "totp", "friendly_name": "a"})
    assert dup.value.code == "mfa_factor_name_conflict"
    # Five wrong codes end a challenge.
    challenge = c.auth.mfa.challenge({"factor_id": enrolled.id})
    good = pyotp.TOTP(enrolled.totp.secret)
    for _ in range(5):
        with pytest.raises(AuthApiError):
            c.auth.mfa.verify({"factor_id": enrolled.id, "challenge_id": challenge.id, "code": str((int(good.now()) + 500_000) % 1_000_000).zfill(6)})
    with pytest.raises(AuthApiError) as ended:
        c.auth.mfa.verify({"factor_id": enrolled.id, "challenge_id": challenge.id, "code": good.now()})
    assert ended.value.code == "mfa_challenge_not_found"
    # A new challenge does not reset the count: the factor takes no challenge for 5 minutes
    # (guessing is bounded per factor, whatever the caller's address or node).
    with pytest.raises(AuthApiError) as locked:
        c.auth.mfa.challenge({"factor_id": enrolled.id})
    assert locked.value.status == 429 and locked.value.code == "over_request_rate_limit"
    assert "wrong codes" in locked.value.message
    # The secret is not stored in the clear.
    rows = node.admin("POST", "query", {"collection": "_auth_mfa_factors", "filter": {"id": enrolled.id}})["rows"]
    assert rows and enrolled.totp.secret not in json.dumps(rows)


def test_cluster_enroll_on_n2_verify_on_n3():
    from conftest import Cluster
    cluster = Cluster(nodes=3)
    try:
        address = email()
        client(cluster.urls[0], cluster.service).auth.admin.create_user({"email": address, "password": "correct horse 1", "email_confirm": True})
        n2 = client(cluster.urls[1], cluster.anon)
        n2.auth.sign_in_with_password({"email": address, "password": "correct horse 1"})
        enrolled = n2.auth.mfa.enroll({"factor_type": "totp"})
        session = n2.auth.get_session()
        n3 = client(cluster.urls[2], cluster.anon)
        n3.auth.set_session(session.access_token, session.refresh_token)
        verified = n3.auth.mfa.challenge_and_verify({"factor_id": enrolled.id, "code": pyotp.TOTP(enrolled.totp.secret).now()})
        assert claims(verified.access_token)["aal"] == "aal2"
        assert n3.auth.mfa.get_authenticator_assurance_level().current_level == "aal2"
    finally:
        cluster.stop()
