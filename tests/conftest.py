"""Shared fixtures: the database URL for each backend the suite runs against.

SQLite needs nothing. PostgreSQL is used at 127.0.0.1:5432 (override with
TETHER_TEST_PG_URL); each test module gets a fresh database that is dropped
afterwards. When PostgreSQL is unreachable its tests are skipped, except
with CI=true, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get(
    "TETHER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", "postgres"]
SOURCE = Path(__file__).resolve().parents[1] / "src" / "tether"


def pytest_configure(config: pytest.Config) -> None:
    """Compile Tether's own modules to bytecode once, in the controlling process.

    The suite starts hundreds of hub, worker and CLI processes; where
    PYTHONDONTWRITEBYTECODE is set (many CI machines set it) each of them
    would otherwise compile every module it imports from source. The
    environment's packages are compiled at install (``compile-bytecode`` in
    pyproject.toml); an out-of-date file is still compiled afresh on import.
    """
    if not hasattr(config, "workerinput"):
        import compileall

        compileall.compile_dir(SOURCE, quiet=1)


def _pg_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True, connect_timeout=5
    )


def postgres_available() -> str | None:
    """None if PostgreSQL answers, else the reason."""
    try:
        with _pg_connect(PG_ADMIN_URL) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL unreachable at {PG_ADMIN_URL}: {exc}"
    return None


@pytest.fixture(scope="session")
def _postgres_reason() -> str | None:
    return postgres_available()


def make_database_url(backend: str, tmp: Path, reason: str | None) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'tether.db'}"
        return
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    with _pg_connect(PG_ADMIN_URL) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_connect(PG_ADMIN_URL) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, _postgres_reason: str | None
) -> Iterator[str]:
    """A fresh, empty database of each backend (function scope)."""
    yield from make_database_url(request.param, tmp_path, _postgres_reason)
