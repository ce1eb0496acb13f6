"""The worker supervises its side tasks: one that dies of a bug ends the worker
with exit status 3 (its service manager starts it again) instead of leaving a
process that heartbeats and never takes work. A hand-edited control.json that
makes no sense is logged and ignored.

The worker runs in this process against a hub answered by httpx's
MockTransport: the seam is the transport, the worker is the real one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether import __version__
from tether.worker import control
from tether.worker.agent import Worker, WorkerConfig, WorkerExit
from tether.worker.client import HubClient


class FakeHub:
    """Answers a session, heartbeats and polls; ``poll_fails`` makes the poll's
    transport raise something no one expects."""

    def __init__(self, poll_fails: bool) -> None:
        self.poll_fails = poll_fails
        self.heartbeats = 0
        self.polls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/sessions"):
            return httpx.Response(200, json=_session())
        if path.endswith("/heartbeat"):
            self.heartbeats += 1
            return httpx.Response(200, json={"directives": {"kill": []}})
        if path.endswith("/poll"):
            self.polls += 1
            if self.poll_fails:
                raise RuntimeError("a bug in the poll's path")
            return httpx.Response(200, json={"jobs": [], "directives": {"kill": []}})
        return httpx.Response(404, json={"detail": "no such route"})


def _session() -> dict[str, Any]:
    return {
        "name": "w1",
        "session_id": "s1",
        "queues": ["default"],
        "heartbeat_interval": 0.1,
        "hub_version": __version__,
    }


def _worker(tmp_path: Path, hub: FakeHub) -> Worker:
    config = WorkerConfig(
        hub_url="http://hub.invalid", credential="ttw_x", home=tmp_path / "w", name="w1"
    )
    client = HubClient(config.hub_url, config.credential, transport=httpx.MockTransport(hub))
    return Worker(config, client)


async def _run_briefly(worker: Worker, seconds: float) -> None:
    """Run the worker; stop it after ``seconds`` if it has not ended by itself."""
    running = asyncio.create_task(worker.run())
    done, _ = await asyncio.wait({running}, timeout=seconds)
    if not done:
        worker.stop()
    await asyncio.wait_for(running, 60)


def test_a_side_task_that_dies_ends_the_worker_with_status_3(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = FakeHub(poll_fails=True)
    worker = _worker(tmp_path, hub)
    # Without supervision the worker heartbeats for ever: the bound stops it, and it
    # then exits 0 instead of raising.
    with caplog.at_level(logging.ERROR, logger="tether.worker"), pytest.raises(WorkerExit) as ended:
        asyncio.run(_run_briefly(worker, 30))
    assert ended.value.code == 3
    assert "poll" in str(ended.value)
    died = [r for r in caplog.records if "died" in r.getMessage()]
    assert len(died) == 1
    assert died[0].exc_info is not None  # the traceback is in the log
    assert hub.polls == 1  # not retried in a loop: the worker stopped


def test_a_worker_whose_side_tasks_live_stops_cleanly(tmp_path: Path) -> None:
    hub = FakeHub(poll_fails=False)
    asyncio.run(_run_briefly(_worker(tmp_path, hub), 1.0))  # no WorkerExit
    assert hub.heartbeats >= 1
    assert hub.polls >= 1


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '["maintenance"]',
        '{"maintenance": "yes please", "comment": 5}',
        '{"stop": true, "timeout": "soon"}',
        '{"stop": "no", "timeout": -3}',
    ],
)
def test_a_control_file_that_makes_no_sense_is_ignored(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    hub = FakeHub(poll_fails=False)
    worker = _worker(tmp_path, hub)

    async def scenario() -> None:
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)
        (worker.home / control.CONTROL).write_text(content)
        await asyncio.sleep(1.5)  # three turns of the control loop
        assert not running.done()  # it did not crash
        assert not worker.local_maintenance
        worker.stop()
        await asyncio.wait_for(running, 60)

    with caplog.at_level(logging.WARNING, logger="tether.worker"):
        asyncio.run(scenario())
    warned = [r for r in caplog.records if "control.json" in r.getMessage()]
    assert len(warned) == 1  # said once, not twice a second


def test_a_sensible_control_file_still_works(tmp_path: Path) -> None:
    hub = FakeHub(poll_fails=False)
    worker = _worker(tmp_path, hub)

    async def scenario() -> None:
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)
        (worker.home / control.CONTROL).write_text(
            json.dumps({"maintenance": True, "comment": "disk swap"})
        )
        await asyncio.sleep(1.5)
        assert (worker.local_maintenance, worker.local_comment) == (True, "disk swap")
        worker.stop()
        await asyncio.wait_for(running, 60)

    asyncio.run(scenario())


class SlowToLetGoHub(FakeHub):
    """Holds each poll open; a poll given up on takes a moment to let go, as a
    real connection being closed does."""

    def __init__(self) -> None:
        super().__init__(poll_fails=False)
        self.polls_given_up = 0
        self.polled, self.given_up = asyncio.Event(), asyncio.Event()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/poll"):
            return self(request)
        self.polls += 1
        self.polled.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.polls_given_up += 1
            self.given_up.set()
            await asyncio.sleep(0.5)
            raise
        return httpx.Response(200, json={"jobs": [], "directives": {"kill": []}})


def test_a_stopping_worker_ends_while_it_lets_go_of_a_held_poll(tmp_path: Path) -> None:
    """The worker stops its side tasks while the poll loop waits for a dropped
    poll to let go: that cancellation must end the loop, not be swallowed with
    the poll's own (the worker then waited for ever, seen on a loaded machine)."""
    hub = SlowToLetGoHub()
    config = WorkerConfig(
        hub_url="http://hub.invalid", credential="ttw_x", home=tmp_path / "w", name="w1"
    )
    client = HubClient(config.hub_url, config.credential, transport=httpx.MockTransport(hub.handle))
    worker = Worker(config, client)
    config.home.mkdir(parents=True)
    # In maintenance, polls carry no slots: the worker drops them when something changes.
    (config.home / control.CONTROL).write_text(json.dumps({"maintenance": True}))

    async def scenario() -> None:
        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(hub.polled.wait(), 30)
        # A change (a maintenance comment) makes the worker drop its held poll ...
        (config.home / control.CONTROL).write_text(
            json.dumps({"maintenance": True, "comment": "changed"})
        )
        await asyncio.wait_for(hub.given_up.wait(), 30)
        # ... and while the poll lets go, the worker is asked to stop.
        worker.stop()
        await asyncio.wait_for(running, 30)

    asyncio.run(scenario())
