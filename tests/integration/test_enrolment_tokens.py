"""Enrolment tokens managed from the centre, against a real hub on SQLite and
PostgreSQL: listed and revoked, voided with their worker, never replacing a
worker by accident, spent exactly once however many spend them at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.integration.processes import Hub, RawWorker, running_hub, tether_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=BACKENDS)
def hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp(f"tokens-{request.param}")
    (root / "dags").mkdir()
    with running_hub(root, request.param, _postgres_reason, root / "dags", workers=()) as (
        hub,
        _,
    ):
        yield hub


def _spend(hub: Hub, token: str) -> httpx.Response:
    return httpx.post(f"{hub.url}/api/worker/v1/enrol", json={"token": token}, timeout=30)


def _tokens(hub: Hub) -> dict[str, dict[str, object]]:
    return {t["id"]: t for t in hub.api.get("/workers/enrolment-tokens")["tokens"]}


def test_tokens_are_listed_without_secrets_and_revoked_from_the_cli(hub: Hub) -> None:
    made = tether_cli("workers", "token", "create", "--queues", "acme", "--name", "t-a", hub=hub)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    token_id = token.removeprefix("tte_").split(".")[0]
    assert f"one-time enrolment token {token_id} for worker t-a" in made.stderr
    listed = tether_cli("workers", "token", "list", hub=hub)
    assert listed.returncode == 0, listed.stderr
    (line,) = [row for row in listed.stdout.splitlines() if row.startswith(token_id)]
    assert line.split()[1:4] == ["unspent", "t-a", "acme"]
    assert token.split(".")[1] not in listed.stdout  # never the secret
    revoked = tether_cli("workers", "token", "revoke", token_id, hub=hub)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"enrolment token {token_id}: revoked"
    answer = _spend(hub, token)
    assert answer.status_code == 401
    assert answer.json()["detail"] == "this enrolment token was revoked"
    assert _tokens(hub)[token_id]["state"] == "revoked"
    unknown = tether_cli("workers", "token", "revoke", "0" * 16, hub=hub)
    assert unknown.returncode == 1
    assert "no enrolment token" in unknown.stderr


def test_revoking_a_worker_voids_its_unspent_tokens(hub: Hub) -> None:
    worker = RawWorker(hub, "t-b")
    worker.close()
    spare = hub.api.enrolment_token("default", "t-b", replace=True)  # made before the revoke
    assert tether_cli("workers", "revoke", "t-b", hub=hub).returncode == 0
    answer = _spend(hub, spare)
    assert answer.status_code == 401
    assert answer.json()["detail"] == "this enrolment token was revoked"
    assert hub.api.worker("t-b")["state"] == "revoked"
    # A new token, made after the revoke and saying so, re-enrols it.
    again = _spend(hub, hub.api.enrolment_token("default", "t-b", replace=True))
    assert again.status_code == 200, again.text


def test_a_token_never_replaces_a_worker_unless_asked_to(hub: Hub) -> None:
    worker = RawWorker(hub, "t-c")
    try:
        refused = tether_cli(
            "workers", "token", "create", "--queues", "default", "--name", "t-c", hub=hub
        )
        assert refused.returncode == 1
        assert "a worker named 't-c' exists" in refused.stderr
        assert "--replace" in refused.stderr
        assert worker.heartbeat().status_code == 200  # untouched
        made = tether_cli(
            "workers",
            "token",
            "create",
            "--queues",
            "default",
            "--name",
            "t-c",
            "--replace",
            hub=hub,
        )
        assert made.returncode == 0, made.stderr
        assert "it replaces the worker's credential when spent" in made.stderr
        assert _spend(hub, made.stdout.strip()).status_code == 200
        assert worker.heartbeat().status_code == 401  # the old credential is void
    finally:
        worker.close()


def test_two_tokens_for_one_new_name_enrol_it_once(hub: Hub) -> None:
    first = hub.api.enrolment_token("default", "t-d")
    second = hub.api.enrolment_token("default", "t-d")  # no worker yet: allowed
    assert _spend(hub, first).status_code == 200
    answer = _spend(hub, second)
    assert answer.status_code == 409
    assert "was not made to replace it" in answer.json()["detail"]


def test_a_token_is_spent_exactly_once_however_many_spend_it_at_once(hub: Hub) -> None:
    token = hub.api.enrolment_token("default", "t-e")
    start = threading.Barrier(12)
    answers: list[int] = []

    def spend() -> None:
        start.wait()
        answers.append(_spend(hub, token).status_code)

    threads = [threading.Thread(target=spend) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200] + [401] * 11
    assert [t["state"] for t in _tokens(hub).values() if t["name"] == "t-e"] == ["used"]


def test_spent_tokens_cannot_be_revoked(hub: Hub) -> None:
    token = hub.api.enrolment_token("default", "t-f")
    assert _spend(hub, token).status_code == 200
    token_id = token.removeprefix("tte_").split(".")[0]
    answer = hub.api.http.post(f"/workers/enrolment-tokens/{token_id}/revoke")
    assert answer.status_code == 409
    assert "revoke its worker instead" in answer.json()["detail"]
