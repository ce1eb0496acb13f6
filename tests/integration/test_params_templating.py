"""Params and templating end to end: a real hub and a real worker process on
loopback, against SQLite and PostgreSQL. The hub validates params (defaults
when it parses, values when a run is triggered); the worker's task process
renders the templated fields."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS, make_database_url
from tests.integration.processes import Api, Hub, Worker, tether_cli, wait_for

pytestmark = pytest.mark.integration

DAGS = {
    "templated_bash.py": """
        from tether import DAG, BashOperator, Param

        with DAG(
            "templated_bash",
            params={
                "n": Param(5, type="integer", minimum=1, description="how many"),
                "label": "plain",
                "out_dir": "/data/{{ ds_nodash }}/{{ params.label }}",
            },
        ):
            BashOperator(
                task_id="show",
                bash_command=(
                    'echo "ds={{ ds }} n={{ params.n }} run={{ run_id }}"; '
                    'echo "start={{ data_interval_start }} end={{ data_interval_end }}"; '
                    'echo "out_dir={{ params.out_dir }} env=$GREETING"'
                ),
                env={"GREETING": "hello {{ params.label }} from {{ dag.dag_id }}"},
                append_env=True,
            )
    """,
    "templated_task.py": """
        from tether import dag, task

        @dag(params={"who": "world"})
        def templated_task():
            @task
            def produce() -> int:
                return 41

            @task
            def consume(value: int, day: str, greeting: str, params, conf) -> None:
                print(f"value={value + 1} day={day} greeting={greeting}")
                print("params=" + __import__("json").dumps(params, sort_keys=True))
                print("conf=" + __import__("json").dumps(conf, sort_keys=True))

            consume(produce(), day="{{ ds_nodash }}", greeting="hi {{ params.who }}")

        templated_task()
    """,
    "undefined_var.py": """
        from tether import DAG, BashOperator

        with DAG("undefined_var"):
            BashOperator(
                task_id="oops",
                bash_command="echo never printed; echo {{ ds }} {{ no_such_variable }}",
            )
    """,
    "required_param.py": """
        from tether import DAG, BashOperator, Param

        with DAG(
            "required_param",
            params={"region": Param(type="string", enum=["eu", "us"])},
        ):
            BashOperator(task_id="where", bash_command="echo region={{ params.region }}")
    """,
    "bad_default.py": """
        from tether import DAG, EmptyOperator, Param

        with DAG("bad_default", params={"n": Param(0, type="integer", minimum=1)}):
            EmptyOperator(task_id="nothing")
    """,
    "bad_template.py": """
        from tether import DAG, BashOperator

        with DAG("bad_template"):
            BashOperator(task_id="count", bash_command="echo ${#names[@]}")
    """,
}


class Env:
    def __init__(self, hub: Hub, worker: Worker) -> None:
        self.hub, self.worker, self.api = hub, worker, hub.api

    def run(self, dag_id: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.api.wait_run(dag_id, self.api.trigger(dag_id, conf))

    def log(self, run: dict[str, Any], task_id: str) -> str:
        return self.api.log(run["dag_id"], run["run_id"], task_id)


@pytest.fixture(scope="module", params=BACKENDS)
def env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Env]:
    root = tmp_path_factory.mktemp(f"templating-{request.param}")
    dags = root / "dags"
    dags.mkdir()
    for name, source in DAGS.items():
        (dags / name).write_text(textwrap.dedent(source))
    urls = make_database_url(request.param, root, _postgres_reason)
    hub = Hub(root / "hub-home", dags, next(urls))
    worker = Worker(hub, root / "worker-home", "default", "edge-t", cwd=root / "worker-cwd")
    try:
        worker.wait_registered()
        hub.api.wait_dags("templated_bash", "templated_task", "undefined_var", "required_param")
        yield Env(hub, worker)
    finally:
        worker.stop()
        hub.stop()
        for _ in urls:  # drops the PostgreSQL database
            pass


def _line(log: str, prefix: str) -> str:
    return next(line for line in log.splitlines() if line.startswith(prefix))


def test_bash_command_and_env_are_rendered_with_the_run_and_default_params(env: Env) -> None:
    run = env.run("templated_bash")
    assert run["state"] == "success"
    log = env.log(run, "show")
    ds = run["logical_date"][:10]
    assert _line(log, "ds=") == f"ds={ds} n=5 run={run['run_id']}"
    # A manual run of an unscheduled DAG covers its own moment (as in Airflow).
    assert run["data_interval_start"] == run["data_interval_end"] == run["logical_date"]
    assert _line(log, "start=") == (
        f"start={run['data_interval_start']} end={run['data_interval_end']}"
    )
    # A string param is a template too; env values are rendered.
    assert _line(log, "out_dir=") == (
        f"out_dir=/data/{ds.replace('-', '')}/plain env=hello plain from templated_bash"
    )
    assert run["params"] == {
        "n": 5,
        "label": "plain",
        "out_dir": "/data/{{ ds_nodash }}/{{ params.label }}",
    }


def test_valid_params_in_conf_override_the_defaults_and_reach_the_task(env: Env) -> None:
    run = env.run("templated_bash", {"n": 12, "label": "custom", "unrelated": True})
    assert run["state"] == "success"
    log = env.log(run, "show")
    assert _line(log, "ds=").split()[1] == "n=12"
    assert _line(log, "out_dir=").endswith("/custom env=hello custom from templated_bash")
    assert run["conf"] == {"n": 12, "label": "custom", "unrelated": True}
    assert run["params"]["n"] == 12


def test_taskflow_arguments_are_rendered_and_free_conf_reaches_the_task(env: Env) -> None:
    conf = {"who": "tether", "free": {"nested": [1, 2]}}
    run = env.run("templated_task", conf)
    assert run["state"] == "success"
    log = env.log(run, "consume")
    day = run["logical_date"][:10].replace("-", "")
    # The upstream value still arrives; the strings around it were rendered.
    assert _line(log, "value=") == f"value=42 day={day} greeting=hi tether"
    # params: only the DAG's params (overridden); conf: everything, as sent.
    assert json.loads(_line(log, "params=").removeprefix("params=")) == {"who": "tether"}
    assert json.loads(_line(log, "conf=").removeprefix("conf=")) == conf


def test_an_undefined_variable_fails_the_task_naming_the_variable(env: Env) -> None:
    run = env.run("undefined_var")
    assert run["state"] == "failed"
    assert env.api.tasks(run)["oops"]["state"] == "failed"
    log = env.log(run, "oops")
    assert "TemplateRenderError: task 'oops': cannot render bash_command: " in log
    assert "'no_such_variable' is undefined" in log
    assert "never printed" not in log.splitlines()  # the command never ran
    assert "task ended: failed" in log


def _trigger(api: Api, dag_id: str, body: dict[str, Any]) -> httpx.Response:
    return api.http.post(f"/dags/{dag_id}/runs", json=body)


@pytest.mark.parametrize(
    ("dag_id", "conf", "reason"),
    [
        ("templated_bash", {"n": 0}, "param 'n': 0 is less than the minimum of 1"),
        ("templated_bash", {"n": "seven"}, "param 'n': 'seven' is not of type 'integer'"),
        ("required_param", {}, "param 'region' is required"),
        ("required_param", {"region": "mars"}, "param 'region': 'mars' is not one of"),
    ],
)
def test_invalid_params_are_refused_with_400_and_the_reason_and_make_no_run(
    env: Env, dag_id: str, conf: dict[str, Any], reason: str
) -> None:
    answer = _trigger(env.api, dag_id, {"conf": conf, "run_id": "refused"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith("invalid params: ")
    assert reason in answer.json()["detail"]
    assert env.api.http.get(f"/dags/{dag_id}/runs/refused").status_code == 404


def test_a_required_param_given_in_conf_runs(env: Env) -> None:
    run = env.run("required_param", {"region": "eu"})
    assert run["state"] == "success"
    assert "region=eu" in env.log(run, "where")


def test_the_cli_prints_why_params_were_refused(env: Env) -> None:
    bad = tether_cli("dags", "trigger", "templated_bash", "--conf", '{"n": -3}', hub=env.hub)
    assert bad.returncode == 1
    assert "hub answered 400: invalid params: param 'n': -3 is less than the minimum of 1" in (
        bad.stderr
    )
    good = tether_cli(
        "dags", "trigger", "templated_bash", "--conf", '{"n": 3}', "--wait", hub=env.hub
    )
    assert good.returncode == 0, good.stdout + good.stderr


def test_a_dag_breaking_its_own_param_schema_or_jinja_is_an_import_error(env: Env) -> None:
    def errors() -> dict[str, str]:
        found = env.api.get("/import-errors")["import_errors"]
        return {e["fileloc"]: e["message"] for e in found}

    found = wait_for(
        lambda: errors() if {"bad_default.py", "bad_template.py"} <= set(errors()) else None,
        30,
        "the import errors",
    )
    assert (
        "InvalidParams: DAG 'bad_default': param 'n': 0 is less than the minimum of 1"
        in (found["bad_default.py"])
    )
    assert "task 'count': bash_command: syntax error on line 1" in found["bad_template.py"]
    assert not {"bad_default", "bad_template"} & env.api.dag_ids()


def test_the_dag_detail_shows_the_param_schema(env: Env) -> None:
    detail = env.api.get("/dags/templated_bash")
    assert detail["params"]["n"] == {
        "schema": {"type": "integer", "minimum": 1},
        "description": "how many",
        "default": 5,
    }
