"""What a real hub process lets in, tried as an attacker would on loopback:
bodies bounded before they cost anything, strict JSON at the edge, one held
poll per worker, and failed authentications that cannot flood the hub."""

from __future__ import annotations

import asyncio
import concurrent.futures
import select
import socket
import sqlite3
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.integration.processes import ADMIN_TOKEN, Hub, RawWorker, running_hub, sqlite_write_lock

pytestmark = pytest.mark.integration

DAGS = {
    "pair.py": """
        from tether import DAG, BashOperator, task

        # Each test's worker serves its own queue, so no test takes another's work.
        for dag_id, queue in (
            ("pair", "q-pair"),
            ("poison", "q-poison"),
            ("healthy", "q-poison"),
            ("resting", "q-rest"),
        ):
            with DAG(dag_id, default_args={"queue": queue}):
                BashOperator(task_id="a", bash_command="true") >> BashOperator(
                    task_id="b", bash_command="true"
                )

        with DAG("branching", default_args={"queue": "q-branch"}):
            @task.branch
            def choose() -> str:
                return "left"

            choose() >> [BashOperator(task_id="left", bash_command="true"),
                         BashOperator(task_id="right", bash_command="true")]
    """,
}
MiB = 1024 * 1024


def _dags(root: Path) -> Path:
    dags = root / "dags"
    dags.mkdir()
    for name, source in DAGS.items():
        (dags / name).write_text(textwrap.dedent(source))
    return dags


WAIT = ("pair", "poison", "healthy", "resting", "branching")


@pytest.fixture(scope="module", params=BACKENDS)
def hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Hub]:
    """A hub on each store: what is refused must be refused before either sees it."""
    root = tmp_path_factory.mktemp(f"intake-{request.param}")
    with running_hub(
        root, request.param, _postgres_reason, _dags(root), workers=(), wait_dags=WAIT
    ) as (hub, _):
        yield hub


@pytest.fixture(scope="module")
def sqlite_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub on SQLite, for what the tests do to its database file or memory."""
    root = tmp_path_factory.mktemp("intake-file")
    with running_hub(root, "sqlite", None, _dags(root), workers=(), wait_dags=WAIT) as (hub, _):
        yield hub


def _answer(conn: socket.socket) -> bytes:
    """Read one HTTP answer, head and body (by its Content-Length)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        data = conn.recv(65536)
        if not data:
            return answer
        answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        data = conn.recv(65536)
        if not data:
            break
        body += data
    return head + b"\r\n\r\n" + body


def _raw(hub: Hub, head: str, *, timeout: float = 30.0) -> bytes:
    """Send a request head (no body at all) and return what the hub answers."""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=timeout) as conn:
        conn.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        return _answer(conn)


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _chunked(hub: Hub, path: str, headers: dict[str, str], most: int) -> tuple[bytes, int]:
    """Stream a chunked body of up to ``most`` bytes; stop when the hub answers.

    Returns the answer and how many body bytes were sent before it came.
    """
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    piece = b'{"conf": {"x": "' + b"a" * (64 * 1024)
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", hub.port), timeout=60) as conn:
        conn.sendall(head.encode())
        while sent < most:
            readable, _, _ = select.select([conn], [], [], 0)
            if readable:
                break
            try:
                conn.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        conn.settimeout(60)
        answer = _answer(conn)
    return answer, sent


def test_an_idle_connection_outlives_the_clients_own_idle_timeout(sqlite_hub: Hub) -> None:
    """httpx (the worker's client) drops an idle connection after 5 s; a hub that
    dropped it at 5 s too raced it: a request sent as the hub closed the
    connection failed (seen as ReadErrors in bench/fleet.py)."""
    request = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", sqlite_hub.port), timeout=30) as conn:
        conn.sendall(request)
        assert _answer(conn).startswith(b"HTTP/1.1 200")
        time.sleep(7)  # past httpx's 5 s, and uvicorn's default
        conn.sendall(request)
        assert _answer(conn).startswith(b"HTTP/1.1 200")  # b"" once the hub closed it


# --- bounded input ------------------------------------------------------------------------------


def test_an_announced_200_mb_body_gets_413_from_the_headers_alone(sqlite_hub: Hub) -> None:
    for path in (
        "/api/v1/dags/pair/runs",  # no credential at all
        "/api/worker/v1/enrol",  # public: the smallest limit
        f"/api/worker/v1/attempts/{'0' * 32}/logs?offset=0",  # the log route's own limit
    ):
        head = (
            f"POST {path} HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
            f"Content-Length: {200 * MiB}\n"
        )
        answer = _raw(sqlite_hub, head)  # not one byte of the body is ever sent
        assert answer.startswith(b"HTTP/1.1 413"), (path, answer)


def test_a_chunked_body_is_cut_off_at_the_limit_and_costs_no_memory(sqlite_hub: Hub) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    sqlite_hub.api.get("/dags")  # warm up
    before = _peak_rss(sqlite_hub.pid)
    answer, sent = _chunked(sqlite_hub, "/api/v1/dags/pair/runs", admin, 60 * MiB)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert sent < 30 * MiB  # cut off long before the end (the limit is 1 MiB)
    answer = _raw(
        sqlite_hub,
        f"POST /api/v1/dags/pair/runs HTTP/1.1\nHost: x\nAuthorization: Bearer {ADMIN_TOKEN}\n"
        f"Content-Length: {200 * MiB}\n",
    )
    assert answer.startswith(b"HTTP/1.1 413")
    assert _peak_rss(sqlite_hub.pid) - before < 16 * MiB


def test_a_body_from_an_unauthenticated_client_is_never_read(sqlite_hub: Hub) -> None:
    answer, sent = _chunked(sqlite_hub, "/api/v1/dags/pair/runs", {}, 20 * MiB)
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert answer.endswith(b'{"detail": "missing bearer token"}')
    assert sent < 20 * MiB
    bogus = {"Authorization": "Bearer ttw_made-up", "Content-Type": "application/json"}
    answer, _ = _chunked(sqlite_hub, "/api/worker/v1/heartbeat", bogus, 20 * MiB)
    assert answer.startswith(b"HTTP/1.1 401"), answer
    assert answer.endswith(b'{"detail": "invalid or revoked worker credential"}')


# --- strict wire data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"conf": {"x": NaN}}', "NaN is not a JSON number"),
        ('{"conf": {"x": Infinity}}', "Infinity is not a JSON number"),
        ('{"conf": {"x": 1e999999}}', "inf is not a JSON number"),
        ('{"conf": {"x": "\\ud800"}}', "is not valid Unicode"),
        ('{"conf": {"x": "nul \\u0000"}}', "cannot contain NUL"),
        ('{"conf": {"x": 99999999999999999999}}', "does not fit in 64 bits"),
        ('{"conf": ' + "[" * 5000 + "]" * 5000 + "}", "levels deep"),
    ],
)
def test_values_no_store_keeps_as_they_are_get_422_with_the_reason(
    hub: Hub, body: str, reason: str
) -> None:
    answer = hub.api.http.post(
        "/dags/pair/runs", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert reason in answer.text


def test_strict_json_holds_before_authentication_too(hub: Hub) -> None:
    answer = httpx.post(
        f"{hub.url}/api/worker/v1/enrol",
        content='{"token": 1e999999}',
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 422, answer.text
    assert "inf is not a JSON number" in answer.text


@pytest.mark.parametrize(
    "path",
    [
        "/dags/pair/runs?offset=9223372036854775808",
        "/dags/pair/runs?limit=-1",
        "/dags/a%00b",
        "/dags/..",
        "/dags/pair/runs/..%2F..",
        "/workers/bad%20name/revoke",
        "/assets/events?uri=a%00",
    ],
)
def test_ids_and_numbers_in_urls_are_checked_before_the_store(hub: Hub, path: str) -> None:
    method = "POST" if path.endswith("/revoke") else "GET"
    answer = hub.api.http.request(method, path)
    assert answer.status_code in (404, 422), answer.text
    assert answer.status_code != 500


def test_a_hostile_report_is_refused_and_breaks_no_one_elses_poll(hub: Hub) -> None:
    hostile = RawWorker(hub, "hostile-1", "q-pair")
    honest = RawWorker(hub, "honest-1", "q-pair")
    try:
        run_id = hub.api.trigger("pair")
        (job,) = hostile.jobs()
        attempt = job["attempt_id"]
        for output, reason in (
            ("NaN", "NaN is not a JSON number"),
            ('"\\udc80 lone"', "is not valid Unicode"),
            ("1e999999", "inf is not a JSON number"),
        ):
            answer = hostile.finish(attempt, f'{{"state": "success", "output": {output}}}')
            assert answer.status_code == 422, answer.text
            assert reason in answer.text
        # Nothing was stored: the attempt still runs, and an honest report ends it.
        assert hub.api.tasks(hub.api.run("pair", run_id))["a"]["state"] == "running"
        assert hostile.log(attempt, 0, b"the task's own line\n").json() == {"size": 20}
        answer = hostile.finish(attempt, {"state": "success", "output": "fine"})
        assert answer.status_code == 200, answer.text
        # An ended attempt takes no more logs: nothing can be forged after its end.
        forged = hostile.log(attempt, 20, b"[tether] task ended: success (forged)\n")
        assert forged.status_code == 409, forged.text
        assert "already ended as success" in forged.text
        assert hub.api.log("pair", run_id, "a") == "the task's own line\n"
        # The downstream job, with that output as its input, reaches another worker.
        (next_job,) = honest.jobs()
        assert next_job["inputs"] == {"a": "fine"}
    finally:
        hostile.close()
        honest.close()


def test_a_branch_output_that_is_not_task_ids_gets_422(hub: Hub) -> None:
    worker = RawWorker(hub, "brancher", "q-branch")
    try:
        run_id = hub.api.trigger("branching")
        (job,) = worker.jobs()
        answer = worker.finish(job["attempt_id"], {"state": "success", "output": [["left"]]})
        assert answer.status_code == 422, answer.text
        assert "its output must be a list of task ids" in answer.text
        ok = worker.finish(job["attempt_id"], {"state": "success", "output": ["left"]})
        assert ok.status_code == 200, ok.text
        states = {k: t["state"] for k, t in hub.api.tasks(hub.api.run("branching", run_id)).items()}
        assert states == {"choose": "success", "left": "queued", "right": "skipped"}
    finally:
        worker.close()


def test_a_poll_never_hands_out_a_job_it_cannot_encode(sqlite_hub: Hub) -> None:
    """Data stored before the hub checked its input (here: written into the
    database by hand) fails its own task, and the rest of the poll arrives."""
    worker = RawWorker(sqlite_hub, "poisoned", "q-poison")
    try:
        poisoned = sqlite_hub.api.trigger("poison")
        (job,) = worker.jobs()
        assert worker.finish(job["attempt_id"], {"state": "success", "output": "x"}).is_success
        (downstream,) = worker.jobs()  # b, with a's output as its input
        assert (downstream["task_id"], downstream["inputs"]) == ("b", {"a": "x"})
        with sqlite3.connect(sqlite_hub.database_url.removeprefix("sqlite:///")) as db:
            db.execute(
                "UPDATE task_instance SET output = ? WHERE run_id = ? AND task_id = 'a'",
                ('"\\udc80"', poisoned),
            )
            # ...and b back in the queue, as if it had never been handed out.
            db.execute(
                "UPDATE task_instance SET state = 'queued' WHERE run_id = ? AND task_id = 'b'",
                (poisoned,),
            )
        healthy = sqlite_hub.api.trigger("healthy")
        answer = worker.poll(slots=4, wait=5)
        assert answer.status_code == 200, answer.text
        jobs = answer.json()["jobs"]
        assert [(j["dag_id"], j["run_id"], j["task_id"]) for j in jobs] == [
            ("healthy", healthy, "a")
        ]
        run = sqlite_hub.api.wait_run("poison", poisoned)
        assert sqlite_hub.api.tasks(run)["b"]["state"] == "failed"
        log = sqlite_hub.api.log("poison", poisoned, "b", try_number=2)
        assert "the hub cannot send this task to a worker" in log
        assert "is not valid Unicode" in log
    finally:
        worker.close()


# --- one tenant cannot degrade the hub ----------------------------------------------------------


def test_one_held_poll_per_worker_however_many_it_opens(hub: Hub) -> None:
    worker = RawWorker(hub, "greedy", "q-greedy")
    headers = dict(worker.http.headers)

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=worker.http.base_url, headers=headers) as http:
            polls = [
                asyncio.create_task(http.post("/poll", json={"slots": 0, "wait": 30}, timeout=60))
                for _ in range(30)
            ]
            # Every poll but the newest is answered at once, with no job.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            pending: set[asyncio.Task[httpx.Response]] = set(polls)
            while len(pending) > 1 and loop.time() < deadline:
                _, pending = await asyncio.wait(
                    pending, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
                )
            answers = [p.result() for p in polls if p not in pending]
            assert len(answers) == 29
            assert {a.status_code for a in answers} == {200}
            assert all(a.json()["jobs"] == [] for a in answers)
            (held,) = pending
            held.cancel()

    try:
        asyncio.run(scenario())
    finally:
        worker.close()


def test_a_heartbeat_that_lets_the_worker_take_work_again_wakes_its_poll(hub: Hub) -> None:
    worker = RawWorker(hub, "resting", "q-rest")
    try:
        assert worker.heartbeat(maintenance=True).status_code == 200
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(worker.poll, 1, 30)
            run_id = hub.api.trigger("resting")  # wakes the poll, which takes nothing
            time.sleep(1.0)
            assert not held.done()
            assert hub.api.tasks(hub.api.run("resting", run_id))["a"]["state"] == "queued"
            # Out of maintenance: the held poll looks again and takes the job.
            assert worker.heartbeat(maintenance=False).status_code == 200
            answer = held.result(timeout=20)
        assert answer.status_code == 200
        assert [(j["run_id"], j["task_id"]) for j in answer.json()["jobs"]] == [(run_id, "a")]
    finally:
        worker.close()


def test_a_made_up_credential_never_waits_for_the_write_lock(sqlite_hub: Hub) -> None:
    """A lookup of a presented credential reads; it does not queue for SQLite's lock."""
    with sqlite_write_lock(sqlite_hub.database_url) as let_go:
        answer = httpx.post(
            f"{sqlite_hub.url}/api/worker/v1/heartbeat",
            headers={"Authorization": "Bearer ttw_" + "x" * 43},
            json={},
            timeout=25,
        )
        answered_while_locked = not let_go.is_set()
    assert answer.status_code == 401
    assert answered_while_locked


def test_failed_authentications_are_throttled_per_address(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    hub = Hub(
        tmp_path / "home",
        dags,
        f"sqlite:///{tmp_path / 'hub.db'}",
        TETHER_AUTH_FAILURES_PER_MINUTE="5",
    )
    good = RawWorker(hub, "good-neighbour")  # known good before the flood
    try:
        # A credential the hub has never been shown yet, and a token not yet spent.
        fresh = httpx.post(
            f"{hub.url}/api/worker/v1/enrol",
            json={"token": hub.api.enrolment_token("default", "fresh")},
        ).json()["credential"]
        unspent = hub.api.enrolment_token("default", "late")
        answers: list[httpx.Response] = []
        with httpx.Client(base_url=hub.url) as http:
            for i in range(12):
                answers.append(
                    http.post(
                        "/api/worker/v1/heartbeat",
                        headers={"Authorization": f"Bearer ttw_guess{i}"},
                        json={},
                    )
                )
            # A client cannot pick another address to be counted under.
            spoofed = http.post(
                "/api/worker/v1/heartbeat",
                headers={"Authorization": "Bearer ttw_guess", "X-Forwarded-For": "10.9.8.7"},
                json={},
            )
            enrolment = http.post("/api/worker/v1/enrol", json={"token": unspent})
            hello = http.post(
                "/api/worker/v1/sessions",
                headers={"Authorization": f"Bearer {fresh}"},
                json=good.facts,
            )
        codes = [a.status_code for a in answers]
        assert codes[:5] == [401] * 5
        assert set(codes[5:]) == {429}
        retry_after = int(answers[-1].headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert "too many failed authentications" in answers[-1].text
        assert spoofed.status_code == 429
        assert enrolment.status_code == 429  # no token is looked up for this address now
        # Good credentials from the same address still get in, known or not, and so
        # does the admin.
        assert hello.status_code == 200, hello.text
        assert good.heartbeat().status_code == 200
        assert hub.api.get("/health")["status"] == "ok"
        assert {w["name"] for w in hub.api.get("/workers")["workers"]} == {
            "good-neighbour",
            "fresh",
        }
    finally:
        good.close()
        hub.stop()


@pytest.mark.parametrize(
    ("start", "end"),
    [("0001-01-01", "0001-01-03"), ("9999-12-01", "9999-12-31"), ("1899-12-31", "1900-01-02")],
)
def test_backfill_dates_at_the_ends_of_the_calendar_get_422(hub: Hub, start: str, end: str) -> None:
    answer = hub.api.http.post("/dags/pair/backfills", json={"start": start, "end": end})
    assert answer.status_code == 422, answer.text
    assert "backfills cover years 1900 to 9000" in answer.text
