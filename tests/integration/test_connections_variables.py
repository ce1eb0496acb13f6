"""Connections and variables on a real hub, on SQLite and PostgreSQL: kept through
the CLI and REST, encrypted at rest (the database's raw bytes and a pg_dump hold
no secret), hostile input refused with a reason, re-encrypted under a new key
while the hub serves, and every change in the audit log."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import create_engine, text

from tests.conftest import BACKENDS
from tests.integration.processes import ADMIN_TOKEN, REPO, Hub, RawWorker, running_hub, tether_cli

pytestmark = pytest.mark.integration

PASSWORD = "pä$$:w/rd@100%?#&-秘密"
SECRET_VALUE = "sk-live-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.fixture(scope="module", params=BACKENDS)
def hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp(f"secrets-{request.param}")
    (root / "dags").mkdir()
    with running_hub(root, request.param, _postgres_reason, root / "dags", workers=()) as (hub, _):
        yield hub


def _uri(password: str = PASSWORD) -> str:
    return (
        f"postgres://loader:{quote(password, safe='')}@db.acme.internal:5432/sales?sslmode=require"
    )


def _cli(hub: Hub, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if stdin is None:
        return tether_cli(*args, hub=hub)
    return subprocess.run(
        [sys.executable, "-m", "tether", *args, "--hub", hub.url],
        env={**os.environ, "TETHER_TOKEN": ADMIN_TOKEN},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def _audit(hub: Hub, target: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``(actor, action, details)`` of the audit entries about ``target``, oldest first."""
    engine = create_engine(hub.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT actor, action, details FROM audit_log WHERE target = :t ORDER BY id"),
                {"t": target},
            ).all()
    finally:
        engine.dispose()
    return [(a, b, json.loads(d) if isinstance(d, str) else d) for a, b, d in rows]


def test_connections_are_kept_listed_revealed_and_deleted_through_the_cli(hub: Hub) -> None:
    added = _ok(
        _cli(
            hub,
            "connections",
            "add",
            "warehouse",
            "--uri",
            _uri(),
            "--extra",
            json.dumps({"sslmode": "verify-full", "token": SECRET_VALUE}),
            "--queues",
            "acme,beta",
            "--description",
            "central warehouse",
        )
    )
    assert added.strip() == "connection warehouse: created"
    listed = _ok(_cli(hub, "connections", "list"))
    (line,) = [row for row in listed.splitlines() if row.startswith("warehouse ")]
    assert line.split()[:4] == ["warehouse", "postgres", "db.acme.internal", "acme,beta"]
    listed_json = _ok(_cli(hub, "connections", "list", "--json"))
    for text_out in (listed, listed_json):
        assert PASSWORD not in text_out
        assert SECRET_VALUE not in text_out  # the extra is never in a listing
    shown = _ok(_cli(hub, "connections", "get", "warehouse"))
    assert PASSWORD not in shown
    assert "password:     (set; --reveal shows it)" in shown
    assert "host:         db.acme.internal" in shown
    assert "login:        loader" in shown
    assert "schema:       sales" in shown
    assert "port:         5432" in shown
    assert '"sslmode": "verify-full"' in shown  # --extra replaced the URI's
    revealed = _ok(_cli(hub, "connections", "get", "warehouse", "--reveal", "--json"))
    conn = json.loads(revealed)
    assert conn["password"] == PASSWORD
    assert conn["queues"] == ["acme", "beta"]
    assert conn["description"] == "central warehouse"
    # The URI it shows reads back as the same connection.
    from tether.sdk.connection import Connection

    again = Connection.from_uri("warehouse", conn["uri"])
    assert (again.password, again.host, again.extra_dejson) == (
        PASSWORD,
        "db.acme.internal",
        {"sslmode": "verify-full", "token": SECRET_VALUE},
    )
    # A name is taken until deleted, unless replaced on purpose.
    taken = _cli(hub, "connections", "add", "warehouse", "--uri", "http://example.com")
    assert taken.returncode == 1
    assert "hub answered 409: connection 'warehouse' exists" in taken.stderr
    replaced = _cli(hub, "connections", "add", "warehouse", "--uri", "-", "--replace", stdin=_uri())
    assert _ok(replaced).strip() == "connection warehouse: replaced"
    assert hub.api.get("/connections/warehouse")["extra"] == {"sslmode": "require"}
    assert _ok(_cli(hub, "connections", "delete", "warehouse")).strip() == (
        "connection warehouse deleted"
    )
    gone = _cli(hub, "connections", "get", "warehouse")
    assert gone.returncode == 1
    assert "hub answered 404: no connection 'warehouse'" in gone.stderr
    assert [a[:2] for a in _audit(hub, "connection:warehouse")] == [
        ("admin", "connection.create"),
        ("admin", "connection.reveal"),
        ("admin", "connection.update"),
        ("admin", "connection.delete"),
    ]
    details = _audit(hub, "connection:warehouse")[0][2]
    assert details == {
        "conn_type": "postgres",
        "host": "db.acme.internal",
        "queues": ["acme", "beta"],
    }


def test_variables_are_kept_and_a_secret_one_is_shown_only_when_revealed(hub: Hub) -> None:
    _ok(_cli(hub, "variables", "set", "region", "eu-west-1", "--description", "where"))
    _ok(
        _cli(
            hub,
            "variables",
            "set",
            "api_key",
            "-",
            "--secret",
            "--queues",
            "acme",
            stdin=SECRET_VALUE,
        )
    )
    listed = _ok(_cli(hub, "variables", "list"))
    assert SECRET_VALUE not in listed
    assert "eu-west-1" not in listed  # a listing shows no values at all
    rows = {row.split()[0]: row.split()[1:3] for row in listed.splitlines()[1:]}
    assert rows["region"] == ["no", "(every"]
    assert rows["api_key"] == ["yes", "acme"]
    assert _ok(_cli(hub, "variables", "get", "region")) == "eu-west-1\n"
    hidden = _cli(hub, "variables", "get", "api_key")
    assert hidden.returncode == 1
    assert SECRET_VALUE not in hidden.stdout + hidden.stderr
    assert "is secret; --reveal shows its value" in hidden.stdout
    assert "value" not in hub.api.get("/variables/api_key")
    assert _ok(_cli(hub, "variables", "get", "api_key", "--reveal")) == SECRET_VALUE + "\n"
    _ok(_cli(hub, "variables", "set", "region", "eu-central-1"))
    assert hub.api.get("/variables/region")["value"] == "eu-central-1"
    _ok(_cli(hub, "variables", "delete", "api_key"))
    gone = _cli(hub, "variables", "delete", "api_key")
    assert gone.returncode == 1
    assert "hub answered 404: no variable 'api_key'" in gone.stderr
    assert [a[1] for a in _audit(hub, "variable:api_key")] == [
        "variable.create",
        "variable.reveal",
        "variable.delete",
    ]
    assert [a[1] for a in _audit(hub, "variable:region")] == ["variable.create", "variable.update"]
    for _, _, details in _audit(hub, "variable:api_key") + _audit(hub, "variable:region"):
        assert SECRET_VALUE not in json.dumps(details)


HOSTILE = [
    # (method, path, body, status, a piece of the reason)
    ("POST", "/connections", {"conn_id": "c1", "uri": "no scheme"}, 422, "starts with its type"),
    ("POST", "/connections", {"conn_id": "c1", "uri": "pg://u:p@h:99999/db"}, 422, "port"),
    (
        "POST",
        "/connections",
        {"conn_id": "c1", "uri": "pg://h", "extra": "{nope"},
        422,
        "not valid JSON",
    ),
    (
        "POST",
        "/connections",
        {"conn_id": "c1", "uri": "pg://h", "extra": "[1]"},
        422,
        "JSON object",
    ),
    ("POST", "/connections", {"conn_id": "c1", "uri": "pg://h", "extra": 5}, 422, "string"),
    ("POST", "/connections", {"conn_id": "c1"}, 422, "needs a uri or a conn_type"),
    ("POST", "/connections", {"conn_id": "c1", "uri": "pg://h", "host": "x"}, 422, "not both"),
    (
        "POST",
        "/connections",
        {"conn_id": "../etc", "uri": "pg://h"},
        422,
        "invalid connection name",
    ),
    ("POST", "/connections", {"conn_id": "..", "uri": "pg://h"}, 422, "invalid connection name"),
    ("POST", "/connections", {"conn_id": "a/b", "uri": "pg://h"}, 422, "invalid connection name"),
    ("POST", "/connections", {"conn_id": "x" * 251, "uri": "pg://h"}, 422, "at most 250"),
    (
        "POST",
        "/connections",
        {"conn_id": "c1", "uri": "pg://h", "queues": ["a b"]},
        422,
        "invalid queue name",
    ),
    ("POST", "/connections", {"conn_id": "c1", "uri": "pg://h", "colour": 1}, 422, "Extra inputs"),
    ("POST", "/connections", {"conn_id": "c1", "conn_type": "pg", "port": "5432"}, 422, "integer"),
    ("POST", "/connections", {"conn_id": "c1", "conn_type": "pg", "host": "h\u0000"}, 422, "NUL"),
    (
        "POST",
        "/connections",
        {"conn_id": "c1", "conn_type": "pg", "password": "p" * 10_001},
        422,
        "at most 10000",
    ),
    (
        "POST",
        "/connections",
        {"conn_id": "c1", "uri": "pg://h", "extra": {"k": "v" * 70_000}},
        422,
        "the limit is 65536",
    ),
    ("GET", "/connections/a%2F..%2Fb", None, 422, "invalid connection name"),
    ("GET", "/connections/nowhere", None, 404, "no connection 'nowhere'"),
    ("DELETE", "/connections/nowhere", None, 404, "no connection 'nowhere'"),
    ("PUT", "/variables/a%2Fb", {"value": "v"}, 422, "invalid variable name"),
    ("PUT", "/variables/.hidden", {"value": "v"}, 422, "invalid variable name"),
    ("PUT", "/variables/v1", {"value": 5}, 422, "string"),
    ("PUT", "/variables/v1", {"value": "v", "is_secret": "yes"}, 422, "boolean"),
    ("PUT", "/variables/v1", {"value": "v", "queues": ["-x"]}, 422, "invalid queue name"),
    ("PUT", "/variables/v1", {"value": "v" * 100_001}, 422, "at most 100000"),
    ("PUT", "/variables/v1", {"value": "v" * 600_000}, 413, ""),
    ("GET", "/variables/nowhere", None, 404, "no variable 'nowhere'"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "reason"),
    HOSTILE,
    ids=[f"{m} {p[:30]} {s}" for m, p, _, s, _ in HOSTILE],
)
def test_hostile_input_gets_a_4xx_with_the_reason(
    hub: Hub, method: str, path: str, body: Any, status: int, reason: str
) -> None:
    answer = hub.api.http.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert reason in answer.text
    assert "hunter" not in answer.text
    # Nothing was stored by a refused request.
    names = {c["conn_id"] for c in hub.api.get("/connections")["connections"]}
    assert not names & {"c1", "..", "../etc", "a/b"}
    assert "v1" not in {v["key"] for v in hub.api.get("/variables")["variables"]}


def test_a_bad_uri_is_refused_without_echoing_the_password(hub: Hub) -> None:
    result = _cli(hub, "connections", "add", "leaky", "--uri", "postgres://u:hunter2#x@db/s")
    assert result.returncode == 1
    assert "hub answered 422" in result.stderr
    assert "percent-encode '#'" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_a_worker_credential_gets_nothing_from_these_routes(hub: Hub) -> None:
    hub.api.http.put("/variables/w_only", json={"value": SECRET_VALUE, "is_secret": True})
    worker = RawWorker(hub, "secrets-w")
    try:
        headers = {"Authorization": f"Bearer {worker.credential}"}
        for method, path, body in (
            ("GET", "/connections", None),
            ("GET", "/variables", None),
            ("GET", "/variables/w_only?reveal=true", None),
            ("PUT", "/variables/w_only", {"value": "mine now"}),
            ("POST", "/connections", {"conn_id": "w", "uri": "pg://h"}),
            ("DELETE", "/variables/w_only", None),
            ("POST", "/secrets/rotate-key", None),
        ):
            answer = httpx.request(
                method, f"{hub.url}/api/v1{path}", json=body, headers=headers, timeout=30
            )
            assert answer.status_code == 401, (method, path, answer.text)
            assert SECRET_VALUE not in answer.text
    finally:
        worker.close()
    assert hub.api.get("/variables/w_only", params={"reveal": "true"})["value"] == SECRET_VALUE


def _raw_store_bytes(hub: Hub) -> bytes:
    url = hub.database_url
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        files = [db, db.with_name(db.name + "-wal")]
        assert files[1].exists()  # the newest writes are in the WAL: read it too
        return b"".join(f.read_bytes() for f in files)
    dump = subprocess.run(
        ["pg_dump", "--no-owner", url.replace("postgresql+psycopg://", "postgresql://")],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert b"COPY public.connection" in dump.stdout  # the dump has the table's data
    return dump.stdout


def test_no_password_or_secret_value_is_in_the_store_or_the_log_in_clear(hub: Hub) -> None:
    password = "Tr0ub4dor&3-at-rest-ünï"
    value = "at-rest-secret-value-9d8c7b"
    extra_secret = "at-rest-extra-token-5a4b3c"
    _ok(
        _cli(
            hub,
            "connections",
            "add",
            "at_rest",
            "--uri",
            _uri(password),
            "--extra",
            json.dumps({"token": extra_secret}),
        )
    )
    _ok(_cli(hub, "variables", "set", "at_rest_var", value, "--secret"))
    assert hub.api.get("/connections/at_rest", params={"reveal": "true"})["password"] == password
    raw = _raw_store_bytes(hub)
    assert b"at_rest_var" in raw  # the rows are there...
    assert b"db.acme.internal" in raw
    for secret in (password, quote(password, safe=""), value, extra_secret):
        for encoded in (secret.encode(), secret.encode("utf-16-le")):
            assert encoded not in raw, secret  # ...but not their secrets
    assert password not in hub.output()
    assert value not in hub.output()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_rotating_the_key_file_while_the_hub_serves_keeps_every_value(hub: Hub) -> None:
    key_file = hub.home / "secret_key"
    before = key_file.read_text()
    assert _mode(key_file) == 0o600
    # Enough rows for several of the rotation's batches.
    for i in range(230):
        answer = hub.api.http.put(f"/variables/rot_{i}", json={"value": f"v{i}", "is_secret": True})
        assert answer.status_code == 200, answer.text
    _ok(_cli(hub, "connections", "add", "rot_conn", "--uri", _uri()))
    reads: list[tuple[int, str | None]] = []
    first_read, stop = threading.Event(), threading.Event()

    def read_while_rotating() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as c:
            while not stop.is_set():
                got = c.get(f"{hub.url}/api/v1/variables/rot_7", params={"reveal": "true"})
                reads.append((got.status_code, got.json().get("value")))
                first_read.set()

    reader = threading.Thread(target=read_while_rotating)
    reader.start()
    try:
        assert first_read.wait(30)
        rotated = _ok(_cli(hub, "secrets", "rotate-key"))
    finally:
        stop.set()
        reader.join(30)
    assert re.match(r"re-encrypted \d+ connection\(s\) and \d+ variable\(s\)", rotated)
    assert "now the only one in" in rotated
    assert set(reads) == {(200, "v7")}  # every read while rotating found the value
    after = key_file.read_text()
    assert after != before
    assert "," not in after.strip()  # the old key is gone from the file
    assert before.strip() not in after
    assert _mode(key_file) == 0o600
    assert not (hub.home / "secret_key.tmp").exists()
    for i in (0, 99, 100, 229):
        assert hub.api.get(f"/variables/rot_{i}", params={"reveal": "true"})["value"] == f"v{i}"
    conn = hub.api.get("/connections/rot_conn", params={"reveal": "true"})
    assert conn["password"] == PASSWORD
    # The old key opens nothing that is stored now.
    engine = create_engine(hub.database_url)
    try:
        with engine.connect() as db:
            token = db.execute(text("SELECT value FROM variable WHERE key = 'rot_7'")).scalar_one()
    finally:
        engine.dispose()
    assert Fernet(after.strip()).decrypt(token.encode()) == b"v7"
    with pytest.raises(InvalidToken):
        Fernet(before.strip()).decrypt(token.encode())
    (entry,) = [a for a in _audit_all(hub) if a[1] == "secrets.rotate_key"]
    assert entry[2]["variables"] >= 230
    assert entry[2]["source"] == "key_file"


def _audit_all(hub: Hub) -> list[tuple[str, str, dict[str, Any]]]:
    engine = create_engine(hub.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT actor, action, details FROM audit_log ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    return [(a, b, json.loads(d) if isinstance(d, str) else d) for a, b, d in rows]


def test_with_tether_secret_key_rotation_moves_everything_to_its_first_key(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    home, dags, url = tmp_path / "hub", tmp_path / "dags", f"sqlite:///{tmp_path / 'tether.db'}"
    dags.mkdir()
    hub = Hub(home, dags, url, TETHER_SECRET_KEY=old)
    try:
        hub.api.http.put("/variables/env_var", json={"value": SECRET_VALUE, "is_secret": True})
    finally:
        hub.stop()
    assert not (home / "secret_key").exists()  # the environment's key is never written down
    hub = Hub(home, dags, url, port=hub.port, TETHER_SECRET_KEY=f"{new},{old}")
    try:
        rotated = _ok(_cli(hub, "secrets", "rotate-key"))
        assert "first key of TETHER_SECRET_KEY; the others may now be dropped" in rotated
    finally:
        hub.stop()
    hub = Hub(home, dags, url, port=hub.port, TETHER_SECRET_KEY=new)
    try:
        got = hub.api.get("/variables/env_var", params={"reveal": "true"})
        assert got["value"] == SECRET_VALUE
    finally:
        hub.stop()
    # A hub given a key that opens nothing stored says so, and still serves the rest.
    hub = Hub(home, dags, url, port=hub.port, TETHER_SECRET_KEY=old)
    try:
        answer = hub.api.http.get("/variables/env_var")
        assert answer.status_code == 500
        assert "cannot be decrypted with the hub's keys" in answer.json()["detail"]
        assert hub.api.get("/variables")["variables"][0]["key"] == "env_var"
    finally:
        hub.stop()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not-a-key", "key 1 of TETHER_SECRET_KEY is not a Fernet key"),
        (
            # A fixed good key: xdist's workers must collect the same test ids.
            f"{'A' * 43}=,short",
            "key 2 of TETHER_SECRET_KEY is not a Fernet key",
        ),
    ],
    ids=["not-a-key", "second-key-short"],
)
def test_a_bad_tether_secret_key_stops_the_hub_with_the_reason(
    tmp_path: Path, value: str, reason: str
) -> None:
    started = subprocess.run(
        [sys.executable, "-m", "tether", "hub", "--home", str(tmp_path / "hub"), "--port", "0"],
        env={
            **os.environ,
            "TETHER_SECRET_KEY": value,
            "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'tether.db'}",
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 1
    assert f"tether: error: {reason}" in started.stderr
    assert "Traceback" not in started.stderr
    assert "not-a-key" not in started.stderr + started.stdout
    assert not (tmp_path / "tether.db").exists()  # stopped before the store was touched
