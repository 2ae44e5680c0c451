"""The official client pointed at a replica of a real two-node cluster (sync commit mode): writes
are forwarded to the primary and the replica answers once it applied them, so the client reads
its own writes on the node it talks to; sign-in through the replica works the same way."""
import pytest
from supabase import ClientOptions, create_client

from conftest import Cluster


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(nodes=2)
    c.admin(0, "POST", "collections", {"name": "todos", "fields": {"id": {"type": "text"}, "title": {"type": "text"},
                                                                   "done": {"type": "bool"}}})
    yield c
    c.stop()


def test_writes_through_a_replica_read_their_own_writes(cluster):
    replica = create_client(cluster.urls[1], cluster.anon)
    assert cluster.admin(1, "GET", "status")["role"] == "replica"
    inserted = replica.table("todos").insert({"id": "t1", "title": "write via replica", "done": False}).execute().data
    assert inserted == [{"id": "t1", "title": "write via replica", "done": False}]
    assert replica.table("todos").select("*").eq("id", "t1").execute().data == inserted
    replica.table("todos").update({"done": True}).eq("id", "t1").execute()
    assert replica.table("todos").select("done").eq("id", "t1").single().execute().data == {"done": True}
    replica.table("todos").upsert({"id": "t2", "title": "upserted", "done": False}).execute()
    assert [r["id"] for r in replica.table("todos").select("id").order("id").execute().data] == ["t1", "t2"]
    replica.table("todos").delete().eq("id", "t2").execute()
    assert replica.table("todos").select("id").eq("id", "t2").execute().data == []
    primary = create_client(cluster.urls[0], cluster.anon)
    assert primary.table("todos").select("done").eq("id", "t1").single().execute().data == {"done": True}


def test_sign_in_through_a_replica(cluster):
    admin = create_client(cluster.urls[1], cluster.service).auth.admin
    admin.create_user({"email": "replica@example.com", "password": "replica pw 1", "email_confirm": True})
    sb = create_client(cluster.urls[1], cluster.anon, options=ClientOptions(auto_refresh_token=False, persist_session=False))
    session = sb.auth.sign_in_with_password({"email": "replica@example.com", "password": "replica pw 1"}).session
    assert sb.auth.get_user(session.access_token).user.email == "replica@example.com"
    refreshed = create_client(cluster.urls[0], cluster.anon, options=ClientOptions(auto_refresh_token=False, persist_session=False))
    assert refreshed.auth.refresh_session(session.refresh_token).session.refresh_token != session.refresh_token


def test_the_client_address_survives_forwarding(cluster):
    """A sign-in attempt from 127.0.0.2 sent to the replica is executed by the primary, whose audit
    row names 127.0.0.2 (the replica signs the address it saw), not the replica's own address."""
    import http.client
    import json
    from urllib.parse import urlsplit
    replica = urlsplit(cluster.urls[1])
    connection = http.client.HTTPConnection(replica.hostname, replica.port, timeout=10, source_address=("127.0.0.2", 0))
    connection.request("POST", "/auth/v1/token?grant_type=password",
                       body=json.dumps({"email": "nobody@example.com", "password": "wrong pw 1"}),
                       headers={"apikey": cluster.anon, "Content-Type": "application/json"})
    answer = connection.getresponse()
    assert answer.status == 400 and json.loads(answer.read())["error_code"] == "invalid_credentials"
    connection.close()
    events = cluster.admin(0, "GET", "audit?action=login_failed")["events"]
    assert [e["ip"] for e in events if e["target"] == "nobody@example.com"] == ["127.0.0.2"]
