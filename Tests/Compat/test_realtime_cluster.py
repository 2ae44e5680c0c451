"""Realtime across a real three-node cluster with the official client (supabase==2.34.1):
broadcast and presence relayed between members (RT4, docs/REALTIME.md "Cluster"), the
presences of a member killed with SIGKILL dropped after the named timeout, and the other
members unaffected by the dead one."""
import asyncio
import json
import time
import urllib.request

from supabase import acreate_client

from conftest import Cluster
from test_realtime import WAIT_SECONDS, nothing_more, run, subscribed, take

# RealtimeLimits.peerPresenceTimeoutSeconds (5) + a heartbeat and the sweep (1 s each) + slack.
PRESENCE_TIMEOUT_BOUND_SECONDS = 20


def rest_broadcast(url, key, topic, event, payload):
    request = urllib.request.Request(f"{url}/realtime/v1/api/broadcast/{topic}/events/{event}", method="POST",
                                     data=json.dumps(payload).encode(),
                                     headers={"apikey": key, "Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.status


def test_rt4_broadcast_and_presence_reach_every_member_and_a_dead_members_presences_leave():
    cluster = Cluster(nodes=3)
    try:
        async def main():
            clients = [await acreate_client(url, cluster.anon) for url in cluster.urls]
            got = [asyncio.Queue() for _ in clients]
            joins = [asyncio.Queue() for _ in clients]
            leaves = [asyncio.Queue() for _ in clients]
            channels = []
            for i, client in enumerate(clients):
                channel = client.channel("lobby", {"config": {"broadcast": {"self": False}, "presence": {"key": f"user-n{i + 1}"}}})
                channel.on_broadcast("say", got[i].put_nowait)
                channel.on_presence_join(lambda key, current, new, q=joins[i]: q.put_nowait(key))
                channel.on_presence_leave(lambda key, current, left, q=leaves[i]: q.put_nowait(key))
                channels.append(await subscribed(channel))
            # A broadcast sent on n2 reaches the subscribers on n1 and n3 (not n2's sender).
            await channels[1].send_broadcast("say", {"text": "from n2"})
            for i in (0, 2):
                assert (await take(got[i], 1))[0]["payload"] == {"text": "from n2"}
            await nothing_more(got[1], 0.3)
            # REST broadcast on n3: every member's subscriber, n3's own included.
            assert rest_broadcast(cluster.urls[2], cluster.anon, "lobby", "say", {"text": "rest n3"}) == 202
            for i in range(3):
                assert (await take(got[i], 1))[0]["payload"] == {"text": "rest n3"}
            # Presence: each tracks on its own node; every member sees all three.
            for i, channel in enumerate(channels):
                await channel.track({"node": f"n{i + 1}"})
            for i in range(3):
                seen = set()
                while seen != {"user-n1", "user-n2", "user-n3"}:
                    seen.add(await asyncio.wait_for(joins[i].get(), WAIT_SECONDS))
            state = channels[0].presence_state()
            assert state["user-n3"][0]["node"] == "n3" and state["user-n2"][0]["node"] == "n2"
            # A late joiner on n2 gets the cluster-wide presence_state.
            late_client = await acreate_client(cluster.urls[1], cluster.anon)
            synced = asyncio.Event()
            late = late_client.channel("lobby", {"config": {"presence": {"key": "late"}}})
            late.on_presence_sync(synced.set)
            await subscribed(late)
            await asyncio.wait_for(synced.wait(), WAIT_SECONDS)
            assert set(late.presence_state()) >= {"user-n1", "user-n2", "user-n3"}
            # Untrack on n1 is a leave everywhere.
            await channels[0].untrack()
            for i in range(3):  # n1's own channel too (the sender is a presence member)
                assert await take(leaves[i], 1) == ["user-n1"]
            # n3 dies (SIGKILL): its presence leaves n1 and n2 within the named timeout, and the
            # relay between n1 and n2 keeps working meanwhile.
            cluster.processes[2].kill()
            cluster.processes[2].wait(timeout=10)
            killed = time.monotonic()
            await channels[0].send_broadcast("say", {"text": "n1 while n3 is down"})
            assert (await take(got[1], 1))[0]["payload"] == {"text": "n1 while n3 is down"}
            for i in (0, 1):
                key = await asyncio.wait_for(leaves[i].get(), PRESENCE_TIMEOUT_BOUND_SECONDS)
                assert key == "user-n3"
            assert time.monotonic() - killed >= 3  # not before the timeout (5 s after it was last heard, heartbeats 1 s)
            assert "user-n3" not in channels[0].presence_state() and "user-n2" in channels[0].presence_state()
            for client in clients[:2] + [late_client]:
                await client.realtime.close()
        run(main())
    finally:
        cluster.stop()
