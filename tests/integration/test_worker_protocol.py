"""The worker API's messages as the hub takes them, in process (ASGI transport,
real SQLite store): every field a worker sends is kept or refused, never
silently dropped."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from tests.integration.test_api import FACTS, W, Workers, _expect, hub, run
from tether import __version__
from tether.hub.state import Hub
from tether.protocol import PROTOCOL_VERSION, AttemptResult, PollRequest, WorkerFacts
from tether.worker.client import Forbidden, HubClient

__all__ = ["hub"]  # the fixture, shared with test_api

ATTEMPT = "0" * 32


async def _served(admin: httpx.AsyncClient, name: str) -> list[str]:
    (worker,) = [
        w for w in (await admin.get("/api/v1/workers")).json()["workers"] if w["name"] == name
    ]
    queues: list[str] = worker["queues"]
    return queues


def test_the_queues_a_heartbeat_names_are_recorded_and_checked_against_the_credential(
    hub: Hub,
) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        credential = await workers.enrol(["a", "b"], "w1")
        async with workers.client(credential) as c:
            started = await c.post(f"{W}/sessions", json={**FACTS, "queues": ["a"]})
        assert started.status_code == 200, started.text
        assert await _served(admin, "w1") == ["a"]
        async with workers.client(credential, started.json()["session_id"]) as worker:
            both = await worker.post(f"{W}/heartbeat", json={**FACTS, "queues": ["a", "b"]})
            assert both.status_code == 200, both.text
            assert await _served(admin, "w1") == ["a", "b"]
            await _expect(
                await worker.post(f"{W}/heartbeat", json={**FACTS, "queues": ["a", "c"]}),
                403,
                "may not serve c; its credential allows a, b",
            )
            assert await _served(admin, "w1") == ["a", "b"]  # a refused heartbeat changes nothing
            bad = await worker.post(f"{W}/heartbeat", json={**FACTS, "queues": ["a b"]})
            assert bad.status_code == 422
            assert "invalid queue name" in bad.text
            # No queues: every queue the credential allows, as for a session.
            assert (await worker.post(f"{W}/heartbeat", json=FACTS)).status_code == 200
            assert await _served(admin, "w1") == ["a", "b"]

    run(hub, scenario)


#: Per endpoint of the worker API that takes a JSON body: a good body.
BODIES: dict[str, dict[str, Any]] = {
    "/enrol": {"token": "tte_x.y"},
    "/sessions": FACTS,
    "/heartbeat": FACTS,
    "/poll": {"slots": 0, "wait": 0},
    f"/attempts/{ATTEMPT}/finish": {"state": "success"},
}


@pytest.mark.parametrize("path", list(BODIES))
def test_a_field_the_hub_does_not_know_is_refused_with_422_naming_it(hub: Hub, path: str) -> None:
    """A newer (or older) worker's extra field is an error it hears, not data lost."""

    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with await workers.connect(["default"], "w1") as worker:
            body = {**BODIES[path], "lost_timeout_of_a_newer_worker": 30}
            answer = await worker.post(f"{W}{path}", json=body)
        assert answer.status_code == 422, answer.text
        (problem,) = answer.json()["detail"]
        assert problem["type"] == "extra_forbidden"
        assert problem["loc"] == ["body", "lost_timeout_of_a_newer_worker"]

    run(hub, scenario)


def test_the_workers_client_and_the_hub_speak_the_same_messages(hub: Hub) -> None:
    """The real client against the real app in one process (ASGI transport): each
    message the worker builds is taken, each answer is read, queues included."""

    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        credential = await workers.enrol(["default", "other"], "w1")
        client = HubClient("http://hub", credential, transport=workers.transport)
        facts = WorkerFacts(2, 2, __version__, PROTOCOL_VERSION, hostname="h", queues=["default"])
        try:
            hello = await client.start_session(facts)
            assert (hello.name, hello.queues) == ("w1", ["default"])
            assert client.max_output_bytes == hello.max_task_output_bytes
            directives = await client.heartbeat(dataclasses.replace(facts, queues=[]))
            assert (directives.kill, directives.maintenance, directives.shutdown) == (
                [],
                False,
                False,
            )
            assert await _served(admin, "w1") == ["default", "other"]
            with pytest.raises(Forbidden, match="may not serve elsewhere"):
                await client.heartbeat(dataclasses.replace(facts, queues=["elsewhere"]))

            await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
            jobs, _ = await client.poll(PollRequest(slots=2, wait=5))
            (job,) = jobs
            assert await client.upload_log(job.attempt_id, 0, b"hello\n") == 6
            done = await client.finish(job.attempt_id, AttemptResult("success", output=[1]))
            assert done.state == "success"
        finally:
            await client.aclose()

    run(hub, scenario)
