"""Need-to-know delivery of connections and variables, with a real hub and real
workers: a task gets what it declares and nothing else, from its worker's own
store first, masked in its log; the job carries no value; an attempt's token
dies with the attempt; every hand-out and refusal is in the audit log."""

from __future__ import annotations

import base64
import json
import stat
import textwrap
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.integration.processes import (
    Hub,
    RawWorker,
    Worker,
    running_hub,
    tether_cli,
    wait_for,
)

pytestmark = pytest.mark.integration

PASSWORD = "p@ss:w/rd%42-warehouse"
WAREHOUSE_URI = f"postgresql://loader:{quote(PASSWORD, safe='')}@wh.example.internal:5439/dw"
API_TOKEN = "tok-SECRET-variable-77"
#: The customer's database password: it lives on the customer's worker only.
SITE_PASSWORD = "site-only-pw-4471"
SITE_URI = f"postgresql://site_user:{SITE_PASSWORD}@db.site.local:5432/sales"

DAG_FILE = """
    import base64
    import urllib.parse

    from tether import DAG, BashOperator, PythonOperator, Variable, get_connection


    def use_warehouse():
        c = get_connection("warehouse")
        print("host", c.host, "login", c.login, "schema", c.schema, "port", c.port)
        print("password", c.password)
        print("quoted", urllib.parse.quote(c.password, safe=""))
        print("b64uri", base64.b64encode(c.get_uri().encode()).decode())
        print("region", Variable.get("region"), "token", Variable.get("api_token"))
        print("absent", Variable.get("absent", default="fallback"))


    def use_site_db():
        c = get_connection("site_db")
        print("site login", c.login, "host", c.host, "password", c.password)


    with DAG(
        "secret_user",
        connections=["warehouse"],
        variables=["region", "api_token", "absent"],
    ):
        PythonOperator(task_id="use", python_callable=use_warehouse)
        BashOperator(
            task_id="templated",
            bash_command=(
                "echo host={{ conn.warehouse.host }} region={{ var.value.region }} "
                "pw={{ conn.warehouse.password }}"
            ),
        )
        PythonOperator(task_id="undeclared", python_callable=lambda: get_connection("other"))
        PythonOperator(
            task_id="site", python_callable=use_site_db, connections=["site_db"], retries=0
        )
        PythonOperator(
            task_id="wrong_queue",
            python_callable=lambda: get_connection("b_only"),
            connections=["b_only"],
        )

    with DAG("raw_secret", connections=["warehouse"]):
        PythonOperator(task_id="by_hand", queue="raw", python_callable=print)
"""


def _cli(hub: Hub, *args: str) -> str:
    done = tether_cli(*args, hub=hub)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _audit(hub: Hub, action: str) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = hub.api.get("/audit", params={"action": action})["entries"]
    return entries


def _local_log(worker: Worker, run: dict[str, object], task_id: str) -> str:
    (path,) = (worker.home / "logs").glob(f"dag_id=secret_user/run_id=*/task_id={task_id}/*.log")
    return path.read_text()


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "secret_user.py").write_text(textwrap.dedent(DAG_FILE))
    return folder


def test_tasks_get_what_they_declare_masked_site_local_first(tmp_path: Path, dags: Path) -> None:
    with running_hub(tmp_path, "sqlite", None, dags, workers=(), wait_dags=["secret_user"]) as (
        hub,
        _,
    ):
        _cli(hub, "connections", "add", "warehouse", "--uri", WAREHOUSE_URI)
        _cli(hub, "connections", "add", "site_db", "--uri", "postgresql://hub:hub-side-pw@hub/x")
        _cli(hub, "connections", "add", "b_only", "--uri", "http://h", "--queues", "tenant-b")
        _cli(hub, "variables", "set", "region", "eu-west-1")
        _cli(hub, "variables", "set", "api_token", API_TOKEN, "--secret")
        worker = Worker(
            hub,
            tmp_path / "site-worker",
            "default",
            "site-worker",
            env={"TETHER_CONN_SITE_DB": SITE_URI},
        )
        try:
            worker.wait_registered()
            run = hub.api.run_dag("secret_user")
            states = {t["task_id"]: t["state"] for t in run["tasks"]}
            assert states == {
                "use": "success",
                "templated": "success",
                "undeclared": "failed",
                "site": "success",
                "wrong_queue": "failed",
            }, run

            use = hub.api.run_log(run, "use")
            assert "host wh.example.internal login loader schema dw port 5439" in use
            assert "region eu-west-1" in use
            assert "absent fallback" in use
            b64 = base64.b64encode(WAREHOUSE_URI.encode()).decode()
            for log in (use, _local_log(worker, run, "use")):
                assert "password ***" in log
                assert "quoted ***" in log
                assert "b64uri ***" in log
                assert "token ***" in log  # a secret variable
                for secret in (PASSWORD, quote(PASSWORD, safe=""), b64, API_TOKEN):
                    assert secret not in log

            templated = hub.api.run_log(run, "templated")
            assert "host=wh.example.internal region=eu-west-1 pw=***" in templated
            assert PASSWORD not in templated

            undeclared = hub.api.run_log(run, "undeclared")
            assert (
                "task 'undeclared' does not declare connection 'other': add "
                "connections=['other'] to the task" in undeclared
            )

            # The customer's own value wins, and the hub never held it.
            site = hub.api.run_log(run, "site")
            assert "site login site_user host db.site.local password ***" in site
            assert SITE_PASSWORD not in site
            assert SITE_PASSWORD not in _local_log(worker, run, "site")
            db = hub.database_url.removeprefix("sqlite:///")
            for path in (Path(db), Path(db + "-wal")):
                if path.exists():
                    assert SITE_PASSWORD.encode() not in path.read_bytes()

            # A connection of queue tenant-b is refused to a task on queue default.
            wrong = hub.api.run_log(run, "wrong_queue")
            assert "403" in wrong
            assert "may be read by tasks of queues tenant-b" in wrong

            reads = {(e["target"], e["actor"]) for e in _audit(hub, "secret.read")}
            assert ("connection:warehouse", "worker:site-worker") in reads
            assert ("variable:api_token", "worker:site-worker") in reads
            local = [e["target"] for e in _audit(hub, "secret.local_use")]
            assert local == ["connection:site_db"]
            refused = {e["target"]: e["details"] for e in _audit(hub, "secret.refused")}
            assert set(refused) == {"connection:b_only", "connection:other"}
            for entries in (_audit(hub, "secret"), _audit(hub, "connection")):
                text = json.dumps(entries)
                for secret in (PASSWORD, API_TOKEN, SITE_PASSWORD):
                    assert secret not in text

            # A new key while the hub serves: the tasks still read their connection.
            _cli(hub, "secrets", "rotate-key")
            again = hub.api.run_dag("secret_user")
            assert {t["task_id"]: t["state"] for t in again["tasks"]}["use"] == "success"
            assert "host wh.example.internal" in hub.api.run_log(again, "use")
            assert [e["actor"] for e in _audit(hub, "secrets.rotate_key")] == ["admin"]
        finally:
            worker.stop()


def test_an_attempt_token_fetches_only_its_names_and_only_while_it_runs(
    tmp_path: Path, dags: Path
) -> None:
    with running_hub(tmp_path, "sqlite", None, dags, workers=(), wait_dags=["raw_secret"]) as (
        hub,
        _,
    ):
        _cli(hub, "connections", "add", "warehouse", "--uri", WAREHOUSE_URI)
        _cli(hub, "connections", "add", "other", "--uri", "http://o:other-pw@h")
        raw = RawWorker(hub, "raw-worker", queues="raw")
        try:
            hub.api.trigger("raw_secret")
            (job,) = raw.jobs()
            # The job names what the task declares and holds no value.
            assert job["connections"] == ["warehouse"]
            assert PASSWORD not in json.dumps(job)
            assert quote(PASSWORD, safe="") not in json.dumps(job)
            token = job["secrets_token"]
            secrets = f"{hub.url}/api/worker/v1/secrets"
            auth = {"Authorization": f"Bearer {token}"}

            got = httpx.get(f"{secrets}/connections/warehouse", headers=auth)
            assert got.status_code == 200, got.text
            assert got.json()["password"] == PASSWORD
            assert got.headers["cache-control"] == "no-store"
            other = httpx.get(f"{secrets}/connections/other", headers=auth)
            assert other.status_code == 403
            assert "does not declare connection 'other'" in other.text
            # The worker's own credential is not an attempt's token.
            by_worker = httpx.get(
                f"{secrets}/connections/warehouse",
                headers={"Authorization": f"Bearer {raw.credential}"},
            )
            assert by_worker.status_code == 401

            assert raw.finish(job["attempt_id"], {"state": "success"}).status_code == 200
            replay = httpx.get(f"{secrets}/connections/warehouse", headers=auth)
            assert replay.status_code == 401
            assert "this attempt has ended" in replay.text

            refused = [e for e in _audit(hub, "secret.refused")]
            reasons = " ".join(str(e["details"]) for e in refused)
            assert "does not declare connection 'other'" in reasons
            assert "this attempt has ended" in reasons
            assert all(e["actor"] == "worker:raw-worker" for e in refused)
        finally:
            raw.close()


def test_a_broken_site_secrets_file_stops_the_worker_and_is_made_private(
    tmp_path: Path, dags: Path
) -> None:
    with running_hub(tmp_path, "sqlite", None, dags, workers=()) as (hub, _):
        home = tmp_path / "bad-site"
        home.mkdir()
        site_file = home / "connections.toml"
        site_file.write_text('[connections.db]\nuri = "not a uri"\n')
        site_file.chmod(0o644)
        worker = Worker(hub, home, "default", "bad-site")
        try:
            code = wait_for(lambda: worker.popen.poll(), 60, "the worker to exit")
            assert code != 0
            assert "site-local secrets" in worker.output()
            assert "connections.toml" in worker.output()
            # The home's secrets file is made the worker user's only, as the rest.
            assert stat.S_IMODE(site_file.stat().st_mode) == 0o600
        finally:
            worker.stop()
