"""The REST and worker APIs in process (httpx ASGI transport, real SQLite store):
status codes and reasons for bad input, never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hubtools import ADMIN, WORKER, create_app, make_hub, parse, write_dag
from tether.hub.state import Hub
from tether.protocol import WORKER_NAME_HEADER


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    dags = tmp_path / "dags"
    write_dag(
        dags,
        "pair.py",
        """
        from tether import DAG, BashOperator
        with DAG("pair"):
            BashOperator(task_id="a", bash_command="true") >> BashOperator(
                task_id="b", bash_command="true", queue="other")
    """,
    )
    hub = make_hub(tmp_path, f"sqlite:///{tmp_path / 'api.db'}", dags)
    parse(hub)
    yield hub
    hub.store.dispose()


def run(hub: Hub, scenario: Any) -> Any:
    async def main() -> Any:
        hub.wakeups.bind(asyncio.get_running_loop())
        transport = httpx.ASGITransport(app=create_app(hub))
        async with (
            httpx.AsyncClient(
                transport=transport,
                base_url="http://hub",
                headers={"Authorization": f"Bearer {ADMIN}"},
            ) as admin,
            httpx.AsyncClient(
                transport=transport,
                base_url="http://hub",
                headers={"Authorization": f"Bearer {WORKER}", WORKER_NAME_HEADER: "w1"},
            ) as worker,
        ):
            return await scenario(admin, worker)

    return asyncio.run(main())


async def _expect(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert reason in str(response.json()["detail"])


def test_rest_api_errors_have_reasons(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, _: httpx.AsyncClient) -> None:
        anon = await admin.get("/api/v1/dags", headers={"Authorization": ""})
        await _expect(anon, 401, "missing bearer token")
        wrong = await admin.get("/api/v1/dags", headers={"Authorization": "Bearer nope"})
        await _expect(wrong, 401, "invalid token")
        worker_token = await admin.get(
            "/api/v1/dags", headers={"Authorization": f"Bearer {WORKER}"}
        )
        await _expect(worker_token, 401, "invalid token")
        assert (await admin.get("/api/v1/health", headers={"Authorization": ""})).status_code == 200

        await _expect(await admin.get("/api/v1/dags/nope"), 404, "no DAG 'nope'")
        await _expect(await admin.post("/api/v1/dags/nope/runs", json={}), 404, "no DAG")
        await _expect(await admin.get("/api/v1/dags/pair/runs/nope"), 404, "has no run 'nope'")
        bad_json = await admin.post(
            "/api/v1/dags/pair/runs",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert bad_json.status_code == 422
        bad_conf = await admin.post("/api/v1/dags/pair/runs", json={"conf": [1, 2]})
        assert bad_conf.status_code == 422
        assert "conf" in str(bad_conf.json()["detail"])
        bad_id = await admin.post("/api/v1/dags/pair/runs", json={"run_id": "a/b"})
        assert bad_id.status_code == 422

        made = await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
        assert made.json() == {"run_id": "r1"}
        await _expect(
            await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"}),
            409,
            "already has a run 'r1'",
        )
        logs = "/api/v1/dags/pair/runs/r1/tasks"
        await _expect(await admin.get(f"{logs}/zzz/logs"), 404, "has no task 'zzz'")
        await _expect(await admin.get(f"{logs}/a/logs?try_number=3"), 404, "has no try 3")
        assert (await admin.get(f"{logs}/a/logs?try_number=0")).status_code == 422

        detail = (await admin.get("/api/v1/dags/pair/runs/r1")).json()
        assert detail["state"] == "running"
        assert {t["task_id"]: t["state"] for t in detail["tasks"]} == {"a": "queued", "b": None}

    run(hub, scenario)


def test_worker_api_errors_have_reasons(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, worker: httpx.AsyncClient) -> None:
        base = "/api/worker/v1"
        admin_as_worker = await admin.post(
            f"{base}/claim", json={"queues": ["default"], "slots": 1, "wait": 0}
        )
        await _expect(admin_as_worker, 401, "invalid token")
        nameless = await worker.post(
            f"{base}/claim",
            headers={WORKER_NAME_HEADER: ""},
            json={"queues": ["default"], "slots": 1, "wait": 0},
        )
        await _expect(nameless, 400, WORKER_NAME_HEADER)
        bad_queue = await worker.post(f"{base}/claim", json={"queues": ["a b"], "slots": 1})
        assert bad_queue.status_code == 422
        assert "invalid queue name" in bad_queue.text
        too_long = await worker.post(
            f"{base}/claim", json={"queues": ["q"], "slots": 1, "wait": 3600}
        )
        assert too_long.status_code == 422
        await _expect(await worker.get(f"{base}/bundles/{'0' * 64}"), 404, "no bundle")
        await _expect(
            await worker.post(f"{base}/attempts/nope/finish", json={"state": "success"}),
            404,
            "no attempt",
        )
        bad_state = await worker.post(f"{base}/attempts/nope/finish", json={"state": "great"})
        assert bad_state.status_code == 422

        await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
        claimed = await worker.post(
            f"{base}/claim", json={"queues": ["default"], "slots": 5, "wait": 0}
        )
        (job,) = claimed.json()["jobs"]
        other = {WORKER_NAME_HEADER: "w2"}
        await _expect(
            await worker.post(
                f"{base}/attempts/{job['attempt_id']}/finish",
                json={"state": "success"},
                headers=other,
            ),
            403,
            "held by another worker",
        )
        await _expect(
            await worker.post(
                f"{base}/attempts/{job['attempt_id']}/logs?offset=0", content=b"x", headers=other
            ),
            403,
            "held by another worker",
        )
        no_offset = await worker.post(f"{base}/attempts/{job['attempt_id']}/logs", content=b"x")
        assert no_offset.status_code == 422
        bundle = await worker.get(f"{base}/bundles/{job['bundle_sha']}")
        assert bundle.status_code == 200
        assert bundle.content[:2] == b"\x1f\x8b"  # gzip

    run(hub, scenario)


def test_a_held_claim_answers_as_soon_as_work_appears(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, worker: httpx.AsyncClient) -> Any:
        claim = asyncio.create_task(
            worker.post(
                "/api/worker/v1/claim", json={"queues": ["default"], "slots": 1, "wait": 30}
            )
        )
        await asyncio.sleep(0.2)  # the claim is now held open with nothing to take
        assert not claim.done()
        await admin.post("/api/v1/dags/pair/runs", json={})
        response = await asyncio.wait_for(claim, 10)
        return response.json()["jobs"]

    jobs = run(hub, scenario)
    assert [j["task_id"] for j in jobs] == ["a"]


def test_a_held_claim_is_released_when_the_hub_closes(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, worker: httpx.AsyncClient) -> Any:
        claim = asyncio.create_task(
            worker.post(
                "/api/worker/v1/claim", json={"queues": ["default"], "slots": 1, "wait": 30}
            )
        )
        await asyncio.sleep(0.2)
        assert not claim.done()
        hub.wakeups.close()
        return (await asyncio.wait_for(claim, 10)).json()

    assert run(hub, scenario) == {"jobs": []}
