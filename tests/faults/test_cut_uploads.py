"""A worker that goes away in the middle of a request body (it cancels a log
upload when its task ends, or its link drops) is normal: the hub notes it in
one debug line and goes on serving, with no traceback."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.processes import Hub, RawWorker, wait_for

pytestmark = pytest.mark.integration

GONE = "the client went away"
TRACEBACK = "Exception in ASGI application"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "one.py").write_text(
        textwrap.dedent(
            """
            from tether import DAG, BashOperator
            with DAG("one"):
                BashOperator(task_id="t", bash_command="true")
            """
        )
    )
    hub = Hub(tmp_path / "hub-home", dags, f"sqlite:///{tmp_path / 'hub.db'}", verbose=True)
    try:
        yield hub
    finally:
        hub.stop()


def _cut_upload(hub: Hub, worker: RawWorker, path: str) -> None:
    """Send the head of a POST and part of its body, then close the connection."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{hub.port}\r\n"
        f"Authorization: Bearer {worker.credential}\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Length: 200000\r\n"
        "\r\n"
    )
    with socket.create_connection(("127.0.0.1", hub.port)) as sock:
        sock.sendall(head.encode() + b"x" * 50_000)


def test_a_log_upload_cut_mid_body_costs_one_debug_line_and_no_traceback(hub: Hub) -> None:
    worker = RawWorker(hub, "cutter")
    try:
        for n in range(1, 4):
            _cut_upload(hub, worker, f"/api/worker/v1/attempts/{'ab' * 16}/logs?offset=0")
            wait_for(
                lambda n=n: hub.output().count(GONE) + hub.output().count(TRACEBACK) >= n,  # type: ignore[misc]
                30,
                "the hub to notice the cut upload",
            )
        output = hub.output()
        assert TRACEBACK not in output
        assert "Traceback" not in output
        assert "ClientDisconnect" not in output
        assert output.count(GONE) == 3
        # Still serving, workers included.
        assert httpx.get(hub.url + "/api/v1/health", timeout=10).status_code == 200
        assert worker.heartbeat().status_code == 200
        assert worker.log("cd" * 16, 0, b"hello").status_code == 404  # no such attempt
    finally:
        worker.close()
