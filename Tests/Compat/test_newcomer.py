"""Cluster-wide settings (issue 13 part 2) on a real three-node cluster with the official client:
a setting changed through one node is read back from the other two, takes effect there
(anonymous sign-in, sign-up confirmation), is audited, shows in `aerodb config` and `aerodb
status`, and a bad value is refused without being stored."""
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from supabase import create_client

from conftest import BINARY, Cluster

DEADLINE_SECONDS = 10


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(nodes=3)
    yield c
    c.stop()


def settings_of(cluster, i):
    return {row["key"]: row for row in cluster.admin(i, "GET", "settings")["settings"]}


def until(check):
    deadline = time.time() + DEADLINE_SECONDS
    while True:
        value = check()
        if value or time.time() > deadline:
            return value
        time.sleep(0.1)


def test_a_setting_changed_on_one_node_is_read_back_and_applies_on_the_other_two(cluster):
    for i in range(3):
        row = settings_of(cluster, i)["auth.anonymous_sign_ins"]
        assert row["value"] is False and row["source"] == "default"
    with pytest.raises(Exception):
        create_client(cluster.urls[2], cluster.anon).auth.sign_in_anonymously()
    # Through a replica: forwarded to the primary, replicated to every member.
    answer = cluster.admin(1, "PUT", "settings/auth.anonymous_sign_ins", {"value": True})
    assert answer["value"] is True and answer["lsn"] > 0
    cluster.admin(1, "PUT", "settings/auth.mailer_autoconfirm", {"value": True})
    for i in (0, 2):
        assert until(lambda: settings_of(cluster, i)["auth.anonymous_sign_ins"]["value"] is True), f"node {i + 1}"
        assert until(lambda: settings_of(cluster, i)["auth.mailer_autoconfirm"]["source"] == "cluster"), f"node {i + 1}"
    # It takes effect on the node that did not receive the change.
    anonymous = create_client(cluster.urls[2], cluster.anon).auth.sign_in_anonymously()
    assert anonymous.user.is_anonymous is True
    signed_up = create_client(cluster.urls[0], cluster.anon).auth.sign_up({"email": "new@example.com", "password": "secret-password"})
    assert signed_up.session is not None and signed_up.user.email_confirmed_at is not None
    # Audited, on the primary.
    events = until(lambda: [e for e in cluster.admin(0, "GET", "audit?action=admin%20PUT%20/admin/v1/settings/auth.anonymous_sign_ins")["events"]])
    assert events and events[0]["actor_role"] == "service_role"
    assert events[0]["details"]["status"] == 200


def test_a_bad_value_or_an_unknown_key_is_refused_and_nothing_is_stored(cluster):
    for path, body in [("settings/auth.password_min_length", {"value": 2}),
                       ("settings/auth.mailer_autoconfirm", {"value": "yes"}),
                       ("settings/http", {"value": "0.0.0.0:1"})]:
        with pytest.raises(urllib.error.HTTPError) as refused:
            cluster.admin(2, "PUT", path, body)
        assert refused.value.code == 400
        assert json.loads(refused.value.read())["code"] == "AERO_REQUEST_INVALID"
    assert settings_of(cluster, 0)["auth.password_min_length"]["source"] == "default"


def test_the_cli_reads_and_changes_settings_and_status_shows_them(cluster):
    n1 = os.path.join(cluster.dir, "n1")

    def aerodb(*args):
        return subprocess.run([BINARY, *args, "--dir", n1], capture_output=True, text=True, timeout=60)

    changed = aerodb("config", "set", "auth.site_url", "https://app.example.com", "--url", cluster.urls[2])
    assert changed.returncode == 0, changed.stderr
    read = until(lambda: aerodb("config", "get", "auth.site_url", "--url", cluster.urls[0]).stdout.strip() == '"https://app.example.com"')
    assert read
    listed = aerodb("config", "list", "--url", cluster.urls[1]).stdout
    assert 'auth.site_url = "https://app.example.com"  (cluster)' in listed
    status = aerodb("status", "--url", cluster.urls[1]).stdout
    assert 'auth.site_url="https://app.example.com" (cluster)' in status
    assert aerodb("config", "unset", "auth.site_url", "--url", cluster.urls[0]).returncode == 0
    assert until(lambda: settings_of(cluster, 2)["auth.site_url"]["source"] == "default")
    refused = aerodb("config", "set", "auth.otp_length", "99", "--url", cluster.urls[0])
    assert refused.returncode != 0 and "AERO_REQUEST_INVALID" in refused.stderr
