"""The official Supabase Python client (supabase==2.34.1, package supabase_auth) against real
AeroDB nodes: /auth/v1 flows, error codes, the dev outbox. Mail is read from GET /admin/v1/outbox."""
import base64
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from supabase import ClientOptions, create_client
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from conftest import Node

SETTINGS = {
    "mailer_autoconfirm": False,
    "anonymous_sign_ins": True,
    "redirect_urls": ["http://app.test/*"],
    "refresh_token_reuse_interval": 0,
    # Cheap hashes keep the suite fast; the default cost is measured by `aerodb bench --workload auth`.
    "argon2": {"memory_kib": 8192, "iterations": 1, "parallelism": 1},
    "rate_limits": {"signup": {"limit": 1000, "window_seconds": 60}, "token": {"limit": 1000, "window_seconds": 60},
                    "verify": {"limit": 1000, "window_seconds": 60}, "otp": {"limit": 1000, "window_seconds": 60},
                    "email_per_address": {"limit": 100, "window_seconds": 60}},
}


@pytest.fixture(scope="module")
def auth_node():
    n = Node(auth=SETTINGS)
    yield n
    n.stop()


def client(node, key=None, flow_type="implicit"):
    """The implicit flow: mail links carry the session in the fragment (PKCE mode has its own test)."""
    return create_client(node.url, key or node.anon,
                         options=ClientOptions(auto_refresh_token=False, persist_session=False, flow_type=flow_type))


def email():
    return f"u{uuid.uuid4().hex[:10]}@example.com"


def last_mail(node, to):
    messages = node.admin("GET", "outbox?to=" + urllib.parse.quote(to))["messages"]
    assert messages, f"no mail for {to}"
    return messages[0]


def code_of(message):
    return re.search(r"code (\d+)", message["body"]).group(1)


def confirmed_user(node, address, password="correct horse 1"):
    admin = client(node, node.service).auth.admin
    return admin.create_user({"email": address, "password": password, "email_confirm": True}).user


def test_signup_confirmation_by_code_then_sign_in(auth_node):
    sb, address = client(auth_node), email()
    r = sb.auth.sign_up({"email": address, "password": "hunter22", "options": {"data": {"plan": "free"}}})
    assert r.session is None and r.user.email == address and r.user.user_metadata == {"plan": "free"}
    with pytest.raises(AuthApiError) as e:
        sb.auth.sign_in_with_password({"email": address, "password": "hunter22"})
    assert e.value.code == "email_not_confirmed"
    mail = last_mail(auth_node, address)
    assert mail["type"] == "signup" and "/auth/v1/verify?token=" in mail["link"]
    verified = sb.auth.verify_otp({"email": address, "token": code_of(mail), "type": "signup"})
    assert verified.session.access_token and verified.user.email_confirmed_at is not None
    with pytest.raises(AuthApiError) as e:  # single use
        sb.auth.verify_otp({"email": address, "token": code_of(mail), "type": "signup"})
    assert e.value.code == "otp_expired"
    session = sb.auth.sign_in_with_password({"email": address, "password": "hunter22"}).session
    assert session.user.id == verified.user.id and session.token_type == "bearer" and session.expires_in == 3600
    assert sb.auth.get_user(session.access_token).user.id == session.user.id


def test_access_token_claims(auth_node):
    sb, address = client(auth_node), email()
    confirmed_user(auth_node, address)
    session = sb.auth.sign_in_with_password({"email": address, "password": "correct horse 1"}).session
    import base64
    payload = session.access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == session.user.id and claims["role"] == "authenticated" and claims["aud"] == "authenticated"
    assert claims["email"] == address and claims["aal"] == "aal1" and claims["amr"][0]["method"] == "password"
    assert claims["exp"] - claims["iat"] == 3600 and claims["is_anonymous"] is False
    assert uuid.UUID(claims["session_id"]) and claims["app_metadata"]["provider"] == "email"


def test_wrong_password_duplicate_and_weak_password_errors(auth_node):
    sb, address = client(auth_node), email()
    confirmed_user(auth_node, address)
    with pytest.raises(AuthApiError) as e:
        sb.auth.sign_in_with_password({"email": address, "password": "nope-nope"})
    assert e.value.code == "invalid_credentials" and e.value.status == 400
    with pytest.raises(AuthApiError) as e:
        sb.auth.sign_in_with_password({"email": email(), "password": "nope-nope"})
    assert e.value.code == "invalid_credentials"
    # With confirmations on, signing up an existing address answers a look-alike user (no mail,
    # no session), so sign-up does not reveal who has an account (as GoTrue).
    existing = admin_id = client(auth_node, auth_node.service).auth.admin.list_users(per_page=1000)
    real = next(u.id for u in existing if u.email == address)
    masked = sb.auth.sign_up({"email": address, "password": "another1"})
    assert masked.session is None and masked.user.email == address and masked.user.id != real
    with pytest.raises(AuthWeakPasswordError) as e:
        sb.auth.sign_up({"email": email(), "password": "abc"})
    assert e.value.code == "weak_password" and e.value.reasons == ["length"]
    with pytest.raises(AuthApiError) as e:
        sb.auth.sign_up({"email": "not-an-email", "password": "abcdefgh"})
    assert e.value.code == "email_address_invalid"


def test_refresh_rotates_and_reuse_revokes_the_family(auth_node):
    sb, address = client(auth_node), email()
    confirmed_user(auth_node, address)
    first = sb.auth.sign_in_with_password({"email": address, "password": "correct horse 1"}).session
    second = sb.auth.refresh_session(first.refresh_token).session
    assert second.refresh_token != first.refresh_token
    sid = lambda s: json.loads(__import__("base64").urlsafe_b64decode(s.access_token.split(".")[1] + "=="))["session_id"]
    assert sid(second) == sid(first)
    third = sb.auth.refresh_session(second.refresh_token).session
    with pytest.raises(AuthApiError) as e:  # the first token again: reuse
        client(auth_node).auth.refresh_session(first.refresh_token)
    assert e.value.code == "refresh_token_already_used"
    with pytest.raises(AuthApiError) as e:  # the whole family went with it
        client(auth_node).auth.refresh_session(third.refresh_token)
    assert e.value.code == "refresh_token_not_found"
    with pytest.raises(AuthApiError):  # and the access token of that session is refused
        client(auth_node).auth.get_user(third.access_token)


def test_update_metadata_and_password_then_old_password_is_refused(auth_node):
    sb, address = client(auth_node), email()
    confirmed_user(auth_node, address)
    sb.auth.sign_in_with_password({"email": address, "password": "correct horse 1"})
    user = sb.auth.update_user({"data": {"theme": "dark"}}).user
    assert user.user_metadata == {"theme": "dark"}
    with pytest.raises(AuthApiError) as e:
        sb.auth.update_user({"password": "correct horse 1"})
    assert e.value.code == "same_password"
    sb.auth.update_user({"password": "battery staple 2"})
    with pytest.raises(AuthApiError) as e:
        client(auth_node).auth.sign_in_with_password({"email": address, "password": "correct horse 1"})
    assert e.value.code == "invalid_credentials"
    assert client(auth_node).auth.sign_in_with_password({"email": address, "password": "battery staple 2"}).session


def test_email_change_is_confirmed_by_code_to_the_new_address(auth_node):
    sb, address, new = client(auth_node), email(), email()
    confirmed_user(auth_node, address)
    sb.auth.sign_in_with_password({"email": address, "password": "correct horse 1"})
    assert sb.auth.update_user({"email": new}).user.new_email == new
    mail = last_mail(auth_node, new)
    assert mail["type"] == "email_change"
    r = sb.auth.verify_otp({"email": new, "token": code_of(mail), "type": "email_change"})
    assert r.user.email == new
    assert client(auth_node).auth.sign_in_with_password({"email": new, "password": "correct horse 1"}).session


def test_logout_scopes(auth_node):
    address = email()
    confirmed_user(auth_node, address)
    a, b, c = client(auth_node), client(auth_node), client(auth_node)
    sessions = [x.auth.sign_in_with_password({"email": address, "password": "correct horse 1"}).session for x in (a, b, c)]
    a.auth.sign_out({"scope": "others"})
    assert a.auth.get_user(sessions[0].access_token).user.email == address
    for s in sessions[1:]:
        with pytest.raises(AuthApiError):
            client(auth_node).auth.refresh_session(s.refresh_token)
    d = client(auth_node)
    d_session = d.auth.sign_in_with_password({"email": address, "password": "correct horse 1"}).session
    d.auth.sign_out({"scope": "local"})
    with pytest.raises(AuthApiError):
        client(auth_node).auth.get_user(d_session.access_token)
    assert a.auth.get_user(sessions[0].access_token).user  # local left the others alone
    a.auth.sign_out()  # global
    with pytest.raises(AuthApiError):
        client(auth_node).auth.refresh_session(sessions[0].refresh_token)


def test_magic_link_and_email_otp_through_the_outbox(auth_node):
    address = email()
    confirmed_user(auth_node, address)
    sb = client(auth_node)
    r = sb.auth.sign_in_with_otp({"email": address, "options": {"should_create_user": False}})
    assert r.user is None and r.session is None
    mail = last_mail(auth_node, address)
    assert mail["type"] == "magiclink"
    assert sb.auth.verify_otp({"email": address, "token": code_of(mail), "type": "email"}).session
    sb.auth.sign_in_with_otp({"email": address, "options": {"email_redirect_to": "http://app.test/cb"}})
    link = last_mail(auth_node, address)["link"]

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None
    try:
        urllib.request.build_opener(NoRedirect).open(link)
        raise AssertionError("the link must redirect")
    except urllib.error.HTTPError as redirect:
        assert redirect.code == 303
        target = redirect.headers["Location"]
    assert target.startswith("http://app.test/cb#access_token=")
    fragment = dict(urllib.parse.parse_qsl(target.split("#", 1)[1]))
    assert sb.auth.get_user(fragment["access_token"]).user.email == address
    # A redirect_to outside site_url and redirect_urls falls back to site_url: a link cannot hand
    # a session to another site.
    sb.auth.sign_in_with_otp({"email": address, "options": {"email_redirect_to": "https://attacker.test/steal"}})
    link = last_mail(auth_node, address)["link"]
    assert "attacker" not in link and link.startswith(auth_node.url + "/auth/v1/verify?")
    with pytest.raises(AuthApiError) as e:
        sb.auth.sign_in_with_otp({"email": email(), "options": {"should_create_user": False}})
    assert e.value.code == "otp_disabled"


def test_password_recovery(auth_node):
    address = email()
    confirmed_user(auth_node, address)
    sb = client(auth_node)
    sb.auth.reset_password_for_email(address)
    sb.auth.reset_password_for_email(email())  # unknown addresses answer the same
    mail = last_mail(auth_node, address)
    assert mail["type"] == "recovery"
    assert sb.auth.verify_otp({"email": address, "token": code_of(mail), "type": "recovery"}).session
    sb.auth.update_user({"password": "recovered pw 3"})
    assert client(auth_node).auth.sign_in_with_password({"email": address, "password": "recovered pw 3"}).session


def test_anonymous_sign_in_is_off_by_default():
    n = Node(auth={"argon2": SETTINGS["argon2"]})
    try:
        with pytest.raises(AuthApiError) as e:
            client(n).auth.sign_in_anonymously()
        assert e.value.code == "anonymous_provider_disabled"
    finally:
        n.stop()


def test_anonymous_sign_in(auth_node):
    r = client(auth_node).auth.sign_in_anonymously({"options": {"data": {"guest": True}}})
    assert r.user.is_anonymous is True and r.session.access_token and r.user.user_metadata == {"guest": True}


def test_admin_user_crud_and_generate_link(auth_node):
    admin = client(auth_node, auth_node.service).auth.admin
    address = email()
    user = admin.create_user({"email": address, "password": "admin made 1", "email_confirm": True,
                              "user_metadata": {"a": 1}, "app_metadata": {"tier": "gold"}}).user
    assert uuid.UUID(user.id) and user.email_confirmed_at is not None and user.app_metadata["tier"] == "gold"
    with pytest.raises(AuthApiError) as e:
        admin.create_user({"email": address, "password": "admin made 1"})
    assert e.value.code == "email_exists"
    assert admin.get_user_by_id(user.id).user.email == address
    assert any(u.id == user.id for u in admin.list_users(page=1, per_page=1000))
    updated = admin.update_user_by_id(user.id, {"user_metadata": {"b": 2}}).user
    assert updated.user_metadata == {"a": 1, "b": 2}
    link = admin.generate_link({"type": "magiclink", "email": address})
    assert link.properties.verification_type == "magiclink" and link.properties.email_otp
    assert client(auth_node).auth.verify_otp({"token_hash": link.properties.hashed_token, "type": "magiclink"}).session
    admin.delete_user(user.id)
    with pytest.raises(AuthApiError) as e:
        admin.get_user_by_id(user.id)
    assert e.value.status == 404 and e.value.code == "user_not_found"
    with pytest.raises(AuthApiError):
        client(auth_node).auth.sign_in_with_password({"email": address, "password": "admin made 1"})
    with pytest.raises(AuthApiError) as e:  # the anon key is not an admin
        client(auth_node).auth.admin.list_users()
    assert e.value.code == "not_admin"


def test_audit_log_records_events_without_secrets(auth_node):
    address = email()
    confirmed_user(auth_node, address)
    client(auth_node).auth.sign_in_with_password({"email": address, "password": "correct horse 1"})
    with pytest.raises(AuthApiError):
        client(auth_node).auth.sign_in_with_password({"email": address, "password": "wrong secret 9"})
    events = auth_node.admin("GET", "audit?limit=1000")["events"]
    actions = {e["action"] for e in events}
    assert {"user_created", "login", "login_failed"} <= actions
    text = json.dumps(events)
    assert "correct horse 1" not in text and "wrong secret 9" not in text and "argon2" not in text
    assert all(e["ip"] == "127.0.0.1" for e in events if e["action"] in ("login", "login_failed"))


def test_rate_limits_answer_429():
    limited = dict(SETTINGS, rate_limits={"token": {"limit": 2, "window_seconds": 600}})
    n = Node(auth=limited)
    try:
        sb = client(n)
        for _ in range(2):
            with pytest.raises(AuthApiError) as e:
                sb.auth.sign_in_with_password({"email": email(), "password": "whatever1"})
            assert e.value.code == "invalid_credentials"
        with pytest.raises(AuthApiError) as e:
            sb.auth.sign_in_with_password({"email": email(), "password": "whatever1"})
        assert e.value.status == 429 and e.value.code == "over_request_rate_limit"
    finally:
        n.stop()


def test_settings_and_health(auth_node):
    with urllib.request.urlopen(auth_node.url + "/auth/v1/settings") as r:
        settings = json.loads(r.read())
    assert settings["external"]["email"] is True and settings["mailer_autoconfirm"] is False
    with urllib.request.urlopen(auth_node.url + "/auth/v1/health") as r:
        assert json.loads(r.read())["name"] == "GoTrue"


class FakeSMTP:
    """A minimal SMTP server on loopback that keeps what it receives (the node's real socket client talks to it)."""

    def __init__(self):
        import socketserver
        import threading
        received = self.received = []

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                send = lambda line: self.wfile.write((line + "\r\n").encode())
                send("220 fake ESMTP")
                envelope, data = {}, None
                while True:
                    line = self.rfile.readline().decode().rstrip("\r\n")
                    if data is not None:
                        if line == ".":
                            received.append(dict(envelope, data="\n".join(data)))
                            data = None
                            send("250 queued")
                        else:
                            data.append(line[1:] if line.startswith("..") else line)
                        continue
                    verb = line.split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        self.wfile.write(b"250-fake\r\n250 8BITMIME\r\n")
                    elif verb == "MAIL":
                        envelope["from"] = line.split(":", 1)[1].strip("<> ")
                        send("250 ok")
                    elif verb == "RCPT":
                        envelope["to"] = line.split(":", 1)[1].strip("<> ")
                        send("250 ok")
                    elif verb == "DATA":
                        data = []
                        send("354 go ahead")
                    elif verb == "AUTH":  # AUTH PLAIN <base64 \0user\0password>: kept, accepted
                        envelope["auth"] = base64.b64decode(line.split(" ")[2]).decode()
                        send("235 ok")
                    elif verb == "QUIT":
                        send("221 bye")
                        return
                    else:
                        send("502 not implemented")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, to, seconds=10):
        deadline = time.time() + seconds
        while time.time() < deadline:
            for message in self.received:
                if message["to"] == to:
                    return message
            time.sleep(0.05)
        raise AssertionError(f"no mail delivered to {to}: {self.received}")

    def stop(self):
        self.server.shutdown()


def test_mail_is_delivered_over_smtp_and_leaves_the_outbox():
    smtp = FakeSMTP()
    n = Node(auth=dict(SETTINGS, smtp={"host": "127.0.0.1", "port": smtp.port, "sender": "no-reply@aerodb.test"}))
    try:
        sb, address = client(n), email()
        sb.auth.sign_up({"email": address, "password": "smtp pass 1"})
        message = smtp.wait_for(address)
        assert message["from"] == "no-reply@aerodb.test" and "Subject: Confirm your signup" in message["data"]
        code = re.search(r"code (\d+)", message["data"]).group(1)
        assert sb.auth.verify_otp({"email": address, "token": code, "type": "signup"}).session
        deadline = time.time() + 5
        while n.admin("GET", "outbox?to=" + urllib.parse.quote(address))["messages"] and time.time() < deadline:
            time.sleep(0.05)
        assert n.admin("GET", "outbox?to=" + urllib.parse.quote(address))["messages"] == []
    finally:
        n.stop()
        smtp.stop()


def test_magic_link_in_pkce_mode_is_exchanged_for_a_session(auth_node):
    address = email()
    confirmed_user(auth_node, address)
    sb = client(auth_node, flow_type="pkce")
    sb.auth.sign_in_with_otp({"email": address, "options": {"email_redirect_to": "http://app.test/cb"}})
    link = last_mail(auth_node, address)["link"]

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(NoRedirect).open(link)
    target = redirect.value.headers["Location"]
    assert target.startswith("http://app.test/cb?code=") and "access_token" not in target
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)["code"][0]
    with pytest.raises(AuthApiError) as e:  # another client does not hold the verifier
        client(auth_node).auth.exchange_code_for_session({"auth_code": code, "code_verifier": "x" * 43})
    assert e.value.code == "bad_code_verifier"
    session = sb.auth.exchange_code_for_session({"auth_code": code}).session
    assert session.user.email == address
    with pytest.raises(AuthApiError) as e:  # single use
        sb.auth.exchange_code_for_session({"auth_code": code, "code_verifier": "y" * 43})
    assert e.value.code == "flow_state_not_found"


def test_admin_pagination_out_of_range_is_a_400_not_a_crash(auth_node):
    """Issue 12 item 1: (page - 1) * per_page overflowed and stopped the node. Out of range is
    GoTrue's 400 (validation_failed); `page=` (what the client sends for no page) is the first
    page; a per_page past 1,000 is clamped, as GoTrue does."""
    admin = client(auth_node, auth_node.service).auth.admin
    confirmed_user(auth_node, email())
    for page, per_page in [(9223372036854775807, 1000), (0, 50), (1, 0), (18446744073709551616, 1)]:
        with pytest.raises(AuthApiError) as e:
            admin.list_users(page=page, per_page=per_page)
        assert e.value.status == 400 and e.value.code == "validation_failed", (page, per_page)
    assert len(admin.list_users(per_page=5000)) >= 1
    assert admin.list_users(page=1000001, per_page=1000) == []
    assert auth_node.admin("GET", "status")["node_id"]  # still serving
