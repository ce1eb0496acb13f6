"""Several hub processes on one PostgreSQL (docs/deployment.md).

Two ``tether hub`` processes, each with its own home and port, share one
database and one DAGs folder, as replicas behind a load balancer would:
work and directives that go in through one hub answer the polls held by
the other (LISTEN/NOTIFY), one hub leads the scheduler and the dag
processor and the other takes over when it dies, and claims through both
hubs at once take each task exactly once.
"""

from __future__ import annotations

import signal
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import make_database_url
from tests.integration.processes import Hub, RawWorker, Worker, wait_for

#: Seconds a held poll may take to answer once its work or directive exists:
#: the bound the one-hub tests use (tests/integration/test_api.py), far
#: below the poll's own wait, which is what answers it if no wake-up came.
ANSWERED_WITHIN = 10.0
POLL_WAIT = 30.0

#: What both hubs must share: the keys of secrets at rest and of console sessions
#: (the admin token is shared by the Hub fixture already).
SHARED = {
    "TETHER_SECRET_KEY": "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg=",
    "TETHER_CONSOLE_KEY": "c" * 48,
}

DAGS = {
    "pair.py": """
        from tether import DAG, BashOperator

        with DAG("pair", schedule=None):
            BashOperator(task_id="a", bash_command="sleep 30") >> BashOperator(
                task_id="b", bash_command="true"
            )
    """,
    "wide.py": """
        from tether import DAG, BashOperator

        with DAG("wide", schedule=None):
            for i in range(40):
                BashOperator(
                    task_id=f"t{i}",
                    bash_command='echo "{{ run_id }} t%d" >> "$OUT"' % i,
                )
    """,
    "retry_once.py": """
        from datetime import timedelta

        from tether import DAG, BashOperator

        # The first try waits for the test's word and fails; the retry
        # (queued by the scheduler when its delay is over) succeeds.
        FIRST = '''
        echo "first" >> "$OUT"
        if [ -e "$OUT.tried" ]; then exit 0; fi
        touch "$OUT.tried"
        while [ ! -e "$OUT.release" ]; do sleep 0.1; done
        exit 1
        '''
        with DAG("retry_once", schedule=None):
            BashOperator(
                task_id="first",
                bash_command=FIRST,
                retries=1,
                retry_delay=timedelta(seconds=1),
            ) >> BashOperator(task_id="second", bash_command='echo second >> "$OUT"')
    """,
}


def leads(hub: Hub) -> list[str] | None:
    """The roles ``hub`` leads, or None if it does not answer."""
    try:
        answer = httpx.get(hub.url + "/api/v1/health", timeout=5)
    except httpx.TransportError:
        return None
    found: list[str] = answer.json()["leads"]
    return found


BOTH = ["dag_processor", "scheduler"]


@dataclass
class Pair:
    a: Hub
    b: Hub
    dags: Path
    root: Path


@pytest.fixture
def pair(tmp_path: Path, _postgres_reason: str | None) -> Iterator[Pair]:
    """Hub A, the leader of both roles, then hub B, on one fresh PostgreSQL."""
    dags = tmp_path / "dags"
    dags.mkdir()
    for name, source in DAGS.items():
        (dags / name).write_text(textwrap.dedent(source))
    urls = make_database_url("postgres", tmp_path, _postgres_reason)
    url = next(urls)
    hubs: list[Hub] = []
    try:
        hubs.append(Hub(tmp_path / "a", dags, url, **SHARED))
        wait_for(lambda: leads(hubs[0]) == BOTH, 30, "hub A to lead")
        hubs[0].api.wait_dags(*(n.removesuffix(".py") for n in DAGS))
        hubs.append(Hub(tmp_path / "b", dags, url, **SHARED))
        yield Pair(hubs[0], hubs[1], dags, tmp_path)
    finally:
        for hub in hubs:
            hub.stop()
        for _ in urls:  # drops the database
            pass


def test_one_hub_leads_and_the_other_stands_by(pair: Pair) -> None:
    # Anyone who may connect to the database may NOTIFY on the hubs' channel.
    url = pair.a.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:

        def refused_by_both() -> bool:
            # Again until both hear one: hub B's listener may not listen yet.
            for payload in ('{"from": "x", "queues": "default"}', "garbage"):
                conn.execute("SELECT pg_notify('tether_effects', %s)", (payload,))
            return all("that no hub wrote" in hub.output() for hub in (pair.a, pair.b))

        wait_for(refused_by_both, 10, "both hubs to refuse the payloads", interval=0.5)
    # Give the standby several of its tries: it never takes a role A holds.
    time.sleep(3)
    assert leads(pair.a) == BOTH
    assert leads(pair.b) == []
    for hub in (pair.a, pair.b):
        assert "Traceback" not in hub.output(), hub.output()
    assert "now leads" not in pair.b.output(), pair.b.output()


def test_work_and_directives_through_one_hub_answer_polls_held_by_the_other(
    pair: Pair,
) -> None:
    worker = RawWorker(pair.b, "w1")
    try:
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(worker.poll, 1, POLL_WAIT)
            time.sleep(0.5)  # the poll is now held open on hub B with nothing to take
            assert not held.done()
            began = time.monotonic()
            run_id = pair.a.api.trigger("pair")
            answer = held.result(timeout=ANSWERED_WITHIN)
            assert time.monotonic() - began < ANSWERED_WITHIN
            answer.raise_for_status()
            (job,) = answer.json()["jobs"]
            assert (job["run_id"], job["task_id"]) == (run_id, "a")

            # A directive given through hub A answers the busy poll held on hub B.
            busy = {"running": [job["attempt_id"]]}
            held = pool.submit(worker.poll, 0, POLL_WAIT, **busy)
            time.sleep(0.5)
            assert not held.done()
            began = time.monotonic()
            marked = pair.a.api.http.patch(
                f"/dags/pair/runs/{run_id}/tasks/a", json={"state": "failed"}
            )
            assert marked.status_code == 200, marked.text
            answer = held.result(timeout=ANSWERED_WITHIN)
            assert time.monotonic() - began < ANSWERED_WITHIN
            assert answer.json()["directives"]["kill"] == [job["attempt_id"]]
    finally:
        worker.close()


LISTENERS = (
    "SELECT pid FROM pg_stat_activity"
    " WHERE datname = current_database() AND query = 'LISTEN tether_effects'"
)


def test_a_hub_whose_listening_connection_was_cut_hears_the_other_again(pair: Pair) -> None:
    url = pair.a.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        wait_for(lambda: len(conn.execute(LISTENERS).fetchall()) == 2, 10, "both hubs to listen")
        # As a database restart or a cut network would.
        conn.execute(f"SELECT pg_terminate_backend(pid) FROM ({LISTENERS}) AS l")
        wait_for(
            lambda: "lost the connection that hears other hubs" in pair.b.output(),
            10,
            "hub B to notice",
        )
        wait_for(lambda: len(conn.execute(LISTENERS).fetchall()) == 2, 10, "both to listen again")
    worker = RawWorker(pair.b, "w1")
    try:
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(worker.poll, 1, POLL_WAIT)
            time.sleep(0.5)
            assert not held.done()
            run_id = pair.a.api.trigger("pair")
            answer = held.result(timeout=ANSWERED_WITHIN)
            assert [(j["run_id"], j["task_id"]) for j in answer.json()["jobs"]] == [(run_id, "a")]
    finally:
        worker.close()


def test_workers_on_both_hubs_run_every_task_exactly_once(pair: Pair) -> None:
    out = pair.root / "bodies.txt"
    workers: list[Worker] = []
    try:
        for hub, name in ((pair.a, "wa"), (pair.b, "wb")):
            workers.append(Worker(hub, pair.root / name, "default", name, env={"OUT": str(out)}))
        for worker in workers:
            worker.wait_registered()
        # Runs go in through both hubs; both workers' polls claim at once.
        run_ids = [(pair.a if i % 2 else pair.b).api.trigger("wide") for i in range(4)]
        ran_on: Counter[str] = Counter()
        for run_id in run_ids:
            run = pair.a.api.wait_run("wide", run_id, timeout=120)
            assert run["state"] == "success", run
            for task in run["tasks"]:
                ran_on[task["worker"]] += 1
    finally:
        for worker in workers:
            worker.stop()
    bodies = Counter(out.read_text().splitlines())
    assert set(bodies) == {f"{r} t{i}" for r in run_ids for i in range(40)}
    assert set(bodies.values()) == {1}, [b for b, n in bodies.items() if n > 1]
    assert set(ran_on) == {"wa", "wb"}, ran_on  # both hubs' claims took work


def test_killing_the_leader_mid_run_moves_leadership_and_the_run_completes(
    pair: Pair,
) -> None:
    out = pair.root / "bodies.txt"
    worker = Worker(pair.b, pair.root / "w", "default", "w1", env={"OUT": str(out)})
    try:
        worker.wait_registered()
        run_id = pair.a.api.trigger("retry_once")
        wait_for(lambda: Path(f"{out}.tried").exists(), 30, "the first try to run")
        pair.a.stop(signal.SIGKILL)
        wait_for(lambda: leads(pair.b) == BOTH, 30, "hub B to take the lead")
        assert "now leads the scheduler" in pair.b.output()
        # The first try fails now; only a scheduler queues its retry.
        Path(f"{out}.release").touch()
        run = pair.b.api.wait_run("retry_once", run_id, timeout=60)
        assert run["state"] == "success", run
        tries = {t["task_id"]: t["try_number"] for t in run["tasks"]}
        assert tries == {"first": 2, "second": 1}
        assert out.read_text().splitlines() == ["first", "first", "second"]

        # The dag processor moved too: a new file is parsed by hub B.
        (pair.dags / "late.py").write_text(
            "from tether import DAG, EmptyOperator\n"
            "with DAG('late', schedule=None):\n"
            "    EmptyOperator(task_id='e')\n"
        )
        pair.b.api.wait_dags("late")
    finally:
        worker.stop()


@pytest.fixture
def empty_postgres(tmp_path: Path, _postgres_reason: str | None) -> Iterator[str]:
    yield from make_database_url("postgres", tmp_path, _postgres_reason)


def test_hubs_started_at_once_on_an_empty_database_all_come_up(
    tmp_path: Path, empty_postgres: str
) -> None:
    """Each hub migrates the schema on start; three at once must not each create it."""
    dags = tmp_path / "dags"
    dags.mkdir()
    started: list[Hub] = []
    # The pool's threads start the hubs, and a hub dies with the thread that
    # started it (PR_SET_PDEATHSIG): the pool lives until they are stopped.
    with ThreadPoolExecutor(3) as pool:
        try:
            futures = [
                pool.submit(Hub, tmp_path / f"h{n}", dags, empty_postgres, **SHARED)
                for n in range(3)
            ]
            failures = []
            for future in futures:
                try:
                    started.append(future.result())
                except AssertionError as exc:  # the hub exited: its output says why
                    failures.append(str(exc))
            assert failures == []

            # ... and each role has one leader (perhaps not yet when the hubs first
            # answer; the roles are taken one by one, maybe by different hubs).
            def led() -> Counter[str]:
                return Counter(role for hub in started for role in leads(hub) or [])

            wait_for(lambda: led() == Counter(BOTH), 30, "one leader for each role")
            time.sleep(2)  # the standbys have tried again
            assert led() == Counter(BOTH)
        finally:
            for hub in started:
                hub.stop()
