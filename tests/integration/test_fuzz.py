"""Every endpoint of both APIs, fuzzed from the OpenAPI document a real hub
serves, on SQLite and PostgreSQL: no request, however malformed, gets a 5xx.

Requests carry the admin token on ``/api/v1`` and a real worker's credential
and session on ``/api/worker/v1``, so that they reach the routes and the
store, not only the gate. Generation is derandomized (the same cases every
run); for a longer hunt by hand, ``TETHER_FUZZ_EXAMPLES`` raises the number
per endpoint and ``TETHER_FUZZ_RANDOM=1`` draws new cases each run.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import BACKENDS
from tests.integration.processes import ADMIN_TOKEN, Hub, RawWorker, running_hub

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("TETHER_FUZZ_EXAMPLES", "25"))
RANDOM = os.environ.get("TETHER_FUZZ_RANDOM") == "1"

DAG = """
    from tether import DAG, BashOperator, Param, task

    with DAG("fuzzed", params={"n": Param(1, type="integer", minimum=0)}, schedule="@daily",
             start_date=__import__("datetime").datetime(2026, 1, 1)):
        @task.branch
        def choose() -> str:
            return "left"

        choose() >> [BashOperator(task_id="left", bash_command="true"),
                     BashOperator(task_id="right", bash_command="true")]
"""


@dataclass
class Target:
    hub: Hub
    worker_headers: dict[str, str]


@pytest.fixture(scope="module", params=BACKENDS)
def target(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Target]:
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    (root / "dags").mkdir()
    (root / "dags" / "fuzzed.py").write_text(textwrap.dedent(DAG))
    with running_hub(
        root,
        request.param,
        _postgres_reason,
        root / "dags",
        workers=(),
        wait_dags=["fuzzed"],
        # Every made-up credential is a 401; none of them may turn into 429s here.
        TETHER_AUTH_FAILURES_PER_MINUTE="1000000",
    ) as (hub, _):
        worker = RawWorker(hub, "fuzz-worker")
        try:
            hub.api.trigger("fuzzed")
            yield Target(hub, dict(worker.http.headers))
        finally:
            worker.close()


def _fuzz(operation: Any, base_url: str, headers: dict[str, str], failures: list[str]) -> None:
    """Send ``EXAMPLES`` generated cases of one operation; note every 5xx."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        if case.path.endswith("/poll") and isinstance(case.body, dict):
            case.body["wait"] = 0  # a held poll would only make the fuzzing slow
        response = case.call(base_url=base_url, headers=dict(headers), timeout=60)
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} query={case.query!r} "
                f"body={case.body!r}: {response.status_code} {response.text[:500]}"
            )

    check()


#: The REST API's document and the worker API's, each served by the hub.
DOCUMENTS = ("/openapi.json", "/api/worker/v1/openapi.json")


def test_no_request_gets_a_server_error(target: Target) -> None:
    """Each operation of both served OpenAPI documents, ``EXAMPLES`` generated cases each."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    failures: list[str] = []
    operations = [
        result.ok()
        for document in DOCUMENTS
        for result in schemathesis.openapi.from_url(
            f"{target.hub.url}{document}"
        ).get_all_operations()
    ]
    assert len(operations) > 50  # both APIs, every route
    for operation in operations:
        worker_api = operation.path.startswith("/api/worker/v1")
        _fuzz(operation, target.hub.url, target.worker_headers if worker_api else admin, failures)
    assert failures == []
