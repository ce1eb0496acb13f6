"""Every read of the REST API, and a scrape of ``/metrics``, is a read-only
transaction (``state.in_read``, ``Store.read``): on SQLite it answers while
another connection holds the write lock, instead of queueing behind the hub's
writers for up to the busy timeout."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.integration.processes import running_hub, sqlite_write_lock

pytestmark = pytest.mark.integration

DAG = """
from tether import DAG, Asset, BashOperator
with DAG("reader"):
    BashOperator(
        task_id="hello",
        bash_command="echo hello from the reader",
        outlets=[Asset("s3://bucket/reader")],
    )
"""


def test_every_rest_read_answers_while_the_write_lock_is_held(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "reader.py").write_text(textwrap.dedent(DAG))
    with running_hub(tmp_path, "sqlite", None, dags, wait_dags=["reader"]) as (hub, _):
        run = hub.api.run_dag("reader")
        assert run["state"] == "success", run
        http = hub.api.http
        for method, path, body in [
            ("POST", "/connections", {"conn_id": "wh", "uri": "postgres://u:pw@db:5432/x"}),
            ("PUT", "/variables/region", {"value": "eu"}),
            ("PUT", "/pools/etl", {"slots": 2}),
            ("POST", "/workers/enrolment-tokens", {"queues": ["default"]}),
            ("POST", "/assets/events", {"uri": "s3://bucket/reader"}),
        ]:
            made = http.request(method, path, json=body)
            assert made.status_code < 300, (path, made.text)
        values = {
            "dag_id": "reader",
            "run_id": run["run_id"],
            "task_id": "hello",
            "name": "wh",  # of /connections/{name}; /workers/{name} below
            "key": "region",  # of /variables/{key}
        }
        schema = http.get(f"{hub.url}/openapi.json").json()
        reads = []
        for path, operations in schema["paths"].items():
            if "get" not in operations or not path.startswith("/api/v1/"):
                continue
            params = re.findall(r"{(\w+)(?::\w+)?}", path)
            assert set(params) <= set(values), f"no value for the parameters of {path}"
            # {name} is a connection's, but a worker's under /workers/ (running_hub's w1).
            given = {**values, "name": "w1"} if path.startswith("/api/v1/workers/") else values
            reads.append(re.sub(r"{(\w+)(?::\w+)?}", lambda m, g=given: g[m.group(1)], path[7:]))
        assert len(reads) >= 15, reads  # the list really came from the schema
        reads.append(f"{hub.url}/metrics")  # read at scrape time (hub/metrics.py)
        answers: dict[str, int] = {}
        with sqlite_write_lock(hub.database_url, hold=300) as let_go:
            for path in reads:
                # Bounded only so that a hub that waits for the lock fails the test
                # instead of hanging it; a read answers in milliseconds.
                answers[path] = http.get(path, timeout=25).status_code
            answered_while_locked = not let_go.is_set()
        assert answers == dict.fromkeys(reads, 200)
        assert answered_while_locked
        # The log read really read the task's log, not an empty answer.
        log = http.get(f"/dags/reader/runs/{run['run_id']}/tasks/hello/logs")
        assert "hello from the reader" in log.text


def test_a_reveal_is_audited_and_so_is_not_a_read(tmp_path: Path) -> None:
    """The one GET that writes: revealing a secret leaves an audit entry."""
    dags = tmp_path / "dags"
    dags.mkdir()
    with running_hub(tmp_path, "sqlite", None, dags, workers=()) as (hub, _):
        http = hub.api.http
        made = http.post("/connections", json={"conn_id": "wh", "uri": "pg://u:pw@db/x"})
        assert made.status_code == 201, made.text
        shown = http.get("/connections/wh", params={"reveal": "true"})
        assert shown.status_code == 200, shown.text
        assert shown.json()["password"] == "pw"
        entries = http.get("/audit", params={"action": "connection.reveal"}).json()
        assert [e["target"] for e in entries["entries"]] == ["connection:wh"]
