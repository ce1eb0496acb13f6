"""Timetables through a real hub and worker: catchup, backfill and dagrun_timeout."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import BACKENDS
from tests.hubtools import write_dag
from tests.integration.processes import ADMIN_TOKEN, Hub, running_hub, tether_cli, wait_for

pytestmark = pytest.mark.integration


def _today(zone: str = "UTC") -> datetime:
    """Midnight today in ``zone``; waits past midnight if it is about to come
    (the runs a test expects depend on it)."""
    tz = ZoneInfo(zone)
    now = datetime.now(tz)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if tomorrow - now < timedelta(minutes=2):
        time.sleep((tomorrow - now).total_seconds() + 1)
        now = datetime.now(tz)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


TODAY = _today()
TOKYO_TODAY = _today("Asia/Tokyo")

DAGS = f"""
from datetime import datetime, timedelta
from tether import DAG, BashOperator

FIVE_DAYS_AGO = datetime.fromisoformat("{(TODAY - timedelta(days=5)).isoformat()}")

with DAG("five_days", schedule="@daily", start_date=FIVE_DAYS_AGO, catchup=True):
    BashOperator(task_id="t", bash_command="echo {{{{ ds }}}}")

# Midnight in Tokyo is 15:00 UTC the day before.
with DAG("tokyo_daily", schedule="@daily", timezone="Asia/Tokyo", catchup=True,
         start_date=datetime.fromisoformat("{(TOKYO_TODAY - timedelta(days=3)).isoformat()}")):
    BashOperator(task_id="t", bash_command="echo {{{{ ds }}}} {{{{ data_interval_start }}}}")

with DAG("five_days_no_catchup", schedule="@daily", start_date=FIVE_DAYS_AGO, catchup=False):
    BashOperator(task_id="t", bash_command="echo {{{{ ds }}}}")

with DAG("backfillable", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False,
         max_active_runs=2, is_paused_upon_creation=True):
    BashOperator(task_id="t", bash_command="sleep 0.3; echo {{{{ ds }}}}")

def mark(context):
    from pathlib import Path
    Path(context["conf"]["mark"]).write_text(context["reason"])

with DAG("too_slow", dagrun_timeout=timedelta(seconds=2), on_failure_callback=mark):
    BashOperator(task_id="slow", bash_command="echo started; sleep 60") >> BashOperator(
        task_id="after", bash_command="true")

with DAG("by_hand"):
    BashOperator(task_id="t", bash_command="true")
"""


@pytest.fixture(scope="module", params=BACKENDS)
def hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp(f"timetables-{request.param}")
    write_dag(root / "dags", "timetables.py", DAGS)
    wait = [
        "five_days",
        "five_days_no_catchup",
        "tokyo_daily",
        "backfillable",
        "by_hand",
        "too_slow",
    ]
    with running_hub(root, request.param, _postgres_reason, root / "dags", wait_dags=wait) as (
        hub,
        _,
    ):
        yield hub


def _runs(hub: Hub, dag_id: str, **params: object) -> list[dict[str, object]]:
    runs: list[dict[str, object]] = hub.api.get(
        f"/dags/{dag_id}/runs", params={"limit": 1000, **params}
    )["dag_runs"]
    return sorted(runs, key=lambda r: str(r["logical_date"]))


def _finished(hub: Hub, dag_id: str, count: int) -> list[dict[str, object]]:
    def done() -> list[dict[str, object]] | None:
        runs = _runs(hub, dag_id)
        finished = [r for r in runs if r["state"] in ("success", "failed")]
        return runs if len(finished) >= count else None

    return wait_for(done, 90, f"{count} finished runs of {dag_id}")


def _day(days_ago: int) -> str:
    return (TODAY - timedelta(days=days_ago)).isoformat()


def test_catchup_makes_one_run_per_missed_day_with_its_data_interval(hub: Hub) -> None:
    runs = _finished(hub, "five_days", 5)
    assert [(r["data_interval_start"], r["data_interval_end"]) for r in runs] == [
        (_day(d), _day(d - 1)) for d in (5, 4, 3, 2, 1)
    ]
    assert [r["logical_date"] for r in runs] == [_day(d) for d in (5, 4, 3, 2, 1)]
    assert {r["state"] for r in runs} == {"success"}
    assert {r["run_type"] for r in runs} == {"scheduled"}
    # The task saw its own logical date.
    first = runs[0]
    assert _day(5)[:10] in hub.api.log("five_days", str(first["run_id"]), "t")
    # ...and there are exactly five: the next interval (today) has not ended.
    dag = next(d for d in hub.api.get("/dags")["dags"] if d["dag_id"] == "five_days")
    assert dag["next_dagrun"] == _day(0)
    assert len(_runs(hub, "five_days")) == 5


def test_a_dag_in_its_own_time_zone_runs_at_its_local_midnights(hub: Hub) -> None:
    start = TOKYO_TODAY - timedelta(days=3)
    # Three days as the module was imported; one more if Tokyo's midnight (15:00
    # UTC) has passed since, as it can during a long suite.
    now = datetime.now(ZoneInfo("Asia/Tokyo"))
    days = (now.replace(hour=0, minute=0, second=0, microsecond=0) - start).days
    runs = _finished(hub, "tokyo_daily", days)
    local_midnights = [start + timedelta(days=d) for d in range(days + 1)]
    utc = [m.astimezone(UTC).isoformat() for m in local_midnights]
    assert [(r["data_interval_start"], r["data_interval_end"]) for r in runs] == list(
        zip(utc, utc[1:], strict=False)
    )
    assert all(m.endswith("T15:00:00+00:00") for m in utc)  # Tokyo has no DST
    assert {r["state"] for r in runs} == {"success"}
    assert len(_runs(hub, "tokyo_daily")) == days


def test_without_catchup_only_the_latest_interval_runs(hub: Hub) -> None:
    runs = _finished(hub, "five_days_no_catchup", 1)
    assert [(r["data_interval_start"], r["data_interval_end"]) for r in runs] == [
        (_day(1), _day(0))
    ]
    assert len(_runs(hub, "five_days_no_catchup")) == 1


def _spans(runs: list[dict[str, object]]) -> list[tuple[datetime, datetime]]:
    return [
        (datetime.fromisoformat(str(r["started_at"])), datetime.fromisoformat(str(r["ended_at"])))
        for r in runs
    ]


def test_backfill_creates_the_runs_and_respects_max_active_runs(hub: Hub) -> None:
    result = tether_cli(
        "dags",
        "backfill",
        "backfillable",
        "--start",
        "2026-02-01",
        "--end",
        "2026-02-06",
        hub=hub,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "backfill of backfillable: 6 run(s) created" in result.stdout
    assert "6/6 runs done (6 succeeded, 0 failed)" in result.stdout
    runs = _runs(hub, "backfillable", run_type="backfill")
    assert [r["logical_date"] for r in runs] == [
        datetime(2026, 2, day, tzinfo=UTC).isoformat() for day in range(1, 7)
    ]
    assert [r["data_interval_end"] for r in runs] == [
        datetime(2026, 2, day, tzinfo=UTC).isoformat() for day in range(2, 8)
    ]
    # Two at a time (max_active_runs=2): no moment had three running.
    events = sorted([(s, 1) for s, _ in _spans(runs)] + [(e, -1) for _, e in _spans(runs)])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    assert most <= 2

    again = tether_cli(
        "dags",
        "backfill",
        "backfillable",
        "--start",
        "2026-02-01",
        "--end",
        "2026-02-06",
        hub=hub,
    )
    assert again.returncode == 0, again.stderr
    assert "0 run(s) created (6 interval(s) already had a run)" in again.stdout


def test_backfill_shows_a_progress_bar_on_a_terminal(hub: Hub) -> None:
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether",
            "dags",
            "backfill",
            "backfillable",
            "--start",
            "2026-03-01",
            "--end",
            "2026-03-03",
            "--interval",
            "0.1",
            "--hub",
            hub.url,
        ],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=subprocess.PIPE,
        env={**os.environ, "TETHER_TOKEN": ADMIN_TOKEN},
    )
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(main)
    assert proc.stderr is not None
    with proc.stderr:
        errors = proc.stderr.read().decode()
    assert proc.wait(30) == 0, errors
    text = seen.decode()
    assert "\r[" in text  # redrawn in place
    assert "3/3 runs done (3 succeeded, 0 failed)" in text


def test_backfill_refuses_what_it_cannot_do(hub: Hub) -> None:
    http = hub.api.http
    unscheduled = http.post(
        "/dags/by_hand/backfills", json={"start": "2026-01-01", "end": "2026-01-02"}
    )
    assert unscheduled.status_code == 400
    assert "has no time schedule" in unscheduled.json()["detail"]
    backwards = http.post(
        "/dags/backfillable/backfills", json={"start": "2026-01-05", "end": "2026-01-01"}
    )
    assert backwards.status_code == 400
    assert "is before --start" in backwards.json()["detail"]
    garbage = http.post("/dags/backfillable/backfills", json={"start": "soon", "end": "later"})
    assert garbage.status_code == 422
    assert (
        http.post(
            "/dags/nope/backfills", json={"start": "2026-01-01", "end": "2026-01-02"}
        ).status_code
        == 404
    )
    too_many = http.post(
        "/dags/backfillable/backfills", json={"start": "2020-01-01", "end": "2026-01-01"}
    )
    assert too_many.status_code == 400
    assert "more than 1000 intervals" in too_many.json()["detail"]


def test_dagrun_timeout_fails_the_run_and_kills_its_task(hub: Hub, tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    run_id = hub.api.trigger("too_slow", {"mark": str(mark)})
    run = hub.api.wait_run("too_slow", run_id, timeout=60)
    assert run["state"] == "failed"
    states = {t["task_id"]: t["state"] for t in run["tasks"]}
    assert states == {"slow": "failed", "after": "skipped"}
    started = datetime.fromisoformat(run["started_at"])
    ended = datetime.fromisoformat(run["ended_at"])
    assert ended - started >= timedelta(seconds=2)
    assert run["tasks"][0]["error"] == "dagrun_timeout of 2s exceeded"
    log = hub.api.log("too_slow", run_id, "slow")
    assert "started" in log
    assert log.endswith("[tether] the hub ended this try: dagrun_timeout of 2s exceeded\n")
    # The worker killed the task: its heartbeats stop listing it.
    wait_for(lambda: hub.api.worker("w1")["running"] == [], 30, "the worker to kill the task")
    wait_for(mark.exists, 30, "the DAG's on_failure_callback")
    assert mark.read_text() == "timed_out"
