"""Prometheus metrics, scraped from a real hub with a real worker on SQLite and
PostgreSQL: after a small DAG ran and one task waits on a queue no worker
serves, ``/metrics`` has each series the platform engineer alerts on, with
plausible values, and no label that carries an id; it needs an API token
(a viewer's does, a worker's credential does not) unless
``TETHER_PUBLIC_METRICS=1``."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.conftest import BACKENDS
from tests.integration.processes import Hub, running_hub, wait_for
from tether.worker.credential import Credential

pytestmark = pytest.mark.integration

UNSERVED = "nobody-serves"
CHAIN = ("a", "b", "c")
DAGS = f"""
    from tether import DAG, BashOperator

    with DAG("chain"):
        BashOperator(task_id="a", bash_command="true") >> BashOperator(
            task_id="b", bash_command="true") >> BashOperator(task_id="c", bash_command="true")

    with DAG("stranded"):
        BashOperator(task_id="waits", bash_command="true", queue="{UNSERVED}")
"""


@dataclass
class Scene:
    hub: Hub
    #: The run of ``chain`` that succeeded and the one of ``stranded`` that waits.
    chain_run: str
    stranded_run: str
    viewer: str


@pytest.fixture(scope="module", params=BACKENDS)
def scene(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Scene]:
    root = tmp_path_factory.mktemp(f"metrics-{request.param}")
    (root / "dags").mkdir()
    (root / "dags" / "metered.py").write_text(textwrap.dedent(DAGS))
    with running_hub(
        root, request.param, _postgres_reason, root / "dags", wait_dags=("chain", "stranded")
    ) as (hub, _):
        run = hub.api.run_dag("chain")
        assert run["state"] == "success", run
        stranded = hub.api.trigger("stranded")
        wait_for(
            lambda: hub.api.tasks(hub.api.run("stranded", stranded))["waits"]["state"] == "queued",
            30,
            "the stranded task to be queued",
        )
        viewer = hub.api.post("/tokens", {"name": "prometheus", "role": "viewer"})["token"]
        yield Scene(hub, run["run_id"], stranded, viewer)


def scrape(hub: Hub, token: str | None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(hub.url + "/metrics", headers=headers, timeout=30)


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    """The one sample ``name`` with ``labels`` (others may be there too)."""
    matching = [s for s in found if s.name == name and labels.items() <= s.labels.items()]
    assert len(matching) == 1, (name, labels, matching)
    return matching[0].value


def total(found: list[Sample], name: str, **labels: str) -> float:
    """The sum of every sample ``name`` with ``labels``, over the other labels."""
    return sum(s.value for s in found if s.name == name and labels.items() <= s.labels.items())


def test_each_series_has_plausible_values(scene: Scene) -> None:
    answer = scrape(scene.hub, scene.viewer)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answer.text
    for name in (
        "tether_queue_depth",
        "tether_queue_oldest_age_seconds",
        "tether_task_instances",
        "tether_workers",
        "tether_dispatch_latency_seconds",
        "tether_scheduler_pass_seconds",
        "tether_api_request_duration_seconds",
    ):
        assert f"# HELP {name} " in text, name
    found = samples(text)

    assert value(found, "tether_queue_depth", queue=UNSERVED) == 1
    assert value(found, "tether_queue_oldest_age_seconds", queue=UNSERVED) > 0
    assert value(found, "tether_queue_depth", queue="default") == 0  # served, empty

    assert value(found, "tether_task_instances", state="success") >= len(CHAIN)
    assert value(found, "tether_task_instances", state="queued") == 1
    assert value(found, "tether_task_instances", state="failed") == 0

    def counted() -> bool:
        state = scene.hub.api.worker("w1")["state"]
        now = samples(scrape(scene.hub, scene.viewer).text)
        return value(now, "tether_workers", state=state) >= 1

    wait_for(counted, 30, "the worker counted in its state")

    dispatched = value(found, "tether_dispatch_latency_seconds_count", queue="default")
    assert dispatched >= len(CHAIN)
    waited = value(found, "tether_dispatch_latency_seconds_sum", queue="default")
    assert math.isfinite(waited)
    assert waited >= 0
    assert total(found, "tether_dispatch_latency_seconds_count", queue=UNSERVED) == 0

    assert value(found, "tether_scheduler_pass_seconds_count") > 0
    assert math.isfinite(value(found, "tether_scheduler_pass_seconds_sum"))

    assert (
        total(
            found,
            "tether_api_request_duration_seconds_count",
            method="POST",
            route="/api/v1/dags/{dag_id}/runs",
            status="2xx",
        )
        >= 2
    )
    assert (
        total(
            found,
            "tether_api_request_duration_seconds_count",
            route="/api/v1/dags/{dag_id}/runs/{run_id}",
            status="2xx",
        )
        > 0
    )
    assert (
        total(found, "tether_api_request_duration_seconds_count", route="/api/worker/v1/poll") > 0
    )


def test_no_label_carries_an_id(scene: Scene) -> None:
    """Routes are templates: neither run id, nor a made-up path, becomes a label value."""
    hub = scene.hub
    missing = hub.api.http.get("/dags/chain/runs/no-such-run-4711")
    assert missing.status_code == 404
    stray = hub.api.http.get("/no/such/route/4712")
    assert stray.status_code == 404
    weird = hub.api.http.request("BREW", "/dags")
    assert weird.status_code == 405
    found = samples(scrape(hub, scene.viewer).text)
    values = {v for s in found for v in s.labels.values()}
    for raw in (scene.chain_run, scene.stranded_run, "no-such-run-4711", "4712", "BREW"):
        assert not [v for v in values if raw in v], raw
    assert total(found, "tether_api_request_duration_seconds_count", route="unmatched") > 0
    assert total(found, "tether_api_request_duration_seconds_count", method="other") > 0


def test_needs_an_api_token(scene: Scene) -> None:
    hub = scene.hub
    anonymous = scrape(hub, None)
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"] == "missing bearer token"
    assert "tether_" not in anonymous.text
    assert scrape(hub, "not-a-token").status_code == 401
    credential = Credential.load(hub.home.parent / "w1")
    assert credential is not None
    assert scrape(hub, credential.credential).status_code == 401  # a worker is no API client
    assert scrape(hub, scene.viewer).status_code == 200


def test_a_hostile_accept_header_gets_the_text_format(scene: Scene) -> None:
    for accept in (
        "application/openmetrics-text; version=abc",
        "text/plain; version=x.y",
        "*/*;" * 1000,
    ):
        answer = scrape(scene.hub, scene.viewer, accept=accept)
        assert answer.status_code == 200, (accept, answer.text)
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_public_with_the_setting(tmp_path: Path) -> None:
    (tmp_path / "dags").mkdir()
    with running_hub(
        tmp_path, "sqlite", None, tmp_path / "dags", workers=(), TETHER_PUBLIC_METRICS="1"
    ) as (hub, _):
        answer = scrape(hub, None)
        assert answer.status_code == 200, answer.text
        assert value(samples(answer.text), "tether_task_instances", state="queued") == 0
        assert hub.api.http.get("/dags").status_code == 200
        assert httpx.get(hub.url + "/api/v1/dags", timeout=30).status_code == 401  # only /metrics
