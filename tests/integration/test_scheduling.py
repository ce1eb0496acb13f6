"""Scheduling semantics through a real hub and worker: branching, the
timetable's catchup runs, dagrun_timeout."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import BACKENDS
from tests.hubtools import write_dag
from tests.integration.processes import Hub, running_hub, wait_for

pytestmark = pytest.mark.integration

BRANCH_DAGS = """
from tether import DAG, BranchPythonOperator, EmptyOperator, task

with DAG("branchy"):
    @task.branch
    def pick(conf=None):
        return "left" if (conf or {}).get("side", "left") == "left" else ["right"]

    left = EmptyOperator(task_id="left")
    right = EmptyOperator(task_id="right")
    after_right = EmptyOperator(task_id="after_right")
    join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")
    choice = pick()
    choice >> [left, right]
    right >> after_right
    [left, after_right] >> join

with DAG("classic_branch"):
    br = BranchPythonOperator(task_id="br", python_callable=lambda: None)
    br >> [EmptyOperator(task_id="a"), EmptyOperator(task_id="b")]

with DAG("bad_branch"):
    @task.branch
    def wrong():
        return "nowhere"

    wrong() >> EmptyOperator(task_id="only")
"""


MAPPED_DAGS = """
from tether import DAG, task

with DAG("mapped"):
    @task
    def numbers():
        return [1, 2, 3]

    @task(retries=1, retry_delay=0)
    def square(x, base, ti=None):
        print(f"squaring x={x} (map index {ti.map_index})")
        if x == 2 and ti.try_number == 1:
            raise RuntimeError("first try of x=2 fails")
        return x * x + base

    @task
    def total(values):
        print(f"total={sum(values)} of {values}")

    total(square.partial(base=0).expand(x=numbers()))

    @task
    def pair(a, b):
        print(f"pair={a}{b}")

    pair.expand(a=["x", "y"], b=[1, 2, 3])

    @task
    def nothing():
        return []

    @task
    def echo(x):
        return x

    echo.expand(x=nothing())

    @task
    def not_a_list():
        return 5

    echo.override(task_id="bad_map").expand(x=not_a_list())
"""


CALLBACK_DAGS = """
import signal
import time
from datetime import timedelta
from pathlib import Path
from tether import DAG, BashOperator, task

def say(what):
    def callback(context):
        exc = context.get("exception")
        print(f"{what} callback ran for try {context['ti'].try_number}: {exc!r}")
    callback.__name__ = what
    return callback

def mark(context):
    Path(context["conf"]["mark"]).write_text(
        f"{context['dag'].dag_id} {context['run_id']} {context['reason']} {context['state']}"
    )

def broken(context):
    raise RuntimeError("this callback is broken")

with DAG("callbacks", on_failure_callback=[broken, mark], on_success_callback=mark):
    @task(on_success_callback=say("success"))
    def fine():
        return 1

    @task(retries=1, retry_delay=0, on_retry_callback=say("retry"),
          on_failure_callback=[broken, say("failure")])
    def flaky(ti=None, conf=None):
        if conf.get("fail"):
            raise RuntimeError(f"try {ti.try_number} fails")

    fine() >> flaky()

with DAG("times_out", on_failure_callback=mark):
    @task(execution_timeout=timedelta(seconds=1), on_failure_callback=say("timeout"))
    def slow():
        time.sleep(30)

    @task(execution_timeout=timedelta(seconds=1))
    def stubborn():
        signal.signal(signal.SIGALRM, signal.SIG_IGN)  # will not stop by itself
        time.sleep(60)

    slow()
    stubborn()
"""


RULES = [
    "all_success",
    "all_failed",
    "all_done",
    "one_success",
    "one_failed",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "always",
]

RULE_DAGS = f"""
from datetime import timedelta
from tether import DAG, BashOperator

with DAG("rules"):
    ok = BashOperator(task_id="ok", bash_command="true")
    bad = BashOperator(task_id="bad", bash_command="exit 1")
    skip = BashOperator(task_id="skip", bash_command="exit 99")
    for rule in {RULES!r}:
        for name, ups in (("okbad", [ok, bad]), ("okskip", [ok, skip])):
            ups >> BashOperator(
                task_id=f"{{name}}_{{rule}}", bash_command="true", trigger_rule=rule
            )
    # A skip spreads down a chain of default (all_success) tasks.
    skip >> BashOperator(task_id="child", bash_command="true") >> BashOperator(
        task_id="grandchild", bash_command="true")

with DAG("backoff"):
    BashOperator(
        task_id="flaky", retries=2, retry_delay=timedelta(seconds=1),
        retry_exponential_backoff=True, max_retry_delay=timedelta(seconds=1.5),
        bash_command='echo "try $TETHER_TRY_NUMBER"; [ "$TETHER_TRY_NUMBER" = 3 ]',
    )
"""


@pytest.fixture(scope="module", params=BACKENDS)
def hub(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _postgres_reason: str | None,
) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp(f"scheduling-{request.param}")
    dags = root / "dags"
    write_dag(dags, "branches.py", BRANCH_DAGS)
    write_dag(dags, "mapped.py", MAPPED_DAGS)
    write_dag(dags, "callbacks.py", CALLBACK_DAGS)
    write_dag(dags, "rules.py", RULE_DAGS)
    wait = ["branchy", "classic_branch", "bad_branch", "mapped", "callbacks", "times_out"]
    with running_hub(
        root, request.param, _postgres_reason, dags, wait_dags=[*wait, "rules", "backoff"]
    ) as (hub, _):
        yield hub


def _states(hub: Hub, dag_id: str, conf: dict[str, object] | None = None) -> dict[str, str]:
    run = hub.api.wait_run(dag_id, hub.api.trigger(dag_id, conf))
    return {t["task_id"]: t["state"] for t in run["tasks"]} | {"<run>": run["state"]}


def test_branch_follows_the_chosen_task_and_skips_the_rest(hub: Hub) -> None:
    assert _states(hub, "branchy", {"side": "left"}) == {
        "pick": "success",
        "left": "success",
        "right": "skipped",
        "after_right": "skipped",  # the skip spreads downstream
        "join": "success",
        "<run>": "success",
    }
    assert _states(hub, "branchy", {"side": "right"}) == {
        "pick": "success",
        "left": "skipped",
        "right": "success",
        "after_right": "success",
        "join": "success",
        "<run>": "success",
    }


def test_a_branch_returning_none_skips_every_direct_downstream_task(hub: Hub) -> None:
    assert _states(hub, "classic_branch") == {
        "br": "success",
        "a": "skipped",
        "b": "skipped",
        "<run>": "success",
    }


def test_a_branch_naming_a_task_that_is_not_downstream_fails(hub: Hub) -> None:
    run = hub.api.wait_run("bad_branch", hub.api.trigger("bad_branch"))
    states = {t["task_id"]: t["state"] for t in run["tasks"]}
    assert states == {"wrong": "failed", "only": "upstream_failed"}
    log = hub.api.log("bad_branch", run["run_id"], "wrong")
    assert "returned 'nowhere', which is not directly downstream of it" in log


def test_mapped_tasks_get_one_instance_per_value_each_with_its_own_tries_and_log(
    hub: Hub,
) -> None:
    run = hub.api.wait_run("mapped", hub.api.trigger("mapped"))
    by_key = {(t["task_id"], t["map_index"]): t for t in run["tasks"]}
    squares = {i: by_key[("square", i)] for i in range(3)}
    assert {i: t["state"] for i, t in squares.items()} == {0: "success", 1: "success", 2: "success"}
    # Only index 1 (x=2) failed once and was retried.
    assert {i: t["try_number"] for i, t in squares.items()} == {0: 1, 1: 2, 2: 1}
    for i, x in enumerate([1, 2, 3]):
        assert f"squaring x={x}" in hub.api.log("mapped", run["run_id"], "square", map_index=i)
    first_try = hub.api.log("mapped", run["run_id"], "square", try_number=1, map_index=1)
    assert "first try of x=2 fails" in first_try
    # The downstream task gets every index's value, in map-index order.
    assert "total=14 of [1, 4, 9]" in hub.api.log("mapped", run["run_id"], "total")

    # Two literal lists: their cross product, the last argument varying fastest.
    pairs = [hub.api.log("mapped", run["run_id"], "pair", map_index=i) for i in range(6)]
    assert [p.split("pair=")[1].split()[0] for p in pairs] == ["x1", "x2", "x3", "y1", "y2", "y3"]

    # An empty list skips the mapped task; a value that is not a list fails it.
    assert by_key[("echo", -1)]["state"] == "skipped"
    assert by_key[("bad_map", -1)]["state"] == "failed"
    reason = hub.api.log("mapped", run["run_id"], "bad_map")
    assert "x= needs a list from task 'not_a_list', which returned int" in reason
    assert run["state"] == "failed"


def test_the_log_of_a_mapped_task_needs_its_map_index(hub: Hub) -> None:
    run = hub.api.wait_run("mapped", hub.api.trigger("mapped"))
    answer = hub.api.http.get(f"/dags/mapped/runs/{run['run_id']}/tasks/square/logs")
    assert answer.status_code == 400
    assert "give map_index (0 to 2)" in answer.json()["detail"]
    missing = hub.api.http.get(
        f"/dags/mapped/runs/{run['run_id']}/tasks/square/logs", params={"map_index": 7}
    )
    assert missing.status_code == 404


def test_task_callbacks_run_in_the_task_process_and_dag_callbacks_on_the_hub(
    hub: Hub, tmp_path: Path
) -> None:
    ok_mark = tmp_path / "ok"
    ok = hub.api.wait_run("callbacks", hub.api.trigger("callbacks", {"mark": str(ok_mark)}))
    assert ok["state"] == "success"
    assert "success callback ran for try 1: None" in hub.api.log("callbacks", ok["run_id"], "fine")
    wait_for(ok_mark.exists, 30, "the DAG's on_success_callback")
    assert ok_mark.read_text() == f"callbacks {ok['run_id']} success success"

    bad_mark = tmp_path / "bad"
    bad = hub.api.wait_run(
        "callbacks", hub.api.trigger("callbacks", {"mark": str(bad_mark), "fail": True})
    )
    assert bad["state"] == "failed"
    first = hub.api.log("callbacks", bad["run_id"], "flaky", try_number=1)
    last = hub.api.log("callbacks", bad["run_id"], "flaky", try_number=2)
    assert "retry callback ran for try 1: RuntimeError('try 1 fails')" in first
    assert "failure callback" not in first
    # A broken callback is logged and the next one still runs.
    assert "RuntimeError: this callback is broken" in last
    assert "failure callback ran for try 2: RuntimeError('try 2 fails')" in last
    wait_for(bad_mark.exists, 30, "the DAG's on_failure_callback")
    assert bad_mark.read_text() == f"callbacks {bad['run_id']} task_failure failed"
    # The hub logs the DAG callbacks' output once the child process is done.
    wait_for(lambda: "this callback is broken" in hub.output(), 30, "the callback's output")


def test_execution_timeout_fails_the_task_inside_it_and_kills_a_stubborn_one(
    hub: Hub, tmp_path: Path
) -> None:
    mark = tmp_path / "timeout"
    run = hub.api.wait_run("times_out", hub.api.trigger("times_out", {"mark": str(mark)}))
    states = {t["task_id"]: t["state"] for t in run["tasks"]}
    assert states == {"slow": "failed", "stubborn": "failed"}
    slow = hub.api.log("times_out", run["run_id"], "slow")
    assert "TetherTaskTimeout: execution_timeout of 1s exceeded" in slow
    assert "timeout callback ran for try 1: TetherTaskTimeout" in slow
    stubborn = hub.api.log("times_out", run["run_id"], "stubborn")
    assert "execution_timeout of 1s exceeded and the task did not stop within 5s" in stubborn
    wait_for(mark.exists, 30, "the DAG's on_failure_callback")


def test_every_trigger_rule_with_real_upstream_outcomes(hub: Hub) -> None:
    states = _states(hub, "rules")
    with_failure = {rule: states[f"okbad_{rule}"] for rule in RULES}
    with_skip = {rule: states[f"okskip_{rule}"] for rule in RULES}
    assert (states["ok"], states["bad"], states["skip"]) == ("success", "failed", "skipped")
    # Upstream: one success, one failure.
    assert with_failure == {
        "all_success": "upstream_failed",
        "all_failed": "skipped",
        "all_done": "success",
        "one_success": "success",
        "one_failed": "success",
        "none_failed": "upstream_failed",
        "none_failed_min_one_success": "upstream_failed",
        "none_skipped": "success",
        "always": "success",
    }
    # Upstream: one success, one skip.
    assert with_skip == {
        "all_success": "skipped",
        "all_failed": "skipped",
        "all_done": "success",
        "one_success": "success",
        "one_failed": "skipped",
        "none_failed": "success",
        "none_failed_min_one_success": "success",
        "none_skipped": "skipped",
        "always": "success",
    }
    assert (states["child"], states["grandchild"]) == ("skipped", "skipped")
    assert states["<run>"] == "failed"


def test_retries_wait_with_exponential_backoff_capped_by_max_retry_delay(hub: Hub) -> None:
    run_id = hub.api.trigger("backoff")
    waits: dict[int, float] = {}

    def watch() -> dict[str, object] | None:
        run = hub.api.run("backoff", run_id)
        ti = run["tasks"][0]
        if ti["state"] == "up_for_retry" and ti["next_retry_at"]:
            ended = datetime.fromisoformat(ti["ended_at"])
            waits[ti["try_number"]] = (
                datetime.fromisoformat(ti["next_retry_at"]) - ended
            ).total_seconds()
        return run if run["state"] in ("success", "failed") else None

    run = wait_for(watch, 60, "the backoff run to finish", interval=0.02)
    ti = run["tasks"][0]
    assert (run["state"], ti["state"], ti["try_number"]) == ("success", "success", 3)
    # 1 s after the first failure; 2 s after the second, capped at 1.5 s.
    assert waits == {1: 1.0, 2: 1.5}
    for number in (1, 2, 3):
        assert f"try {number}" in hub.api.log("backoff", run_id, "flaky", try_number=number)
