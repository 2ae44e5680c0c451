"""Cluster-wide settings (issue 13 part 2) on a real three-node cluster with the official client:
a setting changed through one node is read back from the other two, takes effect there
(anonymous sign-in, sign-up confirmation), is audited, shows in `aerodb config` and `aerodb
status`, and a bad value is refused without being stored."""
import json
import os
import signal
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


def test_rate_limits_set_through_one_node_apply_on_another(cluster):
    from supabase_auth.errors import AuthApiError
    n3 = create_client(cluster.urls[2], cluster.anon).auth
    assert n3.sign_up({"email": "before-limit@example.com", "password": "secret-password"}).user is not None
    answer = cluster.admin(1, "PUT", "settings/auth.rate_limits", {"value": {"signup": {"limit": 1, "window_seconds": 300}}})
    assert answer["lsn"] > 0
    # Merged budget by budget: the budgets not named keep theirs.
    assert until(lambda: settings_of(cluster, 2)["auth.rate_limits"]["value"]["signup"] == {"limit": 1, "window_seconds": 300})
    assert settings_of(cluster, 0)["auth.rate_limits"]["value"]["token"] == {"limit": 150, "window_seconds": 300}
    with pytest.raises(AuthApiError) as limited:
        n3.sign_up({"email": "over-limit@example.com", "password": "secret-password"})
    assert limited.value.status == 429
    # Out of the file's range: refused, nothing stored.
    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.admin(0, "PUT", "settings/auth.rate_limits", {"value": {"signup": {"limit": 0, "window_seconds": 300}}})
    assert refused.value.code == 400
    cluster.admin(0, "DELETE", "settings/auth.rate_limits")
    assert until(lambda: settings_of(cluster, 2)["auth.rate_limits"]["source"] == "default")
    assert n3.sign_up({"email": "after-limit@example.com", "password": "secret-password"}).user is not None


def test_smtp_and_argon2_are_cluster_settings_and_the_smtp_password_is_never_shown(cluster):
    smtp = {"host": "127.0.0.1", "port": 2525, "sender": "no-reply@example.com", "user": "mailer", "password": "hunter2-smtp-secret"}
    echoed = cluster.admin(1, "PUT", "settings/auth.smtp", {"value": smtp})
    assert "hunter2-smtp-secret" not in json.dumps(echoed)
    assert until(lambda: settings_of(cluster, 0)["auth.smtp"]["source"] == "cluster")
    for i in range(3):
        shown = until(lambda: settings_of(cluster, i)["auth.smtp"]["value"])
        assert shown["host"] == "127.0.0.1" and shown["port"] == 2525 and shown["password"] == "(set, not shown)"
        assert "hunter2-smtp-secret" not in json.dumps(cluster.admin(i, "GET", "settings"))
        assert "hunter2-smtp-secret" not in json.dumps(cluster.admin(i, "GET", "settings/auth.smtp"))
    cluster.admin(2, "DELETE", "settings/auth.smtp")
    # The password hashing cost, through PasswordCost's ranges, merged part by part.
    cluster.admin(1, "PUT", "settings/auth.argon2", {"value": {"memory_kib": 8192, "iterations": 1}})
    assert until(lambda: settings_of(cluster, 2)["auth.argon2"]["value"] == {"memory_kib": 8192, "iterations": 1, "parallelism": 1})
    assert create_client(cluster.urls[2], cluster.anon).auth.sign_up({"email": "cheap@example.com", "password": "secret-password"}).user
    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.admin(0, "PUT", "settings/auth.argon2", {"value": {"memory_kib": 4096}})
    assert refused.value.code == 400 and "8192...1048576" in json.loads(refused.value.read())["message"]
    cluster.admin(0, "DELETE", "settings/auth.argon2")


def test_an_unknown_key_names_every_settable_key(cluster):
    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.admin(0, "PUT", "settings/wal_engine", {"value": "pwrite"})
    message = json.loads(refused.value.read())["message"]
    for key in ("auth.rate_limits", "auth.smtp", "auth.argon2", "auth.mailer_autoconfirm", "archive.directory", "backup.schedule",
                "auth.retention", "replication.commit_mode", "query.scan_rows_max", "query.limit_max"):
        assert key in message


def status_commit_mode(cluster, i):
    return cluster.admin(i, "GET", "status")["replication"]["commit_mode"]


def insert_raw(cluster, i, row):
    """POST /rest/v1/cm_items on node i: (status, body)."""
    request = urllib.request.Request(cluster.urls[i] + "/rest/v1/cm_items", method="POST", data=json.dumps(row).encode(),
                                     headers={"apikey": cluster.service, "Authorization": f"Bearer {cluster.service}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_commit_mode_set_through_a_replica_applies_on_the_primary_from_the_next_commit(cluster):
    """CM1: replication.commit_mode set through n2 is read back on n1 and n3 (settings and status);
    with one replica paused, `all` leaves a write in doubt (never acknowledged as a sync/async
    write), `sync` acknowledges it with the other replica."""
    cluster.admin(0, "POST", "collections", {"name": "cm_items", "fields": {"id": {"type": "text"}}})
    for i in range(3):
        row = settings_of(cluster, i)["replication.commit_mode"]
        assert row == {"key": "replication.commit_mode", "value": "sync", "source": "default"}, f"node {i + 1}"
    answer = cluster.admin(1, "PUT", "settings/replication.commit_mode", {"value": "all"})
    assert answer["value"] == "all"
    for i in (0, 2):
        assert until(lambda: settings_of(cluster, i)["replication.commit_mode"] == {
            "key": "replication.commit_mode", "value": "all", "source": "cluster"}), f"node {i + 1}"
        assert until(lambda: status_commit_mode(cluster, i) == "all"), f"node {i + 1}"
    n3 = cluster.processes[2]
    n3.send_signal(signal.SIGSTOP)
    try:
        code, body = insert_raw(cluster, 0, {"id": "under-all"})
        assert code == 504 and b"AERO_COMMIT_IN_DOUBT" in body, (code, body)
    finally:
        n3.send_signal(signal.SIGCONT)
    assert until(lambda: insert_raw(cluster, 0, {"id": "all-again"})[0] == 201)
    cluster.admin(2, "PUT", "settings/replication.commit_mode", {"value": "sync"})  # through the other replica
    for i in range(3):
        assert until(lambda: status_commit_mode(cluster, i) == "sync"), f"node {i + 1}"
    n3.send_signal(signal.SIGSTOP)
    try:
        code, body = insert_raw(cluster, 0, {"id": "under-sync"})
        assert code == 201, (code, body)  # n2's flush is enough
    finally:
        n3.send_signal(signal.SIGCONT)
    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.admin(0, "PUT", "settings/replication.commit_mode", {"value": "fast"})
    assert refused.value.code == 400
    cluster.admin(0, "DELETE", "settings/replication.commit_mode")
    assert until(lambda: settings_of(cluster, 2)["replication.commit_mode"]["source"] == "default")


def test_query_limits_set_through_one_node_bound_reads_on_the_others(cluster):
    """query.scan_rows_max and query.limit_default set through n1 bound what the official client
    reads on n2 and n3, without a restart; out-of-range and inconsistent values are refused."""
    cluster.admin(0, "POST", "collections", {"name": "ql_items", "fields": {"id": {"type": "int"}, "qty": {"type": "int"}}})
    admin = create_client(cluster.urls[0], cluster.service)
    admin.table("ql_items").insert([{"id": n, "qty": n % 2} for n in range(1_200)]).execute()
    cluster.admin(0, "PUT", "settings/query.scan_rows_max", {"value": 1_000})  # the least allowed
    cluster.admin(0, "PUT", "settings/query.limit_default", {"value": 2})
    for i in (1, 2):
        client = create_client(cluster.urls[i], cluster.service)

        def refused_scan():
            try:
                client.table("ql_items").select("*").eq("qty", 1).execute()
                return False
            except Exception as e:  # postgrest APIError: the unbounded scan names the index to declare
                return "index" in str(e)
        assert until(refused_scan), f"node {i + 1}"
        assert until(lambda: len(client.table("ql_items").select("*").order("id").execute().data) == 2), f"node {i + 1}"
        assert settings_of(cluster, i)["query.scan_rows_max"] == {"key": "query.scan_rows_max", "value": 1_000, "source": "cluster"}
    for key, value in [("query.scan_rows_max", 999), ("query.limit_max", 2_000_000), ("query.limit_max", 9_999),
                       ("query.limit_default", 20_000), ("query.aggregates_enabled", 1)]:
        with pytest.raises(urllib.error.HTTPError) as refused:
            cluster.admin(1, "PUT", f"settings/{key}", {"value": value})
        assert refused.value.code == 400, key
    assert settings_of(cluster, 0)["query.limit_max"] == {"key": "query.limit_max", "value": 10_000, "source": "default"}
    for key in ("query.limit_default", "query.scan_rows_max"):
        cluster.admin(2, "DELETE", f"settings/{key}")
    client = create_client(cluster.urls[2], cluster.service)
    assert until(lambda: len(client.table("ql_items").select("*").eq("qty", 1).execute().data) == 600)


def test_auth_retention_set_through_a_replica_is_merged_and_applied_by_the_primary(cluster):
    """auth.retention set through n3 is laid over the file's rule by rule, shown on every node, and
    the primary's next retention run applies it (the dev outbox is cut to outbox_messages_max)."""
    cluster.admin(0, "PUT", "settings/auth.mailer_autoconfirm", {"value": False})
    cluster.admin(2, "PUT", "settings/auth.retention", {"value": {"interval_seconds": 1, "outbox_messages_max": 10}})
    for i in range(3):
        shown = until(lambda: settings_of(cluster, i)["auth.retention"]["value"])
        assert shown["outbox_messages_max"] == 10 and shown["interval_seconds"] == 1, f"node {i + 1}"
        assert shown["audit_days"] == 30  # the file's (default) rule kept
    anon = create_client(cluster.urls[1], cluster.anon)
    for n in range(14):
        anon.auth.sign_in_with_otp({"email": f"retention{n}@example.com"})
    assert until(lambda: len(cluster.admin(2, "GET", "outbox?limit=100")["messages"]) == 10)
    cluster.admin(0, "DELETE", "settings/auth.retention")
    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.admin(1, "PUT", "settings/auth.retention", {"value": {"outbox_messages_max": 1}})
    assert refused.value.code == 400
