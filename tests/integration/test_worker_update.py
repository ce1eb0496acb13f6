"""An operator asks workers to update to the hub's version, in process (httpx
ASGI transport): the request, the directive, the outcome a worker reports,
and bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hubtools import ADMIN, create_app, make_hub
from tether import __version__
from tether.hub.state import Hub
from tether.protocol import PROTOCOL_VERSION, SESSION_HEADER

W = "/api/worker/v1"
OLD = "0.0.9"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = make_hub(tmp_path, f"sqlite:///{tmp_path / 'update.db'}", tmp_path / "dags")
    hub.config.min_worker_version = "0.0.1"
    yield hub
    hub.store.dispose()


def facts(version: str, **more: Any) -> dict[str, Any]:
    return {
        "concurrency": 2,
        "free_slots": 2,
        "version": version,
        "protocol": PROTOCOL_VERSION,
        "queues": ["q"],
        **more,
    }


class Site:
    """Enrolled workers with open sessions, as the real worker has them."""

    def __init__(self, transport: httpx.ASGITransport, admin: httpx.AsyncClient) -> None:
        self.transport, self.admin = transport, admin

    async def connect(self, name: str, version: str) -> httpx.AsyncClient:
        made = await self.admin.post(
            "/api/v1/workers/enrolment-tokens", json={"queues": ["q"], "name": name}
        )
        async with httpx.AsyncClient(transport=self.transport, base_url="http://hub") as anon:
            enrolled = await anon.post(f"{W}/enrol", json={"token": made.json()["token"]})
        credential = enrolled.json()["credential"]
        return await self.session(credential, version)

    async def session(self, credential: str, version: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {credential}"}
        worker = httpx.AsyncClient(transport=self.transport, base_url="http://hub", headers=headers)
        opened = await worker.post(f"{W}/sessions", json=facts(version))
        assert opened.status_code == 200, opened.text
        worker.headers[SESSION_HEADER] = opened.json()["session_id"]
        return worker


def run(hub: Hub, scenario: Any) -> Any:
    async def main() -> Any:
        hub.wakeups.bind(asyncio.get_running_loop())
        transport = httpx.ASGITransport(app=create_app(hub))
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://hub", headers=headers
        ) as admin:
            return await scenario(admin, Site(transport, admin))

    return asyncio.run(main())


async def _listed(admin: httpx.AsyncClient, name: str) -> dict[str, Any]:
    workers = (await admin.get("/api/v1/workers")).json()["workers"]
    found: dict[str, Any] = next(w for w in workers if w["name"] == name)
    return found


def test_an_update_is_asked_once_until_the_worker_reports_its_outcome(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, site: Site) -> None:
        old = await site.connect("old", OLD)
        current = await site.connect("current", __version__)

        same = await admin.post("/api/v1/workers/current/update")
        assert same.json() == {"name": "current", "update": "nothing to do", "to": __version__}
        beat = await current.post(f"{W}/heartbeat", json=facts(__version__))
        assert beat.json()["directives"]["update"] is None

        asked = await admin.post("/api/v1/workers/old/update")
        assert asked.json() == {"name": "old", "update": "requested", "to": __version__}
        assert (await _listed(admin, "old"))["update_requested"] is True
        # Every reply carries it (a lost one loses nothing)...
        beat = await old.post(f"{W}/heartbeat", json=facts(OLD))
        request = beat.json()["directives"]["update"]
        assert isinstance(request, str)
        assert len(request) == 32
        polled = await old.post(f"{W}/poll", json={"slots": 0, "wait": 0})
        assert polled.json()["directives"]["update"] == request
        # ...until the worker says it acted on it: here, it failed.
        failed = facts(OLD, update_id=request, update_error="pip install failed (exit 1): no pip")
        beat = await old.post(f"{W}/heartbeat", json=failed)
        assert beat.json()["directives"]["update"] is None
        shown = await _listed(admin, "old")
        assert shown["update_error"] == "pip install failed (exit 1): no pip"
        assert shown["update_requested"] is False
        assert shown["version"] == OLD

        # Asked again, it is a new request; a report on the old one changes nothing.
        await admin.post("/api/v1/workers/old/update")
        beat = await old.post(f"{W}/heartbeat", json=failed)
        again = beat.json()["directives"]["update"]
        assert again not in (None, request)
        # The updated process opens a new session: the request is done.
        credential = old.headers["Authorization"].removeprefix("Bearer ")
        updated = await site.session(credential, __version__)
        beat = await updated.post(f"{W}/heartbeat", json=facts(__version__))
        assert beat.json()["directives"]["update"] is None
        shown = await _listed(admin, "old")
        assert (shown["version"], shown["update_requested"]) == (__version__, False)
        assert shown["update_error"] is None

        entries = (await admin.get("/api/v1/audit", params={"action": "worker.update"})).json()
        assert [e["target"] for e in entries["entries"]] == ["worker:old", "worker:old"]
        for client in (old, current, updated):
            await client.aclose()

    run(hub, scenario)


def test_a_queue_update_asks_the_live_workers_that_serve_it(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, site: Site) -> None:
        clients = [
            await site.connect("a-old", OLD),
            await site.connect("b-old", OLD),
            await site.connect("c-current", __version__),
        ]
        gone = await site.connect("d-offline", OLD)
        await gone.post(f"{W}/heartbeat", json=facts(OLD, state="offline"))
        answer = await admin.post("/api/v1/workers/update", json={"queue": "q"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "queue": "q",
            "to": __version__,
            "requested": ["a-old", "b-old"],
            "current": ["c-current"],
        }
        none = await admin.post("/api/v1/workers/update", json={"queue": "other"})
        assert (none.json()["requested"], none.json()["current"]) == ([], [])
        for client in (*clients, gone):
            await client.aclose()

    run(hub, scenario)


def test_bad_update_requests_and_reports_are_refused_with_a_reason(hub: Hub) -> None:
    async def scenario(admin: httpx.AsyncClient, site: Site) -> None:
        missing = await admin.post("/api/v1/workers/nobody/update")
        assert (missing.status_code, missing.json()["detail"]) == (404, "no worker 'nobody'")
        for queue in ("", "bad queue", "x" * 300, "../q"):
            refused = await admin.post("/api/v1/workers/update", json={"queue": queue})
            assert refused.status_code == 422, queue
        anon = await admin.post(
            "/api/v1/workers/update", json={"q": 1}, headers={"Authorization": ""}
        )
        assert anon.status_code == 401

        worker = await site.connect("w", OLD)
        for bad in (
            {"update_id": "not-hex-at-all-!!"},
            {"update_id": "ab" * 40},
            {"update_error": "x" * 9000},
            {"update_id": 7},
        ):
            answer = await worker.post(f"{W}/heartbeat", json=facts(OLD, **bad))
            assert answer.status_code == 422, bad
        # A worker may not answer for a request it was never given.
        await admin.post("/api/v1/workers/w/update")
        stray = facts(OLD, update_id="0" * 32, update_error="made up")
        beat = await worker.post(f"{W}/heartbeat", json=stray)
        assert beat.json()["directives"]["update"] is not None
        await worker.aclose()

    run(hub, scenario)
