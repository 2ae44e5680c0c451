"""Issue 22, PostgREST fidelity, through the official Supabase client (supabase==2.34.1) against a
real node: JSON paths in select/filters/order, casts, preferences (handling=strict, max-affected,
headers-only, is.unknown, Preference-Applied), embedded counts, spreads, ordering by a to-one
embedded column, all of it under an owner-only row-level-security policy too."""
import json
import urllib.error
import urllib.request

import pytest
from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client

from conftest import Node
from test_auth import SETTINGS

AUTHORS = [{"id": "u1", "name": "Ada"}, {"id": "u2", "name": "Bob"}, {"id": "u3", "name": "Cy"}]
BOOKS = [
    {"id": "b1", "title": "one", "qty": 1, "ok": True, "author_id": "u2",
     "doc": {"color": "red", "n": 3, "meta": {"k": "x"}, "tags": ["a", "b"]}},
    {"id": "b2", "title": "two", "qty": 5, "ok": None, "author_id": "u1",
     "doc": {"color": "blue", "n": 10, "meta": {"k": "y"}, "tags": ["c"]}},
    {"id": "b3", "title": "three", "qty": None, "ok": False, "author_id": "u1",
     "doc": {"color": "red", "n": 2.5, "meta": {"k": "z"}, "tags": []}},
    {"id": "b4", "title": "4", "qty": 2, "ok": None, "author_id": None, "doc": None},
]


@pytest.fixture(scope="module")
def sb(node):
    node.admin("POST", "collections", {"name": "fauthors", "fields": {"id": {"type": "text"}, "name": {"type": "text"}}})
    node.admin("POST", "collections", {"name": "fbooks", "fields": {
        "id": {"type": "text"}, "title": {"type": "text"}, "qty": {"type": "int", "nullable": True},
        "ok": {"type": "bool", "nullable": True}, "doc": {"type": "json", "nullable": True},
        "tags": {"type": "array<text>", "nullable": True},
        "author_id": {"type": "text", "nullable": True, "references": {"collection": "fauthors"}}},
        "indexes": [{"fields": ["author_id"]}]})
    client = create_client(node.url, node.service)
    client.table("fauthors").insert(AUTHORS).execute()
    client.table("fbooks").insert(BOOKS).execute()
    return client


def ids(response):
    return [r["id"] for r in response.data]


def books(sb, columns="id"):
    return sb.table("fbooks").select(columns)


def test_json_paths_in_select_name_values_by_their_last_key(sb):
    rows = books(sb, "id,c:doc->color,doc->>color,doc->meta->>k,doc->tags->0,n:doc->n").order("id").execute().data
    assert rows[0] == {"id": "b1", "c": "red", "color": "red", "k": "x", "tags": "a", "n": 3}
    assert rows[2] == {"id": "b3", "c": "red", "color": "red", "k": "z", "tags": None, "n": 2.5}
    assert rows[3] == {"id": "b4", "c": None, "color": None, "k": None, "tags": None, "n": None}
    # ->> reads text: a number becomes its text, an object its JSON text
    rows = books(sb, "id,doc->>n,m:doc->>meta").eq("id", "b1").execute().data
    assert rows == [{"id": "b1", "n": "3", "m": '{"k":"x"}'}]


def test_json_path_filters_compare_json_or_text(sb):
    assert ids(books(sb).eq("doc->>color", "red").order("id").execute()) == ["b1", "b3"]
    assert ids(books(sb).eq("doc->meta->>k", "y").execute()) == ["b2"]
    assert ids(books(sb).gt("doc->n", 2.9).order("id").execute()) == ["b1", "b2"]  # as JSON numbers
    assert ids(books(sb).gt("doc->>n", "25").order("id").execute()) == ["b1"]  # as text: "3" > "25" > "10"
    assert ids(books(sb).gt("doc->>n::int", 2).order("id").execute()) == ["b1", "b2"]  # cast, 2.5 rounds to 3
    assert ids(books(sb).in_("doc->>color", ["blue", "green"]).execute()) == ["b2"]
    assert ids(books(sb).eq("doc->tags->0", '"c"').execute()) == ["b2"]
    assert ids(books(sb).is_("doc->>color", "null").order("id").execute()) == ["b4"]
    assert ids(books(sb).like("doc->>color", "re*").order("id").execute()) == ["b1", "b3"]
    assert ids(books(sb).or_("doc->>color.eq.blue,doc->n.lt.3").order("id").execute()) == ["b2", "b3"]
    with pytest.raises(APIError) as e:
        books(sb).eq("nope->>x", "1").execute()
    assert e.value.code == "42703"
    with pytest.raises(APIError) as e:
        books(sb).eq("title->>x", "1").execute()  # -> on a text column
    assert e.value.code == "22P02"


def test_json_path_order_and_embedded_filters(sb):
    assert ids(books(sb).order("doc->n", desc=True).execute()) == ["b4", "b2", "b1", "b3"]  # nulls first descending
    assert ids(books(sb).order("doc->>color").order("id", desc=True).execute()) == ["b2", "b3", "b1", "b4"]
    authors = sb.table("fauthors").select("name,fbooks(id)").eq("fbooks.doc->>color", "red").order("id").execute().data
    assert authors == [{"name": "Ada", "fbooks": [{"id": "b3"}]}, {"name": "Bob", "fbooks": [{"id": "b1"}]},
                       {"name": "Cy", "fbooks": []}]


def test_casts_in_select_keep_the_column_name(sb):
    assert books(sb, "id,qty::text").eq("id", "b1").execute().data == [{"id": "b1", "qty": "1"}]
    rows = books(sb, "id,q:qty::float,ok::int,ok::text,doc::text").eq("id", "b1").execute().data
    assert rows == [{"id": "b1", "q": 1.0, "ok": "true", "doc": rows[0]["doc"]}]  # the later ok wins, as in JSON
    assert json.loads(rows[0]["doc"])["color"] == "red"
    assert books(sb, "id,title::int,t:title::json").eq("id", "b4").execute().data == [{"id": "b4", "title": 4, "t": 4}]
    assert books(sb, "id,ok::int").order("id").execute().data[:3] == [{"id": "b1", "ok": 1}, {"id": "b2", "ok": None},
                                                                       {"id": "b3", "ok": 0}]
    assert books(sb, "id,n:doc->>n::float").eq("id", "b2").execute().data == [{"id": "b2", "n": 10.0}]
    with pytest.raises(APIError) as e:
        books(sb, "id,title::int").eq("id", "b1").execute()
    assert e.value.code == "22P02" and 'integer: "one"' in e.value.message
    with pytest.raises(APIError) as e:
        books(sb, "id,qty::money").execute()
    assert e.value.code == "42704"
    with pytest.raises(APIError) as e:
        books(sb, "id,tags::int").execute()
    assert e.value.code == "42846"


def raw(node, method, path, body=None, prefer=None, key=None):
    headers = {"apikey": key or node.service, "Authorization": f"Bearer {key or node.service}",
               "Content-Type": "application/json"}
    if prefer:
        headers["Prefer"] = prefer
    request = urllib.request.Request(node.url + "/rest/v1/" + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_max_affected_refuses_and_changes_nothing(node, sb):
    with pytest.raises(APIError) as e:
        sb.table("fbooks").update({"title": "changed"}).neq("id", "zz").max_affected(1).execute()
    assert e.value.code == "PGRST124" and e.value.details == "The query affects 4 rows"
    assert "changed" not in [r["title"] for r in books(sb, "title").execute().data]
    with pytest.raises(APIError) as e:
        sb.table("fbooks").delete().in_("id", ["b1", "b2"]).max_affected(1).execute()
    assert e.value.code == "PGRST124"
    assert len(books(sb).execute().data) == 4
    done = sb.table("fbooks").update({"title": "uno"}).eq("id", "b1").max_affected(1).execute()
    assert ids(done) == ["b1"]
    status, headers, _ = raw(node, "PATCH", "fbooks?id=eq.b1", {"title": "one"},
                             prefer="return=minimal,handling=strict,max-affected=1")
    assert status == 204 and headers["Preference-Applied"] == "return=minimal, handling=strict, max-affected=1"


def test_handling_strict_refuses_unknown_preferences(node, sb):
    status, _, body = raw(node, "GET", "fbooks?select=id", prefer="handling=strict,nonsense=1,count=exact")
    error = json.loads(body)
    assert status == 400 and error["code"] == "PGRST122" and "nonsense=1" in error["details"]
    status, headers, _ = raw(node, "GET", "fbooks?select=id", prefer="handling=lenient,nonsense=1,count=exact")
    assert status == 200 and headers["Preference-Applied"] == "count=exact, handling=lenient"
    assert headers["Content-Range"] == "0-3/4"


def test_return_headers_only_answers_location(node, sb):
    status, headers, body = raw(node, "POST", "fauthors", {"id": "u 9", "name": "Nine"}, prefer="return=headers-only")
    assert status == 201 and body == b""
    assert headers["Location"] == "/fauthors?id=eq.u%209"
    assert headers["Preference-Applied"] == "return=headers-only"
    assert sb.table("fauthors").select("name").eq("id", "u 9").execute().data == [{"name": "Nine"}]
    sb.table("fauthors").delete().eq("id", "u 9").execute()


def test_is_unknown_matches_null(sb):
    assert ids(books(sb).is_("ok", "unknown").order("id").execute()) == ["b2", "b4"]
    assert ids(books(sb).not_.is_("ok", "unknown").order("id").execute()) == ["b1", "b3"]


def test_embedded_counts_count_related_rows(sb):
    rows = sb.table("fauthors").select("name,fbooks(count)").order("id").execute().data
    assert rows == [{"name": "Ada", "fbooks": [{"count": 2}]}, {"name": "Bob", "fbooks": [{"count": 1}]},
                    {"name": "Cy", "fbooks": [{"count": 0}]}]
    rows = sb.table("fauthors").select("name,fbooks(count)").eq("fbooks.doc->>color", "red").order("id").execute().data
    assert [r["fbooks"] for r in rows] == [[{"count": 1}], [{"count": 1}], [{"count": 0}]]
    rows = sb.table("fauthors").select("name,fbooks!inner(count)").eq("fbooks.qty", 5).execute().data
    assert rows == [{"name": "Ada", "fbooks": [{"count": 1}]}]


def test_spread_lifts_to_one_columns_into_the_row(sb):
    rows = books(sb, "id,...fauthors(name)").order("id").execute().data
    assert rows == [{"id": "b1", "name": "Bob"}, {"id": "b2", "name": "Ada"}, {"id": "b3", "name": "Ada"},
                    {"id": "b4", "name": None}]
    rows = books(sb, "id,...fauthors!inner(writer:name)").eq("fauthors.name", "Bob").execute().data
    assert rows == [{"id": "b1", "writer": "Bob"}]
    rows = books(sb, "id,...fauthors!left(name)").eq("id", "b4").execute().data
    assert rows == [{"id": "b4", "name": None}]
    with pytest.raises(APIError) as e:
        sb.table("fauthors").select("id,...fbooks(title)").execute()  # to-many
    assert e.value.code == "PGRST119"


def test_order_by_a_to_one_embedded_column(sb):
    r = books(sb, "id,fauthors(name)").order("fauthors(name)", desc=True).order("id").execute()
    assert ids(r) == ["b4", "b1", "b2", "b3"]  # nulls first descending, then Bob, Ada (b2, b3 by id)
    r = books(sb, "id").order("fauthors(name)").order("id", desc=True).limit(2).execute()
    assert ids(r) == ["b3", "b2"]
    r = books(sb, "id,...fauthors(name)").order("fauthors(name)", nullsfirst=True).range(1, 2).execute()
    assert ids(r) == ["b2", "b3"]
    with pytest.raises(APIError) as e:
        sb.table("fauthors").select("id,fbooks(id)").order("fbooks(title)").execute()
    assert e.value.code == "PGRST118"


@pytest.fixture(scope="module")
def owned():
    """An owner-only policy on the embedded collection and on the parent."""
    node = Node(auth=SETTINGS, settings={"db_aggregates_enabled": True})
    node.admin("POST", "collections", {"name": "shelves", "fields": {
        "id": {"type": "text"}, "owner": {"type": "uuid"}, "label": {"type": "text"}}})
    node.admin("POST", "collections", {"name": "notes", "fields": {
        "id": {"type": "text"}, "owner": {"type": "uuid"}, "doc": {"type": "json"},
        "shelf_id": {"type": "text", "nullable": True, "references": {"collection": "shelves"}}}})
    for name in ("shelves", "notes"):
        node.admin("POST", f"collections/{name}/policies", {"name": "owner_all", "operation": "all", "roles": ["authenticated"],
                                                            "using": "owner = auth.uid()", "check": "owner = auth.uid()"})
        node.admin("POST", f"collections/{name}/rls", {"enabled": True})
    service = create_client(node.url, node.service)
    users = {}
    for who in ("alice", "bob"):
        user = service.auth.admin.create_user({"email": f"{who}@example.com", "password": "fidelity 1", "email_confirm": True}).user
        client = create_client(node.url, node.anon, options=ClientOptions(auto_refresh_token=False, persist_session=False))
        client.auth.sign_in_with_password({"email": f"{who}@example.com", "password": "fidelity 1"})
        users[who] = (user.id, client)
    alice, bob = users["alice"][0], users["bob"][0]
    service.table("shelves").insert([{"id": "s-a", "owner": alice, "label": "alice shelf"},
                                     {"id": "s-b", "owner": bob, "label": "bob shelf"}]).execute()
    service.table("notes").insert([
        {"id": "n1", "owner": alice, "doc": {"tag": "x"}, "shelf_id": "s-a"},
        {"id": "n2", "owner": alice, "doc": {"tag": "y"}, "shelf_id": "s-b"},  # on bob's shelf
        {"id": "n3", "owner": bob, "doc": {"tag": "x"}, "shelf_id": "s-a"},  # on alice's shelf
        {"id": "n4", "owner": bob, "doc": {"tag": "x"}, "shelf_id": "s-b"},
    ]).execute()
    yield node, users["alice"][1], users["bob"][1]
    node.stop()


def test_row_level_security_applies_to_every_new_feature(owned):
    node, alice, bob = owned
    # a JSON path filter is a filter: only visible rows
    assert ids(alice.table("notes").select("id").eq("doc->>tag", "x").execute()) == ["n1"]
    assert ids(bob.table("notes").select("id").eq("doc->>tag", "x").order("id").execute()) == ["n3", "n4"]
    # counts count only visible rows
    shelves = alice.table("shelves").select("id,notes(count)").execute().data
    assert shelves == [{"id": "s-a", "notes": [{"count": 1}]}]
    # a spread of an invisible row is null; ordering treats it as null
    rows = alice.table("notes").select("id,...shelves(label)").order("shelves(label)", desc=True).execute().data
    assert rows == [{"id": "n2", "label": None}, {"id": "n1", "label": "alice shelf"}]
    # casts and paths never reveal other rows
    assert alice.table("notes").select("id,doc->>tag,owner::text").execute().data == \
        [{"id": "n1", "tag": "x", "owner": rows and alice.table("notes").select("owner").eq("id", "n1").execute().data[0]["owner"]},
         {"id": "n2", "tag": "y", "owner": alice.table("notes").select("owner").eq("id", "n2").execute().data[0]["owner"]}]
    # max-affected counts only the rows the caller may change, and refuses when over
    with pytest.raises(APIError) as e:
        bob.table("notes").update({"doc": {"tag": "z"}}).eq("doc->>tag", "x").max_affected(1).execute()
    assert e.value.code == "PGRST124" and e.value.details == "The query affects 2 rows"
    assert ids(alice.table("notes").update({"doc": {"tag": "w"}}).eq("doc->>tag", "x").max_affected(1).execute()) == ["n1"]
    assert ids(bob.table("notes").select("id").eq("doc->>tag", "x").order("id").execute()) == ["n3", "n4"]
    # aggregates fold only the visible rows
    assert alice.table("notes").select("count()").execute().data == [{"count": 2}]
    assert bob.table("notes").select("shelf_id,count()").order("shelf_id").execute().data == \
        [{"shelf_id": "s-a", "count": 1}, {"shelf_id": "s-b", "count": 1}]
    # anon sees nothing at all
    assert anon_count(node) == [{"count": 0}]
    anon = create_client(node.url, node.anon)
    assert anon.table("shelves").select("id,notes(count)").execute().data == []


def anon_count(node):
    return create_client(node.url, node.anon).table("notes").select("count()").execute().data


def test_an_index_on_a_json_path_serves_filters_and_explain_shows_it(node):
    node.admin("POST", "collections", {"name": "fdocs", "fields": {"id": {"type": "int"}, "doc": {"type": "json"}},
                                       "indexes": [{"fields": ["doc->>color"]}, {"fields": ["doc->n::int"]}]})
    client = create_client(node.url, node.service)
    client.table("fdocs").insert([{"id": i, "doc": {"color": ["red", "blue"][i % 2], "n": i}} for i in range(200)]).execute()
    assert len(client.table("fdocs").select("id").eq("doc->>color", "red").limit(1000).execute().data) == 100
    assert ids(client.table("fdocs").select("id").gte("doc->n::int", 197).order("id").execute()) == [197, 198, 199]
    plan = client.table("fdocs").select("id").eq("doc->>color", "red").explain(format="json").execute().data
    assert plan["access"] == "indexEquality" and plan["index"] == "fdocs_doc___color_ordered"
    assert plan["bounds"] == ['doc->>color = "red"'] and plan["candidate_rows"] == 100
    plan = client.table("fdocs").select("id").gt("doc->n::int", 190).explain(format="json").execute().data
    assert plan["access"] == "indexRange" and plan["candidate_rows"] == 9
    # the index follows writes: an update moves the row between keys
    client.table("fdocs").update({"doc": {"color": "green", "n": 0}}).eq("id", 0).execute()
    assert ids(client.table("fdocs").select("id").eq("doc->>color", "green").execute()) == [0]
    with pytest.raises(urllib.error.HTTPError):  # a path into a text field cannot be indexed
        node.admin("POST", "collections", {"name": "fbad", "fields": {"id": {"type": "int"}, "t": {"type": "text"}},
                                           "indexes": [{"fields": ["t->>x"]}]})


def test_aggregates_are_off_by_default(sb):
    with pytest.raises(APIError) as e:
        books(sb, "count()").execute()
    assert e.value.code == "PGRST123"


@pytest.fixture(scope="module")
def aggregating():
    node = Node(settings={"db_aggregates_enabled": True})
    node.admin("POST", "collections", {"name": "sales", "fields": {
        "id": {"type": "int"}, "region": {"type": "text", "nullable": True}, "qty": {"type": "int", "nullable": True},
        "price": {"type": "float"}, "doc": {"type": "json", "nullable": True}}})
    client = create_client(node.url, node.service)
    client.table("sales").insert([
        {"id": 1, "region": "north", "qty": 2, "price": 1.5, "doc": {"k": "a"}},
        {"id": 2, "region": "north", "qty": 3, "price": 2.5, "doc": {"k": "b"}},
        {"id": 3, "region": "south", "qty": None, "price": 4.0, "doc": {"k": "a"}},
        {"id": 4, "region": None, "qty": 7, "price": 1.0, "doc": None},
    ]).execute()
    yield node, client
    node.stop()


def test_aggregates_group_by_the_other_columns(aggregating):
    _, client = aggregating
    assert client.table("sales").select("count()").execute().data == [{"count": 4}]
    assert client.table("sales").select("n:count(),qty.sum(),qty.count(),price.avg()").execute().data == \
        [{"n": 4, "sum": 12, "count": 3, "avg": 2.25}]
    rows = client.table("sales").select("region,qty.sum(),price.max()").order("region").execute().data
    assert rows == [{"region": "north", "sum": 5, "max": 2.5}, {"region": "south", "sum": None, "max": 4.0},
                    {"region": None, "sum": 7, "max": 1.0}]
    rows = client.table("sales").select("doc->>k,total:qty.sum()").gt("price", 1.2).order("doc->>k", desc=True).execute().data
    assert rows == [{"k": "b", "total": 3}, {"k": "a", "total": 2}]
    r = client.table("sales").select("region,count()", count="exact").order("region").limit(1).execute()
    assert r.data == [{"region": "north", "count": 2}] and r.count == 3
    assert client.table("sales").select("count()").eq("region", "west").execute().data == [{"count": 0}]
    assert client.table("sales").select("region,count()").eq("region", "west").execute().data == []
    with pytest.raises(APIError) as e:
        client.table("sales").select("region.sum()").execute()
    assert e.value.code == "42883"
