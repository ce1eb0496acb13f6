"""The REST parameters behind ``tether tasks logs --follow``, run-id prefixes and
``dags trigger --logical-date``, in process (ASGI transport) on SQLite and
PostgreSQL: what each answers, and a 422 with a reason for every hostile value."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hubtools import make_hub, parse, write_dag
from tests.integration.test_api import W, Workers, _expect, run
from tether.hub.state import Hub

RUNS = "/api/v1/dags/solo/runs"


@pytest.fixture
def hub(tmp_path: Path, database_url: str) -> Iterator[Hub]:
    dags = tmp_path / "dags"
    write_dag(
        dags,
        "solo.py",
        """
        from tether import DAG, BashOperator
        with DAG("solo"):
            BashOperator(task_id="a", bash_command="true")
        """,
    )
    hub = make_hub(tmp_path, database_url, dags)
    parse(hub)
    yield hub
    hub.store.dispose()


def _log_headers(response: httpx.Response) -> tuple[int, int, str]:
    assert response.status_code == 200, response.text
    h = response.headers  # the names are the API's (docs/api.md), so spelled out here
    return int(h["X-Tether-Log-Size"]), int(h["X-Tether-Try-Number"]), h["X-Tether-Try-State"]


def test_a_log_is_read_on_from_an_offset_and_says_whether_its_try_still_runs(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, workers: Workers) -> None:
        async with await workers.connect(["default"], "w1") as worker:
            await admin.post(RUNS, json={"run_id": "r1"})
            (job,) = (await worker.post(f"{W}/poll", json={"slots": 1, "wait": 0})).json()["jobs"]
            logs = f"{W}/attempts/{job['attempt_id']}/logs"
            assert (await worker.post(f"{logs}?offset=0", content=b"hello ")).status_code == 200
            assert (await worker.post(f"{logs}?offset=6", content=b"world\n")).status_code == 200

            url = f"{RUNS}/r1/tasks/a/logs"
            whole = await admin.get(url)
            assert whole.content == b"hello world\n"
            assert _log_headers(whole) == (12, 1, "running")
            # From inside the first chunk, from a chunk's start, from the end, past it.
            assert (await admin.get(url, params={"offset": 3})).content == b"lo world\n"
            assert (await admin.get(url, params={"offset": 6})).content == b"world\n"
            at_end = await admin.get(url, params={"offset": 12})
            assert at_end.content == b""
            assert _log_headers(at_end) == (12, 1, "running")
            assert (await admin.get(url, params={"offset": 500})).content == b""

            assert (await worker.post(f"{logs}?offset=12", content=b"bye\n")).status_code == 200
            await worker.post(f"{W}/attempts/{job['attempt_id']}/finish", json={"state": "failed"})
            last = await admin.get(url, params={"offset": 12, "try_number": 1})
            assert last.content == b"bye\n"
            assert _log_headers(last) == (16, 1, "failed")

            for hostile in ("-1", str(10**30), "text", "1.5", "", "0x10"):
                answer = await admin.get(url, params={"offset": hostile})
                await _expect(answer, 422, "offset")

    run(hub, scenario)


def test_runs_are_found_by_the_exact_start_of_their_id(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, _: Workers) -> None:
        made = ["r1", "r_2", "manual__2024-01-01T00:00:00+00:00", "manual__2024-01-02T00:00:00"]
        for run_id in made:
            assert (await admin.post(RUNS, json={"run_id": run_id})).status_code == 200

        async def ids(prefix: str) -> list[str]:
            answer = await admin.get(RUNS, params={"run_id_prefix": prefix})
            assert answer.status_code == 200, answer.text
            page = answer.json()
            assert page["total_entries"] == len(page["dag_runs"])
            return [r["run_id"] for r in page["dag_runs"]]

        assert await ids("manual__2024-01-0") == [made[3], made[2]]  # newest first
        assert await ids("manual__2024-01-01T00:00:00+") == [made[2]]  # "+" sent encoded
        assert await ids("r_") == ["r_2"]  # "_" is a character, not LIKE's wildcard
        assert await ids("R") == []  # and case counts, on SQLite too
        assert await ids("r1") == ["r1"]
        assert await ids("r1x") == []

        for hostile in ("", "a\x01", "r\n", "a/b", "r%", "x" * 251, "r 1"):
            answer = await admin.get(RUNS, params={"run_id_prefix": hostile})
            await _expect(answer, 422, "run_id_prefix")

    run(hub, scenario)


def test_a_trigger_takes_a_logical_date_in_utc_and_refuses_a_duplicate_run_id(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, _: Workers) -> None:
        async def trigger(body: dict[str, object]) -> dict[str, object]:
            answer = await admin.post(RUNS, json=body)
            assert answer.status_code == 200, answer.text
            detail: dict[str, object] = (
                await admin.get(f"{RUNS}/{answer.json()['run_id']}")
            ).json()
            return detail

        dated = await trigger({"run_id": "d1", "logical_date": "2024-03-01T12:00:00+02:00"})
        assert dated["logical_date"] == "2024-03-01T10:00:00+00:00"
        assert dated["data_interval_start"] == dated["data_interval_end"] == dated["logical_date"]
        naive = await trigger({"logical_date": "2024-03-02T06:30:00"})  # no offset: UTC
        assert naive["run_id"] == "manual__2024-03-02T06:30:00+00:00"
        assert naive["logical_date"] == "2024-03-02T06:30:00+00:00"
        day = await trigger({"logical_date": "2024-03-03"})
        assert day["logical_date"] == "2024-03-03T00:00:00+00:00"

        await _expect(
            await admin.post(RUNS, json={"run_id": "d1", "logical_date": "2024-04-01"}),
            409,
            "already has a run 'd1'",
        )
        # The same logical date again names the same generated run id.
        await _expect(
            await admin.post(RUNS, json={"logical_date": "2024-03-02T06:30:00Z"}),
            409,
            "already has a run 'manual__2024-03-02T06:30:00+00:00'",
        )
        hostile: list[object] = [
            "yesterday",
            "2024-13-01",
            "",
            "9999-01-01",
            "0001-01-01T00:00:00",
            "2024-01-01\x00",
            "2024-01-01T00:00:00" + " " * 40,
            1700000000,
            True,
            ["2024-01-01"],
            {"date": "2024-01-01"},
        ]
        for value in hostile:
            answer = await admin.post(RUNS, json={"logical_date": value})
            await _expect(answer, 422, "logical_date")
        listed = (await admin.get(RUNS)).json()
        assert listed["total_entries"] == 3  # nothing refused made a run

    run(hub, scenario)
