"""The official Supabase Python client (supabase==2.34.1) against a real AeroDB node: /rest/v1."""
import pytest
from postgrest.exceptions import APIError
from supabase import create_client

SCHEMA = {
    "name": "items",
    "fields": {"id": {"type": "text"}, "name": {"type": "text"}, "qty": {"type": "int", "nullable": True},
               "tags": {"type": "array<text>", "nullable": True}},
    "indexes": [{"fields": ["qty"]}, {"fields": ["name"], "type": "fulltext"}],
}
ROWS = [{"id": "a1", "name": "blue widget", "qty": 5, "tags": ["x", "y"]},
        {"id": "a2", "name": "red gadget", "qty": 1},
        {"id": "a3", "name": "green widget", "qty": None}]


@pytest.fixture(scope="module")
def sb(node):
    node.admin("POST", "collections", SCHEMA)
    client = create_client(node.url, node.anon)
    inserted = client.table("items").insert(ROWS).execute().data
    assert [r["id"] for r in inserted] == ["a1", "a2", "a3"]
    return client


def ids(response):
    return [r["id"] for r in response.data]


def test_filters_order_and_range(sb):
    assert ids(sb.table("items").select("*").gt("qty", 3).order("qty", desc=True).range(0, 9).execute()) == ["a1"]
    assert ids(sb.table("items").select("id").or_("qty.gt.4,qty.is.null").order("id").execute()) == ["a1", "a3"]
    assert ids(sb.table("items").select("id").ilike("name", "%WIDGET%").order("id").execute()) == ["a1", "a3"]
    assert ids(sb.table("items").select("id").like("name", "blue w*").execute()) == ["a1"]
    assert ids(sb.table("items").select("id").in_("id", ["a1", "a3"]).order("id").execute()) == ["a1", "a3"]
    assert ids(sb.table("items").select("id").not_.in_("id", ["a1"]).order("id").execute()) == ["a2", "a3"]
    assert ids(sb.table("items").select("id").contains("tags", ["x"]).execute()) == ["a1"]
    assert ids(sb.table("items").select("id").order("qty", desc=False, nullsfirst=True).execute()) == ["a3", "a2", "a1"]
    assert ids(sb.table("items").select("id").like_any_of("name", "blue*,red*").order("id").execute()) == ["a1", "a2"]
    assert ids(sb.table("items").select("id").ilike_all_of("name", "%WIDGET,GREEN%").execute()) == ["a3"]


def test_full_text_search(sb):
    found = sb.table("items").select("id").text_search("name", "widget", options={"type": "plain", "config": "english"})
    assert ids(found.order("id").execute()) == ["a1", "a3"]


def test_select_renames_and_count(sb):
    r = sb.table("items").select("id,label:name", count="exact").eq("id", "a2").execute()
    assert r.data == [{"id": "a2", "label": "red gadget"}]
    assert r.count == 1
    assert sb.table("items").select("id", count="exact").limit(1).execute().count == 3


def test_single_and_maybe_single(sb):
    assert sb.table("items").select("name").eq("id", "a2").single().execute().data == {"name": "red gadget"}
    with pytest.raises(APIError) as error:
        sb.table("items").select("*").eq("id", "nope").single().execute()
    assert error.value.code == "PGRST116"
    assert sb.table("items").select("*").eq("id", "nope").maybe_single().execute() is None


def test_writes_update_upsert_delete(sb):
    sb.table("items").insert({"id": "w1", "name": "temp", "qty": 2}).execute()
    assert sb.table("items").update({"qty": 9}).eq("id", "w1").execute().data[0]["qty"] == 9
    assert sb.table("items").upsert({"id": "w1", "name": "temp 2"}).execute().data[0] == \
        {"id": "w1", "name": "temp 2", "qty": 9, "tags": None}
    assert ids(sb.table("items").delete().eq("id", "w1").execute()) == ["w1"]
    assert sb.table("items").select("*").eq("id", "w1").execute().data == []


def test_errors_have_postgrest_codes(sb):
    with pytest.raises(APIError) as duplicate:
        sb.table("items").insert({"id": "a1", "name": "again"}).execute()
    assert duplicate.value.code == "23505"
    with pytest.raises(APIError) as missing:
        sb.table("nope").select("*").execute()
    assert missing.value.code == "PGRST205"
    with pytest.raises(APIError) as bad:
        sb.table("items").select("*").eq("qty", "abc").execute()
    assert bad.value.code == "22P02"
    with pytest.raises(APIError) as column:
        sb.table("items").select("nope").execute()
    assert column.value.code == "42703"
    with pytest.raises(APIError) as rpc:
        sb.rpc("add", {"a": 1}).execute()
    assert rpc.value.code == "PGRST202"


def test_bad_keys_are_refused(node):
    forged = create_client(node.url, node.anon[:-4] + "abcd")
    with pytest.raises(APIError) as error:
        forged.table("items").select("*").execute()
    assert error.value.code == "PGRST301"


def test_an_api_key_in_the_url_is_a_key_not_a_filter(node, sb):
    """Supabase's gateway takes `?apikey=` as the key and hides it from PostgREST."""
    import httpx
    ok = httpx.get(f"{node.url}/rest/v1/items", params={"apikey": node.anon, "select": "id", "order": "id"})
    assert ok.status_code == 200, ok.text
    assert [r["id"] for r in ok.json()] == ["a1", "a2", "a3"]
    forged = httpx.get(f"{node.url}/rest/v1/items", params={"apikey": node.anon[:-4] + "abcd"})
    assert forged.status_code == 401 and forged.json()["code"] == "PGRST301"
    missing = httpx.get(f"{node.url}/rest/v1/items")
    assert missing.status_code == 401


def test_embedding_declared_references_both_ways(node, sb):
    node.admin("POST", "collections", {"name": "users", "fields": {"id": {"type": "text"}, "name": {"type": "text"}}})
    node.admin("POST", "collections", {"name": "posts", "fields": {
        "id": {"type": "text"}, "title": {"type": "text"},
        "author_id": {"type": "text", "references": {"collection": "users", "on_delete": "cascade"}}},
        "indexes": [{"fields": ["author_id"]}]})
    sb.table("users").insert([{"id": "u1", "name": "Ada"}, {"id": "u2", "name": "Bob"}]).execute()
    sb.table("posts").insert([{"id": "p1", "title": "one", "author_id": "u1"},
                              {"id": "p2", "title": "two", "author_id": "u1"}]).execute()
    posts = sb.table("posts").select("title,author:users(name)").order("id").execute().data
    assert posts == [{"title": "one", "author": {"name": "Ada"}}, {"title": "two", "author": {"name": "Ada"}}]
    users = sb.table("users").select("name,posts(title)").order("id").execute().data
    assert users == [{"name": "Ada", "posts": [{"title": "one"}, {"title": "two"}]}, {"name": "Bob", "posts": []}]
    with pytest.raises(APIError):
        sb.table("items").select("*,users(name)").execute()
    # Filters, order and limit on an embedded resource restrict the embedded rows only...
    users = sb.table("users").select("name,posts(title)").eq("posts.title", "two").order("id").execute().data
    assert users == [{"name": "Ada", "posts": [{"title": "two"}]}, {"name": "Bob", "posts": []}]
    users = sb.table("users").select("name,posts(title)").order("id").order("title", desc=True, foreign_table="posts") \
        .limit(1, foreign_table="posts").execute().data
    assert users == [{"name": "Ada", "posts": [{"title": "two"}]}, {"name": "Bob", "posts": []}]
    posts = sb.table("posts").select("title,author:users(name)").eq("author.name", "Bob").order("id").execute().data
    assert posts == [{"title": "one", "author": None}, {"title": "two", "author": None}]
    # ...and !inner keeps only the parents that have a matching embedded row (counts included).
    r = sb.table("users").select("name,posts!inner(title)", count="exact").eq("posts.title", "one").execute()
    assert r.data == [{"name": "Ada", "posts": [{"title": "one"}]}] and r.count == 1
    r = sb.table("posts").select("title,author:users!inner(name)", count="exact").eq("author.name", "Bob").execute()
    assert r.data == [] and r.count == 0
    with pytest.raises(APIError) as e:
        sb.table("users").select("name").eq("posts.title", "one").execute()
    assert e.value.code == "PGRST100"


def test_delete_without_filter_is_refused(sb):
    with pytest.raises(APIError) as error:
        sb.table("items").delete().execute()
    assert error.value.code == "21000"


def test_upsert_on_conflict_with_a_unique_index(node):
    node.admin("POST", "collections", {"name": "accounts", "fields": {
        "id": {"type": "text"}, "email": {"type": "text"}, "plan": {"type": "text"}},
        "indexes": [{"fields": ["email"], "unique": True}]})
    sb = create_client(node.url, node.anon)
    sb.table("accounts").insert({"id": "u1", "email": "a@x.io", "plan": "free"}).execute()
    merged = sb.table("accounts").upsert({"id": "other", "email": "a@x.io", "plan": "pro"}, on_conflict="email").execute().data
    assert merged == [{"id": "u1", "email": "a@x.io", "plan": "pro"}]
    skipped = sb.table("accounts").upsert([{"id": "u2", "email": "a@x.io", "plan": "team"}, {"id": "u3", "email": "b@x.io", "plan": "free"}],
                                          on_conflict="email", ignore_duplicates=True).execute().data
    assert [r["id"] for r in skipped] == ["u3"]
    rows = sb.table("accounts").select("id,plan").order("id").execute().data
    assert rows == [{"id": "u1", "plan": "pro"}, {"id": "u3", "plan": "free"}]
    with pytest.raises(APIError) as e:
        sb.table("accounts").upsert({"id": "u4", "email": "c@x.io", "plan": "x"}, on_conflict="plan").execute()
    assert e.value.code == "PGRST100" and "unique index" in e.value.message
    with pytest.raises(APIError) as e:  # a plain insert of a taken address is a unique violation
        sb.table("accounts").insert({"id": "u5", "email": "b@x.io", "plan": "x"}).execute()
    assert e.value.code == "23505"


def test_bulk_insert_missing_columns_null_or_default(node):
    node.admin("POST", "collections", {"name": "tasks", "fields": {
        "id": {"type": "text"}, "state": {"type": "text", "nullable": True, "default": "open"}}})
    sb = create_client(node.url, node.anon)
    rows = sb.table("tasks").insert([{"id": "t1", "state": "done"}, {"id": "t2"}]).execute().data
    assert rows == [{"id": "t1", "state": "done"}, {"id": "t2", "state": None}]  # the client's default_to_null=True
    rows = sb.table("tasks").insert([{"id": "t3", "state": "done"}, {"id": "t4"}], default_to_null=False).execute().data
    assert rows == [{"id": "t3", "state": "done"}, {"id": "t4", "state": "open"}]  # Prefer: missing=default


def test_not_filters_are_three_valued(node):
    """Issue 12 item 14: PostgreSQL's NOT (qty = 1) is null where qty is null, so PostgREST leaves
    those rows out of not.eq, not.in, not.like and negated or(); is.null / not.is.null are two-valued."""
    node.admin("POST", "collections", {"name": "tv", "fields": {
        "id": {"type": "text"}, "name": {"type": "text", "nullable": True}, "qty": {"type": "int", "nullable": True}}})
    client = create_client(node.url, node.anon)
    client.table("tv").insert([{"id": "a", "name": "blue", "qty": 1}, {"id": "b", "name": "red", "qty": 2},
                               {"id": "c", "name": None, "qty": None}]).execute()

    def tv():
        return client.table("tv").select("id").order("id")

    assert ids(tv().not_.eq("qty", 1).execute()) == ["b"]
    assert ids(tv().neq("qty", 1).execute()) == ["b"]
    assert ids(tv().not_.in_("qty", [1, 3]).execute()) == ["b"]
    assert ids(tv().not_.like("name", "blue*").execute()) == ["b"]
    assert ids(tv().not_.gt("qty", 1).execute()) == ["a"]
    assert ids(tv().or_("qty.eq.1,qty.not.eq.1").execute()) == ["a", "b"]
    assert ids(tv().or_("not.or(qty.eq.1,name.eq.x)").execute()) == ["b"]
    # FALSE AND UNKNOWN is FALSE, so its negation is TRUE: c is returned.
    assert ids(tv().or_("not.and(qty.gt.5,id.eq.x)").execute()) == ["a", "b", "c"]
    assert ids(tv().or_("not.and(qty.gt.5,name.eq.x)").execute()) == ["a", "b"]  # UNKNOWN AND UNKNOWN
    assert ids(tv().not_.is_("qty", "null").execute()) == ["a", "b"]
    assert ids(tv().is_("qty", "null").execute()) == ["c"]


def test_hostile_integers_and_tsqueries_are_clear_errors(node, sb):
    """Issue 12 items 1-2 through the official client: huge ranges are capped, out-of-range
    offsets are 416 PGRST103, a 10,000-deep tsquery is PGRST100, and the node keeps answering."""
    assert ids(sb.table("items").select("id").order("id").range(0, 2**63 - 2).execute())[:3] == ["a1", "a2", "a3"]
    with pytest.raises(APIError) as offset:
        sb.table("items").select("id").range(2**63 - 2, 2**63 - 1).execute()
    assert offset.value.code == "PGRST103"
    with pytest.raises(APIError) as deep:
        sb.table("items").select("id").text_search("name", "!" * 10_000 + "widget").execute()
    assert deep.value.code == "PGRST100"
    assert ids(sb.table("items").select("id").eq("id", "a1").execute()) == ["a1"]
