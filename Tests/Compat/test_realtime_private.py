"""Private channels authorized by policies on `realtime_messages` (as Supabase does with RLS on
`realtime.messages`), policy edits reaching live channels and subscriptions (RT5), and the
filter operators Supabase Realtime does not have refused by name (docs/REALTIME.md), through
the official client (supabase==2.34.1)."""
import asyncio
import json
import urllib.error
import urllib.request

import pytest
from supabase import acreate_client

from conftest import Node
from test_auth import SETTINGS
from test_realtime import WAIT_SECONDS, nothing_more, run, service_client, subscribe_state, subscribed, take, user_client


@pytest.fixture(scope="module")
def world():
    node = Node(auth=SETTINGS)
    yield node
    node.stop()


async def join_error(client, channel):
    """Subscribes and returns the join's error (the client reports CHANNEL_ERROR); the channel
    is removed (the client keeps one instance per topic)."""
    state, error = await subscribe_state(channel)
    assert str(state).endswith("CHANNEL_ERROR"), (state, error)
    await client.remove_channel(channel)
    return str(error)


def rest_broadcast(node, token, topic, payload, private):
    request = urllib.request.Request(f"{node.url}/realtime/v1/api/broadcast/{topic}/events/say"
                                     + ("?private=true" if private else ""), method="POST",
                                     data=json.dumps(payload).encode(),
                                     headers={"apikey": node.anon, "Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_private_channels_follow_the_realtime_messages_policies(world):
    async def main():
        alice, _ = await user_client(world, "pa")
        # No realtime_messages collection yet: a private join says what is missing.
        error = await join_error(alice, alice.channel("vip", {"config": {"private": True}}))
        assert "realtime_messages" in error and "does not exist" in error
        world.admin("POST", "collections", {"name": "realtime_messages", "fields": {
            "id": {"type": "text"}, "topic": {"type": "text"}, "extension": {"type": "text"}}})
        error = await join_error(alice, alice.channel("vip", {"config": {"private": True}}))
        assert "row-level security is disabled" in error
        world.admin("POST", "collections/realtime_messages/rls", {"enabled": True})
        world.admin("POST", "collections/realtime_messages/policies", {
            "name": "read_vip", "operation": "select", "roles": ["authenticated"], "using": "topic = 'vip'"})
        world.admin("POST", "collections/realtime_messages/policies", {
            "name": "send_vip", "operation": "insert", "roles": ["authenticated"],
            "check": "topic = 'vip' and extension = 'broadcast'"})
        # Read policy: vip admitted, another topic and anon refused with Supabase's message.
        error = await join_error(alice, alice.channel("other", {"config": {"private": True}}))
        assert "You do not have permissions to read from this Channel topic: other" in error
        anon = await acreate_client(world.url, world.anon)
        error = await join_error(anon, anon.channel("vip", {"config": {"private": True}}))
        assert "You do not have permissions to read from this Channel topic: vip" in error
        bob, _ = await user_client(world, "pb")
        got_alice, got_bob, got_public = asyncio.Queue(), asyncio.Queue(), asyncio.Queue()
        ca = alice.channel("vip", {"config": {"private": True, "broadcast": {"ack": True}, "presence": {"key": "alice"}}})
        ca.on_broadcast("say", got_alice.put_nowait)
        await subscribed(ca)
        cb = bob.channel("vip", {"config": {"private": True}})
        cb.on_broadcast("say", got_bob.put_nowait)
        await subscribed(cb)
        # A public channel of the same name is another topic: it sees nothing private.
        public = anon.channel("vip")
        public.on_broadcast("say", got_public.put_nowait)
        await subscribed(public)
        # Insert policy: alice may send broadcasts; bob receives them.
        await ca.send_broadcast("say", {"n": 1})
        assert (await take(got_bob, 1))[0]["payload"] == {"n": 1}
        # ...but not track presence (the insert policy admits extension broadcast only).
        track = await ca.push("presence", {"event": "track", "payload": {"x": 1}})
        replies = asyncio.Queue()
        track.receive("error", replies.put_nowait).receive("ok", lambda r: replies.put_nowait({"ok": r}))
        reply = await asyncio.wait_for(replies.get(), WAIT_SECONDS)
        assert "You do not have permissions to write to this Channel topic: vip" in json.dumps(reply)
        # REST broadcast ?private=true: anon refused (403), a user's token admitted.
        status, body = rest_broadcast(world, world.anon, "vip", {"n": 2}, private=True)
        assert status == 403 and "write to this Channel topic: vip" in body["message"]
        session = (await alice.auth.get_session()).access_token
        assert rest_broadcast(world, session, "vip", {"n": 3}, private=True)[0] == 202
        assert (await take(got_bob, 1))[0]["payload"] == {"n": 3}
        assert (await take(got_alice, 1))[0]["payload"] == {"n": 3}
        await nothing_more(got_public, 0.3)
        # A policy edit reaches the live channels: without read_vip, bob receives nothing more.
        world.admin("DELETE", "collections/realtime_messages/policies/read_vip")
        await asyncio.sleep(0.5)
        assert rest_broadcast(world, world.service, "vip", {"n": 4}, private=True)[0] == 202
        await nothing_more(got_bob)
        for client in (alice, bob, anon):
            await client.realtime.close()
    run(main())


def test_rt5_a_policy_edit_reaches_a_live_postgres_changes_subscription(world):
    async def main():
        world.admin("POST", "collections", {"name": "memos", "fields": {"id": {"type": "text"}, "shared": {"type": "bool"}}})
        world.admin("POST", "collections/memos/rls", {"enabled": True})
        world.admin("POST", "collections/memos/policies", {"name": "shared_only", "operation": "select",
                                                           "roles": ["authenticated"], "using": "shared = true"})
        carol, _ = await user_client(world, "pc")
        events = asyncio.Queue()
        channel = carol.channel("memos-carol")
        channel.on_postgres_changes("INSERT", schema="public", table="memos", callback=events.put_nowait)
        await subscribed(channel)
        sb = await service_client(world)
        await sb.table("memos").insert([{"id": "m1", "shared": True}, {"id": "m2", "shared": False}]).execute()
        assert [e["data"]["record"]["id"] for e in await take(events, 1)] == ["m1"]
        await nothing_more(events, 0.3)
        # Widen the policy: the same live subscription now receives unshared rows too.
        world.admin("POST", "collections/memos/policies", {"name": "all_rows", "operation": "select",
                                                           "roles": ["authenticated"], "using": "true"})
        await sb.table("memos").insert({"id": "m3", "shared": False}).execute()
        assert [e["data"]["record"]["id"] for e in await take(events, 1)] == ["m3"]
        # Narrow it again: nothing unshared from now on.
        world.admin("DELETE", "collections/memos/policies/all_rows")
        world.admin("DELETE", "collections/memos/policies/shared_only")
        await sb.table("memos").insert({"id": "m4", "shared": True}).execute()
        await nothing_more(events)
        await carol.realtime.close()
    run(main())


def test_filters_supabase_realtime_lacks_are_refused_by_name(world):
    async def main():
        sb = await service_client(world)
        for op, value in (("match", "^a"), ("imatch", "^a"), ("isdistinct", "1"), ("not.match", "^a")):
            channel = sb.channel(f"refused-{op}")
            channel.on_postgres_changes("INSERT", schema="public", table="memos", filter=f"id={op}.{value}",
                                        callback=lambda e: None)
            error = await join_error(sb, channel)
            assert f"filter operator {op.removeprefix('not.')} is not supported in postgres_changes" in error, error
        await sb.realtime.close()
    run(main())
