"""Realtime across a real three-node cluster with the official client (supabase==2.34.1):
broadcast and presence relayed between members (RT4, docs/REALTIME.md "Cluster"), the
presences of a member killed with SIGKILL dropped after the named timeout, and the other
members unaffected by the dead one."""
import asyncio
import json
import subprocess
import time
import urllib.request

from supabase import acreate_client

from conftest import BINARY, Cluster
from test_realtime import RAW, WAIT_SECONDS, nothing_more, resume_after, run, subscribed, take

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


def promote(cluster, i):
    """`aerodb promote` (the operator's failover command); its JSON report."""
    out = subprocess.run([BINARY, "promote", "--url", cluster.urls[i], "--key", cluster.service, "--json"],
                         capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def test_failover_subscribers_on_replicas_keep_receiving_and_resume_without_losing_acknowledged_writes():
    """kill -9 the primary while writes go on, promote a replica with `aerodb promote`: the
    subscriber on the replica that stays up keeps its socket and keeps receiving; it then moves
    to the new primary and resumes after its last LSN (config.resume_after_lsn). Every write
    that was acknowledged to the client is in its stream, once, in LSN order."""
    cluster = Cluster(nodes=3)
    try:
        cluster.admin(0, "POST", "collections", {"name": "ledger", "fields": {"id": {"type": "text"}, "n": {"type": "int"}}})

        async def main():
            # n3 subscribes; writes go through n2 (forwarded to the primary n1).
            n3 = await acreate_client(cluster.urls[2], cluster.service)
            seen = []  # (lsn, id) in arrival order, over both channels
            lsns = {}

            def on_event(event, name):
                record_id = event["data"]["record"]["id"]
                lsn = next(int(f["payload"]["data"]["lsn"]) for f in reversed(RAW.frames)
                           if f.get("event") == "postgres_changes" and f["topic"] == f"realtime:{name}"
                           and f["payload"]["data"]["record"]["id"] == record_id)
                seen.append((lsn, record_id))
                lsns[record_id] = lsn

            channel = n3.channel("ledger-n3")
            channel.on_postgres_changes("INSERT", schema="public", table="ledger", callback=lambda e: on_event(e, "ledger-n3"))
            await subscribed(channel)
            acknowledged = []
            writers = {i: await acreate_client(cluster.urls[i], cluster.service) for i in (1, 2)}
            stop = asyncio.Event()

            async def write_loop():
                n = 0
                while not stop.is_set():
                    record_id = f"w{n}"
                    try:
                        await writers[1 if n % 2 else 2].table("ledger").insert({"id": record_id, "n": n}).execute()
                        acknowledged.append(record_id)
                    except Exception:
                        await asyncio.sleep(0.05)  # no primary yet, or in doubt: not acknowledged
                    n += 1
            writer = asyncio.create_task(write_loop())
            deadline = time.monotonic() + 30
            while len(acknowledged) < 30 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            cluster.processes[0].kill()  # kill -9 the primary, writes in flight
            cluster.processes[0].wait(timeout=10)
            promoted = None
            for candidate in (1, 2):
                status, report = await asyncio.to_thread(promote, cluster, candidate)
                if status == 0:
                    promoted = candidate
                    break
            assert promoted is not None, report
            before = len(acknowledged)
            deadline = time.monotonic() + 30
            while len(acknowledged) < before + 30 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(acknowledged) >= before + 30, "no writes acknowledged after the promotion"
            # The subscriber kept its socket on n3 and receives post-promotion writes there.
            deadline = time.monotonic() + 30
            while acknowledged[before + 10] not in lsns and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert acknowledged[before + 10] in lsns, "the subscriber on n3 stopped receiving after the promotion"
            # Move to the new primary (the client of a dead node would do this) and resume.
            await n3.realtime.close()
            last = seen[-1][0]  # the last LSN it received, once its socket is closed
            mover = await acreate_client(cluster.urls[promoted], cluster.service)
            again = mover.channel("ledger-moved")
            again.on_postgres_changes("INSERT", schema="public", table="ledger", callback=lambda e: on_event(e, "ledger-moved"))
            resume_after(again, last)
            await subscribed(again)
            await asyncio.sleep(0.5)
            stop.set()
            await writer
            final = list(acknowledged)
            deadline = time.monotonic() + 30
            while not set(final) <= set(lsns) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            print(f"acknowledged {len(final)} ({before} before the kill), streamed {len(seen)}, promoted n{promoted + 1}")
            missing = [i for i in final if i not in lsns]
            assert not missing, f"acknowledged but never streamed: {missing[:10]} of {len(final)}"
            ids = [record_id for _, record_id in seen]
            assert len(ids) == len(set(ids)), f"streamed twice: {[i for i in set(ids) if ids.count(i) > 1]}"
            order = [lsn for lsn, _ in seen]
            assert order == sorted(order), "events out of LSN order"
            for client in list(writers.values()) + [mover]:
                await client.realtime.close()
        run(main())
    finally:
        cluster.stop()
