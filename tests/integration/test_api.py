"""The REST and worker APIs in process (httpx ASGI transport, real SQLite store):
status codes and reasons for bad input, never a 500."""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from tests.hubtools import ADMIN, create_app, make_hub, parse, write_dag
from tether import __version__
from tether.hub.state import Hub
from tether.hub.store.models import CallbackRequest
from tether.protocol import PROTOCOL_VERSION, SESSION_HEADER


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
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://hub",
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as admin:
            return await scenario(admin, Workers(transport, admin))

    return asyncio.run(main())


W = "/api/worker/v1"
FACTS = {"concurrency": 2, "free_slots": 2, "version": __version__, "protocol": PROTOCOL_VERSION}


class Workers:
    """Enrols workers and opens their sessions, as the real worker does."""

    def __init__(self, transport: httpx.ASGITransport, admin: httpx.AsyncClient) -> None:
        self.transport, self.admin = transport, admin

    async def token(self, queues: list[str], name: str, expires_in: float = 600) -> str:
        answer = await self.admin.post(
            "/api/v1/workers/enrolment-tokens",
            json={"queues": queues, "name": name, "expires_in": expires_in},
        )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["token"]
        return token

    def client(self, credential: str = "", session: str = "") -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        if session:
            headers[SESSION_HEADER] = session
        return httpx.AsyncClient(transport=self.transport, base_url="http://hub", headers=headers)

    async def enrol(self, queues: list[str], name: str) -> str:
        async with self.client() as anon:
            answer = await anon.post(f"{W}/enrol", json={"token": await self.token(queues, name)})
        assert answer.status_code == 200, answer.text
        credential: str = answer.json()["credential"]
        return credential

    async def connect(self, queues: list[str], name: str) -> httpx.AsyncClient:
        """An enrolled worker with an open session."""
        credential = await self.enrol(queues, name)
        return await self.session(credential)

    async def session(self, credential: str) -> httpx.AsyncClient:
        async with self.client(credential) as c:
            answer = await c.post(f"{W}/sessions", json=FACTS)
        assert answer.status_code == 200, answer.text
        return self.client(credential, answer.json()["session_id"])


async def _expect(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert reason in str(response.json()["detail"])


def test_rest_api_errors_have_reasons(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, _: Workers) -> None:
        anon = await admin.get("/api/v1/dags", headers={"Authorization": ""})
        await _expect(anon, 401, "missing bearer token")
        wrong = await admin.get("/api/v1/dags", headers={"Authorization": "Bearer nope"})
        await _expect(wrong, 401, "invalid token")
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
        # The ids of the hub's own runs are not for people to take: a scheduled
        # interval whose id a trigger took first would never run.
        for prefix in ("scheduled__", "backfill__", "asset_triggered__"):
            taken = await admin.post(
                "/api/v1/dags/pair/runs", json={"run_id": prefix + "2026-01-02T00:00:00+00:00"}
            )
            await _expect(taken, 422, f"run ids starting with '{prefix}' are the hub's own")
        mine = await admin.post("/api/v1/dags/pair/runs", json={"run_id": "manual__mine"})
        assert mine.status_code == 200, mine.text
        logs = "/api/v1/dags/pair/runs/r1/tasks"
        await _expect(await admin.get(f"{logs}/zzz/logs"), 404, "has no task 'zzz'")
        await _expect(await admin.get(f"{logs}/a/logs?try_number=3"), 404, "has no try 3")
        assert (await admin.get(f"{logs}/a/logs?try_number=0")).status_code == 422

        detail = (await admin.get("/api/v1/dags/pair/runs/r1")).json()
        assert detail["state"] == "running"
        assert {t["task_id"]: t["state"] for t in detail["tasks"]} == {"a": "queued", "b": None}

    run(hub, scenario)


def test_enrolment_tokens_are_single_use_hashed_and_expire(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        token = await workers.token(["acme"], "edge-1")
        async with workers.client() as anon:
            await _expect(
                await anon.post(f"{W}/enrol", json={"token": "tte_x.y"}),
                401,
                "unknown enrolment token",
            )
            first = await anon.post(f"{W}/enrol", json={"token": token})
            assert first.json()["name"] == "edge-1"
            assert first.json()["queues"] == ["acme"]
            await _expect(await anon.post(f"{W}/enrol", json={"token": token}), 401, "already used")
            short = await workers.token(["acme"], "edge-2", expires_in=0.05)
            await asyncio.sleep(0.1)
            await _expect(await anon.post(f"{W}/enrol", json={"token": short}), 401, "expired")
            bad = await admin.post(
                "/api/v1/workers/enrolment-tokens", json={"queues": ["no spaces"]}
            )
            assert bad.status_code == 422
        credential = first.json()["credential"]
        # Only hashes are stored: neither secret appears in the database.
        with hub.store.transaction() as s:
            dump = "\n".join(
                str(row)
                for table in ("worker", "enrolment_token")
                for row in s.execute(text(f"SELECT * FROM {table}"))
            )
        assert credential not in dump
        assert token.split(".")[1] not in dump

    run(hub, scenario)


def test_worker_api_errors_have_reasons(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with workers.client() as anon:
            await _expect(
                await anon.post(f"{W}/poll", json={"slots": 1}), 401, "missing bearer token"
            )
        async with workers.client(ADMIN) as admin_as_worker:
            await _expect(
                await admin_as_worker.post(f"{W}/sessions", json=FACTS),
                401,
                "invalid worker credential",
            )
        credential = await workers.enrol(["default"], "w1")
        async with workers.client(credential) as c:
            await _expect(
                await c.post(f"{W}/poll", json={"slots": 1, "wait": 0}), 409, "no longer current"
            )
            await _expect(
                await c.post(f"{W}/sessions", json={**FACTS, "queues": ["other"]}),
                403,
                "may not serve other",
            )
            bad_queue = await c.post(f"{W}/sessions", json={**FACTS, "queues": ["a b"]})
            assert bad_queue.status_code == 422
            assert "invalid queue name" in bad_queue.text
            old = await c.post(f"{W}/sessions", json={**FACTS, "version": "0.0.1"})
            await _expect(
                old,
                426,
                f"worker 0.0.1 is older than the minimum 0.1.0 accepted by hub {__version__}",
            )
            other_protocol = await c.post(f"{W}/sessions", json={**FACTS, "protocol": 99})
            await _expect(other_protocol, 426, "speaks protocol 99")
        worker = await workers.session(credential)
        async with worker:
            too_long = await worker.post(f"{W}/poll", json={"slots": 1, "wait": 3600})
            assert too_long.status_code == 422
            await _expect(
                await worker.get(f"{W}/bundles/{'0' * 64}"), 403, "not the code of any task"
            )
            await _expect(
                await worker.post(f"{W}/attempts/{'0' * 32}/finish", json={"state": "success"}),
                404,
                "no attempt",
            )
            not_an_id = await worker.post(f"{W}/attempts/nope/finish", json={"state": "success"})
            assert not_an_id.status_code == 422
            assert "attempt_id" in not_an_id.text
            bad_state = await worker.post(
                f"{W}/attempts/{'0' * 32}/finish", json={"state": "great"}
            )
            assert bad_state.status_code == 422

            await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
            claimed = await worker.post(f"{W}/poll", json={"slots": 5, "wait": 0})
            (job,) = claimed.json()["jobs"]
            bundle = await worker.get(f"{W}/bundles/{job['bundle_sha']}")
            assert bundle.content[:2] == b"\x1f\x8b"  # gzip
            no_offset = await worker.post(f"{W}/attempts/{job['attempt_id']}/logs", content=b"x")
            assert no_offset.status_code == 422
            # Another worker cannot report on this worker's attempt.
            async with await workers.connect(["default"], "w2") as intruder:
                attempt = job["attempt_id"]
                await _expect(
                    await intruder.post(
                        f"{W}/attempts/{attempt}/finish", json={"state": "success"}
                    ),
                    403,
                    "held by another worker",
                )
                await _expect(
                    await intruder.post(f"{W}/attempts/{attempt}/logs?offset=0", content=b"x"),
                    403,
                    "held by another worker",
                )

    run(hub, scenario)


def test_a_worker_claims_only_its_own_queues(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
        async with await workers.connect(["other"], "other-tenant") as other:
            nothing = await other.post(f"{W}/poll", json={"slots": 5, "wait": 0})
            assert nothing.json()["jobs"] == []
        async with await workers.connect(["default"], "right-tenant") as right:
            got = await right.post(f"{W}/poll", json={"slots": 5, "wait": 0})
            assert [j["task_id"] for j in got.json()["jobs"]] == ["a"]

    run(hub, scenario)


def test_a_revoked_worker_gets_401_on_its_next_call(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with await workers.connect(["default"], "w1") as worker:
            ok = await worker.post(f"{W}/heartbeat", json=FACTS)
            assert ok.status_code == 200
            assert (await admin.post("/api/v1/workers/w1/revoke")).status_code == 200
            await _expect(
                await worker.post(f"{W}/heartbeat", json=FACTS), 401, "invalid or revoked"
            )
            await _expect(
                await admin.post("/api/v1/workers/nobody/revoke"), 404, "no worker 'nobody'"
            )

    run(hub, scenario)


def test_a_newer_session_supersedes_the_older(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        credential = await workers.enrol(["default"], "w1")
        first = await workers.session(credential)
        held = asyncio.create_task(first.post(f"{W}/poll", json={"slots": 0, "wait": 30}))
        await asyncio.sleep(0.2)
        assert not held.done()
        second = await workers.session(credential)
        # The held poll of the first process answers at once: it has been replaced.
        await _expect(await asyncio.wait_for(held, 10), 409, "took over")
        assert (await second.post(f"{W}/heartbeat", json=FACTS)).status_code == 200
        await first.aclose()
        await second.aclose()

    run(hub, scenario)


def test_a_held_poll_answers_as_soon_as_work_appears(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> Any:
        async with await workers.connect(["default"], "w1") as worker:
            poll = asyncio.create_task(worker.post(f"{W}/poll", json={"slots": 1, "wait": 30}))
            await asyncio.sleep(0.2)  # the poll is now held open with nothing to take
            assert not poll.done()
            await admin.post("/api/v1/dags/pair/runs", json={})
            response = await asyncio.wait_for(poll, 10)
            return response.json()["jobs"]

    jobs = run(hub, scenario)
    assert [j["task_id"] for j in jobs] == ["a"]


def test_marking_a_running_task_failed_answers_the_held_poll_with_a_kill(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with await workers.connect(["default"], "w1") as worker:
            await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
            (job,) = (await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})).json()["jobs"]
            busy = {"slots": 0, "running": [job["attempt_id"]], "wait": 30}
            poll = asyncio.create_task(worker.post(f"{W}/poll", json=busy))
            await asyncio.sleep(0.2)
            assert not poll.done()
            marked = await admin.patch(
                "/api/v1/dags/pair/runs/r1/tasks/a", json={"state": "failed"}
            )
            assert marked.status_code == 200
            answer = (await asyncio.wait_for(poll, 10)).json()
            assert answer["directives"]["kill"] == [job["attempt_id"]]
            late = await worker.post(
                f"{W}/attempts/{job['attempt_id']}/finish", json={"state": "success"}
            )
            await _expect(late, 409, "already ended as lost")
            detail = (await admin.get("/api/v1/dags/pair/runs/r1")).json()
            assert {t["task_id"]: t["state"] for t in detail["tasks"]} == {
                "a": "failed",
                "b": "upstream_failed",
            }
            assert detail["state"] == "failed"

    run(hub, scenario)


def test_a_held_poll_is_released_when_the_hub_closes(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> Any:
        async with await workers.connect(["default"], "w1") as worker:
            poll = asyncio.create_task(worker.post(f"{W}/poll", json={"slots": 1, "wait": 30}))
            await asyncio.sleep(0.2)
            assert not poll.done()
            hub.wakeups.close()
            return (await asyncio.wait_for(poll, 10)).json()["jobs"]

    assert run(hub, scenario) == []


def test_clearing_a_failed_task_with_downstream_runs_exactly_those_again(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> dict[str, Any]:
        async with await workers.connect(["default"], "w1") as worker:
            await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
            (job,) = (await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})).json()["jobs"]
            await worker.post(f"{W}/attempts/{job['attempt_id']}/finish", json={"state": "failed"})
            failed = (await admin.get("/api/v1/dags/pair/runs/r1")).json()
            assert failed["state"] == "failed"
            cleared = await admin.post(
                "/api/v1/dags/pair/runs/r1/tasks/a/clear", json={"downstream": True}
            )
            assert cleared.json() == {"task_id": "a", "state": "cleared", "cleared": ["a", "b"]}
            await _expect(
                await admin.post("/api/v1/dags/pair/runs/r1/tasks/zz/clear", json={}),
                404,
                "has no task 'zz'",
            )
            (again,) = (await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})).json()["jobs"]
            assert (again["task_id"], again["try_number"]) == ("a", 2)
            detail: dict[str, Any] = (await admin.get("/api/v1/dags/pair/runs/r1")).json()
            return detail

    detail = run(hub, scenario)
    assert detail["state"] == "running"
    assert {t["task_id"]: t["state"] for t in detail["tasks"]} == {"a": "running", "b": None}


def test_revoking_a_worker_gives_up_on_its_running_attempts(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with await workers.connect(["default"], "w1") as worker:
            await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
            (job,) = (await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})).json()["jobs"]
            assert (await admin.post("/api/v1/workers/w1/revoke")).status_code == 200
            detail = (await admin.get("/api/v1/dags/pair/runs/r1")).json()
            # No retries: the task fails rather than staying 'running' for ever.
            assert {t["task_id"]: t["state"] for t in detail["tasks"]}["a"] == "failed"
            late = await worker.post(
                f"{W}/attempts/{job['attempt_id']}/finish", json={"state": "success"}
            )
            assert late.status_code == 401

    run(hub, scenario)


def test_a_shutdown_reaches_one_process_only(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        credential = await workers.enrol(["default"], "w1")
        async with await workers.session(credential) as first:
            await admin.post("/api/v1/workers/w1/shutdown")
            told = (await first.post(f"{W}/heartbeat", json=FACTS)).json()["directives"]
            assert told["shutdown"] is True
        async with await workers.session(credential) as restarted:
            again = (await restarted.post(f"{W}/heartbeat", json=FACTS)).json()["directives"]
            assert again["shutdown"] is False

    run(hub, scenario)


def test_a_worker_gets_only_bundles_of_its_own_attempts(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
        async with await workers.connect(["default"], "w1") as worker:
            (job,) = (await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})).json()["jobs"]
            assert (await worker.get(f"{W}/bundles/{job['bundle_sha']}")).status_code == 200
        async with await workers.connect(["other"], "w2") as other:
            await _expect(
                await other.get(f"{W}/bundles/{job['bundle_sha']}"),
                403,
                "not the code of any task this worker was handed",
            )

    run(hub, scenario)


def test_pausing_a_dag_survives_a_reparse_and_bad_patches_get_reasons(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, _: Workers) -> None:
        paused = await admin.patch("/api/v1/dags/pair", json={"is_paused": True})
        assert paused.status_code == 200, paused.text
        assert paused.json()["is_paused"] is True
        assert paused.json()["dag_id"] == "pair"
        for bad in ({"is_paused": "yes"}, {"is_paused": 1}, {"is_paused": None}, {}):
            answer = await admin.patch("/api/v1/dags/pair", json=bad)
            assert answer.status_code == 422, bad
            assert "is_paused" in answer.text
        extra = await admin.patch("/api/v1/dags/pair", json={"is_paused": False, "schedule": "x"})
        assert extra.status_code == 422
        assert "schedule" in extra.text
        await _expect(
            await admin.patch("/api/v1/dags/nope", json={"is_paused": True}), 404, "no DAG 'nope'"
        )
        assert (await admin.get("/api/v1/dags/pair")).json()["is_paused"] is True

        # A changed file is parsed again; the DAG stays paused.
        write_dag(
            hub.config.dags_folder,
            "pair.py",
            """
            from tether import DAG, BashOperator
            with DAG("pair", is_paused_upon_creation=False):
                BashOperator(task_id="a", bash_command="true") >> BashOperator(
                    task_id="c", bash_command="true", queue="other")
            """,
        )
        parse(hub)
        reparsed = (await admin.get("/api/v1/dags/pair")).json()
        assert reparsed["task_ids"] == ["a", "c"]
        assert reparsed["is_paused"] is True
        # As in Airflow, a paused DAG can still be triggered by hand.
        made = await admin.post("/api/v1/dags/pair/runs", json={"run_id": "manual"})
        assert made.status_code == 200

        unpaused = await admin.patch("/api/v1/dags/pair", json={"is_paused": False})
        assert unpaused.json()["is_paused"] is False
        listed = {d["dag_id"]: d for d in (await admin.get("/api/v1/dags")).json()["dags"]}
        assert listed["pair"]["is_paused"] is False

    run(hub, scenario)


def test_listing_runs_newest_first_with_paging_and_a_state_filter(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, _: Workers) -> None:
        for run_id in ("r1", "r2", "r3"):
            made = await admin.post(
                "/api/v1/dags/pair/runs", json={"run_id": run_id, "conf": {"n": run_id}}
            )
            assert made.status_code == 200
        await admin.patch("/api/v1/dags/pair/runs/r2", json={"state": "success"})

        listed = (await admin.get("/api/v1/dags/pair/runs")).json()
        assert listed["total_entries"] == 3
        assert [r["run_id"] for r in listed["dag_runs"]] == ["r3", "r2", "r1"]
        r3 = listed["dag_runs"][0]
        assert r3["state"] == "running"
        assert r3["run_type"] == "manual"
        assert r3["conf"] == {"n": "r3"}
        assert r3["logical_date"] is not None
        assert r3["started_at"] is not None
        assert r3["ended_at"] is None
        assert {"data_interval_start", "data_interval_end", "dag_id", "bundle_sha"} <= set(r3)

        page = (await admin.get("/api/v1/dags/pair/runs?limit=2&offset=1")).json()
        assert [r["run_id"] for r in page["dag_runs"]] == ["r2", "r1"]
        assert page["total_entries"] == 3
        done = (await admin.get("/api/v1/dags/pair/runs?state=success")).json()
        assert [r["run_id"] for r in done["dag_runs"]] == ["r2"]
        assert done["total_entries"] == 1
        assert done["dag_runs"][0]["ended_at"] is not None
        manual = (await admin.get("/api/v1/dags/pair/runs?run_type=manual&limit=1")).json()
        assert [r["run_id"] for r in manual["dag_runs"]] == ["r3"]
        assert manual["total_entries"] == 3
        none = (await admin.get("/api/v1/dags/pair/runs?run_type=scheduled")).json()
        assert none == {"dag_runs": [], "total_entries": 0}
        beyond = (await admin.get("/api/v1/dags/pair/runs?offset=10")).json()
        assert beyond == {"dag_runs": [], "total_entries": 3}

        for query in ("limit=0", "limit=1001", "offset=-1", "state=great", "run_type=x", "limit=x"):
            answer = await admin.get(f"/api/v1/dags/pair/runs?{query}")
            assert answer.status_code == 422, query
        await _expect(await admin.get("/api/v1/dags/nope/runs"), 404, "no DAG 'nope'")

    run(hub, scenario)


def test_marking_a_run_failed_kills_its_running_task_and_skips_the_rest(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with await workers.connect(["default"], "w1") as worker:
            await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
            (job,) = (await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})).json()["jobs"]
            busy = {"slots": 0, "running": [job["attempt_id"]], "wait": 30}
            poll = asyncio.create_task(worker.post(f"{W}/poll", json=busy))
            await asyncio.sleep(0.2)
            assert not poll.done()
            marked = await admin.patch("/api/v1/dags/pair/runs/r1", json={"state": "failed"})
            assert marked.json() == {"run_id": "r1", "state": "failed"}
            answer = (await asyncio.wait_for(poll, 10)).json()
            assert answer["directives"]["kill"] == [job["attempt_id"]]
            late = await worker.post(
                f"{W}/attempts/{job['attempt_id']}/finish", json={"state": "success"}
            )
            await _expect(late, 409, "already ended as lost")
            detail = (await admin.get("/api/v1/dags/pair/runs/r1")).json()
            assert detail["state"] == "failed"
            assert detail["ended_at"] is not None
            assert {t["task_id"]: t["state"] for t in detail["tasks"]} == {
                "a": "failed",
                "b": "skipped",
            }

            for bad in ({"state": "running"}, {"state": "queued"}, {}, {"state": None}):
                answer = await admin.patch("/api/v1/dags/pair/runs/r1", json=bad)
                assert answer.status_code == 422, bad
            await _expect(
                await admin.patch("/api/v1/dags/pair/runs/nope", json={"state": "success"}),
                404,
                "has no run 'nope'",
            )
            # Nothing of the failed run is handed out any more.
            again = await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})
            assert again.json()["jobs"] == []

    run(hub, scenario)


def test_marking_a_run_success_finishes_only_its_unfinished_tasks(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with await workers.connect(["default"], "w1") as worker:
            await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
            (job,) = (await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})).json()["jobs"]
            marked = await admin.patch("/api/v1/dags/pair/runs/r1", json={"state": "success"})
            assert marked.status_code == 200
            detail = (await admin.get("/api/v1/dags/pair/runs/r1")).json()
            assert detail["state"] == "success"
            assert {t["task_id"]: t["state"] for t in detail["tasks"]} == {
                "a": "success",
                "b": "success",
            }
            busy = {"slots": 0, "running": [job["attempt_id"]], "wait": 0}
            told = (await worker.post(f"{W}/poll", json=busy)).json()["directives"]
            assert told["kill"] == [job["attempt_id"]]

            # Finished tasks keep their state: a failed, b upstream_failed.
            await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r2"})
            await admin.patch("/api/v1/dags/pair/runs/r2/tasks/a", json={"state": "failed"})
            assert (await admin.get("/api/v1/dags/pair/runs/r2")).json()["state"] == "failed"
            await admin.patch("/api/v1/dags/pair/runs/r2", json={"state": "success"})
            detail = (await admin.get("/api/v1/dags/pair/runs/r2")).json()
            assert detail["state"] == "success"
            assert {t["task_id"]: t["state"] for t in detail["tasks"]} == {
                "a": "failed",
                "b": "upstream_failed",
            }

            # A queued task is taken back: no worker gets it.
            await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r3"})
            await admin.patch("/api/v1/dags/pair/runs/r3", json={"state": "success"})
            nothing = await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})
            assert nothing.json()["jobs"] == []

    run(hub, scenario)


def test_clearing_a_run_reruns_all_or_only_its_failed_tasks(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with await workers.connect(["default"], "w1") as worker:
            await admin.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})
            (job,) = (await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})).json()["jobs"]
            await worker.post(f"{W}/attempts/{job['attempt_id']}/finish", json={"state": "failed"})
            assert (await admin.get("/api/v1/dags/pair/runs/r1")).json()["state"] == "failed"

            cleared = await admin.post(
                "/api/v1/dags/pair/runs/r1/clear", json={"only_failed": True}
            )
            assert cleared.json() == {"run_id": "r1", "cleared": ["a", "b"]}
            detail = (await admin.get("/api/v1/dags/pair/runs/r1")).json()
            assert detail["state"] == "running"
            assert {t["task_id"]: t["state"] for t in detail["tasks"]} == {
                "a": "queued",
                "b": None,
            }
            (again,) = (await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})).json()["jobs"]
            assert (again["task_id"], again["try_number"]) == ("a", 2)
            await worker.post(
                f"{W}/attempts/{again['attempt_id']}/finish", json={"state": "success"}
            )
            await admin.patch("/api/v1/dags/pair/runs/r1/tasks/b", json={"state": "success"})
            assert (await admin.get("/api/v1/dags/pair/runs/r1")).json()["state"] == "success"

            # Nothing failed: nothing to clear, and the run stays finished.
            none = await admin.post("/api/v1/dags/pair/runs/r1/clear", json={"only_failed": True})
            assert none.json() == {"run_id": "r1", "cleared": []}
            assert (await admin.get("/api/v1/dags/pair/runs/r1")).json()["state"] == "success"
            everything = await admin.post("/api/v1/dags/pair/runs/r1/clear", json={})
            assert everything.json()["cleared"] == ["a", "b"]
            detail = (await admin.get("/api/v1/dags/pair/runs/r1")).json()
            assert detail["state"] == "running"
            assert {t["task_id"]: (t["state"], t["try_number"]) for t in detail["tasks"]} == {
                "a": ("queued", 2),
                "b": (None, 0),
            }

            await _expect(
                await admin.post("/api/v1/dags/pair/runs/nope/clear", json={}),
                404,
                "has no run 'nope'",
            )
            bad = await admin.post("/api/v1/dags/pair/runs/r1/clear", json={"only_failed": []})
            assert bad.status_code == 422

    run(hub, scenario)


def test_run_marks_and_clears_respect_max_active_runs(hub: Hub) -> None:
    write_dag(
        hub.config.dags_folder,
        "single.py",
        """
        from tether import DAG, BashOperator
        with DAG("single", max_active_runs=1):
            BashOperator(task_id="a", bash_command="true")
        """,
    )
    parse(hub)

    async def scenario(admin: httpx.AsyncClient, _: Workers) -> None:
        async def state(run_id: str) -> str:
            answer: str = (await admin.get(f"/api/v1/dags/single/runs/{run_id}")).json()["state"]
            return answer

        for run_id in ("r1", "r2"):
            await admin.post("/api/v1/dags/single/runs", json={"run_id": run_id})
        assert (await state("r1"), await state("r2")) == ("running", "queued")
        # Marking r1 ends it: r2 starts in the same transaction.
        await admin.patch("/api/v1/dags/single/runs/r1", json={"state": "success"})
        assert (await state("r1"), await state("r2")) == ("success", "running")
        # A cleared finished run is queued again and waits for room, as in Airflow.
        cleared = await admin.post("/api/v1/dags/single/runs/r1/clear", json={})
        assert cleared.json()["cleared"] == ["a"]
        assert (await state("r1"), await state("r2")) == ("queued", "running")
        await admin.patch("/api/v1/dags/single/runs/r2", json={"state": "failed"})
        assert (await state("r1"), await state("r2")) == ("running", "failed")
        detail = (await admin.get("/api/v1/dags/single/runs/r1")).json()
        assert [(t["task_id"], t["state"]) for t in detail["tasks"]] == [("a", "queued")]

    run(hub, scenario)


def _fan(hub: Hub) -> None:
    """Add DAG ``fan``: one task mapped over three values."""
    write_dag(
        hub.config.dags_folder,
        "mapped.py",
        """
        from tether import DAG, task
        with DAG("fan"):
            @task
            def each(x):
                return x
            each.expand(x=[1, 2, 3])
        """,
    )
    parse(hub)


def test_clearing_the_failed_index_of_a_mapped_task_reruns_only_that_index(hub: Hub) -> None:
    _fan(hub)

    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with await workers.connect(["default"], "w1") as worker:
            await admin.post("/api/v1/dags/fan/runs", json={"run_id": "r1"})
            jobs = (await worker.post(f"{W}/poll", json={"slots": 3, "wait": 0})).json()["jobs"]
            assert len(jobs) == 3
            for job, outcome in zip(jobs, ("success", "failed", "success"), strict=True):
                finish = {"state": outcome, "no_retry": True}
                await worker.post(f"{W}/attempts/{job['attempt_id']}/finish", json=finish)
            assert (await admin.get("/api/v1/dags/fan/runs/r1")).json()["state"] == "failed"

            cleared = await admin.post("/api/v1/dags/fan/runs/r1/clear", json={"only_failed": True})
            assert cleared.json() == {"run_id": "r1", "cleared": ["each"]}
            detail = (await admin.get("/api/v1/dags/fan/runs/r1")).json()
            assert detail["state"] == "running"
            assert [(t["map_index"], t["state"], t["try_number"]) for t in detail["tasks"]] == [
                (0, "success", 1),
                (1, "queued", 1),
                (2, "success", 1),
            ]
            everything = await admin.post("/api/v1/dags/fan/runs/r1/tasks/each/clear", json={})
            assert everything.json()["cleared"] == ["each"]  # once, for its three indexes

    run(hub, scenario)


def test_marking_a_mapped_task_marks_every_index_or_the_one_named(hub: Hub) -> None:
    _fan(hub)

    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with await workers.connect(["default"], "w1") as worker:
            await admin.post("/api/v1/dags/fan/runs", json={"run_id": "r1"})
            jobs = (await worker.post(f"{W}/poll", json={"slots": 3, "wait": 0})).json()["jobs"]
            assert len(jobs) == 3
            one = await admin.patch(
                "/api/v1/dags/fan/runs/r1/tasks/each", json={"state": "failed", "map_index": 1}
            )
            assert one.json() == {"task_id": "each", "state": "failed", "map_indexes": [1]}
            detail = (await admin.get("/api/v1/dags/fan/runs/r1")).json()
            assert [(t["map_index"], t["state"]) for t in detail["tasks"]] == [
                (0, "running"),
                (1, "failed"),
                (2, "running"),
            ]
            every = await admin.patch(
                "/api/v1/dags/fan/runs/r1/tasks/each", json={"state": "success"}
            )
            assert every.json()["map_indexes"] == [0, 1, 2]
            detail = (await admin.get("/api/v1/dags/fan/runs/r1")).json()
            assert [t["state"] for t in detail["tasks"]] == ["success"] * 3
            assert detail["state"] == "success"
            missing = await admin.patch(
                "/api/v1/dags/fan/runs/r1/tasks/each", json={"state": "failed", "map_index": 7}
            )
            await _expect(missing, 404, "has no map index 7")

    run(hub, scenario)


def test_a_run_marked_failed_asks_for_its_dag_callback_with_reason_marked(hub: Hub) -> None:
    write_dag(
        hub.config.dags_folder,
        "called.py",
        """
        from tether import DAG, BashOperator
        def told(context):
            print("failed because", context["reason"])
        with DAG("called", on_failure_callback=told):
            BashOperator(task_id="a", bash_command="true")
        """,
    )
    parse(hub)

    async def scenario(admin: httpx.AsyncClient, _: Workers) -> None:
        await admin.post("/api/v1/dags/called/runs", json={"run_id": "r1"})
        marked = await admin.patch("/api/v1/dags/called/runs/r1", json={"state": "failed"})
        assert marked.status_code == 200

    run(hub, scenario)
    with hub.store.transaction() as s:
        requests = [(r.run_id, r.kind, r.reason) for r in s.scalars(select(CallbackRequest))]
    assert requests == [("r1", "on_failure_callback", "marked")]


def test_assets_events_posted_from_outside_start_the_dags_waiting_on_them(hub: Hub) -> None:
    write_dag(
        hub.config.dags_folder,
        "assets.py",
        """
        from tether import DAG, Asset, EmptyOperator
        A, B = Asset("tether://a", {"owner": "ops"}), Asset("tether://b")
        with DAG("produce"):
            EmptyOperator(task_id="emit", outlets=[A])
        with DAG("consume", schedule=[A, B]):
            EmptyOperator(task_id="use", queue="consumers")
    """,
    )
    parse(hub)

    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        dag = (await admin.get("/api/v1/dags/consume")).json()
        assert dag["schedule"] == {"assets": ["tether://a", "tether://b"]}
        assert dag["next_dagrun"] is None
        listed = {a["uri"]: a for a in (await admin.get("/api/v1/assets")).json()["assets"]}
        assert set(listed) == {"tether://a", "tether://b"}
        assert listed["tether://a"]["extra"] == {"owner": "ops"}
        assert listed["tether://a"]["consumers"] == ["consume"]
        assert listed["tether://a"]["producers"] == [{"dag_id": "produce", "task_id": "emit"}]
        assert listed["tether://b"]["producers"] == []
        assert listed["tether://a"]["last_event"] is None

        events = "/api/v1/assets/events"
        await _expect(await admin.post(events, json={"uri": "tether://nope"}), 404, "no asset")
        await _expect(await admin.post(events, json={"uri": "has space"}), 422, "without spaces")
        await _expect(await admin.post(events, json={"uri": ""}), 422, "must not be empty")
        await _expect(await admin.post(events, json={"extra": {}}), 422, "uri")
        bad_extra = await admin.post(events, json={"uri": "tether://a", "extra": [1]})
        await _expect(bad_extra, 422, "extra")
        huge = await admin.post(events, json={"uri": "tether://a", "extra": {"x": "y" * 70000}})
        await _expect(huge, 422, "the limit is 65536")
        await _expect(await admin.get(f"{events}?uri=tether://nope"), 404, "no asset")
        assert (await admin.get(f"{events}?limit=0")).status_code == 422
        await _expect(await admin.get("/api/v1/dags/nope/runs"), 404, "no DAG 'nope'")

        first = await admin.post(events, json={"uri": "tether://a", "extra": {"rows": 7}})
        assert first.status_code == 200, first.text
        assert first.json()["triggered_runs"] == []
        assert first.json()["event"]["extra"] == {"rows": 7}
        assert first.json()["event"]["source_dag_id"] is None
        listed = {a["uri"]: a for a in (await admin.get("/api/v1/assets")).json()["assets"]}
        assert listed["tether://a"]["queued_for"] == ["consume"]
        assert listed["tether://a"]["last_event"] == first.json()["event"]

        async with await workers.connect(["consumers"], "w1") as worker:
            poll = asyncio.create_task(worker.post(f"{W}/poll", json={"slots": 1, "wait": 30}))
            await asyncio.sleep(0.2)  # held open: nothing on its queue yet
            assert not poll.done()
            second = (await admin.post(events, json={"uri": "tether://b"})).json()
            (started,) = second["triggered_runs"]
            assert started["dag_id"] == "consume"
            # The run's root task reached the waiting worker without a scheduler tick.
            (job,) = (await asyncio.wait_for(poll, 10)).json()["jobs"]
            assert (job["dag_id"], job["run_id"]) == ("consume", started["run_id"])
        triggering = job["conf"]["triggering_asset_events"]
        assert [e["extra"] for e in triggering["tether://a"]] == [{"rows": 7}]
        assert [e["id"] for e in triggering["tether://b"]] == [second["event"]["id"]]

        runs = "/api/v1/dags/consume/runs"
        (run,) = (await admin.get(f"{runs}?run_type=asset_triggered")).json()["dag_runs"]
        assert (run["run_id"], run["run_type"]) == (started["run_id"], "asset_triggered")
        assert run["conf"] == job["conf"]
        newest = (await admin.get(f"{events}?uri=tether://a")).json()["asset_events"]
        assert [e["id"] for e in newest] == [first.json()["event"]["id"]]
        both = (await admin.get(f"{events}?limit=1")).json()["asset_events"]
        assert [e["uri"] for e in both] == ["tether://b"]  # newest first

    run(hub, scenario)


def test_a_link_out_of_the_dags_folder_is_left_out_and_shown_as_an_import_error(
    tmp_path: Path,
) -> None:
    dags = tmp_path / "dags"
    write_dag(dags, "ok.py", "from tether import DAG\nDAG('ok')\n")
    hub = make_hub(tmp_path, f"sqlite:///{tmp_path / 'links.db'}", dags)
    try:
        (hub.config.home / "admin_token").write_text("the-admin-token\n")
        (dags / "token.txt").symlink_to(hub.config.home / "admin_token")
        (dags / "notes\\draft.txt").write_text("")  # names no bundle can carry...
        with open(os.fsencode(dags) + b"/caf\xe9.py", "w"):
            pass
        parse(hub)

        async def scenario(admin: httpx.AsyncClient, _: Workers) -> None:
            errors = (await admin.get("/api/v1/import-errors")).json()["import_errors"]
            assert {e["fileloc"]: e["message"] for e in errors} == {
                "token.txt": "left out of the bundle: a symbolic link to a file outside the "
                "DAGs folder is never packed",
                "notes\\draft.txt": "left out of the bundle: its name cannot travel in a "
                "bundle (a backslash, or longer than 1000 characters)",
                "caf\\udce9.py": "left out of the bundle: its name is not valid UTF-8",
            }
            # ...and none of them keeps the other DAGs from loading.
            assert [d["dag_id"] for d in (await admin.get("/api/v1/dags")).json()["dags"]] == ["ok"]

        run(hub, scenario)
        with hub.store.transaction() as s:
            (bundle,) = s.execute(text("SELECT data FROM bundle")).scalars()
        assert b"the-admin-token" not in gzip.decompress(bundle)
    finally:
        hub.store.dispose()
