"""Secrets in cluster settings sealed at rest (invariant SS1, docs/AUTH.md "Secrets at rest in
cluster settings"): the SMTP password and an OAuth client secret set through /admin/v1/settings are
in no file of the node directory (WAL, checkpoints, log), and the node still authenticates to the
SMTP server with the password (the OAuth token exchange with the sealed secret: test_auth_oauth.py)."""

import json
import os
import time
import urllib.error
import urllib.request

from conftest import Node
from test_auth import SETTINGS, FakeSMTP, client, email

PASSWORD = "smtp-password-SS1-e2e-5d71"
CLIENT_SECRET = "oauth-client-secret-SS1-e2e-8b02"


def files_holding(directory, needle):
    hits = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    if needle in f.read():
                        hits.append(path)
            except OSError:
                pass
    return hits


def test_the_smtp_password_is_sealed_at_rest_and_used_for_smtp_auth():
    smtp = FakeSMTP()
    n = Node(auth=SETTINGS)
    try:
        value = {"host": "127.0.0.1", "port": smtp.port, "sender": "no-reply@aerodb.test", "user": "mailer", "password": PASSWORD}
        echoed = n.admin("PUT", "settings/auth.smtp", {"value": value})
        assert PASSWORD not in json.dumps(echoed) and PASSWORD not in json.dumps(n.admin("GET", "settings"))
        sb, address = client(n), email()
        sb.auth.sign_up({"email": address, "password": "smtp pass 1"})
        message = smtp.wait_for(address)
        assert message["auth"] == "\0mailer\0" + PASSWORD  # the node opened the sealed value and used it
        providers = {"idp": {"issuer": "http://127.0.0.1:9", "client_id": "client-SS1", "client_secret": CLIENT_SECRET}}
        assert CLIENT_SECRET not in json.dumps(n.admin("PUT", "settings/auth.oauth_providers", {"value": providers}))
        # The settings reached the files (the scan sees the records), their secrets did not.
        assert files_holding(n.dir, b"no-reply@aerodb.test") and files_holding(n.dir, b"client-SS1")
        assert files_holding(n.dir, PASSWORD.encode()) == [] and files_holding(n.dir, CLIENT_SECRET.encode()) == []
        # The REST API does not serve the system collection, even with the service key.
        request = urllib.request.Request(n.url + "/rest/v1/_settings", headers={"apikey": n.service, "Authorization": f"Bearer {n.service}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                assert PASSWORD not in r.read().decode()
                raise AssertionError("/rest/v1/_settings answered")
        except urllib.error.HTTPError as e:
            assert e.code in (400, 404)
    finally:
        n.stop()
        smtp.stop()
