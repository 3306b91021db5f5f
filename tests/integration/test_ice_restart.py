"""ICE restart under a live QUIC connection on 127.0.0.1: the receiver's ICE session is lost
mid-transfer (its agent closed: every socket of the path gone), the connection pauses instead
of ending, both sides restart ICE with fresh agents (new ufrag/pwd, new sockets) exchanging
their parameters in memory, and the streams finish with equal SHA-256 on the new pair."""

from __future__ import annotations

import asyncio

from tests.integration.test_ice_quic import connect_pinned, connected_agents, drain, pump, run
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.worker.transport.ice import IceAgent
from tunnelpy.worker.transport.ice_restart import restart_controlled, restart_controlling

TOTAL = 4 * 1000 * 1000


def test_a_lost_path_pauses_the_connection_and_a_restart_moves_its_streams_to_a_new_pair() -> None:
    async def scenario() -> None:
        async with connected_agents() as (receiver, sender):
            client, server = await connect_pinned(receiver, sender)
            old_client, old_server = client.path.pair, server.path.pair
            lost: asyncio.Queue[str] = asyncio.Queue()
            client.on_path_lost = lambda reason: lost.put_nowait(reason) is None  # keep the connection
            up = await client.open_stream()
            await up.write(b"\x00")
            down = await server.accept_stream()
            assert await down.read(1) == b"\x00"
            agents: list[IceAgent] = []
            try:
                async with asyncio.TaskGroup() as tg:
                    up_sent, down_sent = tg.create_task(pump(up, TOTAL)), tg.create_task(pump(down, TOTAL))
                    up_got, down_got = tg.create_task(drain(down)), tg.create_task(drain(up))
                    await asyncio.sleep(0.05)
                    await receiver.close()  # the receiver's path is gone, mid-transfer
                    assert "closed locally" in await asyncio.wait_for(lost.get(), 5)
                    assert not client.is_lost and not server.is_lost  # paused, not ended
                    worker: asyncio.Future[IceAgent] = asyncio.get_running_loop().create_future()

                    async def ask(params: IceParameters) -> IceParameters:
                        answered: asyncio.Future[IceParameters] = asyncio.get_running_loop().create_future()
                        restarting = restart_controlled(sender, server, params, answered.set_result, "test")
                        tg.create_task(restarting).add_done_callback(
                            lambda t: (
                                worker.set_exception(t.exception()) if t.exception() else worker.set_result(t.result())
                            )
                        )
                        return await answered

                    agents.append(await restart_controlling(receiver, client, ask, "test"))
                    agents.append(await worker)
                assert up_got.result() == (TOTAL, up_sent.result())
                assert down_got.result() == (TOTAL, down_sent.result())
                assert client.path.pair.local != old_client.local and server.path.pair.local != old_server.local
                assert agents[0].selected_pair == client.path.pair
                assert client.stats().route == "host->host"
            finally:
                client.close(0, "test over")
                for agent in agents:
                    await agent.close()

    run(scenario)
