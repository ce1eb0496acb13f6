"""Named API tokens and roles on the REST API, in process (httpx ASGI transport,
a real store on each backend): every route against the role it needs, tokens
that are wrong, expired or revoked, hostile names, roles and expiries, the
audit actor of a named token, and a table that holds no token."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select, text

from tests.hubtools import ADMIN, create_app, make_hub, parse, write_dag
from tests.integration.processes import sqlite_write_lock
from tether.hub.auth.gate import Principals
from tether.hub.auth.principal import ADMIN as BUILTIN_ADMIN
from tether.hub.auth.principal import LastUsed, Principal, principal_for_hash, resolve
from tether.hub.core import api_tokens
from tether.hub.core.api_tokens import Role
from tether.hub.core.runs import utcnow
from tether.hub.state import Hub
from tether.hub.store.models import ApiToken

V, OP, A = "viewer", "operator", "admin"

#: The role each REST route needs (None: public). A route of the app missing
#: here fails test_every_route_allows_exactly_its_roles: classify it when adding it.
ROLE_NEEDED: dict[tuple[str, str], str | None] = {
    ("GET", "/api/v1/health"): None,
    ("GET", "/api/v1/dags"): V,
    ("GET", "/api/v1/dags/{dag_id}"): V,
    ("PATCH", "/api/v1/dags/{dag_id}"): OP,
    ("GET", "/api/v1/dags/{dag_id}/runs"): V,
    ("POST", "/api/v1/dags/{dag_id}/runs"): OP,
    ("GET", "/api/v1/dags/{dag_id}/runs/{run_id}"): V,
    ("PATCH", "/api/v1/dags/{dag_id}/runs/{run_id}"): OP,
    ("POST", "/api/v1/dags/{dag_id}/runs/{run_id}/clear"): OP,
    ("PATCH", "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}"): OP,
    ("POST", "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear"): OP,
    ("GET", "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs"): V,
    ("POST", "/api/v1/dags/{dag_id}/backfills"): OP,
    ("GET", "/api/v1/workers"): V,
    ("GET", "/api/v1/workers/{name}/log"): V,
    ("GET", "/api/v1/queues"): V,
    ("GET", "/api/v1/import-errors"): V,
    ("GET", "/api/v1/audit"): V,
    ("GET", "/api/v1/assets"): V,
    ("GET", "/api/v1/assets/events"): V,
    ("POST", "/api/v1/assets/events"): OP,
    ("POST", "/api/v1/workers/enrolment-tokens"): A,
    ("GET", "/api/v1/workers/enrolment-tokens"): V,
    ("POST", "/api/v1/workers/enrolment-tokens/{token_id}/revoke"): A,
    ("POST", "/api/v1/workers/{name}/maintenance"): OP,
    ("POST", "/api/v1/workers/{name}/shutdown"): A,
    ("POST", "/api/v1/workers/{name}/update"): A,
    ("POST", "/api/v1/workers/update"): A,
    ("POST", "/api/v1/workers/{name}/revoke"): A,
    ("DELETE", "/api/v1/workers/{name}"): A,
    ("GET", "/api/v1/pools"): V,
    ("PUT", "/api/v1/pools/{name}"): A,
    ("DELETE", "/api/v1/pools/{name}"): A,
    ("POST", "/api/v1/connections"): A,
    ("GET", "/api/v1/connections"): V,
    ("GET", "/api/v1/connections/{name}"): V,
    ("DELETE", "/api/v1/connections/{name}"): A,
    ("PUT", "/api/v1/variables/{key}"): A,
    ("GET", "/api/v1/variables"): V,
    ("GET", "/api/v1/variables/{key}"): V,
    ("DELETE", "/api/v1/variables/{key}"): A,
    ("POST", "/api/v1/secrets/rotate-key"): A,
    ("POST", "/api/v1/tokens"): A,
    ("GET", "/api/v1/tokens"): A,
    ("POST", "/api/v1/tokens/{name}/revoke"): A,
}

#: What each path parameter is filled with: names nothing has, so an allowed
#: call changes nothing that a later one needs (the tokens the test uses stay).
PATH_VALUES = {
    "dag_id": "pair",
    "run_id": "r1",
    "task_id": "a",
    "name": "nobody",
    "key": "nobody",
    "token_id": "0" * 16,
}


@pytest.fixture
def hub(tmp_path: Path, database_url: str) -> Iterator[Hub]:
    dags = tmp_path / "dags"
    write_dag(
        dags,
        "pair.py",
        """
        from tether import DAG, BashOperator
        with DAG("pair"):
            BashOperator(task_id="a", bash_command="true") >> BashOperator(
                task_id="b", bash_command="true")
    """,
    )
    hub = make_hub(tmp_path, database_url, dags)
    parse(hub)
    yield hub
    hub.store.dispose()


Scenario = Callable[[httpx.AsyncClient, Callable[[str], httpx.AsyncClient]], Awaitable[Any]]


def run(hub: Hub, scenario: Scenario) -> Any:
    """``scenario(admin, client_for)`` against ``hub``'s app; ``client_for(token)``
    is a client that sends ``token`` (closed at the end)."""

    async def main() -> Any:
        hub.wakeups.bind(asyncio.get_running_loop())
        transport = httpx.ASGITransport(app=create_app(hub))
        opened: list[httpx.AsyncClient] = []

        def client_for(token: str) -> httpx.AsyncClient:
            client = httpx.AsyncClient(
                transport=transport,
                base_url="http://hub",
                headers={"Authorization": f"Bearer {token}"},
            )
            opened.append(client)
            return client

        try:
            return await scenario(client_for(ADMIN), client_for)
        finally:
            for client in opened:
                await client.aclose()

    return asyncio.run(main())


async def create(admin: httpx.AsyncClient, name: str, role: str, expires: str | None = None) -> str:
    body = {"name": name, "role": role, **({"expires": expires} if expires else {})}
    answer = await admin.post("/api/v1/tokens", json=body)
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


def _reason(response: httpx.Response) -> str:
    return str(response.json()["detail"])


def _concrete(path: str) -> str:
    return re.sub(r"{(\w+)(:path)?}", lambda m: PATH_VALUES[m[1]], path)


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The APIRoutes among ``routes``, and in the routers they include (FastAPI
    0.165 keeps an included router as one entry of ``app.routes``, holding
    ``original_router``; older ones copy its routes in)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


def _rest_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) of the app's REST API, ``:path`` converters dropped;
    checked against the OpenAPI document, so neither way of finding them can
    silently miss one."""
    found = []
    for route in _api_routes(app.routes):
        if route.path.startswith("/api/v1/"):
            path = route.path.replace(":path}", "}")
            found += [(m, path) for m in sorted(route.methods - {"HEAD"})]
    documented = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        if path.startswith("/api/v1/")
        for method in item
    }
    assert documented <= set(found), f"routes not found in app.routes: {documented - set(found)}"
    return found


def test_every_route_allows_exactly_its_roles(hub: Hub) -> None:
    """For every route of the app (not of a list kept beside it): a principal with
    the role gets past the check (not 401 or 403, nor 500), one without it gets
    403 naming the role needed. A route missing from ROLE_NEEDED fails here."""
    routes = _rest_routes(create_app(hub))
    unclassified = sorted(set(routes) - ROLE_NEEDED.keys())
    assert not unclassified, f"classify these routes in ROLE_NEEDED: {unclassified}"
    assert set(ROLE_NEEDED) == set(routes), "ROLE_NEEDED lists routes the app has not"

    async def scenario(
        admin: httpx.AsyncClient, client_for: Callable[[str], httpx.AsyncClient]
    ) -> None:
        principals = {
            "viewer": (Role.VIEWER, client_for(await create(admin, "vera", "viewer"))),
            "operator": (Role.OPERATOR, client_for(await create(admin, "otto", "operator"))),
            # A named admin, then the built-in one (last: an admin's call may change things).
            "named admin": (Role.ADMIN, client_for(await create(admin, "ada", "admin"))),
            "built-in admin": (Role.ADMIN, admin),
        }
        calls = [(m, p, _concrete(p), {}) for m, p in routes]
        # Revealing a secret is the one read a viewer may not make.
        for path in ("/api/v1/connections/{name}", "/api/v1/variables/{key}"):
            calls.append(("GET", path, _concrete(path), {"reveal": "true"}))
        problems = []
        for label, (role, client) in principals.items():
            for method, template, path, params in calls:
                needed = ROLE_NEEDED[(method, template)]
                if params.get("reveal"):
                    needed = A
                body = {} if method in ("POST", "PUT", "PATCH") else None
                answer = await client.request(method, path, params=params, json=body)
                what = f"{label} {method} {path} {params or ''}"
                if needed is None or role.includes(Role(needed)):
                    if answer.status_code in (401, 403) or answer.status_code >= 500:
                        problems.append(f"{what}: allowed, got {answer.status_code} {answer.text}")
                elif answer.status_code != 403 or f"needs the {needed} role" not in _reason(answer):
                    problems.append(f"{what}: needs {needed}, got {answer.status_code}")
        assert not problems, "\n".join(problems)

    run(hub, scenario)


def test_wrong_expired_and_revoked_tokens_get_401_with_their_reason(hub: Hub) -> None:
    async def scenario(
        admin: httpx.AsyncClient, client_for: Callable[[str], httpx.AsyncClient]
    ) -> None:
        short = client_for(await create(admin, "short", "viewer", expires="1h"))
        assert (await short.get("/api/v1/dags")).status_code == 200
        with hub.store.transaction() as s:  # an hour passes
            row = s.scalars(select(ApiToken).where(ApiToken.name == "short")).one()
            row.expires_at = utcnow() - timedelta(seconds=1)
        expired = await short.get("/api/v1/dags")
        assert (expired.status_code, _reason(expired)) == (401, "token expired")

        gone_token = await create(admin, "gone", "operator")
        gone = client_for(gone_token)
        assert (await gone.get("/api/v1/dags")).status_code == 200
        revoked = await admin.post("/api/v1/tokens/gone/revoke")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["state"] == "revoked"
        # The very next request is refused: nothing remembered the token as good.
        refused = await gone.get("/api/v1/dags")
        assert (refused.status_code, _reason(refused)) == (401, "token revoked")
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        again = await admin.post("/api/v1/tokens/gone/revoke")  # idempotent
        assert again.json()["state"] == "revoked"

        made_up = "tth_" + "x" * 43  # a token's shape, but no token
        wrong_length = gone_token[:-1]
        for token in (made_up, wrong_length, gone_token + "x", "ttw_" + gone_token[4:]):
            answer = await client_for(token).get("/api/v1/dags")
            assert (answer.status_code, _reason(answer)) == (401, "invalid token"), token

        listed = {t["name"]: t for t in (await admin.get("/api/v1/tokens")).json()["tokens"]}
        assert listed["admin"]["builtin"] is True
        assert (listed["short"]["state"], listed["gone"]["state"]) == ("expired", "revoked")
        assert listed["gone"]["revoked_at"] is not None
        assert all("token" not in t and "token_hash" not in t for t in listed.values())

    run(hub, scenario)


def test_the_audit_actor_of_a_named_token_is_its_name(hub: Hub) -> None:
    async def scenario(
        admin: httpx.AsyncClient, client_for: Callable[[str], httpx.AsyncClient]
    ) -> None:
        ada = client_for(await create(admin, "ada", "admin"))
        otto = client_for(await create(ada, "otto", "operator"))  # made by a named admin
        assert (await otto.post("/api/v1/dags/pair/runs", json={"run_id": "r1"})).status_code == 200
        assert (await ada.post("/api/v1/tokens/otto/revoke")).status_code == 200
        entries = (await admin.get("/api/v1/audit")).json()["entries"]
        seen = [(e["actor"], e["action"], e["target"]) for e in reversed(entries)]
        assert seen == [
            ("admin", "api_token.create", "api_token:ada"),
            ("ada", "api_token.create", "api_token:otto"),
            ("otto", "dag.trigger", "dag:pair"),
            ("ada", "api_token.revoke", "api_token:otto"),
        ]
        created = next(e for e in entries if e["target"] == "api_token:otto")
        assert created["details"]["role"] in ("operator",)
        listed = {t["name"]: t for t in (await admin.get("/api/v1/tokens")).json()["tokens"]}
        assert (listed["ada"]["created_by"], listed["otto"]["created_by"]) == ("admin", "ada")

    run(hub, scenario)


HOSTILE_NAMES = [
    "a/b",
    "../admin",
    "x\x00y",
    "line\nbreak",
    "tab\there",
    "\x1b[31mred",
    "a" * 1000,
    "a" * 101,
    "",
    " leading-space",
    "-leading-dash",
    "ünïcode",
    "semi;colon",
]
HOSTILE_EXPIRIES = ["-1d", "0", "0d", "999999y", "999999999999y", "garbage", "30", "1e9d", "30 d"]


def test_hostile_names_roles_and_expiries_are_refused_with_reasons(hub: Hub) -> None:
    async def scenario(
        admin: httpx.AsyncClient, client_for: Callable[[str], httpx.AsyncClient]
    ) -> None:
        async def refused(body: dict[str, Any], status: int, reason: str) -> None:
            answer = await admin.post("/api/v1/tokens", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert reason in answer.text, (body, answer.text)

        for name in HOSTILE_NAMES:
            # The hub's strict JSON refuses a NUL before the name is looked at.
            reason = "NUL" if "\x00" in name else "invalid token name"
            await refused({"name": name, "role": "viewer"}, 422, reason)
            if name:  # (an empty name is no path)
                revoke = await admin.post(f"/api/v1/tokens/{quote(name, safe='')}/revoke")
                # A line break matches no route (404); anything else gets its reason.
                assert revoke.status_code == (404 if "\n" in name else 422), (name, revoke.text)
                assert revoke.status_code == 404 or "invalid token name" in revoke.text
        for role in ("root", "ADMIN", "Admin", "superuser", "", "viewer "):
            await refused({"name": "r", "role": role}, 422, "unknown role")
        await refused({"name": "r", "role": 1}, 422, "role")
        for expires in HOSTILE_EXPIRIES:
            await refused({"name": "e", "role": "viewer", "expires": expires}, 422, "expiry")
        await refused({"name": "e", "role": "viewer", "expires": 30}, 422, "expires")
        await refused({"name": "x", "role": "viewer", "token": "tth_mine"}, 422, "token")

        await create(admin, "dup", "viewer", expires="30d")
        await refused({"name": "dup", "role": "admin"}, 409, "an API token named 'dup' exists")
        for reserved in ("admin", "ADMIN", "cli", "anonymous", "enrolment"):
            await refused({"name": reserved, "role": "viewer"}, 409, "reserved")
        builtin = await admin.post("/api/v1/tokens/admin/revoke")
        assert builtin.status_code == 404
        assert "built-in admin token" in builtin.text
        assert (await admin.post("/api/v1/tokens/nobody/revoke")).status_code == 404

        listed = [t["name"] for t in (await admin.get("/api/v1/tokens")).json()["tokens"]]
        assert listed == ["admin", "dup"]  # nothing hostile got in

    run(hub, scenario)


def test_a_token_is_kept_only_as_its_hash(hub: Hub) -> None:
    async def scenario(
        admin: httpx.AsyncClient, client_for: Callable[[str], httpx.AsyncClient]
    ) -> None:
        return [await create(admin, f"t{i}", role) for i, role in enumerate(Role)]

    tokens: list[str] = run(hub, scenario)
    with hub.store.read() as s:
        dump = "\n".join(
            repr(tuple(row))
            for table in ("api_token", "audit_log")
            for row in s.execute(text(f"SELECT * FROM {table}"))
        )
        hashes = set(s.scalars(select(ApiToken.token_hash)))
    for token in tokens:
        assert token.startswith("tth_")
        assert len(token) == 47
        assert token not in dump
        assert token.removeprefix("tth_") not in dump
        assert api_tokens.token_hash(token) in hashes


def test_failed_api_tokens_count_against_the_address(hub: Hub) -> None:
    hub.principals = Principals(failures_per_minute=3)

    async def scenario(
        admin: httpx.AsyncClient, client_for: Callable[[str], httpx.AsyncClient]
    ) -> None:
        good = client_for(await create(admin, "good", "viewer"))
        revoked = client_for(await create(admin, "bad", "viewer"))
        await admin.post("/api/v1/tokens/bad/revoke")
        statuses = [(await revoked.get("/api/v1/dags")).status_code for _ in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        # A good token from the same address still passes.
        assert (await good.get("/api/v1/dags")).status_code == 200

    run(hub, scenario)


def test_the_console_resolves_a_principal_from_a_token_hash(hub: Hub) -> None:
    async def scenario(
        admin: httpx.AsyncClient, client_for: Callable[[str], httpx.AsyncClient]
    ) -> None:
        token = await create(admin, "console-user", "operator")
        hashed = api_tokens.token_hash(token)
        assert await principal_for_hash(hub, hashed) == Principal("console-user", Role.OPERATOR)
        assert await principal_for_hash(hub, api_tokens.token_hash(ADMIN)) == BUILTIN_ADMIN
        for junk in ("", "zz" * 32, hashed.upper(), hashed + "0", "0" * 64):
            assert await principal_for_hash(hub, junk) is None
        await admin.post("/api/v1/tokens/console-user/revoke")
        assert await principal_for_hash(hub, hashed) is None
        assert await resolve(hub, hashed) == "token revoked"

    run(hub, scenario)


def test_a_tokens_use_is_noted_at_most_once_a_minute(hub: Hub) -> None:
    async def scenario(
        admin: httpx.AsyncClient, client_for: Callable[[str], httpx.AsyncClient]
    ) -> Any:
        user = client_for(await create(admin, "user", "viewer"))
        assert (await user.get("/api/v1/dags")).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the note is written beside the request
            listed = {t["name"]: t for t in (await admin.get("/api/v1/tokens")).json()["tokens"]}
            if listed["user"]["last_used_at"] is not None:
                return listed["user"]["last_used_at"]
            await asyncio.sleep(0.05)
        raise AssertionError("the token's use was never noted")

    noted: str = run(hub, scenario)

    def last_used() -> str:
        with hub.store.read() as s:
            row = s.scalars(select(ApiToken).where(ApiToken.name == "user")).one()
            assert row.last_used_at is not None
            return row.last_used_at.isoformat()

    def note() -> None:
        with hub.store.transaction() as s:
            api_tokens.note_use(s, s.scalars(select(ApiToken.id)).one())

    note()  # within the minute (another process, say): nothing is written
    assert last_used() == noted
    with hub.store.transaction() as s:
        row = s.scalars(select(ApiToken)).one()
        row.last_used_at = utcnow() - timedelta(seconds=61)
    note()  # a minute on: it is
    assert last_used() > noted

    # And each process asks to write it at most once a minute per token.
    clock = [1000.0]
    asked = LastUsed(lambda: clock[0])
    assert [asked.due(1), asked.due(1), asked.due(2)] == [True, False, True]
    clock[0] += 59
    assert asked.due(1) is False
    clock[0] += 2
    assert asked.due(1) is True


def test_a_named_token_is_checked_without_waiting_for_the_write_lock(tmp_path: Path) -> None:
    """The lookup of every request is a read-only transaction: with SQLite's write
    lock held from outside, a good token is let in and a revoked one refused, at
    once (the note of its use waits, beside the request)."""
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    hub = make_hub(tmp_path, url, tmp_path / "dags")

    async def scenario(
        admin: httpx.AsyncClient, client_for: Callable[[str], httpx.AsyncClient]
    ) -> None:
        reader = client_for(await create(admin, "reader", "viewer"))
        old = client_for(await create(admin, "old", "operator"))
        await admin.post("/api/v1/tokens/old/revoke")
        with sqlite_write_lock(url) as let_go:
            good = await reader.get("/api/v1/dags")
            refused = await old.get("/api/v1/dags")
            answered_while_locked = not let_go.is_set()
        assert good.status_code == 200, good.text
        assert (refused.status_code, _reason(refused)) == (401, "token revoked")
        assert answered_while_locked

    try:
        run(hub, scenario)
    finally:
        hub.store.dispose()


def test_a_viewer_reads_a_connections_extra_with_its_secret_values_masked(hub: Hub) -> None:
    """An extra is kept encrypted beside the password and often holds a key; a
    viewer (or anyone without ``reveal``) sees the values under secret-looking keys
    as ``***``, an admin with ``reveal`` the whole extra."""
    extra = {
        "sslmode": "require",
        "aws_secret_access_key": "s3cr3t",
        "auth": {"API_KEY": "k-123", "user": "etl"},
        "tokens": ["t-1", {"id": 7}],
        "Authorization": None,
    }
    shown = {
        "sslmode": "require",
        "aws_secret_access_key": "***",
        "auth": {"API_KEY": "***", "user": "etl"},
        "tokens": ["***", {"id": "***"}],
        "Authorization": None,
    }

    async def scenario(
        admin: httpx.AsyncClient, client_for: Callable[[str], httpx.AsyncClient]
    ) -> None:
        body = {"conn_id": "vault", "uri": "postgres://etl:pw@db/sales", "extra": extra}
        made = await admin.post("/api/v1/connections", json=body)
        assert made.status_code == 201, made.text
        viewer = client_for(await create(admin, "vera", "viewer"))
        for client in (viewer, admin):
            got = await client.get("/api/v1/connections/vault")
            assert got.status_code == 200, got.text
            assert got.json()["extra"] == shown
            assert "s3cr3t" not in got.text
            assert "k-123" not in got.text
        revealed = await admin.get("/api/v1/connections/vault", params={"reveal": "true"})
        assert revealed.json()["extra"] == extra

    run(hub, scenario)
