"""Row-level security through the official Supabase client: owner-only rows are invisible and
unmodifiable to other users and to anon on every REST path; forged and expired tokens get
nothing; the service key gets everything (docs/POLICIES.md)."""
import base64
import json
import os
import time
import urllib.error
import urllib.request

import jwt
import pytest
from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client

from conftest import Node
from test_auth import SETTINGS

PASSWORD = "policy pass 1"


@pytest.fixture(scope="module")
def world():
    node = Node(auth=SETTINGS)
    node.admin("POST", "collections", {"name": "notes", "fields": {
        "id": {"type": "text"}, "owner": {"type": "uuid"}, "body": {"type": "text"}, "public": {"type": "bool"}},
        "indexes": [{"fields": ["owner"]}]})
    node.admin("POST", "collections", {"name": "comments", "fields": {
        "id": {"type": "text"}, "note_id": {"type": "text", "references": "notes"}, "author": {"type": "uuid"},
        "body": {"type": "text"}}})
    node.admin("POST", "collections", {"name": "members", "fields": {
        "id": {"type": "text"}, "team_id": {"type": "text"}, "user_id": {"type": "uuid"}}, "indexes": [{"fields": ["user_id"]}]})
    node.admin("POST", "collections", {"name": "docs", "fields": {"id": {"type": "text"}, "team_id": {"type": "text"}}})
    for name, body in [
        ("notes", {"name": "owner_all", "operation": "all", "roles": ["authenticated"],
                   "using": "owner = auth.uid()", "check": "owner = auth.uid()"}),
        ("notes", {"name": "public_read", "operation": "select", "using": "public = true"}),
        ("comments", {"name": "own_comments", "operation": "all", "roles": ["authenticated"], "using": "author = auth.uid()"}),
        ("docs", {"name": "team_read", "operation": "select",
                  "using": "team_id in (select team_id from members where user_id = auth.uid())"}),
    ]:
        node.admin("POST", f"collections/{name}/policies", body)
    for name in ("notes", "comments", "docs"):
        node.admin("POST", f"collections/{name}/rls", {"enabled": True})
    service = create_client(node.url, node.service)
    users = {}
    for who in ("alice", "bob"):
        user = service.auth.admin.create_user({"email": f"{who}@example.com", "password": PASSWORD, "email_confirm": True}).user
        sb = create_client(node.url, node.anon, options=ClientOptions(auto_refresh_token=False, persist_session=False))
        session = sb.auth.sign_in_with_password({"email": f"{who}@example.com", "password": PASSWORD}).session
        users[who] = (user.id, sb, session)
    alice, bob = users["alice"][0], users["bob"][0]
    service.table("notes").insert([
        {"id": "a-private", "owner": alice, "body": "alice secret", "public": False},
        {"id": "a-public", "owner": alice, "body": "alice hello", "public": True},
        {"id": "b-private", "owner": bob, "body": "bob secret", "public": False},
    ]).execute()
    service.table("comments").insert([
        {"id": "c1", "note_id": "a-public", "author": alice, "body": "by alice"},
        {"id": "c2", "note_id": "a-public", "author": bob, "body": "by bob"},
    ]).execute()
    service.table("members").insert([{"id": "m1", "team_id": "red", "user_id": bob}]).execute()
    service.table("docs").insert([{"id": "d-red", "team_id": "red"}, {"id": "d-blue", "team_id": "blue"}]).execute()
    yield {"node": node, "service": service, "users": users,
           "anon": create_client(node.url, node.anon, options=ClientOptions(auto_refresh_token=False, persist_session=False))}
    node.stop()


def ids(response):
    return sorted(r["id"] for r in response.data)


def test_select_filter_count_and_single_see_only_visible_rows(world):
    bob = world["users"]["bob"][1]
    assert ids(bob.table("notes").select("*").execute()) == ["a-public", "b-private"]
    assert bob.table("notes").select("*").eq("id", "a-private").execute().data == []
    assert bob.table("notes").select("id", count="exact").execute().count == 2
    assert bob.table("notes").select("id", count="exact").ilike("body", "%secret%").execute().count == 1
    with pytest.raises(APIError) as e:
        bob.table("notes").select("*").eq("id", "a-private").single().execute()
    assert e.value.code == "PGRST116"
    assert ids(world["anon"].table("notes").select("*").execute()) == ["a-public"]
    assert ids(world["service"].table("notes").select("*").execute()) == ["a-private", "a-public", "b-private"]


def test_update_and_delete_by_filter_cannot_touch_invisible_rows(world):
    bob = world["users"]["bob"][1]
    assert bob.table("notes").update({"body": "pwned"}).eq("id", "a-private").execute().data == []
    assert bob.table("notes").delete().like("id", "a-%").execute().data == []
    assert world["anon"].table("notes").update({"body": "pwned"}).eq("public", True).execute().data == []
    rows = {r["id"]: r for r in world["service"].table("notes").select("*").execute().data}
    assert rows["a-private"]["body"] == "alice secret" and rows["a-public"]["body"] == "alice hello"
    assert len(rows) == 3
    changed = bob.table("notes").update({"body": "bob edit"}).eq("id", "b-private").execute().data
    assert [r["body"] for r in changed] == ["bob edit"]


def test_inserts_and_upserts_are_checked(world):
    alice_id, alice, _ = world["users"]["alice"]
    bob_id, bob, _ = world["users"]["bob"]
    with pytest.raises(APIError) as e:
        bob.table("notes").insert({"id": "forged", "owner": alice_id, "body": "x", "public": True}).execute()
    assert e.value.code == "42501"
    with pytest.raises(APIError) as e:
        bob.table("notes").upsert({"id": "a-private", "owner": bob_id, "body": "stolen", "public": False}).execute()
    assert e.value.code == "42501"
    with pytest.raises(APIError) as e:  # with check on the new row: cannot give a note away
        alice.table("notes").update({"owner": bob_id}).eq("id", "a-private").execute()
    assert e.value.code == "42501"
    with pytest.raises(APIError) as e:  # anon has no insert policy: denied by default
        world["anon"].table("notes").insert({"id": "anon", "owner": bob_id, "body": "x", "public": True}).execute()
    assert e.value.code == "42501"
    assert alice.table("notes").insert({"id": "a-new", "owner": alice_id, "body": "mine", "public": False}).execute().data
    assert world["service"].table("notes").select("owner").eq("id", "a-private").single().execute().data["owner"] == alice_id


def test_embedding_applies_the_embedded_collections_policies(world):
    bob = world["users"]["bob"][1]
    note = bob.table("notes").select("id,comments(id,body)").eq("id", "a-public").single().execute().data
    assert [c["id"] for c in note["comments"]] == ["c2"]
    alice_id, alice, _ = world["users"]["alice"]
    comment = alice.table("comments").select("id,notes(id,body)").eq("id", "c1").single().execute().data
    assert comment["notes"]["id"] == "a-public"
    hidden = world["service"].table("comments").insert({"id": "c3", "note_id": "b-private", "author": alice_id, "body": "x"})
    hidden.execute()
    comment = alice.table("comments").select("id,notes(id)").eq("id", "c3").single().execute().data
    assert comment["notes"] is None  # bob's private note is invisible to alice


def test_team_membership_through_another_collection(world):
    assert ids(world["users"]["bob"][1].table("docs").select("*").execute()) == ["d-red"]
    assert world["users"]["alice"][1].table("docs").select("*").execute().data == []
    assert world["anon"].table("docs").select("*").execute().data == []


def secret_of(node):
    with open(os.path.join(node.dir, "n1", "secrets.json")) as f:
        text = json.load(f)["jwt_secret"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rest_get(node, path, token):
    request = urllib.request.Request(node.url + "/rest/v1/" + path, headers={"apikey": node.anon, "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_forged_expired_and_none_tokens_get_nothing(world):
    node = world["node"]
    alice_id, _, session = world["users"]["alice"]
    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-cluster-secret-but-long-enough-1234567890", algorithm="HS256")
    expired = jwt.encode(dict(claims, exp=int(time.time()) - 10), secret_of(node), algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    service_claims = jwt.encode({"role": "service_role", "exp": int(time.time()) + 60}, "x" * 48, algorithm="HS256")
    for token in (forged, expired, unsigned, service_claims):
        status, body = rest_get(node, "notes?select=id", token)
        assert status == 401 and body["code"] == "PGRST301", (status, body)
    assert rest_get(node, "notes?select=id", session.access_token)[0] == 200


def test_explain_shows_the_injected_predicates(world):
    node = world["node"]
    bob_id, _, session = world["users"]["bob"]
    request = urllib.request.Request(node.url + "/rest/v1/notes?select=id", headers={
        "apikey": node.service, "Authorization": f"Bearer {node.service}",
        "Accept": "application/vnd.pgrst.plan+json", "X-AeroDB-Explain-As": session.access_token})
    with urllib.request.urlopen(request, timeout=10) as r:
        plan = json.loads(r.read())
    assert plan["policies"]["role"] == "authenticated" and bob_id in plan["policies"]["select"]
    assert bob_id in json.dumps(plan)


def test_bad_policies_are_refused_with_clear_errors(world):
    node = world["node"]
    for body, needle in [
        ({"name": "p", "operation": "select", "using": "owner = = auth.uid()"}, "policy expression"),
        ({"name": "p", "operation": "select", "using": "nope = auth.uid()"}, "nope"),
        ({"name": "p", "operation": "upsert", "using": "true"}, "operation"),
        ({"name": "p", "operation": "select"}, "using"),
        ({"name": "p", "operation": "select", "using": "true", "roles": ["service_role"]}, "roles"),
    ]:
        with pytest.raises(urllib.error.HTTPError) as e:
            node.admin("POST", "collections/notes/policies", body)
        assert e.value.code == 400 and needle in json.loads(e.value.read())["message"]
    listed = node.admin("GET", "policies")
    assert {p["id"] for p in listed["policies"]} >= {"notes.owner_all", "notes.public_read", "docs.team_read"}


def test_system_collections_are_never_served_over_rest(world):
    node = world["node"]
    for name in ("_auth_users", "_auth_sessions", "_policies", "_audit_log"):
        status, body = rest_get(node, name + "?select=*", node.service)
        assert status == 404 and body["code"] == "PGRST205", (name, status, body)
    request = urllib.request.Request(node.url + "/rest/v1/", headers={"apikey": node.anon})
    with urllib.request.urlopen(request, timeout=10) as r:
        paths = json.loads(r.read())["paths"]
    assert "/notes" in paths and not any(p.startswith("/_") for p in paths)
    # A user collection may reference the users collection, but never embed it.
    node.admin("POST", "collections", {"name": "profiles", "fields": {
        "id": {"type": "text"}, "user_id": {"type": "uuid", "references": {"collection": "_auth_users", "on_delete": "cascade"}}}})
    status, body = rest_get(node, "profiles?select=*,_auth_users(*)", node.service)
    assert status == 400 and "relationship" in body["message"], (status, body)


def test_password_change_signs_out_other_sessions(world):
    from test_auth import client
    node = world["node"]
    address, first = "changer@example.com", "changer pw 1"
    client(node, node.service).auth.admin.create_user({"email": address, "password": first, "email_confirm": True})
    a, b = client(node), client(node)
    a.auth.sign_in_with_password({"email": address, "password": first})
    other = b.auth.sign_in_with_password({"email": address, "password": first}).session
    a.auth.update_user({"password": "changer pw 2"})
    status, _ = rest_get(node, "notes?select=id", other.access_token)
    assert status == 401
    assert a.auth.get_user().user.email == address  # the session that changed it stays


def test_policies_are_declared_by_migrations(world):
    node = world["node"]
    node.admin("POST", "collections", {"name": "journal", "fields": {"id": {"type": "text"}, "owner": {"type": "uuid"}}})
    up = {"version": "20261201_rls", "name": "journal owner only", "checksum": "c1", "direction": "up", "steps": [
        {"create_policy": {"collection": "journal", "policy": {"name": "mine", "operation": "all", "using": "owner = auth.uid()"}}},
        {"enable_rls": "journal"}]}
    node.admin("POST", "migrations", up)
    listed = node.admin("GET", "policies")
    assert "journal.mine" in {p["id"] for p in listed["policies"]}
    assert {"collection": "journal", "enabled": True} in [{k: r[k] for k in ("collection", "enabled")} for r in listed["rls"]]
    bob_id, bob, _ = world["users"]["bob"]
    world["service"].table("journal").insert([{"id": "j1", "owner": bob_id}, {"id": "j2", "owner": world["users"]["alice"][0]}]).execute()
    assert ids(bob.table("journal").select("id").execute()) == ["j1"]
    down = dict(up, direction="down", steps=[{"disable_rls": "journal"}, {"drop_policy": {"collection": "journal", "name": "mine"}}])
    node.admin("POST", "migrations", down)
    assert ids(bob.table("journal").select("id").execute()) == ["j1", "j2"]


def test_the_policy_tester_shows_a_callers_conditions(world):
    node = world["node"]
    bob_id, _, session = world["users"]["bob"]
    as_bob = node.admin("POST", "collections/notes/policies/test", {"token": session.access_token})
    assert as_bob["enabled"] is True and as_bob["role"] == "authenticated"
    assert bob_id in as_bob["select"] and bob_id in as_bob["update_check"] and "public" in as_bob["select"]
    as_anon = node.admin("POST", "collections/notes/policies/test", {"role": "anon"})
    assert "public" in as_anon["select"] and as_anon["insert_check"] == "id IN []"  # denied by default
    assert node.admin("POST", "collections/notes/policies/test", {"role": "service_role"})["enabled"] is False
    as_member = node.admin("POST", "collections/docs/policies/test", {"role": "authenticated", "claims": {"sub": bob_id}})
    assert as_member["select"] == 'team_id IN ["red"]'
