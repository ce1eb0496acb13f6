"""Made-up attempt tokens, tried by an anonymous client on loopback: they cost the
hub no more than made-up worker credentials do (a read, never SQLite's write
lock) and are throttled per address like them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.processes import Hub, running_hub, sqlite_write_lock

pytestmark = pytest.mark.integration

SECRET = "/api/worker/v1/secrets/connections/warehouse"
#: Has an attempt token's form (``tta_`` and 43 characters); no attempt holds it.
MADE_UP = "tta_" + "x" * 43


def test_a_made_up_attempt_token_never_waits_for_the_write_lock(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    with running_hub(tmp_path, "sqlite", None, dags, workers=()) as (hub, _):
        with sqlite_write_lock(hub.database_url) as let_go:
            answer = httpx.get(
                f"{hub.url}{SECRET}", headers={"Authorization": f"Bearer {MADE_UP}"}, timeout=25
            )
            answered_while_locked = not let_go.is_set()
        assert answer.status_code == 401, answer.text
        assert answered_while_locked


def test_made_up_attempt_tokens_are_throttled_per_address(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    hub = Hub(
        tmp_path / "home",
        dags,
        f"sqlite:///{tmp_path / 'hub.db'}",
        TETHER_AUTH_FAILURES_PER_MINUTE="5",
    )
    try:
        with httpx.Client(base_url=hub.url) as http:
            codes = [
                http.get(SECRET, headers={"Authorization": f"Bearer tta_{i:043d}"}).status_code
                for i in range(12)
            ]
        assert codes[:5] == [401] * 5
        assert set(codes[5:]) == {429}
    finally:
        hub.stop()
