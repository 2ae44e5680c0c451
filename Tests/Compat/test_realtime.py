"""Realtime through the official Supabase client (supabase==2.34.1, its `realtime` package):
postgres_changes insert/update/delete with and without filters, row-level security per
subscriber (two users, owner-only policy), resume after an LSN (RT1), broadcast with self and
ack, the REST broadcast endpoint, presence sync/join/leave, unsubscribe (docs/REALTIME.md)."""
import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
import realtime._async.client as realtime_client
from supabase import AsyncClientOptions, acreate_client

from conftest import Node
from test_auth import SETTINGS

PASSWORD = "realtime pass 1"
WAIT_SECONDS = 10


@pytest.fixture(scope="module")
def world():
    node = Node(auth=SETTINGS)
    node.admin("POST", "collections", {"name": "items", "fields": {
        "id": {"type": "text"}, "qty": {"type": "int"}, "tags": {"type": "array<text>", "nullable": True}}})
    node.admin("POST", "collections", {"name": "notes", "fields": {
        "id": {"type": "text"}, "owner": {"type": "uuid"}, "body": {"type": "text"}}})
    node.admin("POST", "collections/notes/policies", {"name": "owner_all", "operation": "all", "roles": ["authenticated"],
                                                      "using": "owner = auth.uid()", "check": "owner = auth.uid()"})
    node.admin("POST", "collections/notes/rls", {"enabled": True})
    yield node
    node.stop()


class RawFrames:
    """The official clients validate frames into typed dicts that drop unknown keys, so the
    `lsn` of a postgres_changes event (docs/REALTIME.md) is read from the raw frames here."""
    def __init__(self, adapter):
        self.adapter, self.frames = adapter, []

    def validate_json(self, raw, *args, **kwargs):
        self.frames.append(json.loads(raw))
        return self.adapter.validate_json(raw, *args, **kwargs)

    def lsn_of(self, table, record_id, kind):
        for f in self.frames:
            data = f.get("payload", {}).get("data") if f.get("event") == "postgres_changes" else None
            if data and data["table"] == table and data["type"] == kind \
                    and (data.get("record") or data.get("old_record"))["id"] == record_id:
                return int(data["lsn"])
        raise AssertionError(f"no {kind} frame for {table}/{record_id}")


RAW = RawFrames(realtime_client.ServerMessageAdapter)
realtime_client.ServerMessageAdapter = RAW


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


async def service_client(node):
    return await acreate_client(node.url, node.service)


async def user_client(node, who):
    service = await service_client(node)
    try:
        user = (await service.auth.admin.create_user(
            {"email": f"{who}@example.com", "password": PASSWORD, "email_confirm": True})).user
    except Exception:
        user = None
    client = await acreate_client(node.url, node.anon, options=AsyncClientOptions(auto_refresh_token=False, persist_session=False))
    session = (await client.auth.sign_in_with_password({"email": f"{who}@example.com", "password": PASSWORD})).session
    await client.realtime.set_auth(session.access_token)
    return client, (user.id if user else session.user.id)


async def subscribe_state(channel):
    """Subscribes and returns the first (state, error) the client reports."""
    done = asyncio.get_running_loop().create_future()

    def on_state(state, error):
        if not done.done():
            done.set_result((state, error))

    await channel.subscribe(on_state)
    return await asyncio.wait_for(done, WAIT_SECONDS)


async def subscribed(channel):
    """Subscribes and waits for SUBSCRIBED (raises on CHANNEL_ERROR / TIMED_OUT)."""
    state, error = await subscribe_state(channel)
    assert str(state).endswith("SUBSCRIBED"), (state, error)
    return channel


async def take(queue, count):
    return [await asyncio.wait_for(queue.get(), WAIT_SECONDS) for _ in range(count)]


async def nothing_more(queue, seconds=0.7):
    await asyncio.sleep(seconds)
    assert queue.empty(), [queue.get_nowait() for _ in range(queue.qsize())]


def test_insert_update_delete_events_carry_payload_shape_and_lsn(world):
    async def main():
        sb = await service_client(world)
        events = asyncio.Queue()
        channel = sb.channel("items-all")
        channel.on_postgres_changes("*", schema="public", table="items", callback=events.put_nowait)
        await subscribed(channel)
        await sb.table("items").insert({"id": "i1", "qty": 1, "tags": ["a"]}).execute()
        await sb.table("items").update({"qty": 2}).eq("id", "i1").execute()
        await sb.table("items").delete().eq("id", "i1").execute()
        insert, update, delete = [e["data"] for e in await take(events, 3)]
        assert (insert["type"], update["type"], delete["type"]) == ("INSERT", "UPDATE", "DELETE")
        assert insert["schema"] == "public" and insert["table"] == "items" and insert["errors"] is None
        assert insert["record"] == {"id": "i1", "qty": 1, "tags": ["a"]}
        assert {"name": "qty", "type": "int8"} in insert["columns"] and {"name": "tags", "type": "_text"} in insert["columns"]
        assert update["record"]["qty"] == 2 and update["old_record"]["qty"] == 1
        assert delete["old_record"]["id"] == "i1" and "record" not in delete
        assert insert["commit_timestamp"].startswith("20")
        lsns = [RAW.lsn_of("items", "i1", kind) for kind in ("INSERT", "UPDATE", "DELETE")]
        assert lsns == sorted(lsns) and len(set(lsns)) == 3
        await sb.remove_channel(channel)
        await sb.realtime.close()
    run(main())


def test_event_and_filter_bindings_get_only_their_rows(world):
    async def main():
        sb = await service_client(world)
        inserts, filtered = asyncio.Queue(), asyncio.Queue()
        channel = sb.channel("items-filtered")
        channel.on_postgres_changes("INSERT", schema="public", table="items", callback=inserts.put_nowait)
        channel.on_postgres_changes("UPDATE", schema="public", table="items", filter="qty=gt.10", callback=filtered.put_nowait)
        await subscribed(channel)
        await sb.table("items").insert([{"id": "f1", "qty": 5}, {"id": "f2", "qty": 50}]).execute()
        await sb.table("items").update({"qty": 6}).eq("id", "f1").execute()
        await sb.table("items").update({"qty": 60}).eq("id", "f2").execute()
        got = sorted(e["data"]["record"]["id"] for e in await take(inserts, 2))
        assert got == ["f1", "f2"]
        (update,) = await take(filtered, 1)
        assert update["data"]["record"] == {"id": "f2", "qty": 60, "tags": None}
        await nothing_more(filtered)
        await nothing_more(inserts, 0.1)
        await sb.realtime.close()
    run(main())


def test_row_level_security_each_user_receives_only_own_rows(world):
    async def main():
        alice, alice_id = await user_client(world, "alice")
        bob, bob_id = await user_client(world, "bob")
        anon = await acreate_client(world.url, world.anon)
        queues = {"alice": asyncio.Queue(), "bob": asyncio.Queue(), "anon": asyncio.Queue()}
        for name, client in (("alice", alice), ("bob", bob), ("anon", anon)):
            channel = client.channel(f"notes-{name}")
            channel.on_postgres_changes("*", schema="public", table="notes", callback=queues[name].put_nowait)
            await subscribed(channel)
        sb = await service_client(world)
        await sb.table("notes").insert([{"id": "na", "owner": alice_id, "body": "alice's"},
                                        {"id": "nb", "owner": bob_id, "body": "bob's"}]).execute()
        # An update that moves a row from alice to bob: bob sees it, and its old_record shows
        # only the key (bob could not read the old row); alice sees nothing of it.
        await sb.table("notes").update({"owner": bob_id, "body": "now bob's"}).eq("id", "na").execute()
        (a1,) = await take(queues["alice"], 1)
        assert a1["data"]["record"]["id"] == "na" and a1["data"]["type"] == "INSERT"
        b1, b2 = await take(queues["bob"], 2)
        assert b1["data"]["record"]["id"] == "nb"
        assert b2["data"]["type"] == "UPDATE" and b2["data"]["record"]["body"] == "now bob's"
        assert b2["data"]["old_record"] == {"id": "na"}
        await sb.table("notes").delete().eq("id", "nb").execute()
        (b3,) = await take(queues["bob"], 1)
        assert b3["data"]["type"] == "DELETE" and b3["data"]["old_record"]["id"] == "nb"
        await nothing_more(queues["alice"])
        await nothing_more(queues["anon"], 0.1)
        for client in (alice, bob, anon):
            await client.realtime.close()
    run(main())


def resume_after(channel, lsn):
    """Adds `config.resume_after_lsn` to the channel's join (docs/REALTIME.md "Resume")."""
    prepare = channel._prepare_join

    def patched(callback):
        prepare(callback)
        channel.join_push.payload["config"]["resume_after_lsn"] = str(lsn)
    channel._prepare_join = patched


def test_rt1_resume_after_lsn_replays_exactly_the_missed_events(world):
    async def main():
        sb = await service_client(world)
        first = asyncio.Queue()
        channel = sb.channel("items-resume")
        channel.on_postgres_changes("INSERT", schema="public", table="items", filter="id=like.r*", callback=first.put_nowait)
        await subscribed(channel)
        await sb.table("items").insert({"id": "r0", "qty": 0}).execute()
        await take(first, 1)
        last = RAW.lsn_of("items", "r0", "INSERT")
        await sb.remove_channel(channel)
        for n in range(1, 4):  # missed while disconnected
            await sb.table("items").insert({"id": f"r{n}", "qty": n}).execute()
        again = asyncio.Queue()
        channel = sb.channel("items-resume")
        channel.on_postgres_changes("INSERT", schema="public", table="items", filter="id=like.r*", callback=again.put_nowait)
        resume_after(channel, last)
        await subscribed(channel)
        await sb.table("items").insert({"id": "r4", "qty": 4}).execute()  # live, after the replay
        got = [e["data"]["record"]["id"] for e in await take(again, 4)]
        assert got == ["r1", "r2", "r3", "r4"]
        await nothing_more(again)
        await sb.realtime.close()
    run(main())


def test_broadcast_self_ack_rest_and_presence(world):
    async def main():
        one = await acreate_client(world.url, world.anon)
        two = await acreate_client(world.url, world.anon)
        got_one, got_two = asyncio.Queue(), asyncio.Queue()
        c1 = one.channel("room-1", {"config": {"broadcast": {"self": True, "ack": True}, "presence": {"key": "one"}}})
        c1.on_broadcast("ping", got_one.put_nowait)
        joins = asyncio.Queue()
        c1.on_presence_join(lambda key, current, new: joins.put_nowait(key))
        leaves = asyncio.Queue()
        c1.on_presence_leave(lambda key, current, left: leaves.put_nowait(key))
        c2 = two.channel("room-1", {"config": {"broadcast": {"self": False}, "presence": {"key": "two"}}})
        c2.on_broadcast("ping", got_two.put_nowait)
        await subscribed(c1)
        await subscribed(c2)
        await c1.send_broadcast("ping", {"n": 1})
        assert (await take(got_one, 1))[0]["payload"] == {"n": 1}  # self
        assert (await take(got_two, 1))[0]["payload"] == {"n": 1}
        await c2.send_broadcast("ping", {"n": 2})
        assert (await take(got_one, 1))[0]["payload"] == {"n": 2}
        await nothing_more(got_two)  # no self for c2
        request = urllib.request.Request(world.url + "/realtime/v1/api/broadcast/room-1/events/ping", method="POST",
                                         data=json.dumps({"n": 3}).encode(),
                                         headers={"apikey": world.anon, "Authorization": f"Bearer {world.anon}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 202
        assert (await take(got_one, 1))[0]["payload"] == {"n": 3}
        assert (await take(got_two, 1))[0]["payload"] == {"n": 3}
        await c1.track({"status": "online"})
        await c2.track({"status": "away"})
        assert sorted(await take(joins, 2)) == ["one", "two"]
        state = c1.presence_state()
        assert state["two"][0]["status"] == "away"
        await c2.unsubscribe()
        assert await take(leaves, 1) == ["two"]
        await one.realtime.close()
        await two.realtime.close()
    run(main())


def test_three_node_cluster_subscriber_on_a_replica_sees_writes_through_another_node():
    """A replica serves postgres_changes from the WAL it applied (sync commit mode): a
    subscriber on n3 receives what was written through n2 (forwarded to the primary n1), in
    LSN order, and resumes on another node after its last LSN."""
    from conftest import Cluster
    cluster = Cluster(nodes=3)
    try:
        cluster.admin(0, "POST", "collections", {"name": "feed", "fields": {"id": {"type": "text"}, "n": {"type": "int"}}})

        async def main():
            n3 = await acreate_client(cluster.urls[2], cluster.service)
            n2 = await acreate_client(cluster.urls[1], cluster.service)
            events = asyncio.Queue()
            channel = n3.channel("feed-n3")
            channel.on_postgres_changes("INSERT", schema="public", table="feed", callback=events.put_nowait)
            await subscribed(channel)
            for n in range(3):
                await n2.table("feed").insert({"id": f"c{n}", "n": n}).execute()
            got = [e["data"]["record"]["id"] for e in await take(events, 3)]
            assert got == ["c0", "c1", "c2"]
            last = RAW.lsn_of("feed", "c0", "INSERT")
            await n3.realtime.close()
            # The same subscriber moves to n2 and resumes after c0: exactly c1, c2.
            moved = asyncio.Queue()
            channel = n2.channel("feed-moved")
            channel.on_postgres_changes("INSERT", schema="public", table="feed", callback=moved.put_nowait)
            resume_after(channel, last)
            await subscribed(channel)
            assert [e["data"]["record"]["id"] for e in await take(moved, 2)] == ["c1", "c2"]
            await nothing_more(moved)
            await n2.realtime.close()
        run(main())
    finally:
        cluster.stop()


def test_protocol_vsn2_arrays_binary_broadcast_and_bad_frames(world):
    """vsn 2.0.0 (what realtime-js speaks): array frames both ways and kind-3 binary broadcast
    pushes; malformed, unknown and oversized frames get an error reply or close code, and the
    socket (and the node) keep serving."""
    import websockets

    async def main():
        base = world.url.replace("http://", "ws://") + "/realtime/v1/websocket"
        async with websockets.connect(f"{base}?apikey={world.anon}&vsn=2.0.0", max_size=None) as ws:
            async def next_frame():
                return json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))
            await ws.send(json.dumps(["1", "1", "realtime:v2room", "phx_join",
                                      {"config": {"broadcast": {"self": True, "ack": True}, "presence": {"key": ""},
                                                  "postgres_changes": []}}]))
            reply = await next_frame()
            assert reply[:4] == ["1", "1", "realtime:v2room", "phx_reply"] and reply[4]["status"] == "ok"
            await ws.send(json.dumps([None, "2", "phoenix", "heartbeat", {}]))
            assert await next_frame() == [None, "2", "phoenix", "phx_reply", {"status": "ok", "response": {}}]
            # Binary broadcast push (kind 3, JSON encoding): delivered to self as a broadcast.
            join_ref, ref, topic, event, meta = b"1", b"3", b"realtime:v2room", b"bin-event", b""
            payload = json.dumps({"x": 1}).encode()
            frame = bytes([3, len(join_ref), len(ref), len(topic), len(event), len(meta), 1]) + join_ref + ref + topic + event + meta + payload
            await ws.send(frame)
            frames = [await next_frame(), await next_frame()]
            broadcast = next(f for f in frames if f[3] == "broadcast")
            assert broadcast[2] == "realtime:v2room" and broadcast[4]["event"] == "bin-event" and broadcast[4]["payload"] == {"x": 1}
            assert any(f[3] == "phx_reply" and f[1] == "3" for f in frames)  # ack
            # Bad input: malformed JSON, an object under vsn 2, an unknown event, an unjoined topic.
            await ws.send("{not json")
            assert (await next_frame())[3] == "phx_error"
            await ws.send(json.dumps({"event": "heartbeat", "topic": "phoenix", "payload": {}, "ref": "9"}))
            assert (await next_frame())[3] == "phx_error"
            await ws.send(json.dumps(["1", "4", "realtime:v2room", "no_such_event", {}]))
            bad = await next_frame()
            assert bad[3] == "phx_reply" and bad[4]["status"] == "error" and bad[4]["response"]["code"] == "AERO_REALTIME_INVALID"
            await ws.send(json.dumps([None, "5", "realtime:elsewhere", "broadcast", {"event": "e", "payload": {}}]))
            assert (await next_frame())[4]["response"]["reason"] == "unmatched topic"
            await ws.send(json.dumps([None, "6", "phoenix", "heartbeat", {}]))
            assert (await next_frame())[1] == "6"  # still serving
        # An oversized message closes that socket with 1009; the node keeps serving others.
        async with websockets.connect(f"{base}?apikey={world.anon}&vsn=1.0.0", max_size=None) as ws:
            await ws.send("x" * ((1 << 20) + 1))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), WAIT_SECONDS)
            assert closed.value.rcvd.code == 1009
        async with websockets.connect(f"{base}?apikey={world.anon}&vsn=1.0.0") as ws:
            await ws.send(json.dumps({"event": "heartbeat", "topic": "phoenix", "payload": {}, "ref": "1", "join_ref": None}))
            assert json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))["payload"]["status"] == "ok"
        # A bad key is refused before the upgrade (hummingbird-websocket answers a refused
        # upgrade with 400); a plain GET says why with 401.
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(f"{base}?apikey=nope&vsn=1.0.0"):
                pass
        assert refused.value.response.status_code == 400
        with pytest.raises(urllib.error.HTTPError) as plain:
            urllib.request.urlopen(f"{world.url}/realtime/v1/websocket?apikey=nope&vsn=1.0.0", timeout=10)
        assert plain.value.code == 401 and json.loads(plain.value.read())["code"] == "AERO_AUTH_UNAUTHORIZED"
    run(main())


def test_websocket_fragments_ping_and_close_handshake(world):
    """The node's own WebSocket handling (RealtimeChannelHandler: NIO handlers, no task per
    connection): a message sent in fragments is read whole, a ping is answered with a pong of its
    payload, and a client's close code is echoed before the node closes the socket."""
    import websockets

    async def main():
        base = world.url.replace("http://", "ws://") + f"/realtime/v1/websocket?apikey={world.anon}&vsn=1.0.0"
        async with websockets.connect(base, ping_interval=None) as ws:
            heartbeat = json.dumps({"event": "heartbeat", "topic": "phoenix", "payload": {}, "ref": "7", "join_ref": None})
            await ws.send([heartbeat[:10], heartbeat[10:25], heartbeat[25:]])  # one text frame, two continuations
            reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))
            assert reply["event"] == "phx_reply" and reply["ref"] == "7" and reply["payload"]["status"] == "ok"
            pong = await ws.ping(b"are you there")  # resolves only on a pong with this payload
            await asyncio.wait_for(pong, WAIT_SECONDS)
            await ws.close(4001, "done")
            assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4001
        # The node still serves a new connection.
        async with websockets.connect(base, ping_interval=None) as ws:
            await ws.send(json.dumps({"event": "heartbeat", "topic": "phoenix", "payload": {}, "ref": "8", "join_ref": None}))
            assert json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))["ref"] == "8"
    run(main())


def test_slow_subscriber_pauses_without_loss_and_never_stalls_others(world):
    """Backpressure (docs/REALTIME.md): a subscriber that reads nothing while 10,000 changes
    commit fills its bounded queue; its pump pauses (nothing dropped, nothing grows), the fast
    subscriber receives everything meanwhile, and once the slow one reads it gets every change
    in LSN order, caught up from the WAL.
    The slow client stops reading in the application (max_queue=1, no recv): its kernel buffers
    (128 KiB receive, at most 4 MiB send on the node) hold far less than the ~13 MB of frames, so
    the node's outbox fills. It does not shrink SO_RCVBUF at connect: Linux then keeps that
    socket's window at a few KiB for good, and with the node writing batches (one flush per outbox
    step) such a client advanced at about 75 frames/s with a retransmission per window (measured
    on loopback), an artefact of the shrunken buffer rather than of a slow reader."""
    import websockets

    total, batch = 10_000, 500
    world.admin("POST", "collections", {"name": "flood", "fields": {"id": {"type": "int"}, "pad": {"type": "text"}}})

    async def join(ws, ref):
        await ws.send(json.dumps({"event": "phx_join", "topic": "realtime:flood", "ref": ref, "join_ref": ref, "payload": {
            "config": {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "flood"}]}}}))

    async def main():
        base = world.url.replace("http://", "ws://") + f"/realtime/v1/websocket?apikey={world.service}&vsn=1.0.0"
        # No client keepalive: the slow client's pongs would wait behind what it does not read.
        slow = await websockets.connect(base, max_size=None, max_queue=1, ping_interval=None)
        fast = await websockets.connect(base, max_size=None, ping_interval=None)
        await join(slow, "1")
        await join(fast, "1")
        for ws in (slow, fast):
            while json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))["event"] != "phx_reply":
                pass
        sb = await service_client(world)
        pad = "x" * 1000
        started = time.monotonic()
        for start in range(0, total, batch):
            await sb.table("flood").insert([{"id": n, "pad": pad} for n in range(start, start + batch)]).execute()

        async def collect(ws, seconds):
            ids, lsns = [], []
            while len(ids) < total:
                frame = json.loads(await asyncio.wait_for(ws.recv(), seconds))
                if frame["event"] == "postgres_changes":
                    ids.append(frame["payload"]["data"]["record"]["id"])
                    lsns.append(int(frame["payload"]["data"]["lsn"]))
                elif frame["event"] == "system":
                    assert frame["payload"]["status"] == "ok", frame
            return ids, lsns
        committed = time.monotonic()
        ids, _ = await collect(fast, WAIT_SECONDS)
        assert ids == list(range(total))
        print(f"commits {committed - started:.1f}s, fast subscriber done {time.monotonic() - started:.1f}s")
        ids, lsns = await collect(slow, 30)
        assert ids == list(range(total)) and lsns == sorted(lsns)
        await slow.close()
        await fast.close()
    asyncio.run(asyncio.wait_for(main(), 240))


def test_token_refresh_on_a_live_channel_and_a_bad_token_closes_it(world):
    """`set_auth` sends `access_token` on every joined channel: a new valid token keeps the
    channel and its row-level security (recompiled for the token); an invalid one closes the
    channel with a system error."""
    async def main():
        carol, carol_id = await user_client(world, "carol")
        events, systems = asyncio.Queue(), asyncio.Queue()
        channel = carol.channel("notes-carol")
        channel.on_postgres_changes("INSERT", schema="public", table="notes", callback=events.put_nowait)
        channel.on_system(systems.put_nowait)
        await subscribed(channel)
        again = await acreate_client(world.url, world.anon, options=AsyncClientOptions(auto_refresh_token=False, persist_session=False))
        fresh = (await again.auth.sign_in_with_password({"email": "carol@example.com", "password": PASSWORD})).session
        await carol.realtime.set_auth(fresh.access_token)
        sb = await service_client(world)
        await sb.table("notes").insert([{"id": "nc1", "owner": carol_id, "body": "carol's"}]).execute()
        assert (await take(events, 1))[0]["data"]["record"]["id"] == "nc1"
        await carol.realtime.set_auth("not-a-jwt")
        await asyncio.sleep(0.5)
        await sb.table("notes").insert([{"id": "nc2", "owner": carol_id, "body": "carol's too"}]).execute()
        await nothing_more(events)
        await carol.realtime.close()
    run(main())
