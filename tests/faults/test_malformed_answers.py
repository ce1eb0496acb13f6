"""A proxy that answers 200 with an HTML page (a captive portal, a proxy's
sign-in page) instead of the hub's JSON: the worker treats it as a transport
error, says so, keeps running, and takes work again once the hub answers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.faults.test_networks import _proxy
from tests.integration.processes import Hub, Worker, wait_for

pytestmark = pytest.mark.integration

DAGS = """
    from tether import DAG, BashOperator

    with DAG("after_the_portal"):
        BashOperator(task_id="t", queue="acme", bash_command="echo through")
"""

HIDDEN_HOST = "hub.tether-test.invalid"


def test_a_worker_behind_an_html_answering_proxy_waits_it_out(tmp_path: Path) -> None:
    portal = tmp_path / "portal.on"
    proxy, port, proxied = _proxy(tmp_path, "--html-while", str(portal))
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "portal.py").write_text(textwrap.dedent(DAGS))
    hub = None
    worker = None
    try:
        hub = Hub(
            tmp_path / "hub-home",
            dags,
            f"sqlite:///{tmp_path / 'hub.db'}",
            TETHER_WORKER_HEARTBEAT="1",
        )
        hub.api.wait_dags("after_the_portal")
        worker = Worker(
            hub,
            tmp_path / "w",
            "acme",
            "acme-1",
            hub_url=f"http://{HIDDEN_HOST}:{hub.port}",  # plain HTTP: forwarded requests
            extra=["--proxy", f"http://edge:s3cret@127.0.0.1:{port}", "--insecure-http"],
        )
        worker.wait_registered()
        portal.touch()
        wait_for(lambda: proxied.read_text().count("HTML POST") >= 3, 30, "HTML answers")
        wait_for(lambda: "not JSON" in worker.output(), 30, "the worker to say what it got")
        assert worker.popen.poll() is None  # still running: not a crash
        # Triggered while the portal is up (a poll held open from before may carry it).
        run_id = hub.api.trigger("after_the_portal")

        portal.unlink()
        run = hub.api.wait_run("after_the_portal", run_id, timeout=60)
        assert (run["state"], hub.api.tasks(run)["t"]["worker"]) == ("success", "acme-1")
        assert "Traceback" not in worker.output()
        assert worker.stop() == 0
    finally:
        portal.unlink(missing_ok=True)
        if worker is not None:
            worker.stop()
        if hub is not None:
            hub.stop()
        proxy.terminate()
        proxy.wait(10)
