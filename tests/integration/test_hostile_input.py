"""Hostile values through a real hub and a real worker process, on SQLite and
PostgreSQL: whoever can trigger runs, and whatever a task returns, cannot run
code on a worker, break the hub, or wedge the worker's reports."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS
from tests.integration.processes import Hub, Worker, running_hub, wait_for

pytestmark = pytest.mark.integration

#: The variables a task process adds to a BashOperator's declared env, and bash's own.
CONTEXT_VARIABLES = {
    "TETHER_DAG_ID",
    "TETHER_TASK_ID",
    "TETHER_RUN_ID",
    "TETHER_MAP_INDEX",
    "TETHER_TRY_NUMBER",
    "TETHER_ATTEMPT_ID",
}
BASH_VARIABLES = {"PWD", "SHLVL", "_"}

DAGS = {
    "conf_is_data.py": """
        from tether import DAG, BashOperator, Param

        with DAG("conf_is_data", params={"label": Param("plain", type="string")}):
            BashOperator(
                task_id="show",
                bash_command=(
                    "printf 'label=%s\\\\n' \\"$LABEL\\"; /usr/bin/env | /usr/bin/sed 's/^/env: /'"
                ),
                env={"LABEL": "{{ params.label }}", "DECLARED": "yes"},
            )
    """,
    "unsendable.py": """
        import os

        from tether import DAG, task

        with DAG("unsendable", default_args={"queue": "q-unsendable"}):
            @task
            def nan() -> float:
                return float("nan")

            @task
            def latin1_name() -> str:
                return os.fsdecode(b"caf\\xe9.csv")  # 'caf\\udce9.csv'

            @task
            def long_error() -> None:
                raise ValueError("x" * 190_000)

            @task
            def too_big() -> str:
                return "y" * 60_000  # the hub in these tests keeps 50 000 bytes

            @task(trigger_rule="all_done")
            def after() -> str:
                return "reached the hub"

            [nan(), latin1_name(), long_error(), too_big()] >> after()
    """,
    "big_inputs.py": """
        from tether import DAG, task

        with DAG("big_inputs"):
            @task
            def part(i: int) -> str:
                return str(i) * 30_000  # under the output limit, each

            @task
            def total(parts: list) -> int:
                return sum(len(p) for p in parts)

            total(part.expand(i=[1, 2, 3, 4, 5]))  # 150 000 bytes in one job: too many
    """,
    "chatty.py": """
        from tether import DAG, BashOperator

        with DAG("chatty"):
            PAD = "x" * 60
            BashOperator(
                task_id="talk",
                bash_command=f"for i in $(seq 1 8000); do echo line-$i-{PAD}; done",
            )
    """,
    "mutating_template.py": """
        from tether import DAG, BashOperator

        with DAG("mutating_template"):
            BashOperator(
                task_id="mutate",
                bash_command=(
                    "echo {{ task.env.update({'INJECTED': 'yes'}) }}; "
                    "/usr/bin/env | /usr/bin/sed 's/^/env: /'"
                ),
                env={"DECLARED": "yes"},
            )
    """,
}


@pytest.fixture(scope="module", params=BACKENDS)
def hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    dags = root / "dags"
    dags.mkdir()
    for name, source in DAGS.items():
        (dags / name).write_text(textwrap.dedent(source))
    with running_hub(
        root,
        request.param,
        _postgres_reason,
        dags,
        wait_dags=["conf_is_data", "mutating_template", "unsendable", "big_inputs", "chatty"],
        TETHER_MAX_TASK_OUTPUT_BYTES="50000",
        TETHER_MAX_JOB_BYTES="100000",
        TETHER_MAX_LOG_CHUNK_BYTES="65536",  # the smallest there is; the worker sends 512 KiB
    ) as (hub, _):
        yield hub


def _environment(log: str) -> dict[str, str]:
    """The variables /usr/bin/env printed into a task's log (as ``env: NAME=value``)."""
    found = {}
    for line in log.splitlines():
        if line.startswith("env: "):
            name, _, value = line.removeprefix("env: ").partition("=")
            found[name] = value
    return found


def test_a_conf_value_is_data_and_reaches_the_task_verbatim(hub: Hub) -> None:
    attack = "{{ env_vars.update({'INJECTED': 'yes'}) or 'pwned' }} {{ 7 * 7 }}"
    run = hub.api.run_dag("conf_is_data", {"label": attack})
    assert run["state"] == "success"
    log = hub.api.run_log(run, "show")
    assert f"label={attack}" in log.splitlines()
    # The task's environment is what the DAG declared, plus Tether's context variables.
    seen = _environment(log)
    assert set(seen) == {"LABEL", "DECLARED"} | CONTEXT_VARIABLES | BASH_VARIABLES, seen
    assert seen["LABEL"] == attack
    assert seen["DECLARED"] == "yes"
    assert seen["TETHER_RUN_ID"] == run["run_id"]


def test_the_dag_files_own_param_default_is_still_a_template_that_prints_conf_as_data(
    hub: Hub,
) -> None:
    run = hub.api.run_dag("conf_is_data")
    assert "label=plain" in hub.api.run_log(run, "show").splitlines()


def test_a_dag_file_template_that_changes_its_context_fails_the_task_and_says_why(
    hub: Hub,
) -> None:
    run = hub.api.run_dag("mutating_template")
    assert run["state"] == "failed"
    log = hub.api.run_log(run, "mutate")
    refused = "access to attribute 'update' of 'dict' object is unsafe"
    assert f"cannot render bash_command: {refused}" in log
    assert "a template may read the task's context, never change it" in log
    assert hub.api.tasks(run)["mutate"]["state"] == "failed"
    assert "env: DECLARED=yes" not in log.splitlines()  # the command never ran


def test_results_that_cannot_travel_fail_their_task_and_wedge_nothing(
    hub: Hub, tmp_path: Path
) -> None:
    worker = Worker(hub, tmp_path / "w", "q-unsendable", f"unsendable-{tmp_path.name}")
    try:
        worker.wait_registered()
        run = hub.api.run_dag("unsendable")
        tasks = hub.api.tasks(run)
        # Nothing is left behind in the worker's spool. It forgets an entry once the
        # hub has answered its report, which may be a moment after the hub recorded it.
        spool = worker.home / "spool"
        wait_for(lambda: not any(spool.glob("*")), 10, "the worker's spool to empty")
    finally:
        # It still obeys SIGTERM: nothing is left for it to wait for (stop kills after 30 s).
        code = worker.stop()
    assert code == 0, worker.output()
    assert run["state"] == "failed"
    assert {t: v["state"] for t, v in tasks.items()} == {
        "nan": "failed",
        "latin1_name": "failed",
        "long_error": "failed",
        "too_big": "failed",
        "after": "success",  # the worker's later reports still reach the hub
    }
    assert (
        "cannot be sent to the hub (return value: nan is not a JSON number)"
        in (tasks["nan"]["error"])
    )
    assert "'\\udce9' at position 3 is not valid Unicode" in tasks["latin1_name"]["error"]
    error = tasks["long_error"]["error"]
    assert len(error) == 8000
    assert error.startswith("ValueError: xxx")
    assert error.endswith("[cut: 190012 characters in all; the whole text is in the task's log]")
    assert "x" * 190_000 in hub.api.run_log(run, "long_error")  # the log has it whole
    assert (
        "the task's return value is 60002 bytes as JSON; the hub keeps at most 50000"
        in (tasks["too_big"]["error"])
    )
    assert "Return a reference to the data" in hub.api.run_log(run, "too_big")


def test_a_job_that_would_carry_too_much_fails_on_the_hub_and_says_why(hub: Hub) -> None:
    run = hub.api.run_dag("big_inputs")
    tasks = {t["task_id"] + str(t["map_index"]): t["state"] for t in run["tasks"]}
    assert tasks == {
        **{f"part{i}": "success" for i in range(5)},
        "total-1": "failed",
    }
    log = hub.api.run_log(run, "total")
    assert "the hub cannot send this task to a worker: its inputs" in log
    assert "a job carries at most 100000 (TETHER_MAX_JOB_BYTES)" in log


def test_log_chunks_follow_the_hubs_limit_and_the_whole_log_arrives(hub: Hub) -> None:
    run = hub.api.run_dag("chatty")
    assert run["state"] == "success"
    log = hub.api.run_log(run, "talk")
    lines = [line for line in log.splitlines() if line.startswith("line-")]
    assert len(lines) == 8000  # about 560 KB, in chunks of at most 64 KiB
    assert lines[-1].startswith("line-8000-")
