"""OAuth / OpenID Connect sign-in against a real provider: django-oidc-provider (PyPI, run by
Tests/Compat/oidc_idp.py on loopback with real users, a confidential client and an RSA key), a
real `aerodb` node, the official client (`sign_in_with_oauth` in PKCE and implicit flows,
`exchange_code_for_session`, `sign_in_with_id_token`, `link_identity`, `get_user_identities`,
`unlink_identity`) and a `requests` session as the browser (login form, consent form, redirects).
Refused: a forged state, a replayed callback, a replayed code, a wrong nonce, an open redirect,
linking an identity another user owns, unlinking the last identity. The provider is configured
through the cluster-wide settings, and its client secret is never shown back."""
import hashlib
import html
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import requests
from supabase import ClientOptions, create_client
from supabase_auth.errors import AuthApiError

from conftest import BINARY, Node, free_port, make_test_dir
from test_auth import SETTINGS

HERE = os.path.dirname(os.path.abspath(__file__))
APP = "http://app.test"
CLIENT_ID = "aerodb-test-client"
CLIENT_SECRET = "idp-secret-" + secrets.token_hex(8)
USERS = [{"username": "alice", "password": "alice-pw-123", "email": "alice@example.com"},
         {"username": "carol", "password": "carol-pw-123", "email": "carol@example.com"},
         {"username": "dave", "password": "dave-pw-123", "email": "dave@example.com"},
         # The provider does not vouch for these addresses (oidc_idp.userinfo): one is alice's.
         {"username": "unverified-mallory", "password": "mallory-pw-123", "email": "alice@example.com"},
         {"username": "unverified-erin", "password": "erin-pw-123", "email": "erin@example.com"}]
# The official client accepts only the provider names it knows; GoTrue's `keycloak` is a generic
# OpenID Connect provider configured by its issuer URL, as ours is.
PROVIDER = "keycloak"
NATIVE_REDIRECT = APP + "/native"  # where the test itself takes codes for sign_in_with_id_token
IDP_READY_SECONDS = 60


class Provider:
    def __init__(self, callback):
        self.dir = make_test_dir("aerodb-oidc-idp-")
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/openid"
        config = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": [callback, NATIVE_REDIRECT],
                  "users": USERS}
        self.log = open(os.path.join(self.dir, "idp.log"), "wb")
        self.process = subprocess.Popen([sys.executable, os.path.join(HERE, "oidc_idp.py"), self.dir, str(self.port),
                                         json.dumps(config)], stdout=self.log, stderr=self.log)
        deadline = time.time() + IDP_READY_SECONDS
        while True:
            try:
                with urllib.request.urlopen(self.issuer + "/.well-known/openid-configuration", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the OIDC provider did not start: " + open(self.log.name).read()[-2000:])
                time.sleep(0.2)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def env():
    node = Node(auth={**SETTINGS, "site_url": APP + "/home", "redirect_urls": [APP + "/*"]})
    idp = Provider(node.url + "/auth/v1/callback")
    try:
        yield node, idp
    finally:
        idp.stop()
        node.stop()


def configure(node, idp):
    """The provider through the cluster-wide settings (as `aerodb config set` does)."""
    value = {PROVIDER: {"issuer": idp.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}
    echo = node.admin("PUT", "settings/auth.oauth_providers", {"value": value})
    assert CLIENT_SECRET not in json.dumps(echo)
    return echo


def client(node, flow_type="pkce"):
    return create_client(node.url, node.anon, options=ClientOptions(auto_refresh_token=False, persist_session=False,
                                                                    flow_type=flow_type))


def hidden_inputs(page):
    out = {}
    for tag in re.findall(r"<input[^>]*>", page):
        attrs = {k: html.unescape(v) for k, v in re.findall(r'(\w+)="([^"]*)"', tag)}
        if attrs.get("type") == "hidden" and "name" in attrs:
            out[attrs["name"]] = attrs.get("value", "")
    return out


def browse(url, user, browser=None, consent=True):
    """A browser following redirects from `url`: signs in at the provider's login form, answers
    its consent form, and stops at the first redirect off loopback (the app, not fetchable here).
    Returns (final location, the aerodb callback URL it passed through)."""
    browser = browser or requests.Session()
    response = browser.get(url, allow_redirects=False, timeout=30)
    callback = None
    for _ in range(20):
        if response.status_code in (301, 302, 303):
            location = urllib.parse.urljoin(response.url, response.headers["Location"])
            if not location.startswith("http://127.0.0.1:"):
                return location, callback
            if "/auth/v1/callback" in location:
                callback = location
            response = browser.get(location, allow_redirects=False, timeout=30)
        elif response.status_code == 200 and 'name="password"' in response.text:
            form = hidden_inputs(response.text)
            form.update({"username": user["username"], "password": user["password"]})
            form["csrfmiddlewaretoken"] = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.text).group(1)
            response = browser.post(response.url, data=form, allow_redirects=False, timeout=30)
        elif response.status_code == 200 and 'name="allow"' in response.text:
            form = hidden_inputs(response.text)
            if consent:
                form["allow"] = "Authorize"
            action = urllib.parse.urljoin(response.url, re.search(r'<form method="post" action="([^"]+)"', response.text).group(1))
            response = browser.post(action, data=form, allow_redirects=False, timeout=30)
        else:
            raise AssertionError(f"unexpected page {response.status_code} at {response.url}: {response.text[:500]}")
    raise AssertionError("too many redirects")


def query_of(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def fragment_of(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).fragment))


def test_provider_settings_are_cluster_wide_and_hide_the_secret(env):
    node, idp = env
    echo = configure(node, idp)
    assert echo["value"][PROVIDER]["client_id"] == CLIENT_ID
    one = node.admin("GET", "settings/auth.oauth_providers")
    assert one["value"][PROVIDER]["issuer"] == idp.issuer and CLIENT_SECRET not in json.dumps(one)
    assert CLIENT_SECRET not in json.dumps(node.admin("GET", "settings"))
    listed = subprocess.run([BINARY, "config", "list", "--url", node.url, "--dir", os.path.join(node.dir, "n1")],
                            check=True, capture_output=True, text=True, timeout=30).stdout
    assert "auth.oauth_providers" in listed and CLIENT_SECRET not in listed
    settings = requests.get(node.url + "/auth/v1/settings", headers={"apikey": node.anon}, timeout=10).json()
    assert settings["external"][PROVIDER] is True and CLIENT_SECRET not in json.dumps(settings)
    # A bad provider value is refused, never stored.
    with pytest.raises(urllib.error.HTTPError) as refused:
        node.admin("PUT", "settings/auth.oauth_providers", {"value": {"Bad Name": {"client_id": "x", "client_secret": "y"}}})
    assert refused.value.code == 400


def test_pkce_sign_in_with_the_official_client(env):
    node, idp = env
    configure(node, idp)
    sb = client(node)
    start = sb.auth.sign_in_with_oauth({"provider": PROVIDER, "options": {"redirect_to": APP + "/done"}})
    assert "code_challenge=" in start.url and start.url.startswith(node.url + "/auth/v1/authorize")
    location, callback = browse(start.url, USERS[0])
    assert location.startswith(APP + "/done?code="), location
    code = query_of(location)["code"]
    session = sb.auth.exchange_code_for_session({"auth_code": code}).session
    user = session.user
    assert user.email == "alice@example.com" and user.app_metadata["provider"] == PROVIDER
    assert [i.provider for i in user.identities] == [PROVIDER]
    assert user.identities[0].identity_data["email_verified"] is True
    assert sb.auth.get_user(session.access_token).user.id == user.id
    # The authorization code is single-use.
    with pytest.raises(AuthApiError):
        client(node).auth.exchange_code_for_session({"auth_code": code, "code_verifier": "v" * 43})
    # A replayed callback (same state, same provider code) is refused.
    replay = requests.get(callback, allow_redirects=False, timeout=30)
    assert replay.status_code == 302 and "error_code=bad_oauth_state" in replay.headers["Location"]
    # Signing in again finds the same user through the identity.
    again, _ = browse(client(node).auth.sign_in_with_oauth({"provider": PROVIDER, "options": {"redirect_to": APP + "/done"}}).url,
                      USERS[0])
    assert "code=" in again


def test_implicit_flow_puts_the_session_in_the_fragment(env):
    node, idp = env
    configure(node, idp)
    sb = client(node, flow_type="implicit")
    url = sb.auth.sign_in_with_oauth({"provider": PROVIDER, "options": {"redirect_to": APP + "/implicit"}}).url
    assert "code_challenge" not in url
    location, _ = browse(url, USERS[0])
    assert location.startswith(APP + "/implicit#"), location
    fragment = fragment_of(location)
    assert fragment["token_type"] == "bearer" and fragment["refresh_token"]
    assert sb.auth.get_user(fragment["access_token"]).user.email == "alice@example.com"


def test_forged_state_and_open_redirect_are_refused(env):
    node, idp = env
    configure(node, idp)
    answer = requests.get(node.url + "/auth/v1/authorize", params={"provider": PROVIDER, "redirect_to": APP + "/x",
                                                                   "skip_http_redirect": "true"}, timeout=10).json()
    state = query_of(answer["url"])["state"]
    forged = state[:-2] + ("AA" if not state.endswith("AA") else "BA")
    refused = requests.get(node.url + "/auth/v1/callback", params={"state": forged, "code": "x"}, allow_redirects=False, timeout=10)
    assert refused.status_code == 302
    assert refused.headers["Location"].startswith(APP + "/home") and "error_code=bad_oauth_state" in refused.headers["Location"]
    # Another site as redirect_to: the flow ends at the site URL, never at the other site.
    url = client(node, flow_type="implicit").auth.sign_in_with_oauth({"provider": PROVIDER,
                                                                       "options": {"redirect_to": "http://evil.test/steal"}}).url
    location, _ = browse(url, USERS[0])
    assert location.startswith(APP + "/home#access_token="), location
    # An unknown provider is refused with GoTrue's error.
    bad = requests.get(node.url + "/auth/v1/authorize", params={"provider": "nope"}, allow_redirects=False, timeout=10)
    assert bad.status_code == 400 and bad.json()["error_code"] == "provider_disabled"


def test_wrong_nonce_is_refused(env):
    node, idp = env
    configure(node, idp)
    url = requests.get(node.url + "/auth/v1/authorize", params={"provider": PROVIDER, "redirect_to": APP + "/nonce",
                                                                "skip_http_redirect": "true"}, timeout=10).json()["url"]
    parts = urllib.parse.urlsplit(url)
    q = query_of(url)
    q["nonce"] = "not-the-nonce-aerodb-sent"
    tampered = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q)))
    location, _ = browse(tampered, USERS[0])
    assert "error_code=bad_oauth_callback" in location and "nonce" in urllib.parse.unquote(location), location


def provider_id_token(idp, user, nonce):
    """An id_token obtained by the app itself (as a native app does), for sign_in_with_id_token."""
    params = {"client_id": CLIENT_ID, "redirect_uri": NATIVE_REDIRECT, "response_type": "code", "scope": "openid email",
              "state": "s" * 16, "nonce": nonce}
    location, _ = browse(idp.issuer + "/authorize?" + urllib.parse.urlencode(params), user)
    code = query_of(location)["code"]
    token = requests.post(idp.issuer + "/token", data={"grant_type": "authorization_code", "code": code,
                                                       "redirect_uri": NATIVE_REDIRECT, "client_id": CLIENT_ID,
                                                       "client_secret": CLIENT_SECRET}, timeout=30).json()
    return token["id_token"]


def test_sign_in_with_id_token(env):
    node, idp = env
    configure(node, idp)
    browse(client(node).auth.sign_in_with_oauth({"provider": PROVIDER, "options": {"redirect_to": APP + "/a"}}).url, USERS[0])
    raw = secrets.token_urlsafe(16)
    token = provider_id_token(idp, USERS[0], hashlib.sha256(raw.encode()).hexdigest())
    sb = client(node)
    session = sb.auth.sign_in_with_id_token({"provider": PROVIDER, "token": token, "nonce": raw}).session
    assert session.user.email == "alice@example.com"
    with pytest.raises(AuthApiError) as wrong:
        client(node).auth.sign_in_with_id_token({"provider": PROVIDER, "token": token, "nonce": "another"})
    assert "nonce" in str(wrong.value).lower()
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthApiError):
        client(node).auth.sign_in_with_id_token({"provider": PROVIDER, "token": tampered, "nonce": raw})


def test_link_and_unlink_identities(env):
    node, idp = env
    configure(node, idp)
    sb = client(node)
    sb.auth.sign_up({"email": "bob@example.com", "password": "bob-pw-12345"})
    created = requests.post(node.url + "/auth/v1/admin/users", headers={"Authorization": f"Bearer {node.service}",
                                                                          "apikey": node.service},
                            json={"email": "bob-linked@example.com", "password": "bob-pw-12345", "email_confirm": True}, timeout=10)
    assert created.status_code == 200, created.text
    sb.auth.sign_in_with_password({"email": "bob-linked@example.com", "password": "bob-pw-12345"})
    with pytest.raises(AuthApiError) as disabled:
        sb.auth.link_identity({"provider": PROVIDER, "options": {"redirect_to": APP + "/linked"}})
    assert "manual_linking_disabled" in repr(disabled.value) or "Manual linking" in str(disabled.value)
    subprocess.run([BINARY, "config", "set", "auth.manual_linking", "true", "--url", node.url,
                    "--dir", os.path.join(node.dir, "n1")], check=True, capture_output=True, timeout=30)
    url = sb.auth.link_identity({"provider": PROVIDER, "options": {"redirect_to": APP + "/linked"}}).url
    assert url.startswith(idp.issuer + "/authorize")
    location, _ = browse(url, USERS[1])
    session = sb.auth.exchange_code_for_session({"auth_code": query_of(location)["code"]}).session
    assert session.user.email == "bob-linked@example.com"
    identities = sb.auth.get_user_identities().identities
    assert sorted(i.provider for i in identities) == ["email", PROVIDER]
    # alice's provider identity belongs to alice: linking it to bob is refused.
    url = sb.auth.link_identity({"provider": PROVIDER, "options": {"redirect_to": APP + "/linked"}}).url
    location, _ = browse(url, USERS[0])
    assert "error_code=identity_already_exists" in location, location
    idp_identity = next(i for i in identities if i.provider == PROVIDER)
    sb.auth.unlink_identity(idp_identity)
    left = sb.auth.get_user_identities().identities
    assert [i.provider for i in left] == ["email"]
    with pytest.raises(AuthApiError) as last:
        sb.auth.unlink_identity(left[0])
    assert "single_identity_not_deletable" in repr(last.value) or "at least 1 identity" in str(last.value)
    # Every step is audited.
    actions = {e["action"] for e in node.admin("GET", "audit?limit=1000")["events"]}
    assert {"identity_linked", "identity_unlinked", "user_signedup", "oauth_callback_refused"} <= actions


def test_existing_user_with_the_verified_email_is_linked(env):
    node, idp = env
    configure(node, idp)
    requests.post(node.url + "/auth/v1/admin/users", headers={"Authorization": f"Bearer {node.service}", "apikey": node.service},
                  json={"email": "dave@example.com", "password": "dave-pw-12345", "email_confirm": True}, timeout=10)
    sb = client(node)
    location, _ = browse(sb.auth.sign_in_with_oauth({"provider": PROVIDER, "options": {"redirect_to": APP + "/d"}}).url, USERS[2])
    user = sb.auth.exchange_code_for_session({"auth_code": query_of(location)["code"]}).session.user
    assert user.email == "dave@example.com"
    assert sorted(i.provider for i in user.identities) == ["email", PROVIDER]
    assert sorted(user.app_metadata["providers"]) == ["email", PROVIDER]


def test_oauth_sign_in_through_a_replica():
    """The provider set once through the primary reaches the replica (cluster-wide settings); the
    replica starts the flow, forwards the callback (a write) to the primary, which exchanges the
    code with the redirect_uri the replica gave (carried in the signed state)."""
    from conftest import Cluster
    cluster = Cluster(nodes=2)
    idp = None
    try:
        idp = Provider(cluster.urls[1] + "/auth/v1/callback")
        cluster.admin(0, "PUT", "settings/auth.redirect_urls", {"value": [APP + "/*"]})
        cluster.admin(0, "PUT", "settings/auth.oauth_providers",
                      {"value": {PROVIDER: {"issuer": idp.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}})
        sb = create_client(cluster.urls[1], cluster.anon,
                           options=ClientOptions(auto_refresh_token=False, persist_session=False, flow_type="pkce"))
        deadline = time.time() + 30
        while True:  # the settings reach the replica through replication
            try:
                url = sb.auth.sign_in_with_oauth({"provider": PROVIDER, "options": {"redirect_to": APP + "/replica"}}).url
                start = requests.get(url, allow_redirects=False, timeout=10)
                if start.status_code == 302:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "the replica never saw the provider setting"
            time.sleep(0.2)
        location, callback = browse(url, USERS[0])
        assert callback.startswith(cluster.urls[1]) and location.startswith(APP + "/replica?code="), location
        session = sb.auth.exchange_code_for_session({"auth_code": query_of(location)["code"]}).session
        assert session.user.email == "alice@example.com"
        assert sb.auth.get_user(session.access_token).user.id == session.user.id
    finally:
        if idp:
            idp.stop()
        cluster.stop()


def test_an_unverified_provider_email_never_takes_over_or_creates_an_account(env):
    node, idp = env
    configure(node, idp)
    # alice exists (signed in through the provider in an earlier test, or now).
    browse(client(node).auth.sign_in_with_oauth({"provider": PROVIDER, "options": {"redirect_to": APP + "/a"}}).url, USERS[0])
    url = client(node).auth.sign_in_with_oauth({"provider": PROVIDER, "options": {"redirect_to": APP + "/m"}}).url
    location, _ = browse(url, USERS[3])
    assert location.startswith(APP + "/m?") and "error_code=email_exists" in location, location
    url = client(node).auth.sign_in_with_oauth({"provider": PROVIDER, "options": {"redirect_to": APP + "/e"}}).url
    location, _ = browse(url, USERS[4])
    assert "error_code=provider_email_needs_verification" in location, location
    users = requests.get(node.url + "/auth/v1/admin/users", headers={"Authorization": f"Bearer {node.service}",
                                                                      "apikey": node.service}, timeout=10).json()["users"]
    alice = next(u for u in users if u["email"] == "alice@example.com")
    assert len(alice["identities"]) == 1 and not any(u["email"] == "erin@example.com" for u in users)
