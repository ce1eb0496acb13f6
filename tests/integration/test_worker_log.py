"""A worker's own log (not its tasks'), shipped to the hub and read per worker.

A real hub and a real ``tether worker`` process on both stores: what the
worker writes to its stderr (its start-up lines, maintenance) becomes
readable through REST, ``tether workers logs`` (followed too) and the
console, its credential masked. The worker-log route refuses hostile
bodies with a 4xx, keeps only the newest lines of each worker and holds
each worker to its budget of lines a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.integration.processes import (
    ADMIN_TOKEN,
    Console,
    Hub,
    RawWorker,
    Worker,
    running_hub,
    tether_cli,
    wait_for,
)
from tether.protocol import MAX_WORKER_LOG_BATCH, MAX_WORKER_LOG_LINE, SESSION_HEADER
from tether.worker import control

KEEP = 50
PER_MINUTE = 300


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[tuple[Hub, Worker]]:
    root = tmp_path_factory.mktemp(f"worker-log-{request.param}")
    (root / "dags").mkdir()
    with running_hub(
        root,
        request.param,
        _postgres_reason,
        root / "dags",
        workers=(("default", "wl1", 1),),
        TETHER_WORKER_LOG_KEEP_LINES=str(KEEP),
        TETHER_WORKER_LOG_LINES_PER_MINUTE=str(PER_MINUTE),
    ) as (hub, workers):
        yield hub, workers[0]


def _lines(hub: Hub, name: str, **params: Any) -> list[str]:
    answer = hub.api.get(f"/workers/{name}/log", params={"lines": 5000, **params})
    return [entry["line"] for entry in answer["lines"]]


def _holding(hub: Hub, name: str, text: str) -> list[str]:
    def found() -> list[str] | None:
        lines = _lines(hub, name)
        return lines if any(text in line for line in lines) else None

    return wait_for(found, 30, f"{text!r} in the own log of {name}")


def test_the_workers_start_up_lines_are_readable_by_rest_and_cli(
    served: tuple[Hub, Worker],
) -> None:
    hub, worker = served
    lines = _holding(hub, "wl1", "worker wl1 connected to hub")
    assert any("worker wl1 connecting to" in line for line in lines)
    # The lines are the worker's stderr lines, as it wrote them.
    assert any(line.endswith("serving default") and " INFO tether.worker" in line for line in lines)
    (connected,) = [line for line in lines if "worker wl1 connected to hub" in line]
    assert connected in worker.output().splitlines()

    printed = tether_cli("workers", "logs", "wl1", "--lines", "3", hub=hub)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == _lines(hub, "wl1")[-3:]
    everything = tether_cli("workers", "logs", "wl1", hub=hub)
    assert "worker wl1 connected to hub" in everything.stdout

    missing = tether_cli("workers", "logs", "nobody", hub=hub)
    assert missing.returncode == 1
    assert "404" in missing.stderr
    assert httpx.get(hub.url + "/api/v1/workers/wl1/log").status_code == 401
    assert hub.api.http.get("/workers/a%20b/log").status_code == 422
    assert hub.api.http.get("/workers/wl1/log", params={"lines": 0}).status_code == 422


def test_a_followed_log_prints_new_lines_and_the_credential_is_masked(
    served: tuple[Hub, Worker],
) -> None:
    hub, worker = served
    _holding(hub, "wl1", "connected to hub")
    credential = json.loads((worker.home / "credential.json").read_text())["credential"]
    follower = subprocess.Popen(
        [sys.executable, "-m", "tether", "workers", "logs", "wl1", "-f", "--hub", hub.url],
        env={"TETHER_TOKEN": ADMIN_TOKEN, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(follower.stdout or []), daemon=True)
    reader.start()
    try:
        # The worker logs the local maintenance comment: here, its own credential.
        control.update_control(worker.home, maintenance=True, comment=f"key={credential}")
        lines = _holding(hub, "wl1", "maintenance on (local)")
        wait_for(
            lambda: any("maintenance on (local)" in line for line in seen),
            30,
            "the followed log to print the new line",
        )
    finally:
        control.update_control(worker.home, maintenance=False, comment=None)
        follower.terminate()
        follower.wait(10)
        reader.join(10)
        if follower.stdout is not None:
            follower.stdout.close()
    (masked,) = [line for line in lines if "maintenance on (local)" in line]
    assert masked.endswith("maintenance on (local): key=***")
    assert credential in worker.output()  # on the worker's own stderr, as it is
    assert not any(credential in line for line in _lines(hub, "wl1"))
    assert not any(credential in line for line in seen)


def test_the_console_links_each_worker_to_a_page_of_its_log(served: tuple[Hub, Worker]) -> None:
    hub, _ = served
    _holding(hub, "wl1", "connected to hub")
    console = Console(hub)
    try:
        browser = console.http
        workers = browser.get("/ui/workers")
        assert 'href="/ui/workers/wl1/log"' in workers.text
        page = browser.get("/ui/workers/wl1/log")
        assert page.status_code == 200, page.text
        assert "worker wl1 connected to hub" in page.text
        assert "<script>" not in page.text
        assert browser.get("/ui/workers/nobody/log").status_code == 404
        assert browser.get("/ui/workers/a%20b/log").status_code == 422
    finally:
        console.close()
    with httpx.Client(base_url=hub.url, timeout=30) as anonymous:
        assert anonymous.get("/ui/workers/wl1/log").status_code == 303


def _ship(raw: RawWorker, body: Any) -> httpx.Response:
    return raw.http.post("/worker-log", json=body)


def test_hostile_bodies_are_refused_with_a_reason(served: tuple[Hub, Worker]) -> None:
    hub, _ = served
    raw = RawWorker(hub, "wl-hostile")
    other = RawWorker(hub, "wl-other")
    try:
        assert _ship(raw, {"lines": ["fine"]}).json() == {"kept": 1}
        refused = {
            "too many lines": {"lines": ["x"] * (MAX_WORKER_LOG_BATCH + 1)},
            "too long a line": {"lines": ["x" * (MAX_WORKER_LOG_LINE + 1)]},
            "an escape sequence": {"lines": ["red \x1b[31m"]},
            "two lines in one": {"lines": ["one\ntwo"]},
            "a NUL": {"lines": ["nul \x00"]},
            "not a list": {"lines": "text"},
            "not text": {"lines": [1]},
            "a negative count": {"lines": [], "dropped": -1},
            "an unknown field": {"lines": [], "worker": "wl1"},
        }
        for why, body in refused.items():
            answer = _ship(raw, body)
            assert answer.status_code == 422, (why, answer.text)
            assert answer.json()["detail"], why
        bad_utf8 = raw.http.post(
            "/worker-log",
            content=b'{"lines": ["\xff\xfe"]}',
            headers={"Content-Type": "application/json"},
        )
        assert bad_utf8.status_code == 422, bad_utf8.text
        surrogate = raw.http.post(
            "/worker-log",
            content=b'{"lines": ["\\ud800"]}',
            headers={"Content-Type": "application/json"},
        )
        assert surrogate.status_code == 422, surrogate.text
        huge = raw.http.post(
            "/worker-log",
            content=b'{"lines": ["' + b"y" * (2 * 1024 * 1024) + b'"]}',
            headers={"Content-Type": "application/json"},
        )
        assert huge.status_code == 413, huge.text
        wrong_session = raw.http.post(
            "/worker-log", json={"lines": ["x"]}, headers={SESSION_HEADER: "0" * 32}
        )
        assert wrong_session.status_code == 409, wrong_session.text
        # Another worker's session with this worker's credential: not this worker's.
        theirs = raw.http.post(
            "/worker-log",
            json={"lines": ["as the other"]},
            headers={SESSION_HEADER: other.http.headers[SESSION_HEADER]},
        )
        assert theirs.status_code == 409, theirs.text
        anonymous = httpx.post(hub.url + "/api/worker/v1/worker-log", json={"lines": ["x"]})
        assert anonymous.status_code == 401
        assert _lines(hub, "wl-hostile") == ["fine"]
        assert _lines(hub, "wl-other") == []
    finally:
        raw.close()
        other.close()


def test_only_the_newest_lines_are_kept_and_a_chatty_worker_is_held_back(
    served: tuple[Hub, Worker],
) -> None:
    hub, _ = served
    chatty = RawWorker(hub, "wl-chatty")
    try:
        for batch in range(3):
            lines = [f"line {batch * 40 + i}" for i in range(40)]
            assert _ship(chatty, {"lines": lines}).json() == {"kept": 40}
        kept = _lines(hub, "wl-chatty")
        assert kept == [f"line {i}" for i in range(120 - KEEP, 120)]
        # A count of lines dropped on the worker comes as a line of its own.
        assert _ship(chatty, {"lines": ["after"], "dropped": 7}).json() == {"kept": 2}
        assert _lines(hub, "wl-chatty")[-2:] == [
            "[tether] 7 line(s) of this worker's log were dropped on the worker",
            "after",
        ]
        # 122 of its PER_MINUTE spent: a batch past the rest is refused whole.
        over = _ship(chatty, {"lines": ["z"] * (PER_MINUTE - 100)})
        assert over.status_code == 429, over.text
        assert int(over.headers["Retry-After"]) >= 1
        assert _lines(hub, "wl-chatty")[-1] == "after"
        assert len(_lines(hub, "wl-chatty")) == KEEP
        # Following on from a line: only what came after it.
        answer = hub.api.get("/workers/wl-chatty/log", params={"lines": 2})
        assert [e["line"] for e in answer["lines"]] == _lines(hub, "wl-chatty")[-2:]
        assert hub.api.get("/workers/wl-chatty/log", params={"after": answer["last_id"]}) == {
            "name": "wl-chatty",
            "lines": [],
            "last_id": answer["last_id"],
        }
    finally:
        chatty.close()
    hub.api.http.delete("/workers/wl-chatty").raise_for_status()
    assert hub.api.http.get("/workers/wl-chatty/log").status_code == 404
