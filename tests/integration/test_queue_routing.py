"""Queues route work to the right worker: a worker serving only ``default``
never takes a ``customer-acme`` task; one serving ``customer-acme`` takes it
as soon as it connects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_database_url
from tests.integration.processes import EXAMPLES, Hub, Worker, tether_cli, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    urls = make_database_url("sqlite", tmp_path, None)
    hub = Hub(tmp_path / "hub-home", EXAMPLES, next(urls))
    try:
        hub.api.wait_dags("customer_acme_extract")
        yield hub
    finally:
        hub.stop()


def test_a_customer_task_waits_for_a_worker_of_its_queue(hub: Hub, tmp_path: Path) -> None:
    default = Worker(hub, tmp_path / "default-worker", "default", "default-only")
    acme = None
    try:
        default.wait_registered()
        run_id = hub.api.trigger("customer_acme_extract")
        # Prove the default worker is live and claiming while the acme task waits:
        # a default-queue DAG triggered after it runs to the end.
        other = hub.api.trigger("taskflow_etl")
        assert hub.api.wait_run("taskflow_etl", other)["state"] == "success"
        first = hub.api.tasks(hub.api.run("customer_acme_extract", run_id))["check_source"]
        assert first["state"] == "queued"
        assert first["worker"] is None
        queues = {q["name"]: q for q in hub.api.get("/queues")["queues"]}
        assert queues["customer-acme"]["queued"] >= 1
        assert queues["customer-acme"]["workers"] == []
        assert "default-only" in queues["default"]["workers"]

        acme = Worker(hub, tmp_path / "acme-worker", "customer-acme", "acme-site")
        run = hub.api.wait_run("customer_acme_extract", run_id)
        assert run["state"] == "success"
        assert {t["worker"] for t in run["tasks"]} == {"acme-site"}
    finally:
        if acme is not None:
            acme.stop()
        default.stop()


def test_a_worker_with_an_invalid_queue_name_refuses_to_start(hub: Hub, tmp_path: Path) -> None:
    bad = Worker(
        hub,
        tmp_path / "bad",
        "default",
        "bad-queue",
        extra=["--queues", "default,no spaces allowed"],
    )
    code = wait_for(lambda: bad.popen.poll(), 30, "the worker to exit")
    bad.stop()
    assert code == 1
    assert "invalid queue name 'no spaces allowed'" in bad.output()


def test_a_worker_with_a_bad_enrolment_token_exits_with_the_reason(
    hub: Hub, tmp_path: Path
) -> None:
    bad = Worker(hub, tmp_path / "bad", "default", "intruder", enrol="tte_0000.not-a-token")
    code = wait_for(lambda: bad.popen.poll() is not None, 30, "the worker to exit")
    bad.stop()
    assert code
    assert "enrolment refused: unknown enrolment token" in bad.output()


def test_workers_are_managed_from_the_cli(hub: Hub, tmp_path: Path) -> None:
    created = tether_cli(
        "workers",
        "token",
        "create",
        "--queues",
        "default",
        "--name",
        "cli-worker",
        "--expires",
        "10m",
        hub=hub,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("tte_")
    token_id = token.removeprefix("tte_").split(".")[0]
    assert f"one-time enrolment token {token_id} for worker cli-worker" in created.stderr
    worker = Worker(hub, tmp_path / "w", "default", "cli-worker", enrol=token)
    try:
        worker.wait_registered()
        listed = tether_cli("workers", "list", hub=hub)
        assert listed.returncode == 0, listed.stderr
        assert "cli-worker" in listed.stdout
        on = tether_cli(
            "workers", "maintenance", "cli-worker", "on", "--comment", "upgrade", hub=hub
        )
        assert on.returncode == 0, on.stderr
        wait_for(
            lambda: "upgrade" in tether_cli("workers", "list", hub=hub).stdout,
            15,
            "the comment in the list",
        )
        revoked = tether_cli("workers", "revoke", "cli-worker", hub=hub)
        assert revoked.returncode == 0, revoked.stderr
        wait_for(lambda: worker.popen.poll() is not None, 30, "the revoked worker to exit")
        missing = tether_cli("workers", "revoke", "nobody", hub=hub)
        assert missing.returncode == 1
        assert "no worker 'nobody'" in missing.stderr
        bad = tether_cli(
            "workers", "token", "create", "--queues", "default", "--expires", "soon", hub=hub
        )
        assert bad.returncode == 1
        assert "invalid duration 'soon'" in bad.stderr
    finally:
        worker.stop()
