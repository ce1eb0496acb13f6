"""Hostile networks: TLS with a private CA, and a hub reachable only through an
authenticating HTTP CONNECT proxy."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.processes import REPO, Hub, Worker, die_with_pytest, free_port, wait_for

pytestmark = pytest.mark.integration

DAG = """
    from tether import DAG, BashOperator
    with DAG("over_the_wire"):
        BashOperator(task_id="t", bash_command="echo crossed the wire", queue="acme")
"""


@pytest.fixture
def tls_hub(tmp_path: Path, tls: dict[str, Path]) -> Iterator[Hub]:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "wire.py").write_text(textwrap.dedent(DAG))
    hub = Hub(
        tmp_path / "hub-home",
        dags,
        f"sqlite:///{tmp_path / 'hub.db'}",
        scheme="https",
        extra=["--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"])],
        verify=str(tls["ca"]),
    )
    try:
        hub.api.wait_dags("over_the_wire")
        yield hub
    finally:
        hub.stop()


def test_a_worker_runs_a_dag_over_tls_with_a_private_ca(
    tls_hub: Hub, tls: dict[str, Path], tmp_path: Path
) -> None:
    # Without the CA the hub's certificate is refused (the worker keeps retrying,
    # saying why, as it does for any failure to connect).
    untrusting = Worker(tls_hub, tmp_path / "untrusting", "acme", "no-ca")
    try:
        wait_for(
            lambda: "CERTIFICATE_VERIFY_FAILED" in untrusting.output(),
            30,
            "the certificate to be refused",
        )
    finally:
        untrusting.stop()

    worker = Worker(
        tls_hub, tmp_path / "w", "acme", "acme-tls", extra=["--ca-file", str(tls["ca"])]
    )
    try:
        worker.wait_registered()
        run = tls_hub.api.wait_run("over_the_wire", tls_hub.api.trigger("over_the_wire"))
        assert run["state"] == "success"
        assert "crossed the wire" in tls_hub.api.log("over_the_wire", run["run_id"], "t")
    finally:
        worker.stop()


def _proxy(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """The test proxy, on a free port, knowing the name hub.tether-test.invalid;
    ``extra``: more of its arguments (``--blackhole-while FILE``)."""
    port = free_port()
    log_path = tmp_path / "proxy.log"
    with log_path.open("w") as log:
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.proxy",
                "--port",
                str(port),
                "--user",
                "edge",
                "--password",
                "s3cret",
                "--map",
                "hub.tether-test.invalid",
                *extra,
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_pytest,
        )
    try:
        wait_for(lambda: "READY" in log_path.read_text(), 30, "the proxy to listen")
    except BaseException:
        proxy.kill()
        proxy.wait()
        raise
    return proxy, port, log_path


def test_plain_http_to_a_hub_off_this_machine_needs_insecure_http(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "wire.py").write_text(textwrap.dedent(DAG))
    hub = Hub(tmp_path / "hub-home", dags, f"sqlite:///{tmp_path / 'hub.db'}")
    proxy, port, proxied = _proxy(tmp_path)
    try:
        hub.api.wait_dags("over_the_wire")
        hub_url = f"http://hub.tether-test.invalid:{hub.port}"
        via = ["--proxy", f"http://edge:s3cret@127.0.0.1:{port}"]
        refused = subprocess.run(
            [sys.executable, "-m", "tether", "worker", "--hub", hub_url, *via]
            + ["--home", str(tmp_path / "refused"), "--enrol", "tte_0000000000000000.x"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1
        assert "refusing plain HTTP to hub.tether-test.invalid" in refused.stderr
        assert "--insecure-http" in refused.stderr
        assert not (tmp_path / "refused" / "credential.json").exists()
        assert "FORWARD" not in proxied.read_text()  # it never even tried
        worker = Worker(
            hub,
            tmp_path / "w",
            "acme",
            "acme-http",
            hub_url=hub_url,
            extra=[*via, "--insecure-http"],
        )
        try:
            worker.wait_registered()
            run = hub.api.wait_run("over_the_wire", hub.api.trigger("over_the_wire"))
            assert run["state"] == "success"
        finally:
            worker.stop()
        assert f"FORWARD POST hub.tether-test.invalid:{hub.port}" in proxied.read_text()
    finally:
        proxy.terminate()
        proxy.wait(10)
        hub.stop()


def test_a_worker_reaches_the_hub_only_through_a_connect_proxy(
    tls_hub: Hub, tls: dict[str, Path], tmp_path: Path
) -> None:
    proxy, port, proxied = _proxy(tmp_path)
    try:
        # This name resolves nowhere but inside the proxy.
        hub_url = f"https://hub.tether-test.invalid:{tls_hub.port}"
        worker = Worker(
            tls_hub,
            tmp_path / "w",
            "acme",
            "acme-proxied",
            hub_url=hub_url,
            extra=["--ca-file", str(tls["ca"]), "--proxy", f"http://edge:s3cret@127.0.0.1:{port}"],
        )
        try:
            worker.wait_registered()
            run = tls_hub.api.wait_run("over_the_wire", tls_hub.api.trigger("over_the_wire"))
            assert run["state"] == "success"
            assert {t["worker"] for t in run["tasks"]} == {"acme-proxied"}
        finally:
            worker.stop()
        assert f"CONNECT hub.tether-test.invalid:{tls_hub.port}" in proxied.read_text()
        assert "s3cret" not in worker.output()  # proxy credentials stay out of logs

        # The standard environment variables work too, and bad proxy credentials fail loudly.
        env = {"HTTPS_PROXY": f"http://edge:wrong@127.0.0.1:{port}"}
        denied = Worker(
            tls_hub,
            tmp_path / "denied",
            "acme",
            "acme-denied",
            hub_url=hub_url,
            extra=["--ca-file", str(tls["ca"])],
            env=env,
        )
        try:
            wait_for(lambda: "DENIED" in proxied.read_text(), 30, "the proxy to refuse")
            wait_for(lambda: "407" in denied.output(), 30, "the worker to say why")
            assert "edge:wrong" not in denied.output()
        finally:
            denied.stop()
        assert all(w["name"] != "acme-denied" for w in tls_hub.api.get("/workers")["workers"])
    finally:
        proxy.terminate()
        proxy.wait(10)
