"""The walking skeleton end to end: a real hub and a real worker process on
loopback, against SQLite and PostgreSQL, running the example DAGs and a few
DAGs made to misbehave."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, make_database_url
from tests.integration.processes import EXAMPLES, Hub, Worker, tether_cli, wait_for

pytestmark = pytest.mark.integration

TEST_DAGS = Path(__file__).parent / "dags"


class Env:
    def __init__(self, hub: Hub, worker: Worker, dags: Path) -> None:
        self.hub, self.worker, self.dags, self.api = hub, worker, dags, hub.api

    def run_dag(self, dag_id: str, conf: dict[str, object] | None = None) -> dict[str, object]:
        return self.api.wait_run(dag_id, self.api.trigger(dag_id, conf))


@pytest.fixture(scope="module", params=BACKENDS)
def env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Env]:
    """A hub over examples/dags plus the test DAGs, and one worker for both queues.

    The worker's home and working directory are apart from the hub's home
    and DAGs folder.
    """
    root = tmp_path_factory.mktemp(f"skeleton-{request.param}")
    dags = root / "hub-dags"
    shutil.copytree(EXAMPLES, dags)
    shutil.copytree(TEST_DAGS, dags, dirs_exist_ok=True)
    urls = make_database_url(request.param, root, _postgres_reason)
    hub = Hub(root / "hub-home", dags, next(urls))
    worker = Worker(
        hub, root / "worker-home", "default,customer-acme", "edge-1", cwd=root / "worker-cwd"
    )
    try:
        worker.wait_registered()
        hub.api.wait_dags(
            "taskflow_etl",
            "customer_acme_extract",
            "sync_crm",
            "sync_billing",
            "partitioned_load",
            "cycle_trigger",
            "dbt_finance",
            "flaky_retry",
            "where_am_i",
            "always_fails",
        )
        yield Env(hub, worker, dags)
    finally:
        worker.stop()
        hub.stop()
        for _ in urls:  # drops the PostgreSQL database
            pass


EXAMPLE_DAGS = {
    "taskflow_etl": {"extract", "transform", "load"},
    "customer_acme_extract": {"check_source", "extract_orders", "summarize"},
    "sync_crm": {"start", "sync_accounts", "sync_contacts", "done"},
    "sync_billing": {"start", "sync_invoices", "done"},
    "partitioned_load": {"list_partitions", "load_partition", "summarize"},
    # finance_assets.py: each also runs by hand (test_asset_examples.py runs them on assets).
    "cycle_trigger": {"open_cycle"},
    "ingest_ledger": {"load_ledger"},
    "ingest_fx_rates": {"load_fx_rates"},
    "ingest_web_events": {"load_web_events"},
    "dbt_finance": {"show_inputs", "dbt_run", "dbt_test"},
}


@pytest.mark.parametrize("dag_id", sorted(EXAMPLE_DAGS))
def test_every_example_dag_runs_to_success(env: Env, dag_id: str) -> None:
    run = env.run_dag(dag_id)
    tasks = env.api.tasks(run)
    assert run["state"] == "success"
    assert set(tasks) == EXAMPLE_DAGS[dag_id]
    for task in tasks.values():
        assert task["state"] == "success", task
        assert task["worker"] == "edge-1"
        assert task["try_number"] == 1
        assert task["queued_at"] <= task["started_at"] <= task["ended_at"]


def test_the_mapped_example_fans_out_and_back_in(env: Env) -> None:
    run = env.run_dag("partitioned_load")
    loads = sorted(
        (t["map_index"], t["state"]) for t in run["tasks"] if t["task_id"] == "load_partition"
    )
    assert loads == [(0, "success"), (1, "success"), (2, "success")]
    summary = env.api.log("partitioned_load", run["run_id"], "summarize")
    assert "from 3 partitions" in summary
    first = env.api.log("partitioned_load", run["run_id"], "load_partition", map_index=0)
    assert "/region=eu into sales" in first


def test_taskflow_values_pass_between_tasks_and_logs_show_them(env: Env) -> None:
    run = env.run_dag("taskflow_etl")
    assert run["state"] == "success"
    log = env.api.log("taskflow_etl", run["run_id"], "load")
    # transform() summed extract()'s dict; load() received transform()'s dict.
    assert "loaded summary: total=1236.7 count=3" in log
    assert "extracted 3 orders" in env.api.log("taskflow_etl", run["run_id"], "extract")


def test_customer_dag_runs_on_its_queue_with_bash_output_passed_on(env: Env) -> None:
    run = env.run_dag("customer_acme_extract")
    tasks = env.api.tasks(run)
    assert {t["queue"] for t in tasks.values()} == {"customer-acme"}
    assert "acme source reachable from" in env.api.log(
        "customer_acme_extract", run["run_id"], "check_source"
    )
    # The bash task's last output line (wc -l) reached the python task.
    assert f"acme: 3 order rows extracted in run {run['run_id']}" in env.api.log(
        "customer_acme_extract", run["run_id"], "summarize"
    )


def test_generated_dags_follow_their_config(env: Env) -> None:
    config = json.loads((env.dags / "generated_dags.json").read_text())
    assert {f"sync_{s['name']}" for s in config["sources"]} <= env.api.dag_ids()
    run = env.run_dag("sync_crm")
    assert "synced crm.contacts" in env.api.log("sync_crm", run["run_id"], "sync_contacts")


def test_broken_files_become_import_errors_and_the_rest_still_runs(env: Env) -> None:
    def both() -> dict[str, str] | None:
        found = {e["fileloc"]: e["message"] for e in env.api.get("/import-errors")["import_errors"]}
        return found if len(found) >= 2 else None

    # Each file is stored as it finishes: the one that hangs comes last.
    errors = wait_for(both, 30, "both broken files to be import errors")
    assert set(errors) == {"broken_syntax.py", "hangs_forever.py"}
    assert "SyntaxError" in errors["broken_syntax.py"]
    assert "took longer than 3s" in errors["hangs_forever.py"]
    assert not {"never_loads", "never_finishes_loading"} & env.api.dag_ids()

    cli = tether_cli("dags", "errors", hub=env.hub)
    assert cli.returncode == 0, cli.stderr
    assert "broken_syntax.py" in cli.stdout
    assert "SyntaxError" in cli.stdout
    assert "hangs_forever.py" in cli.stdout

    assert env.run_dag("where_am_i")["state"] == "success"


def test_a_task_that_fails_once_succeeds_on_try_two_with_both_logs(env: Env) -> None:
    run = env.run_dag("flaky_retry")
    task = env.api.tasks(run)["fails_once"]
    assert run["state"] == "success"
    assert task["state"] == "success"
    assert task["try_number"] == 2
    first = env.api.log("flaky_retry", run["run_id"], "fails_once", try_number=1)
    second = env.api.log("flaky_retry", run["run_id"], "fails_once", try_number=2)
    assert "try 1 fails on purpose" in first
    assert "task ended: failed" in first
    assert "try 2 succeeds" in second
    assert "try 1 fails" not in second


def test_the_dag_file_is_imported_from_the_workers_bundle_cache(env: Env) -> None:
    run = env.run_dag("where_am_i")
    log = env.api.log("where_am_i", run["run_id"], "report")
    dag_file = Path(
        next(line for line in log.splitlines() if line.startswith("DAG_FILE=")).removeprefix(
            "DAG_FILE="
        )
    )
    bundles = (env.worker.home / "bundles").resolve()
    assert dag_file.is_relative_to(bundles), dag_file
    assert dag_file.name == "where_am_i.py"
    assert not dag_file.is_relative_to(env.dags.resolve())
    assert not dag_file.is_relative_to(env.hub.log_path.parent.resolve())
    assert dag_file.read_bytes() == (env.dags / "where_am_i.py").read_bytes()


def test_cli_trigger_wait_exit_code_follows_the_run(env: Env) -> None:
    ok = tether_cli("dags", "trigger", "taskflow_etl", "--wait", hub=env.hub)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "transform" in ok.stdout
    assert "success" in ok.stdout

    bad = tether_cli("dags", "trigger", "always_fails", "--wait", hub=env.hub)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    lines = {
        line.split()[0]: line.split()[1]
        for line in bad.stdout.splitlines()
        if line.startswith("  ") and not line.startswith("      ")  # not a task's details
    }
    assert lines == {"boom": "failed", "after": "upstream_failed"}
    assert "      error: Command exited with status 3: echo 'about to fail'; exit 3" in bad.stdout
    assert "failed" in bad.stdout.splitlines()[-1]

    missing = tether_cli("dags", "trigger", "no_such_dag", hub=env.hub)
    assert missing.returncode == 1
    assert "404" in missing.stderr
    assert "no_such_dag" in missing.stderr


def test_cli_lists_dags(env: Env) -> None:
    result = tether_cli("dags", "list", hub=env.hub)
    assert result.returncode == 0, result.stderr
    assert "customer_acme_extract" in result.stdout
    assert "customer-acme" in result.stdout


def test_conf_reaches_the_task(env: Env) -> None:
    (env.dags / "conf_echo.py").write_text(
        "from tether import DAG, PythonOperator\n"
        "def show(dag_run):\n"
        "    print('conf says', dag_run.conf['greeting'])\n"
        "with DAG('conf_echo'):\n"
        "    PythonOperator(task_id='show', python_callable=show)\n"
    )
    env.api.wait_dags("conf_echo")
    run = env.run_dag("conf_echo", {"greeting": "hello from conf"})
    assert run["state"] == "success"
    assert "conf says hello from conf" in env.api.log("conf_echo", run["run_id"], "show")


def test_a_changed_file_is_reparsed_and_a_running_dag_keeps_its_bundle(env: Env) -> None:
    path = env.dags / "evolving.py"
    path.write_text(
        "from tether import DAG, BashOperator\n"
        "with DAG('evolving'):\n"
        "    BashOperator(task_id='v1', bash_command='echo version one')\n"
    )
    env.api.wait_dags("evolving")
    first = env.run_dag("evolving")
    path.write_text(
        "from tether import DAG, BashOperator\n"
        "with DAG('evolving'):\n"
        "    BashOperator(task_id='v2', bash_command='echo version two')\n"
    )
    wait_for(lambda: env.api.get("/dags/evolving")["task_ids"] == ["v2"], 30, "the re-parse")
    second = env.run_dag("evolving")
    assert set(env.api.tasks(first)) == {"v1"}
    assert set(env.api.tasks(second)) == {"v2"}
    assert first["bundle_sha"] != second["bundle_sha"]
    assert "version two" in env.api.log("evolving", second["run_id"], "v2")


def _listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # TCP state 0A is LISTEN; any bound UDP socket could receive.
            if (table.startswith("/proc/net/tcp") and fields[3] == "0A") or "udp" in table:
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def test_the_worker_holds_no_listening_socket(env: Env) -> None:
    # Busy a moment so the claim connection is open while we look.
    env.run_dag("taskflow_etl")
    worker_sockets = _socket_inodes(env.worker.pid)
    assert worker_sockets, "the worker should hold its outbound connection to the hub"
    assert not worker_sockets & _listening_inodes()
    # The check can see a listening socket: the hub's own.
    assert _socket_inodes(env.hub.pid) & _listening_inodes()
