"""The audit log, against a real hub on SQLite and PostgreSQL: every admin
change and every enrolment leaves one entry (who, what, to what, from where)
written with the change, and none for a change that was refused; the log is
read with filters through the API and ``tether audit``, by the admin only;
``tether db clean`` keeps it for its own, longer retention."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.integration.processes import PROXY_VARIABLES, Hub, RawWorker, running_hub, tether_cli
from tether.hub.core.runs import utcnow
from tether.hub.store.db import Store
from tether.hub.store.models import AuditEntry

pytestmark = pytest.mark.integration

URI = "s3://lake/audited"
DAGS = f"""
    from datetime import datetime
    from tether import DAG, Asset, BashOperator

    with DAG("audited", schedule="@daily", start_date=datetime(2024, 1, 1),
             catchup=False, is_paused_upon_creation=True):
        BashOperator(task_id="a", bash_command="true") >> BashOperator(
            task_id="b", bash_command="true")

    with DAG("on_asset", schedule=[Asset("{URI}")]):
        BashOperator(task_id="c", bash_command="true")
"""


@pytest.fixture(scope="module", params=BACKENDS)
def hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp(f"audit-{request.param}")
    (root / "dags").mkdir()
    (root / "dags" / "audited.py").write_text(textwrap.dedent(DAGS))
    with running_hub(
        root,
        request.param,
        _postgres_reason,
        root / "dags",
        workers=(),
        wait_dags=("audited", "on_asset"),
    ) as (hub, _):
        yield hub


def _entries(hub: Hub, **params: Any) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = hub.api.get("/audit", params={"limit": 1000, **params})[
        "entries"
    ]
    return entries


def _newest_id(hub: Hub) -> int:
    entries = _entries(hub, limit=1)
    return entries[0]["id"] if entries else 0


def _since(hub: Hub, mark: int) -> list[dict[str, Any]]:
    """Entries written after the entry ``mark``, oldest first."""
    return [e for e in reversed(_entries(hub)) if e["id"] > mark]


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def test_every_admin_change_and_enrolment_is_recorded_once_with_who_and_where(hub: Hub) -> None:
    http = hub.api.http
    mark = _newest_id(hub)
    run_path = "/dags/audited/runs/audit-run-1"

    _ok(
        http.post(
            "/dags/audited/runs", json={"run_id": "audit-run-1", "conf": {"password": "hunter2"}}
        )
    )
    _ok(http.patch("/dags/audited", json={"is_paused": True}))
    _ok(http.patch("/dags/audited", json={"is_paused": False}))
    _ok(http.patch(f"{run_path}/tasks/a", json={"state": "success"}))
    _ok(http.post(f"{run_path}/tasks/b/clear", json={"downstream": False}))
    _ok(http.patch(run_path, json={"state": "failed"}))
    _ok(http.post(f"{run_path}/clear", json={"only_failed": False}))
    backfilled = _ok(
        http.post("/dags/audited/backfills", json={"start": "2024-01-01", "end": "2024-01-02"})
    )
    _ok(http.put("/pools/audit-pool", json={"slots": 3}))
    _ok(http.delete("/pools/audit-pool"))
    event = _ok(http.post("/assets/events", json={"uri": URI, "extra": {"key": "s3cr3t"}}))
    worker = RawWorker(hub, "audit-w1")  # creates a token, spends it, opens a session
    worker_credential = worker.credential
    try:
        _ok(http.post("/workers/audit-w1/maintenance", json={"on": True, "comment": "patching"}))
        _ok(http.post("/workers/audit-w1/maintenance", json={"on": False}))
        _ok(http.post("/workers/audit-w1/shutdown", json={}))
        _ok(http.post("/workers/audit-w1/revoke", json={}))
        _ok(http.delete("/workers/audit-w1"))
    finally:
        worker.close()
    spare = hub.api.enrolment_token("default", "audit-w2")
    spare_id = spare.removeprefix("tte_").split(".")[0]
    _ok(http.post(f"/workers/enrolment-tokens/{spare_id}/revoke", json={}))

    # Refused changes change nothing and leave no entry.
    assert http.post("/dags/nosuchdag/runs", json={}).status_code == 404
    assert http.post("/dags/audited/runs", json={"run_id": "audit-run-1"}).status_code == 409
    assert http.delete("/pools/no-such-pool").status_code == 404
    assert http.post("/workers/no-such-worker/revoke", json={}).status_code == 404
    used = hub.api.enrolment_token("default", "audit-w3")
    used_id = used.removeprefix("tte_").split(".")[0]
    assert httpx.post(f"{hub.url}/api/worker/v1/enrol", json={"token": used}).status_code == 200
    assert httpx.post(f"{hub.url}/api/worker/v1/enrol", json={"token": used}).status_code == 401
    assert http.post(f"/workers/enrolment-tokens/{used_id}/revoke", json={}).status_code == 409

    entries = _since(hub, mark)
    seen = [(e["actor"], e["action"], e["target"], e["address"]) for e in entries]
    admin = [
        ("dag.trigger", "dag:audited"),
        ("dag.pause", "dag:audited"),
        ("dag.unpause", "dag:audited"),
        ("task.mark", "dag:audited"),
        ("task.clear", "dag:audited"),
        ("run.mark", "dag:audited"),
        ("run.clear", "dag:audited"),
        ("dag.backfill", "dag:audited"),
        ("pool.set", "pool:audit-pool"),
        ("pool.delete", "pool:audit-pool"),
        ("asset.event", f"asset:{URI}"),
        ("enrolment_token.create", "worker:audit-w1"),
    ]
    expected = [("admin", action, target, "127.0.0.1") for action, target in admin]
    expected.append(("worker:audit-w1", "worker.enrol", "worker:audit-w1", "127.0.0.1"))
    expected += [
        ("admin", action, "worker:audit-w1", "127.0.0.1")
        for action in (
            "worker.maintenance",
            "worker.maintenance",
            "worker.shutdown",
            "worker.revoke",
            "worker.remove",
        )
    ]
    expected += [
        ("admin", "enrolment_token.create", "worker:audit-w2", "127.0.0.1"),
        ("admin", "enrolment_token.revoke", f"enrolment_token:{spare_id}", "127.0.0.1"),
        ("admin", "enrolment_token.create", "worker:audit-w3", "127.0.0.1"),
        ("worker:audit-w3", "worker.enrol", "worker:audit-w3", "127.0.0.1"),
    ]
    assert seen == expected

    details = [e["details"] for e in entries]
    assert details[0] == {"run_id": "audit-run-1"}  # the run, never its conf
    assert details[3] == {
        "run_id": "audit-run-1",
        "task_id": "a",
        "state": "success",
        "map_indexes": [-1],
    }
    assert details[4] == {
        "run_id": "audit-run-1",
        "task_id": "b",
        "downstream": False,
        "cleared": ["b"],
    }
    assert details[5] == {"run_id": "audit-run-1", "state": "failed"}
    assert details[6] == {"run_id": "audit-run-1", "only_failed": False, "cleared": ["a", "b"]}
    assert details[7]["run_ids"] == backfilled["run_ids"]
    assert len(backfilled["run_ids"]) == 2
    assert details[8] == {"slots": 3}
    assert details[10]["event_id"] == event["event"]["id"]
    assert details[10]["triggered_runs"] == [
        f"{r['dag_id']}/{r['run_id']}" for r in event["triggered_runs"]
    ]
    assert details[11]["queues"] == ["default"]
    assert details[12] == {"token_id": details[11]["id"], "queues": ["default"]}
    assert details[13] == {"on": True, "comment": "patching"}
    assert details[14] == {"on": False, "comment": None}
    assert details[18]["id"] == spare_id
    # No secret, token or credential is ever written down.
    text = json.dumps(entries)
    for secret in (
        "hunter2",
        "s3cr3t",
        worker_credential,
        spare.split(".")[1],
        used.split(".")[1],
    ):
        assert secret not in text


def test_the_log_is_filtered_paged_and_read_from_the_cli(hub: Hub) -> None:
    http = hub.api.http
    mark = _newest_id(hub)
    for i in range(5):
        _ok(http.put(f"/pools/filter-{i}", json={"slots": i}))
    _ok(http.patch("/dags/audited", json={"is_paused": True}))
    worker = RawWorker(hub, "audit-filter-w")
    worker.close()

    pools = _entries(hub, action="pool.")
    assert [e["target"] for e in pools[:5]] == [f"pool:filter-{i}" for i in reversed(range(5))]
    assert all(e["action"].startswith("pool.") for e in pools)
    enrolled = _entries(hub, actor="worker:audit-filter-w")
    assert [e["action"] for e in enrolled] == ["worker.enrol"]
    assert _entries(hub, action="dag.pause", since="5m")[0]["id"] > mark
    assert _entries(hub, since="2999-01-01T00:00:00") == []
    assert _entries(hub, action="pool_") == []  # '_' is a character, not a wildcard
    # Paging: newest first, before_id goes on where the page ended.
    first = hub.api.get("/audit", params={"limit": 2, "action": "pool.set"})
    assert len(first["entries"]) == 2
    second = hub.api.get(
        "/audit",
        params={"limit": 2, "action": "pool.set", "before_id": first["next_before_id"]},
    )
    ids = [e["id"] for e in first["entries"] + second["entries"]]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 4
    assert [e["target"] for e in first["entries"] + second["entries"]] == [
        f"pool:filter-{i}" for i in (4, 3, 2, 1)
    ]

    listed = tether_cli("audit", "--action", "pool.set", "--limit", "3", hub=hub)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["time", "actor", "action", "target", "address", "details"]
    assert lines[1].split()[1:5] == ["admin", "pool.set", "pool:filter-4", "127.0.0.1"]
    assert lines[1].endswith('{"slots":4}')
    assert lines[-1].startswith("more: --before-id ")
    as_json = tether_cli("audit", "--actor", "worker:audit-filter-w", "--json", hub=hub)
    assert as_json.returncode == 0, as_json.stderr
    page = json.loads(as_json.stdout)
    assert [e["action"] for e in page["entries"]] == ["worker.enrol"]
    assert page["next_before_id"] is None


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"since": "yesterday"}, "neither an age"),
        ({"since": "5w"}, "neither an age"),
        ({"since": "999999999d"}, "more than 100 years"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "out of range"),
        ({"since": ""}, "at least 1 character"),
        ({"limit": 0}, "greater than or equal to 1"),
        ({"limit": 1001}, "less than or equal to 1000"),
        ({"limit": "many"}, "valid integer"),
        ({"before_id": -1}, "greater than or equal to 1"),
        ({"before_id": 2**63}, "less than or equal to"),
        ({"actor": "admin\x00"}, "should match pattern"),
        ({"action": "dag%"}, "should match pattern"),
        ({"action": "x" * 101}, "at most 100 characters"),
    ],
)
def test_bad_filters_get_422_with_the_reason(hub: Hub, params: dict[str, Any], reason: str) -> None:
    answer = hub.api.http.get("/audit", params=params)
    assert answer.status_code == 422, answer.text
    assert reason in answer.text


def test_the_cli_shows_the_hubs_reason_for_a_bad_filter(hub: Hub) -> None:
    answer = tether_cli("audit", "--since", "last week", hub=hub)
    assert answer.returncode == 1
    assert "hub answered 422" in answer.stderr
    assert "neither an age" in answer.stderr


def test_only_api_tokens_read_the_audit_log(hub: Hub) -> None:
    worker = RawWorker(hub, "audit-reader")
    try:
        mine = _entries(hub, actor="worker:audit-reader")  # an API token reads it...
        assert [e["action"] for e in mine] == ["worker.enrol"]
        # ...and no one without one does, not even the worker the entries are about.
        # (Any role reads it: tests/integration/test_roles.py.)
        for headers in (
            {"Authorization": f"Bearer {worker.credential}"},
            {"Authorization": "Bearer not-a-token"},
            {},
        ):
            answer = httpx.get(f"{hub.url}/api/v1/audit", headers=headers)
            assert answer.status_code == 401, answer.text
            assert "entries" not in answer.text
    finally:
        worker.close()


def _db_clean(hub: Hub, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-m", "tether", "db", "clean", "--home", str(hub.home), *args],
        env={**env, "TETHER_DATABASE_URL": hub.database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _audit_counts(output: str) -> tuple[int, int]:
    found = re.search(r"^audit entries: (\d+) in all, (\d+) written before", output, re.M)
    assert found, output
    return int(found[1]), int(found[2])


def test_db_clean_keeps_audit_entries_for_their_own_longer_retention(hub: Hub) -> None:
    store = Store(hub.database_url)
    try:
        now = utcnow()
        with store.transaction() as s:
            for days, name in ((800, "ancient"), (400, "old"), (400, "old2"), (100, "kept")):
                s.add(
                    AuditEntry(
                        at=now - timedelta(days=days),
                        actor="admin",
                        action="pool.set",
                        target=f"pool:aged-{name}",
                        details={},
                        address="127.0.0.1",
                    )
                )
        _ok(hub.api.http.put("/pools/young", json={"slots": 1}))

        def aged() -> set[str]:
            return {e["target"] for e in _entries(hub, action="pool.set") if "aged-" in e["target"]}

        total = len(_entries(hub))
        dry = _db_clean(hub, "--older-than", "14d", "--dry-run")
        assert _audit_counts(dry) == (total, 3)
        assert "dry run: nothing deleted" in dry
        assert aged() == {"pool:aged-ancient", "pool:aged-old", "pool:aged-old2", "pool:aged-kept"}

        # Runs are cleaned at 1 day; audit entries at their own default, a year.
        done = _db_clean(hub, "--older-than", "1d", "--batch-size", "2")
        assert _audit_counts(done) == (total, 3)
        assert "deleted 3 audit entry(ies)" in done
        assert aged() == {"pool:aged-kept"}
        assert len(_entries(hub)) == total - 3
        assert _entries(hub, action="pool.set")[0]["target"] == "pool:young"

        shorter = _db_clean(hub, "--older-than", "14d", "--audit-older-than", "30d")
        assert "deleted 1 audit entry(ies)" in shorter
        assert aged() == set()
        assert len(_entries(hub)) == total - 4
    finally:
        store.dispose()


def test_db_clean_refuses_a_bad_audit_retention(tmp_path: Path) -> None:
    for value, reason in (
        ("soon", "invalid duration"),
        ("0d", "must be more than 0"),
        ("inf", "must be under 10000 years"),
        ("nan", "must be under 10000 years"),
        ("99999999d", "must be under 10000 years"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "tether", "db", "clean", "--home", str(tmp_path)]
            + ["--older-than", "14d", "--audit-older-than", value],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"},
        )
        assert result.returncode == 1
        assert reason in result.stderr
