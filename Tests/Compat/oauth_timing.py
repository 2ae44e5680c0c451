"""Latency of the OAuth steps against the real provider of test_auth_oauth.py (not a test, not a
comparison: there is no GoTrue here to compare with). Run:

    AERODB_BIN=$(swift build --show-bin-path)/aerodb .venv/bin/python Tests/Compat/oauth_timing.py

Prints the median and p90 of: GET /authorize (302 to the provider), GET /callback (code exchange
at the provider, id_token verified by its JWKS, userinfo, one commit), grant_type=pkce, and
grant_type=id_token (each timed from the official client's call to its answer)."""
import hashlib
import os
import secrets
import statistics
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import requests  # noqa: E402

import test_auth_oauth as t  # noqa: E402
from conftest import Node  # noqa: E402

ROUNDS = 20


def summary(xs):
    xs = sorted(xs)
    return f"median {statistics.median(xs) * 1000:.1f} ms, p90 {xs[int(len(xs) * 0.9) - 1] * 1000:.1f} ms (n={len(xs)})"


def main():
    node = Node(auth={**t.SETTINGS, "site_url": t.APP + "/home", "redirect_urls": [t.APP + "/*"]})
    idp = t.Provider(node.url + "/auth/v1/callback")
    try:
        t.configure(node, idp)
        browser = requests.Session()  # signed in at the provider once
        t.browse(t.client(node).auth.sign_in_with_oauth({"provider": t.PROVIDER, "options": {"redirect_to": t.APP + "/w"}}).url,
                 t.USERS[0], browser)
        authorize, callback, exchange = [], [], []
        for _ in range(ROUNDS):
            sb = t.client(node)
            url = sb.auth.sign_in_with_oauth({"provider": t.PROVIDER, "options": {"redirect_to": t.APP + "/b"}}).url
            start = time.perf_counter()
            r = browser.get(url, allow_redirects=False, timeout=30)
            authorize.append(time.perf_counter() - start)
            r = browser.get(r.headers["Location"], allow_redirects=False, timeout=30)  # the consent page
            form = t.hidden_inputs(r.text)
            form["allow"] = "Authorize"
            r = browser.post(urllib.parse.urljoin(r.url, "/openid/authorize"), data=form, allow_redirects=False, timeout=30)
            start = time.perf_counter()
            r = requests.get(r.headers["Location"], allow_redirects=False, timeout=30)
            callback.append(time.perf_counter() - start)
            code = t.query_of(r.headers["Location"])["code"]
            start = time.perf_counter()
            sb.auth.exchange_code_for_session({"auth_code": code})
            exchange.append(time.perf_counter() - start)
        raw = secrets.token_urlsafe(8)
        token = t.provider_id_token(idp, t.USERS[0], hashlib.sha256(raw.encode()).hexdigest())
        id_token = []
        for _ in range(ROUNDS):
            sb = t.client(node)
            start = time.perf_counter()
            sb.auth.sign_in_with_id_token({"provider": t.PROVIDER, "token": token, "nonce": raw})
            id_token.append(time.perf_counter() - start)
        print("authorize:", summary(authorize))
        print("callback:", summary(callback))
        print("pkce exchange:", summary(exchange))
        print("id_token sign-in:", summary(id_token))
    finally:
        idp.stop()
        node.stop()


if __name__ == "__main__":
    main()
