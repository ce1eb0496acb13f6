"""The worker's self-fencing rule (``worker/fence.py``) and the lost timeout the
session's answer brings (``HubClient.start_session``)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tether.protocol import MalformedMessage, SessionReply, WorkerFacts
from tether.worker.client import HubClient
from tether.worker.fence import Fence


def test_the_fence_falls_at_three_quarters_of_the_lost_timeout_and_kills_within_it() -> None:
    fence = Fence(kill_grace=1.5)
    assert (fence.after, fence.kill_grace) == (None, 1.5)  # an older hub: never
    fence.start(300.0, 0.0)
    assert (fence.after, fence.kill_grace) == (225.0, 1.5)
    fence.start(4.0, 0.0)
    assert (fence.after, fence.kill_grace) == (3.0, 0.5)  # SIGKILL lands by 3.5 s of 4


def test_silence_past_the_deadline_stops_the_tasks_until_the_hub_answers() -> None:
    asyncio.run(_silence())


async def _silence() -> None:
    loop = asyncio.get_running_loop()
    fence = Fence(kill_grace=1.5)
    fence.start(60.0, loop.time() - 50)  # the last acknowledged heartbeat left 50 s ago
    reasons: list[str] = []
    stopped = asyncio.Event()

    def stop_tasks(reason: str) -> int:
        reasons.append(reason)
        stopped.set()
        return 1

    watching = asyncio.create_task(fence.watch(stop_tasks))
    try:
        await asyncio.wait_for(stopped.wait(), 10)
        assert "no heartbeat acknowledged by the hub for 50" in reasons[0]
        assert "lost after 60s" in reasons[0]
        # An acknowledgement moves the deadline 45 s on: nothing more is stopped.
        stopped.clear()
        fence.acknowledged(loop.time())
        fence.poke()
        await asyncio.sleep(0.1)
        assert not stopped.is_set()
    finally:
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching


def _answer(lost_timeout: object) -> dict[str, object]:
    return {
        "name": "w1",
        "session_id": "s1",
        "queues": ["q"],
        "heartbeat_interval": 1,
        "hub_version": "0",
        "lost_timeout": lost_timeout,
    }


@pytest.mark.parametrize("told", [6, 0.5])
def test_the_session_answer_tells_the_lost_timeout(told: float) -> None:
    asyncio.run(_session(told))


async def _session(told: float) -> None:
    client = HubClient(
        "http://127.0.0.1:1",
        "ttw_x",
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=_answer(told))),
    )
    try:
        await client.start_session(
            WorkerFacts(concurrency=1, free_slots=1, version="0", protocol=1)
        )
        assert client.lost_timeout == told
    finally:
        await client.aclose()


@pytest.mark.parametrize("told", ["6", True, 0, -1, float("inf")])
def test_a_lost_timeout_that_is_no_duration_makes_the_answer_malformed(told: object) -> None:
    with pytest.raises(MalformedMessage):
        SessionReply.from_wire(_answer(told))


def test_an_older_hub_tells_no_lost_timeout_and_the_worker_does_not_fence() -> None:
    answer = _answer(None)
    del answer["lost_timeout"]
    assert SessionReply.from_wire(answer).lost_timeout is None
