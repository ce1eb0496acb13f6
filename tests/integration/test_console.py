"""The web console in process (httpx ASGI transport, real store, real worker API):
login and its cookie, CSRF, the pages for a hub with runs, escaping, the queue
warning, and the live log stream."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import shutil
import stat
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.hubtools import ADMIN, create_app, make_hub, parse, write_dag
from tests.integration.test_api import FACTS, W, Workers
from tether.hub.auth import console
from tether.hub.auth.gate import Principals
from tether.hub.core import sessions
from tether.hub.core.runs import utcnow
from tether.hub.state import Hub
from tether.hub.store.models import ConsoleSession as ConsoleSessionRow
from tether.hub.store.models import Dag
from tether.hub.ui import logs

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"

SHOP = """
from datetime import datetime
from tether import DAG, BashOperator, task

with DAG("shop", schedule="@daily", start_date=datetime(2026, 1, 1), tags=["sales"],
         default_args={"owner": "ana"}):
    @task
    def numbers():
        return [1, 2, 3]

    @task
    def double(x):
        return 2 * x

    double.expand(x=numbers())

with DAG("ledger", tags=["finance"]):
    BashOperator(task_id="book", bash_command="echo booked", queue="acme")
"""
BROKEN = f"raise RuntimeError({HOSTILE!r})\n"


def _make(tmp_path: Path, database_url: str) -> Hub:
    dags = tmp_path / "dags"
    write_dag(dags, "shop.py", SHOP)
    write_dag(dags, "broken.py", BROKEN)
    hub = make_hub(tmp_path, database_url, dags)
    parse(hub)
    return hub


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub home and SQLite store with the DAGs parsed, once per module (parsing
    takes child processes): each test gets a copy."""
    root = tmp_path_factory.mktemp("parsed")
    _make(root, f"sqlite:///{root / 'console.db'}").store.dispose()
    return root


def _copy(parsed: Path, tmp_path: Path, *, fresh_key: bool = False, **config: Any) -> Hub:
    """A hub on a copy of ``parsed``; ``fresh_key``: without its console key."""
    root = tmp_path / "copy"
    shutil.copytree(parsed, root)
    if fresh_key:
        (root / "home" / "console_key").unlink()
    hub = make_hub(root, f"sqlite:///{root / 'console.db'}", root / "dags")
    for name, value in config.items():
        setattr(hub.config, name, value)
    return hub


@pytest.fixture
def hub(parsed: Path, tmp_path: Path) -> Iterator[Hub]:
    hub = _copy(parsed, tmp_path)
    try:
        yield hub
    finally:
        hub.store.dispose()


Scenario = Callable[[httpx.AsyncClient, httpx.AsyncClient, Workers], Awaitable[None]]


def run(hub: Hub, scenario: Scenario, base_url: str = "http://hub") -> None:
    """``scenario(browser, admin, workers)``: a browser-like client (keeps cookies, no
    token), an admin REST client, and in-process workers."""

    async def main() -> None:
        hub.wakeups.bind(asyncio.get_running_loop())
        transport = httpx.ASGITransport(app=create_app(hub))
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with (
            httpx.AsyncClient(transport=transport, base_url=base_url) as browser,
            httpx.AsyncClient(transport=transport, base_url=base_url, headers=headers) as admin,
        ):
            await scenario(browser, admin, Workers(transport, admin))

    asyncio.run(main())


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def login(browser: httpx.AsyncClient, token: str = ADMIN) -> httpx.Response:
    form = await browser.get("/ui/login")
    assert form.status_code == 200, form.text
    return await browser.post(
        "/ui/login", data={"csrf": _csrf(form.text), "token": token, "next": "/ui/dags"}
    )


def _cookie(value: str) -> dict[str, str]:
    """A Cookie header with a console session cookie of ``value``."""
    return {"Cookie": f"{console.SESSION_COOKIE}={value}"}


def _set_cookie(response: httpx.Response, name: str) -> str:
    (header,) = [h for h in response.headers.get_list("set-cookie") if h.startswith(name + "=")]
    return header


def test_login_sets_a_signed_session_cookie_with_the_right_flags(
    parsed: Path, tmp_path: Path
) -> None:
    hub = _copy(parsed, tmp_path, fresh_key=True, console_session_lifetime=600.0)

    async def scenario(browser: httpx.AsyncClient, *_: Any) -> None:
        first = await browser.get("/ui/workers")
        assert first.status_code == 303
        assert first.headers["location"] == "/ui/login?next=/ui/workers"
        assert (await browser.get("/")).headers["location"] == "/ui/dags"
        signed = await login(browser)
        assert signed.status_code == 303, signed.text
        assert signed.headers["location"] == "/ui/dags"
        header = _set_cookie(signed, console.SESSION_COOKIE)
        flags = {f.strip().lower() for f in header.split(";")[1:]}
        assert {"httponly", "path=/ui", "samesite=strict", "max-age=600", "secure"} <= flags
        value = header.split(";")[0].split("=", 1)[1]
        assert ADMIN not in value
        # It holds a random session id, signed, and nothing else; the store keeps
        # the id's hash and the token's, so neither is in the cookie.
        version, session_id, _signature = value.split(".")
        assert version == "v2"
        assert re.fullmatch(r"[0-9a-f]{64}", session_id)
        with hub.store.read() as s:
            (row,) = s.scalars(select(ConsoleSessionRow)).all()
            assert row.session_hash == hashlib.sha256(session_id.encode()).hexdigest()
            assert row.token_hash == hashlib.sha256(ADMIN.encode()).hexdigest()
            assert row.ended_at is None
            assert 590 < (row.expires_at - row.created_at).total_seconds() <= 601
        assert row.token_hash not in value
        assert row.session_hash not in value
        page = await browser.get("/ui/dags")
        assert page.status_code == 200
        assert "admin (admin)" in page.text
        assert "shop" in page.text
        for answer in (first, signed, page, await browser.get("/ui/static/console.css")):
            assert answer.headers["strict-transport-security"] == "max-age=31536000"
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert "script-src 'self'" in answer.headers["content-security-policy"]

    try:
        run(hub, scenario, base_url="https://hub")
        key = tmp_path / "copy" / "home" / "console_key"  # made on the first start
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert len(key.read_text().strip()) == 64
    finally:
        hub.store.dispose()


def test_no_secure_flag_over_plain_http_and_a_key_from_the_environment(
    parsed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_CONSOLE_KEY", "k" * 40)
    hub = _copy(parsed, tmp_path, fresh_key=True)

    async def scenario(browser: httpx.AsyncClient, *_: Any) -> None:
        signed = await login(browser)
        header = _set_cookie(signed, console.SESSION_COOKIE)
        assert "secure" not in header.lower()
        # HSTS over HTTPS only: a browser ignores it on plain HTTP, and a hub behind
        # a proxy that terminates TLS leaves it to the proxy.
        assert "strict-transport-security" not in signed.headers
        assert f"max-age={12 * 3600}" in header.lower()
        value = header.split(";")[0].split("=", 1)[1]
        assert hub.console_key == b"k" * 40
        assert await console.read_session(hub, value) is not None

    try:
        run(hub, scenario)
        assert not (tmp_path / "copy" / "home" / "console_key").exists()
    finally:
        hub.store.dispose()
    monkeypatch.setenv("TETHER_CONSOLE_KEY", "short")
    with pytest.raises(console.ConsoleKeyError, match="at least 32 characters"):
        console.load_key(tmp_path)


def test_a_wrong_token_says_so_and_counts_against_the_address(parsed: Path, tmp_path: Path) -> None:
    hub = _copy(parsed, tmp_path)
    hub.principals = Principals(failures_per_minute=2)

    async def scenario(browser: httpx.AsyncClient, admin: httpx.AsyncClient, _: Any) -> None:
        for _n in range(2):
            wrong = await login(browser, "not-the-token")
            assert wrong.status_code == 401
            assert "invalid token" in wrong.text
            assert console.SESSION_COOKIE not in wrong.cookies
        assert (await browser.get("/ui/dags")).status_code == 303
        # The budget is the gate's: the API is refused for this address now too.
        api = await admin.get("/api/v1/dags", headers={"Authorization": "Bearer nope"})
        assert api.status_code == 429
        blocked = await login(browser, "still-wrong")
        assert blocked.status_code == 429
        assert "Too many failed sign-ins" in blocked.text
        # A good token still passes, as at the gate.
        assert (await login(browser)).status_code == 303
        assert (await browser.get("/ui/dags")).status_code == 200

    try:
        run(hub, scenario)
    finally:
        hub.store.dispose()


def test_a_tampered_expired_or_foreign_cookie_goes_to_the_login_page(hub: Hub) -> None:
    own = hashlib.sha256(ADMIN.encode()).hexdigest()

    async def scenario(browser: httpx.AsyncClient, *_: Any) -> None:
        good, _ = await console.open_session(hub, own, 600)
        expired, _ = await console.open_session(hub, own, -1)
        other_token, _ = await console.open_session(hub, hashlib.sha256(b"x").hexdigest(), 600)
        version, session_id, signature = good.split(".")
        unknown = "0" * 64  # well formed and signed with the hub's key, but never opened
        bad = [
            expired,
            other_token,
            f"{version}.{session_id}.{console._sign(b'x' * 32, 'session', session_id)}",
            f"{version}.{unknown}.{console._sign(hub.console_key, 'session', unknown)}",
            f"{version}.{unknown}.{signature}",  # another id under the good one's signature
            f"{version}.{session_id}.{signature[:-2]}AA",
            f"{version}.{session_id}",
            "v1." + good[3:],
            "garbage",
            "v2." + "A" * 2000 + ".x",
        ]
        ok = await browser.get("/ui/queues", headers=_cookie(good))
        assert ok.status_code == 200
        for value in bad:
            answer = await browser.get("/ui/queues", headers=_cookie(value))
            assert answer.status_code == 303, value
            assert answer.headers["location"] == "/ui/login?next=/ui/queues"
            cleared = _set_cookie(answer, console.SESSION_COOKIE)
            assert "max-age=0" in cleared.lower()

    run(hub, scenario)


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(hub: Hub) -> None:
    async def scenario(browser: httpx.AsyncClient, *_: Any) -> None:
        assert (await login(browser)).status_code == 303
        copied = browser.cookies[console.SESSION_COOKIE]
        dags = await browser.get("/ui/dags")
        assert (await browser.get("/ui/dags", headers=_cookie(copied))).status_code == 200
        out = await browser.post("/ui/logout", data={"csrf": _csrf(dags.text)})
        assert out.status_code == 303
        assert console.SESSION_COOKIE not in browser.cookies
        # A copy taken before signing out (another tab, a stolen cookie) opens nothing.
        again = await browser.get("/ui/dags", headers=_cookie(copied))
        assert again.status_code == 303
        assert again.headers["location"].startswith("/ui/login")
        with hub.store.read() as s:
            (row,) = s.scalars(select(ConsoleSessionRow)).all()
            assert row.ended_at is not None
        # Signing in again opens a new session, and lets go of expired ones.
        await console.open_session(hub, hashlib.sha256(ADMIN.encode()).hexdigest(), -1)
        assert (await login(browser)).status_code == 303
        assert (await browser.get("/ui/dags")).status_code == 200
        with hub.store.read() as s:
            live = [r for r in s.scalars(select(ConsoleSessionRow)) if r.ended_at is None]
            assert len(live) == 1
            assert live[0].expires_at > utcnow()

    run(hub, scenario)


def test_a_console_cookie_opens_no_api_path(hub: Hub) -> None:
    async def scenario(browser: httpx.AsyncClient, *_: Any) -> None:
        assert (await login(browser)).status_code == 303
        cookie = browser.cookies[console.SESSION_COOKIE]
        for path in ("/api/v1/dags", "/api/v1/workers", "/api/worker/v1/heartbeat"):
            answer = await browser.get(path, headers=_cookie(cookie))
            assert answer.status_code == 401, path
        made = await browser.post("/api/v1/dags/shop/runs", json={}, headers=_cookie(cookie))
        assert made.status_code == 401

    run(hub, scenario)


def test_a_post_without_its_csrf_token_is_refused(hub: Hub) -> None:
    async def scenario(browser: httpx.AsyncClient, *_: Any) -> None:
        form = await browser.get("/ui/login")
        good = _csrf(form.text)
        for fields in ({"token": ADMIN}, {"token": ADMIN, "csrf": "0" * 32}):
            refused = await browser.post("/ui/login", data=fields)
            assert refused.status_code == 403
            assert "CSRF" in refused.text
        # The right value without the cookie it pairs with is refused too.
        del browser.cookies[console.LOGIN_COOKIE]
        bare = await browser.post("/ui/login", data={"token": ADMIN, "csrf": good})
        assert bare.status_code == 403
        assert console.SESSION_COOKIE not in browser.cookies
        assert (await login(browser)).status_code == 303
        page = await browser.get("/ui/dags")
        session_csrf = _csrf(page.text)
        for fields in ({}, {"csrf": "f" * 32}, {"csrf": good}):
            refused = await browser.post("/ui/logout", data=fields)
            assert refused.status_code == 403, fields
        assert (await browser.get("/ui/dags")).status_code == 200  # still signed in
        not_a_form = await browser.post("/ui/logout", json={"csrf": session_csrf})
        assert not_a_form.status_code == 415
        out = await browser.post("/ui/logout", data={"csrf": session_csrf})
        assert out.status_code == 303
        assert out.headers["location"] == "/ui/login"
        assert (await browser.get("/ui/dags")).status_code == 303

    run(hub, scenario)


def test_login_sends_the_browser_back_but_never_to_another_site(hub: Hub) -> None:
    async def scenario(browser: httpx.AsyncClient, *_: Any) -> None:
        for after, expected in [
            ("/ui/queues", "/ui/queues"),
            ("//evil.example/ui/", "/ui/dags"),
            ("https://evil.example/", "/ui/dags"),
            ("/ui/..\\evil", "/ui/dags"),
        ]:
            browser.cookies.clear()
            form = await browser.get("/ui/login", params={"next": after})
            signed = await browser.post(
                "/ui/login", data={"csrf": _csrf(form.text), "token": ADMIN, "next": after}
            )
            assert signed.headers["location"] == expected, after

    run(hub, scenario)


async def _poll(worker: httpx.AsyncClient, slots: int = 1) -> list[dict[str, Any]]:
    answer = await worker.post(f"{W}/poll", json={"slots": slots, "wait": 0})
    assert answer.status_code == 200, answer.text
    jobs: list[dict[str, Any]] = answer.json()["jobs"]
    return jobs


async def _log(worker: httpx.AsyncClient, attempt: str, offset: int, data: bytes) -> None:
    answer = await worker.post(f"{W}/attempts/{attempt}/logs?offset={offset}", content=data)
    assert answer.status_code == 200, answer.text


async def _finish(worker: httpx.AsyncClient, attempt: str, **result: Any) -> None:
    answer = await worker.post(f"{W}/attempts/{attempt}/finish", json=result)
    assert answer.status_code == 200, answer.text


def test_every_page_renders_for_a_hub_with_runs(tmp_path: Path, database_url: str) -> None:
    hub = _make(tmp_path, database_url)

    async def scenario(browser: httpx.AsyncClient, admin: httpx.AsyncClient, w: Workers) -> None:
        await admin.post("/api/v1/dags/shop/runs", json={"run_id": "r1"})
        async with await w.connect(["default"], "w1") as worker:
            (numbers,) = await _poll(worker)
            await _log(worker, numbers["attempt_id"], 0, b"counting to three\n")
            await _finish(worker, numbers["attempt_id"], state="success", output=[1, 2, 3])
            doubles = await _poll(worker, 3)
            assert sorted(j["map_index"] for j in doubles) == [0, 1, 2]
            for job in doubles[:2]:
                await _finish(worker, job["attempt_id"], state="success", output=2)
            await admin.post("/api/v1/dags/shop/runs", json={"run_id": "r2"})
            (failing,) = await _poll(worker)
            await _finish(worker, failing["attempt_id"], state="failed", error="it broke")
            busy = {
                **FACTS,
                "free_slots": 1,
                "running": [doubles[2]["attempt_id"]],
                "hostname": "edge-7",
            }
            assert (await worker.post(f"{W}/heartbeat", json=busy)).status_code == 200
            assert (await login(browser)).status_code == 303

            dags = await browser.get("/ui/dags")
            assert dags.status_code == 200
            text = dags.text
            assert "ledger" in text
            assert "shop" in text
            assert "ana" in text
            assert "sales" in text
            assert "@daily" in text
            assert 'class="mark state-failed"' in text
            assert 'class="mark state-running"' in text
            assert "did not import" in text
            assert "broken.py" in text
            assert dags.headers["content-security-policy"].startswith("default-src 'self'")
            assert dags.headers["x-frame-options"] == "DENY"
            assert "<script>" not in text.replace('<script src="/ui/static/console.js" defer>', "")
            searched = (await browser.get("/ui/dags", params={"q": "FINANCE"})).text
            assert "/ui/dags/ledger/grid" in searched
            assert "/ui/dags/shop/grid" not in searched
            failed = (await browser.get("/ui/dags", params={"show": "failed"})).text
            assert "/ui/dags/shop/grid" in failed
            assert "/ui/dags/ledger/grid" not in failed
            paused = (await browser.get("/ui/dags", params={"show": "paused"})).text
            assert "No DAG matches" in paused
            bad = await browser.get("/ui/dags", params={"show": "<b>"})
            assert bad.status_code == 422

            grid = await browser.get("/ui/dags/shop/grid")
            assert grid.status_code == 200
            assert "1/3 running, 2/3 success" in grid.text
            assert grid.text.index("r2") < grid.text.index("r1")  # newest first
            assert "/ui/dags/shop/runs/r1/tasks/numbers" in grid.text
            missing = await browser.get("/ui/dags/nope/grid")
            assert missing.status_code == 404
            assert "no DAG &#39;nope&#39;" in missing.text

            ti = await browser.get("/ui/dags/shop/runs/r1/tasks/numbers")
            assert ti.status_code == 200
            for part in ("counting to three", "w1", "default", "try 1", "Return value", "[\n  1,"):
                assert part in ti.text, part
            assert 'id="log-download"' in ti.text
            assert "data-stream" not in ti.text
            mapped = await browser.get("/ui/dags/shop/runs/r1/tasks/double")
            assert "Mapped instances" in mapped.text
            assert "/ui/dags/shop/runs/r1/tasks/double?map_index=2" in mapped.text
            running = await browser.get("/ui/dags/shop/runs/r1/tasks/double?map_index=2")
            assert "Following live" in running.text
            assert "data-stream" in running.text
            failed_ti = await browser.get("/ui/dags/shop/runs/r2/tasks/numbers")
            assert "it broke" in failed_ti.text
            none = await browser.get("/ui/dags/shop/runs/r1/tasks/numbers?try_number=5")
            assert none.status_code == 404
            log = await browser.get("/ui/dags/shop/runs/r1/tasks/numbers/tries/1/log")
            assert log.status_code == 200
            assert log.content == b"counting to three\n"
            assert log.headers["content-disposition"].startswith("attachment;")

            workers = (await browser.get("/ui/workers")).text
            assert "w1" in workers
            assert "busy" in workers
            assert "1 of 2" in workers
            assert "edge-7" in workers
            assert "/ui/dags/shop/runs/r1/tasks/double?map_index=2" in workers
            queues = (await browser.get("/ui/queues")).text
            assert "default" in queues
            assert "acme" in queues
            errors = (await browser.get("/ui/import-errors")).text
            assert "broken.py" in errors
            assert "RuntimeError" in errors
            # What cannot be an id or a number is a 4xx before the store sees it.
            ti_path = "/ui/dags/shop/runs/r1/tasks/numbers"
            huge = "9" * 25
            for path, status in [
                ("/ui/dags/%00/grid", 422),
                (f"/ui/dags/{'d' * 251}/grid", 422),
                ("/ui/dags/shop/runs/r%00/tasks/numbers", 422),
                (f"{ti_path}?map_index={huge}", 422),
                (f"{ti_path}?try_number=0", 422),
                (f"{ti_path}/tries/{huge}/log", 422),
                (f"{ti_path}/tries/1/stream?offset=-1", 422),
                (f"{ti_path}/tries/1/stream?map_index={2**63}", 422),
                (f"/ui/dags?q={'x' * 201}", 422),
                ("/ui/dags?q=%00", 200),
            ]:
                answer = await browser.get(path)
                assert answer.status_code == status, (path, answer.text)
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            for body, status in [(b"csrf=\xff\xfe", 400), (b"x=" + b"y" * 20000, 413)]:
                answer = await browser.post("/ui/logout", content=body, headers=headers)
                assert answer.status_code == status, answer.text
            css = await browser.get("/ui/static/console.css")
            js = await browser.get("/ui/static/console.js")
            assert css.status_code == js.status_code == 200
            assert "javascript" in js.headers["content-type"]
            assert "EventSource" in js.text

    try:
        run(hub, scenario)
    finally:
        hub.store.dispose()


def test_hostile_text_is_shown_as_text(hub: Hub) -> None:
    with hub.store.transaction() as s:  # a DAG row as a hostile store (or older hub) has it
        s.add(
            Dag(
                dag_id=HOSTILE,
                fileloc=HOSTILE,
                bundle_sha="0" * 64,
                serialized={
                    "dag_id": HOSTILE,
                    "description": HOSTILE,
                    "schedule": HOSTILE,
                    "tags": [HOSTILE],
                    "tasks": [{"task_id": "t", "queue": HOSTILE, "owner": HOSTILE}],
                },
                last_parsed_at=utcnow(),
            )
        )

    async def scenario(browser: httpx.AsyncClient, admin: httpx.AsyncClient, w: Workers) -> None:
        await admin.post("/api/v1/dags/ledger/runs", json={"run_id": "r1"})
        async with await w.connect(["acme"], "w1") as worker:
            (job,) = await _poll(worker)
            await _log(worker, job["attempt_id"], 0, f"{HOSTILE}\n".encode())
            comment = {**FACTS, "maintenance": True, "maintenance_comment": HOSTILE}
            assert (await worker.post(f"{W}/heartbeat", json=comment)).status_code == 200
            assert (await login(browser)).status_code == 303
            pages = [
                "/ui/dags",
                "/ui/import-errors",
                "/ui/workers",
                "/ui/queues",
                "/ui/dags/ledger/runs/r1/tasks/book",
            ]
            for path in pages:
                page = await browser.get(path)
                assert page.status_code == 200, path
                assert HOSTILE not in page.text, path
                assert ESCAPED in page.text, path
            await _finish(worker, job["attempt_id"], state="success")
            ended = await browser.get("/ui/dags/ledger/runs/r1/tasks/book")
            assert HOSTILE not in ended.text
            assert ESCAPED in ended.text

    run(hub, scenario)


def _unserved(html: str) -> list[str]:
    return re.findall(r'<code class="unserved-queue">([^<]*)</code>', html)


def test_the_queue_warning_shows_only_while_work_has_no_live_worker(hub: Hub) -> None:
    async def scenario(browser: httpx.AsyncClient, admin: httpx.AsyncClient, w: Workers) -> None:
        assert (await login(browser)).status_code == 303
        assert _unserved((await browser.get("/ui/queues")).text) == []  # no work anywhere
        await admin.post("/api/v1/dags/ledger/runs", json={"run_id": "r1"})
        page = (await browser.get("/ui/queues")).text
        assert _unserved(page) == ["acme"]  # work and no worker at all
        assert "no live worker can take this work" in page
        async with await w.connect(["acme"], "w1") as worker:
            assert _unserved((await browser.get("/ui/queues")).text) == []
            resting = {**FACTS, "maintenance": True, "maintenance_comment": "disk swap"}
            assert (await worker.post(f"{W}/heartbeat", json=resting)).status_code == 200
            assert _unserved((await browser.get("/ui/queues")).text) == ["acme"]
            assert "disk swap" in (await browser.get("/ui/workers")).text
            assert (await worker.post(f"{W}/heartbeat", json=FACTS)).status_code == 200
            assert _unserved((await browser.get("/ui/queues")).text) == []
            asked = await admin.post("/api/v1/workers/w1/maintenance", json={"on": True})
            assert asked.status_code == 200, asked.text
            assert _unserved((await browser.get("/ui/queues")).text) == ["acme"]
            await admin.post("/api/v1/workers/w1/maintenance", json={"on": False})
            assert _unserved((await browser.get("/ui/queues")).text) == []
            # Lost: silent past the timeout.
            with hub.store.transaction() as s:
                sessions.mark_lost_workers(s, utcnow(), timedelta(0))
            assert "lost" in (await browser.get("/ui/workers")).text
            assert _unserved((await browser.get("/ui/queues")).text) == ["acme"]
            # The work taken, the warning goes, whoever serves the queue.
            (job,) = await _poll(worker)
            await _finish(worker, job["attempt_id"], state="success")
            assert _unserved((await browser.get("/ui/queues")).text) == []

    run(hub, scenario)


class Stream:
    """A request to the ASGI app driven by hand, so each body part is seen as it is sent."""

    def __init__(self, app: Any, path: str, cookie: str, **options: Any) -> None:
        self.parts: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.gone = asyncio.Event()
        self.text = ""
        path, _, query = path.partition("?")
        headers = [(b"host", b"hub"), (b"cookie", f"{console.SESSION_COOKIE}={cookie}".encode())]
        headers += [(k.encode(), v.encode()) for k, v in options.get("headers", {}).items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": options.get("spec", "2.3")},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("hub", 80),
            "root_path": "",
        }
        self.fail_after = options.get("fail_after")
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if self.fail_after is not None and message["type"] == "http.response.body":
            if self.fail_after == 0:
                raise OSError("the client went away")
            self.fail_after -= 1
        await self.parts.put(message)

    async def until(self, wanted: str) -> str:
        """The text received so far, once it holds ``wanted``."""
        async with asyncio.timeout(20):  # detects a stream that never sends it
            while wanted not in self.text:
                part = await self.parts.get()
                if part["type"] == "http.response.start":
                    self.status = part["status"]
                    self.headers = {k.decode(): v.decode() for k, v in part["headers"]}
                    continue
                self.text += part.get("body", b"").decode()
                if not part.get("more_body", False) and wanted not in self.text:
                    raise AssertionError(f"the stream ended without {wanted!r}: {self.text!r}")
        return self.text


def _events(text: str, kind: str) -> list[str]:
    found = re.findall(rf"event: {kind}\ndata: (.*)\n\n", text)
    return [json.loads(f) for f in found]


async def _signed(browser: httpx.AsyncClient) -> str:
    assert (await login(browser)).status_code == 303
    return browser.cookies[console.SESSION_COOKIE]


def test_the_log_stream_sends_a_running_try_s_new_bytes_and_ends_with_it(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(browser: httpx.AsyncClient, admin: httpx.AsyncClient, w: Workers) -> None:
        await admin.post("/api/v1/dags/ledger/runs", json={"run_id": "r1"})
        cookie = await _signed(browser)
        app = browser._transport.app  # type: ignore[attr-defined]
        async with await w.connect(["acme"], "w1") as worker:
            (job,) = await _poll(worker)
            attempt = job["attempt_id"]
            await _log(worker, attempt, 0, b"line one\n")
            page = (await browser.get("/ui/dags/ledger/runs/r1/tasks/book")).text
            assert "line one" in page
            (url,) = re.findall(r'data-stream="([^"]+)"', page)
            url = url.replace("&amp;", "&")
            assert url.endswith("offset=9")
            stream = Stream(app, url, cookie)
            await stream.until("retry:")
            assert stream.status == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["content-security-policy"].startswith("default-src 'self'")
            # "é" split across two uploads: the stream sends it whole.
            await _log(worker, attempt, 9, b"line two \xc3")
            await stream.until("line two")
            await _log(worker, attempt, 19, b"\xa9\n")
            text = await stream.until(json.dumps("é")[1:-1])  # as JSON carries it
            assert "line one" not in text  # it started where the page's log ended
            assert "".join(_events(text, "log")) == "line two é\n"
            assert not stream.task.done()
            await _finish(worker, attempt, state="success")
            text = await stream.until("event: end")
            await asyncio.wait_for(stream.task, 20)
            # A reconnecting browser resumes from the last id it had.
            again = await browser.get(url, headers={"Last-Event-ID": "9"})
            assert "".join(_events(again.text, "log")) == "line two é\n"
            assert _events(again.text, "end")
            whole = await browser.get(url.replace("offset=9", "offset=0"))
            assert "".join(_events(whole.text, "log")) == "line one\nline two é\n"
            # Without a session, no stream.
            browser.cookies.clear()
            assert (await browser.get(url)).status_code == 401
            missing = await browser.get(
                url.replace("/tries/1/", "/tries/7/"), headers=_cookie(cookie)
            )
            assert missing.status_code == 404

    with caplog.at_level(logging.DEBUG):
        run(hub, scenario)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
def test_a_stream_whose_client_goes_away_ends_quietly(
    hub: Hub, caplog: pytest.LogCaptureFixture, spec: str
) -> None:
    """ASGI 2.3 servers say ``http.disconnect``; from 2.4 a send fails with OSError."""

    async def scenario(browser: httpx.AsyncClient, admin: httpx.AsyncClient, w: Workers) -> None:
        await admin.post("/api/v1/dags/ledger/runs", json={"run_id": "r1"})
        cookie = await _signed(browser)
        app = browser._transport.app  # type: ignore[attr-defined]
        async with await w.connect(["acme"], "w1") as worker:
            (job,) = await _poll(worker)
            url = "/ui/dags/ledger/runs/r1/tasks/book/tries/1/stream"
            if spec == "2.3":
                stream = Stream(app, url, cookie, spec=spec)
                await stream.until("retry:")
                stream.gone.set()
            else:
                stream = Stream(app, url, cookie, spec=spec, fail_after=1)
                await stream.until("retry:")
                await _log(worker, job["attempt_id"], 0, b"into the void\n")
            await asyncio.wait_for(stream.task, 20)  # ended, and raised nothing
            assert stream.task.exception() is None

    with caplog.at_level(logging.DEBUG):
        run(hub, scenario)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("ending", ["token revoked", "signed out"])
def test_a_stream_ends_when_its_token_is_revoked_or_its_session_signed_out(
    hub: Hub, ending: str
) -> None:
    """A stream lasts as long as its try: a revoked token, or signing out (in
    another tab, say), must end it, not only the next request."""

    async def scenario(browser: httpx.AsyncClient, admin: httpx.AsyncClient, w: Workers) -> None:
        made = await admin.post("/api/v1/tokens", json={"name": "ana", "role": "viewer"})
        assert made.status_code == 201, made.text
        await admin.post("/api/v1/dags/ledger/runs", json={"run_id": "r1"})
        assert (await login(browser, made.json()["token"])).status_code == 303
        cookie = browser.cookies[console.SESSION_COOKIE]
        app = browser._transport.app  # type: ignore[attr-defined]
        async with await w.connect(["acme"], "w1") as worker:
            await _poll(worker)
            url = "/ui/dags/ledger/runs/r1/tasks/book/tries/1/stream"
            stream = Stream(app, url, cookie)
            await stream.until("retry:")
            if ending == "token revoked":
                revoked = await admin.post("/api/v1/tokens/ana/revoke")
                assert revoked.status_code == 200, revoked.text
            else:
                csrf = _csrf((await browser.get("/ui/dags")).text)
                assert (await browser.post("/ui/logout", data={"csrf": csrf})).status_code == 303
            text = await stream.until("event: gone")
            (why,) = _events(text, "gone")
            assert why == logs.ENDED
            await asyncio.wait_for(stream.task, 20)

    run(hub, scenario)


def test_log_streams_are_bounded_per_user_and_per_hub(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each open stream costs the hub a database look twice a second: a user (or
    one stolen cookie) must not open them without end."""
    monkeypatch.setattr(logs, "STREAMS_PER_PRINCIPAL", 2)
    monkeypatch.setattr(logs, "STREAMS_PER_PROCESS", 3)

    async def scenario(browser: httpx.AsyncClient, admin: httpx.AsyncClient, w: Workers) -> None:
        made = await admin.post("/api/v1/tokens", json={"name": "ana", "role": "viewer"})
        assert made.status_code == 201, made.text
        await admin.post("/api/v1/dags/ledger/runs", json={"run_id": "r1"})
        app = browser._transport.app  # type: ignore[attr-defined]
        url = "/ui/dags/ledger/runs/r1/tasks/book/tries/1/stream"
        async with await w.connect(["acme"], "w1") as worker:
            await _poll(worker)
            mine = await _signed(browser)
            first, second = Stream(app, url, mine), Stream(app, url, mine)
            for stream in (first, second):
                await stream.until("retry:")
            refused = await browser.get(url)
            assert refused.status_code == 429
            assert "admin follows 2 logs already" in refused.text
            # A missing try is a 404 and takes no slot.
            assert (await browser.get(url.replace("/tries/1/", "/tries/9/"))).status_code == 404
            other = httpx.AsyncClient(transport=browser._transport, base_url="http://hub")
            assert (await login(other, made.json()["token"])).status_code == 303
            hers = other.cookies[console.SESSION_COOKIE]
            third = Stream(app, url, hers)
            await third.until("retry:")
            full = await other.get(url)
            assert full.status_code == 429
            assert "this hub follows 3 logs already" in full.text
            # A stream that ends, however it ends, gives its slot back.
            first.gone.set()
            await asyncio.wait_for(first.task, 20)
            again = Stream(app, url, mine)
            await again.until("retry:")
            for stream in (second, third, again):
                stream.gone.set()
                await asyncio.wait_for(stream.task, 20)
            await other.aclose()
            assert logs.stream_slots_of(app).held("admin") == 0

    run(hub, scenario)


def test_a_last_event_id_that_is_no_ascii_number_is_ignored(hub: Hub) -> None:
    """``str.isdigit`` takes "²" (0xB2 in a Latin-1 header); ``int`` does not."""

    async def scenario(browser: httpx.AsyncClient, admin: httpx.AsyncClient, w: Workers) -> None:
        await admin.post("/api/v1/dags/ledger/runs", json={"run_id": "r1"})
        cookie = await _signed(browser)
        async with await w.connect(["acme"], "w1") as worker:
            (job,) = await _poll(worker)
            await _log(worker, job["attempt_id"], 0, b"line one\n")
            await _finish(worker, job["attempt_id"], state="success")
        url = "/ui/dags/ledger/runs/r1/tasks/book/tries/1/stream?offset=5"
        for last in (b"\xb2", b"1\xb3", b"-1", b" 3"):
            got = await browser.get(url, headers={"Last-Event-ID": last, **_cookie(cookie)})
            assert got.status_code == 200, (last, got.text)
            assert "".join(_events(got.text, "log")) == "one\n"

    run(hub, scenario)
