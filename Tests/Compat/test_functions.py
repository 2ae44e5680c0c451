"""Functions through the official Supabase client (supabase==2.34.1) against a real AeroDB node:
functions.invoke with JSON, text and binary bodies, error mapping, rpc with POST and GET, the
caller's policies inside a function, limits that stop hostile guests while REST keeps serving,
and deploy/versions/rollback/delete with the `aerodb functions` CLI (docs/FUNCTIONS.md).
The example modules are built by scripts/build-examples (wabt, clang's wasm32 target)."""
import base64
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client
from supabase_functions.errors import FunctionsHttpError, FunctionsRelayError

from conftest import BINARY, ROOT, Node
from test_auth import SETTINGS

EXAMPLES = os.path.join(ROOT, "examples", "functions", "build")
PASSWORD = "functions pass 1"


def wasm(name):
    path = os.path.join(EXAMPLES, name + ".wasm")
    if not os.path.exists(path):
        subprocess.run([os.path.join(ROOT, "scripts", "build-examples")], check=True)
    return path


def wat(text):
    """A module from WAT text, through wabt's wat2wasm (installed by scripts/build-examples)."""
    wasm("hello")
    with tempfile.TemporaryDirectory() as d:
        source, out = os.path.join(d, "m.wat"), os.path.join(d, "m.wasm")
        with open(source, "w") as f:
            f.write(text)
        subprocess.run(["wat2wasm", source, "-o", out], check=True)
        with open(out, "rb") as f:
            return f.read()


ABI = """
  (import "aerodb" "response_write" (func $write (param i32 i32) (result i32)))
  (import "aerodb" "response_status" (func $status (param i32) (result i32)))
  (memory (export "memory") 1)
"""
TEAPOT = wat_source = "(module " + ABI + """
  (data (i32.const 0) "{\\"error\\":\\"short and stout\\"}")
  (func (export "handle") (result i32)
    (drop (call $status (i32.const 418))) (drop (call $write (i32.const 0) (i32.const 27))) (i32.const 0)))"""
SPIN = "(module " + ABI + "(func (export \"handle\") (result i32) (loop $l (br $l)) (i32.const 0)))"
BOMB = "(module " + ABI + """(func (export "handle") (result i32)
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))"""
FLOOD = "(module " + ABI + """(func (export "handle") (result i32)
    (loop $l (drop (call $write (i32.const 0) (i32.const 65536))) (br $l)) (i32.const 0)))"""
TRAP = "(module " + ABI + "(func (export \"handle\") (result i32) unreachable))"


def cli(node, *args):
    return subprocess.run([BINARY, "functions", *args, "--url", node.url, "--key", node.service],
                          capture_output=True, text=True, timeout=120)


def deploy(node, name, module, **extra):
    body = {"name": name, "module": base64.b64encode(module).decode()}
    body.update(extra)
    return node.admin("POST", "functions", body)


def admin_error(node, method, path, body=None):
    try:
        node.admin(method, path, body)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    raise AssertionError("expected an error")


@pytest.fixture(scope="module")
def world():
    node = Node(auth=SETTINGS)
    done = cli(node, "deploy", "hello", "--file", wasm("hello"))
    assert done.returncode == 0, done.stderr
    done = cli(node, "deploy", "add", "--file", wasm("add"), "--rpc", "a:int,b:int")
    assert done.returncode == 0, done.stderr
    deploy(node, "notes", open(wasm("notes"), "rb").read())
    deploy(node, "teapot", wat(TEAPOT))
    deploy(node, "trap", wat(TRAP))
    deploy(node, "open", wat(TEAPOT), verify_jwt=False)
    deploy(node, "spin", wat(SPIN), limits={"fuel": 10_000_000_000, "wall_ms": 1500})
    deploy(node, "bomb", wat(BOMB), limits={"memory_bytes": 16 << 20})
    deploy(node, "flood", wat(FLOOD))
    yield node
    node.stop()


def client(node, key=None):
    return create_client(node.url, key or node.anon,
                         options=ClientOptions(auto_refresh_token=False, persist_session=False))


def test_invoke_json_text_binary_and_headers(world):
    sb = client(world)
    assert sb.functions.invoke("hello", {"body": {"name": "aero", "n": [1, 2]}, "responseType": "json"}) == {"name": "aero", "n": [1, 2]}
    assert sb.functions.invoke("hello", {"body": "plain text é"}) == "plain text é".encode()
    blob = bytes(range(256)) * 64
    assert sb.functions.invoke("hello", {"body": blob}) == blob
    assert sb.functions.invoke("hello", {"body": "x", "headers": {"Content-Type": "text/x-custom", "X-Trace": "1"}}) == b"x"
    assert sb.functions.invoke("hello?q=1", {"method": "GET"}) == b"{}"
    # The function chose the answer's content type from the request's.
    request = urllib.request.Request(world.url + "/functions/v1/hello", data=b"<a/>", method="POST",
                                     headers={"apikey": world.anon, "Authorization": f"Bearer {world.anon}",
                                              "Content-Type": "application/xml"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.headers["Content-Type"] == "application/xml" and r.read() == b"<a/>"


def test_errors_map_to_the_clients_exceptions(world):
    sb = client(world)
    with pytest.raises(FunctionsHttpError) as missing:
        sb.functions.invoke("nope", {"body": {}})
    assert missing.value.status == 404
    with pytest.raises(FunctionsHttpError) as teapot:
        sb.functions.invoke("teapot", {"body": {}})
    assert teapot.value.status == 418 and "short and stout" in teapot.value.message
    with pytest.raises(FunctionsHttpError) as trap:
        sb.functions.invoke("trap", {"body": {}})
    assert trap.value.status == 500 and "trapped" in trap.value.message
    forged = client(world, world.anon[:-4] + "AAAA")
    with pytest.raises(FunctionsHttpError) as unauthorized:
        forged.functions.invoke("hello", {"body": {}})
    assert unauthorized.value.status == 401
    # verify_jwt false: the bad key is let in (as anon), the function's own answer comes back.
    with pytest.raises(FunctionsHttpError) as open_teapot:
        forged.functions.invoke("open", {"body": {}})
    assert open_teapot.value.status == 418
    assert not isinstance(open_teapot.value, FunctionsRelayError)


def test_rpc_post_and_get(world):
    sb = client(world)
    assert sb.rpc("add", {"a": 2, "b": 40}).execute().data == 42
    assert sb.rpc("add", {"a": 5, "b": 6}, get=True).execute().data == 11
    assert sb.rpc("add", {"a": -7, "b": 3}, get=True).execute().data == -4
    with pytest.raises(APIError) as missing_arg:
        sb.rpc("add", {"a": 1}).execute()
    assert missing_arg.value.code == "PGRST202"
    with pytest.raises(APIError) as unknown:
        sb.rpc("nope", {}).execute()
    assert unknown.value.code == "PGRST202"
    with pytest.raises(APIError) as not_rpc:
        sb.rpc("hello", {}).execute()
    assert not_rpc.value.code == "PGRST202"
    with pytest.raises(APIError) as wrong_type:
        sb.rpc("add", {"a": "two", "b": 1}).execute()
    assert wrong_type.value.code == "22P02"
    with pytest.raises(APIError) as wrong_get:
        sb.rpc("add", {"a": "x", "b": 1}, get=True).execute()
    assert wrong_get.value.code == "22P02"


def test_database_calls_run_as_the_caller_under_policies(world):
    node = world
    node.admin("POST", "collections", {"name": "notes", "fields": {
        "id": {"type": "text"}, "owner": {"type": "uuid"}, "body": {"type": "text"}}, "indexes": [{"fields": ["owner"]}]})
    node.admin("POST", "collections/notes/policies", {"name": "own", "operation": "all", "roles": ["authenticated"],
                                                      "using": "owner = auth.uid()", "check": "owner = auth.uid()"})
    node.admin("POST", "collections/notes/rls", {"enabled": True})
    service = client(node, node.service)
    users = {}
    for who in ("alice", "bob"):
        user = service.auth.admin.create_user({"email": f"{who}@fn.example", "password": PASSWORD, "email_confirm": True}).user
        sb = client(node)
        sb.auth.sign_in_with_password({"email": f"{who}@fn.example", "password": PASSWORD})
        users[who] = (user.id, sb)
    (alice, alice_sb), (bob, bob_sb) = users["alice"], users["bob"]
    service.table("notes").insert([{"id": "a1", "owner": alice, "body": "alice"},
                                   {"id": "b1", "owner": bob, "body": "bob"}]).execute()
    seen = alice_sb.functions.invoke("notes", {"method": "GET", "responseType": "json"})
    assert seen["status"] == 200 and [r["id"] for r in seen["body"]] == ["a1"]
    assert client(node).functions.invoke("notes", {"method": "GET", "responseType": "json"})["body"] == []
    everything = service.functions.invoke("notes", {"method": "GET", "responseType": "json"})
    assert [r["id"] for r in everything["body"]] == ["a1", "b1"]
    # Writes as the caller: the policy's check refuses a row for someone else.
    wrote = bob_sb.functions.invoke("notes", {"body": {"id": "b2", "owner": bob, "body": "mine"}, "responseType": "json"})
    assert wrote["status"] == 201 and wrote["body"][0]["id"] == "b2"
    with pytest.raises(FunctionsHttpError) as refused:
        bob_sb.functions.invoke("notes", {"body": {"id": "b3", "owner": alice, "body": "forged"}})
    assert refused.value.status == 403
    assert [r["id"] for r in service.table("notes").select("id").order("id").execute().data] == ["a1", "b1", "b2"]


def test_limits_stop_hostile_guests_while_rest_serves(world):
    node = world
    sb = client(node, node.service)
    node.admin("POST", "collections", {"name": "pings", "fields": {"id": {"type": "text"}}})
    sb.table("pings").insert({"id": "p"}).execute()
    results = {}

    def hostile(name):
        try:
            sb.functions.invoke(name, {"body": {}})
        except FunctionsHttpError as e:
            results[name] = (e.status, e.message)

    threads = [threading.Thread(target=hostile, args=(n,)) for n in ("spin", "bomb", "flood")]
    for t in threads:
        t.start()
    served, started = 0, time.time()
    while any(t.is_alive() for t in threads) and time.time() - started < 20:
        assert sb.table("pings").select("id").eq("id", "p").execute().data == [{"id": "p"}]
        served += 1
    for t in threads:
        t.join(timeout=30)
    assert served > 0
    assert results["spin"][0] == 546 and "wall_ms" in results["spin"][1]
    assert results["bomb"][0] == 546 and "memory_bytes" in results["bomb"][1]
    assert results["flood"][0] == 546 and "response_bytes" in results["flood"][1]
    logs = cli(node, "logs", "spin")
    assert logs.returncode == 0 and "AERO_FUNCTION_LIMIT" in logs.stdout


def test_bad_deploys_store_nothing(world):
    node = world
    before = node.admin("GET", "functions")
    cases = [
        {"name": "bad", "module": base64.b64encode(b"\0asm\x01\0\0\0garbage").decode()},
        {"name": "Bad Name", "module": base64.b64encode(open(wasm("hello"), "rb").read()).decode()},
        {"name": "hello", "module": base64.b64encode(open(wasm("hello"), "rb").read()).decode(), "limits": {"fuel": -1}},
        {"name": "hello", "module": base64.b64encode(open(wasm("hello"), "rb").read()).decode(), "limits": {"cpu": 1}},
        {"name": "noexport", "module": base64.b64encode(wat("(module (memory (export \"memory\") 1))")).decode()},
        {"name": "sys", "module": base64.b64encode(wat("(module (import \"env\" \"system\" (func)) (memory (export \"memory\") 1) (func (export \"handle\") (result i32) (i32.const 0)))")).decode()},
        {"name": "hello", "module": "not base64!"},
    ]
    for body in cases:
        status, error = admin_error(node, "POST", "functions", body)
        assert status == 400 and error["code"] == "AERO_FUNCTION_INVALID", (body["name"], error)
    assert node.admin("GET", "functions") == before


def test_versions_rollback_and_delete_with_the_cli(world):
    node = world
    assert cli(node, "deploy", "ver", "--file", wasm("hello")).returncode == 0
    assert cli(node, "deploy", "ver", "--file", wasm("add"), "--rpc", "a:int,b:int").returncode == 0
    sb = client(node)
    assert sb.rpc("ver", {"a": 1, "b": 2}).execute().data == 3
    info = node.admin("GET", "functions/ver")
    assert info["version"] == 2 and [v["version"] for v in info["versions"]] == [1, 2]
    rolled = cli(node, "rollback", "ver")
    assert rolled.returncode == 0 and "version 1" in rolled.stdout
    assert sb.functions.invoke("ver", {"body": {"back": True}, "responseType": "json"}) == {"back": True}
    assert cli(node, "rollback", "ver", "--version", "2").returncode == 0
    assert sb.rpc("ver", {"a": 2, "b": 2}).execute().data == 4
    listed = cli(node, "list")
    assert listed.returncode == 0 and "ver  v2  rpc(a:int,b:int)" in listed.stdout
    invoked = cli(node, "invoke", "hello", "--data", '{"k":1}')
    assert invoked.returncode == 0 and invoked.stdout.strip() == '{"k":1}'
    assert cli(node, "delete", "ver").returncode == 0
    with pytest.raises(FunctionsHttpError) as gone:
        sb.functions.invoke("ver", {"body": {}})
    assert gone.value.status == 404
    assert cli(node, "delete", "ver").returncode != 0


def test_cluster_deploy_through_a_replica_and_run_everywhere():
    """Modules are replicated documents: deployed through n3 (forwarded to the primary n1, answered
    after n3 applied it), they run on n3 itself; a writing invocation on n3 is forwarded to the
    primary and its write is then readable on n3."""
    from conftest import Cluster
    cluster = Cluster(nodes=3)
    try:
        def admin3(method, path, body=None):
            request = urllib.request.Request(cluster.urls[2] + "/admin/v1/" + path, method=method,
                                             data=None if body is None else json.dumps(body).encode(),
                                             headers={"Authorization": f"Bearer {cluster.service}"})
            with urllib.request.urlopen(request, timeout=30) as r:
                return json.loads(r.read())
        admin3("POST", "functions", {"name": "hello", "module": base64.b64encode(open(wasm("hello"), "rb").read()).decode()})
        admin3("POST", "functions", {"name": "add", "rpc": "a:int,b:int",
                                     "module": base64.b64encode(open(wasm("add"), "rb").read()).decode()})
        admin3("POST", "functions", {"name": "notes", "module": base64.b64encode(open(wasm("notes"), "rb").read()).decode()})
        admin3("POST", "collections", {"name": "notes", "fields": {"id": {"type": "text"}, "body": {"type": "text"}}})
        n3 = create_client(cluster.urls[2], cluster.service,
                           options=ClientOptions(auto_refresh_token=False, persist_session=False))
        assert n3.functions.invoke("hello", {"method": "GET"}) == b"{}"
        assert n3.rpc("add", {"a": 20, "b": 22}, get=True).execute().data == 42
        logs = admin3("GET", "functions/hello/logs")["logs"]
        assert [line["message"] for line in logs] == ["hello: echoing the body"]  # it ran on n3
        assert n3.rpc("add", {"a": 1, "b": 1}).execute().data == 2  # POST rpc: forwarded, answered
        wrote = n3.functions.invoke("notes", {"body": {"id": "x", "body": "from n3"}, "responseType": "json"})
        assert wrote["status"] == 201
        seen = n3.functions.invoke("notes", {"method": "GET", "responseType": "json"})
        assert [r["id"] for r in seen["body"]] == ["x"]
        assert [f["name"] for f in cluster.admin(0, "GET", "functions")["functions"]] == ["add", "hello", "notes"]
    finally:
        cluster.stop()


def test_cron_fires_on_the_primary_once_per_minute(world):
    """A `* * * * *` schedule fires at the next minute on the (single) primary, once for that slot
    (up to ~62 s of waiting: cron slots are minutes)."""
    node = world
    done = cli(node, "deploy", "tick", "--file", wasm("hello"), "--schedule", "* * * * *")
    assert done.returncode == 0, done.stderr
    assert node.admin("GET", "functions/tick")["schedule"] == "* * * * *"
    deadline = time.time() + 75
    fired = []
    while time.time() < deadline and not fired:
        time.sleep(1)
        fired = [l for l in node.admin("GET", "functions/tick/logs")["logs"] if l["message"].startswith("cron: slot")]
    assert len(fired) == 1 and fired[0]["message"].endswith("answered 200"), fired
    time.sleep(2)  # the same minute: nothing more
    again = [l for l in node.admin("GET", "functions/tick/logs")["logs"] if l["message"].startswith("cron: slot")]
    assert len(again) == 1 or again[1]["message"] != again[0]["message"]
    status, error = admin_error(node, "POST", "functions", {"name": "tock", "schedule": "@hourly",
                                                             "module": base64.b64encode(open(wasm("hello"), "rb").read()).decode()})
    assert status == 400 and "5 fields" in error["message"]


def audit_rows(url, service):
    c = create_client(url, service, options=ClientOptions(auto_refresh_token=False, persist_session=False))
    return c.table("audit").select("*").order("id").limit(10000).execute().data


def wait_for(condition, seconds=30):
    """Polls `condition` until it holds or `seconds` pass (nothing here is a timed assertion)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_database_trigger_audits_each_change_and_dead_letters_failures():
    """FN5 through the binary: the audit example deployed with `--trigger notes:insert,delete` gets
    one invocation per inserted or deleted row (not updates), keyed "<lsn>:<index>"; a trigger
    whose function answers 418 is retried, then its change is dead-lettered and listed."""
    node = Node()
    try:
        node.admin("POST", "collections", {"name": "notes", "fields": {"id": {"type": "text"}, "body": {"type": "text"}}})
        node.admin("POST", "collections", {"name": "audit", "fields": {"id": {"type": "text"}, "event": {"type": "json"}}})
        done = cli(node, "deploy", "audit", "--file", wasm("audit"), "--trigger", "notes:insert,delete")
        assert done.returncode == 0, done.stderr
        c = client(node, node.service)
        c.table("notes").insert([{"id": "a", "body": "1"}, {"id": "b", "body": "2"}]).execute()
        c.table("notes").insert({"id": "c", "body": "3"}).execute()
        c.table("notes").update({"body": "changed"}).eq("id", "a").execute()
        c.table("notes").delete().eq("id", "b").execute()
        assert wait_for(lambda: len(audit_rows(node.url, node.service)) >= 4)
        rows = audit_rows(node.url, node.service)
        events = sorted(((r["event"]["lsn"], r["event"]["index"]), r["event"]["type"],
                         (r["event"]["record"] or r["event"]["old_record"])["id"]) for r in rows)
        assert [(kind, key) for _, kind, key in events] == [("INSERT", "a"), ("INSERT", "b"), ("INSERT", "c"), ("DELETE", "b")]
        assert all(r["id"] == f'{r["event"]["lsn"]}:{r["event"]["index"]}' for r in rows)
        assert events[0][0][0] == events[1][0][0] and (events[0][0][1], events[1][0][1]) == (0, 1)  # one transaction
        deleted = next(r for r in rows if r["event"]["type"] == "DELETE")
        assert deleted["event"]["record"] is None and deleted["event"]["old_record"]["body"] == "2"

        deploy(node, "teapot-trigger", wat(TEAPOT), trigger={"collection": "notes", "events": ["insert"]})
        c.table("notes").insert({"id": "d", "body": "4"}).execute()
        letters = lambda: node.admin("GET", "functions/teapot-trigger/dead-letters")["dead_letters"]
        assert wait_for(letters)
        [letter] = letters()
        assert letter["key"] == "d" and letter["attempts"] == 5 and "418" in letter["error"]
        assert wait_for(lambda: len(audit_rows(node.url, node.service)) == 5)  # the audit trigger saw "d" too
        code, body = admin_error(node, "POST", "functions", {"name": "x", "module": base64.b64encode(wat(TEAPOT)).decode(),
                                                               "trigger": {"collection": "_functions"}})
        assert code == 400 and "system collection" in body["message"]
    finally:
        node.stop()


def test_cluster_trigger_fires_once_per_change_across_kill_and_promotion():
    """kill -9 of the primary while rows are inserted, `aerodb promote` of n2: every acknowledged
    insert has exactly one audit row (the cursor is replicated, the key is the LSN), and changes
    after the promotion are delivered by the new primary."""
    from conftest import Cluster
    cluster = Cluster(nodes=3)
    try:
        cluster.admin(0, "POST", "collections", {"name": "notes", "fields": {"id": {"type": "text"}}})
        cluster.admin(0, "POST", "collections", {"name": "audit", "fields": {"id": {"type": "text"}, "event": {"type": "json"}}})
        cluster.admin(0, "POST", "functions", {"name": "audit", "module": base64.b64encode(open(wasm("audit"), "rb").read()).decode(),
                                               "trigger": {"collection": "notes", "events": ["insert"]}})
        acknowledged = []

        def write(url, prefix, count):
            c = create_client(url, cluster.service, options=ClientOptions(auto_refresh_token=False, persist_session=False))
            for k in range(count):
                try:
                    c.table("notes").insert({"id": f"{prefix}-{k}"}).execute()
                    acknowledged.append(f"{prefix}-{k}")
                except Exception:
                    pass

        writer = threading.Thread(target=write, args=(cluster.urls[0], "before", 400))
        writer.start()
        assert wait_for(lambda: len(acknowledged) >= 40)
        cluster.processes[0].kill()  # kill -9 of the primary, inserts and deliveries in flight
        writer.join(timeout=60)
        out = subprocess.run([BINARY, "promote", "--url", cluster.urls[1], "--key", cluster.service, "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        write(cluster.urls[1], "after", 10)
        assert {f"after-{k}" for k in range(10)} <= set(acknowledged)

        def audited():
            return [r["event"]["record"]["id"] for r in audit_rows(cluster.urls[1], cluster.service)]
        assert wait_for(lambda: set(acknowledged) <= set(audited()), seconds=60), \
            sorted(set(acknowledged) - set(audited()))[:10]
        seen = audited()
        assert len(seen) == len(set(seen)), "a change was audited twice"
    finally:
        cluster.stop()


def test_cluster_cron_fires_once_per_slot_across_a_promotion():
    """The audit example on a one-minute schedule in a 3-node cluster: each slot is audited by
    exactly one node (function logs of all nodes together name every slot once), the primary
    is killed with SIGKILL and n2 promoted: n2 fires the next slots and catches up the one it
    missed, no slot is skipped. Takes two to three minutes (slots are minutes)."""
    from conftest import Cluster
    cluster = Cluster(nodes=3)
    try:
        cluster.admin(0, "POST", "collections", {"name": "audit", "fields": {"id": {"type": "text"}, "event": {"type": "json"}}})
        cluster.admin(0, "POST", "functions", {"name": "audit", "module": base64.b64encode(open(wasm("audit"), "rb").read()).decode(),
                                               "schedule": "* * * * *"})

        def slots(url):
            return sorted(int(r["id"].split(":")[1]) for r in audit_rows(url, cluster.service) if r["id"].startswith("cron:"))
        assert wait_for(lambda: len(slots(cluster.urls[0])) >= 1, seconds=90), "no cron slot fired on the primary"
        first = slots(cluster.urls[0])[0]
        cluster.processes[0].kill()  # SIGKILL of the primary
        out = subprocess.run([BINARY, "promote", "--url", cluster.urls[1], "--key", cluster.service, "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert wait_for(lambda: any(s >= first + 2 for s in slots(cluster.urls[1])), seconds=150), slots(cluster.urls[1])
        fired = slots(cluster.urls[1])
        assert fired == list(range(fired[0], fired[-1] + 1)), f"a slot was skipped: {fired}"

        def fired_on(i):
            logs = cluster.admin(i, "GET", "functions/audit/logs?limit=200")["logs"]
            return [line["message"] for line in logs if line["message"].startswith("cron: slot")]
        # n2 and n3 together (n1 is dead; its slots are in the audit rows): n3 never fired, and
        # n2 fired each slot after the promotion once.
        assert fired_on(2) == []
        on_n2 = fired_on(1)
        assert len(on_n2) == len(set(on_n2))
    finally:
        cluster.stop()
