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
