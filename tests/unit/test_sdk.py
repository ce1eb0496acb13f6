"""Unit tests of the authoring SDK (tether.sdk): no processes, no network."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tether.sdk import (
    DAG,
    BashOperator,
    DagDefinitionError,
    EmptyOperator,
    Param,
    PythonOperator,
    XComArg,
    chain,
    dag,
    get_current_context,
    task,
)
from tether.sdk.context import TaskInstanceInfo, running
from tether.sdk.dag import current_dag
from tether.sdk.loader import load_dag_file
from tether.sdk.serialize import serialize_dag
from tether.sdk.xcom import find_xcom_args, resolve


def _deps(the_dag: DAG) -> dict[str, list[str]]:
    """Downstream ids of every task, for compact assertions."""
    return {t.task_id: sorted(t.downstream_task_ids) for t in the_dag.tasks}


# --- DAG ------------------------------------------------------------------------------


def test_tasks_created_inside_with_dag_join_it() -> None:
    with DAG("d1") as d:
        assert current_dag() is d
        a = EmptyOperator(task_id="a")
        b = EmptyOperator(task_id="b")
    assert current_dag() is None
    assert d.task_ids == ["a", "b"]
    assert a.dag is d
    assert b.dag is d
    assert d.get_task("a") is a


def test_nested_dag_contexts_use_the_innermost_and_restore_the_outer() -> None:
    with DAG("outer") as outer:
        with DAG("inner") as inner:
            EmptyOperator(task_id="in_inner")
        EmptyOperator(task_id="in_outer")
    assert inner.task_ids == ["in_inner"]
    assert outer.task_ids == ["in_outer"]


def test_explicit_dag_argument_wins_over_the_context() -> None:
    other = DAG("other")
    with DAG("ctx") as ctx:
        op = EmptyOperator(task_id="a", dag=other)
    assert op.dag is other
    assert other.task_ids == ["a"]
    assert ctx.task_ids == []


def test_get_task_of_unknown_id_raises_key_error() -> None:
    with DAG("d") as d:
        EmptyOperator(task_id="a")
    with pytest.raises(KeyError, match="nope"):
        d.get_task("nope")


@pytest.mark.parametrize(
    "dag_id", ["", "has space", "a/b", "émoji", "x" * 251, 42, None, "semi;colon"]
)
def test_invalid_dag_id_is_rejected(dag_id: Any) -> None:
    with pytest.raises(DagDefinitionError, match="invalid dag_id"):
        DAG(dag_id)


@pytest.mark.parametrize("dag_id", ["a", "A.b-c_9", "x" * 250])
def test_valid_dag_ids_are_accepted(dag_id: str) -> None:
    assert DAG(dag_id).dag_id == dag_id


@pytest.mark.parametrize("schedule", [5, 3.5, ["@daily"], datetime(2024, 1, 1, tzinfo=UTC)])
def test_schedule_of_unsupported_type_is_rejected(schedule: Any) -> None:
    with pytest.raises(DagDefinitionError, match="schedule"):
        DAG("d", schedule=schedule)


def test_naive_dates_become_utc_and_aware_dates_are_kept() -> None:
    aware = datetime(2024, 5, 1, 12, tzinfo=UTC)
    d = DAG("d", start_date=datetime(2024, 1, 1), end_date=aware)
    assert d.start_date == datetime(2024, 1, 1, tzinfo=UTC)
    assert d.start_date is not None
    assert d.start_date.tzinfo is UTC
    assert d.end_date is aware


def test_start_date_must_be_a_datetime() -> None:
    with pytest.raises(DagDefinitionError, match="start_date must be a datetime"):
        DAG("d", start_date="2024-01-01")  # type: ignore[arg-type]


def test_dag_decorator_without_arguments_uses_the_function_name_and_docstring() -> None:
    @dag
    def my_pipeline() -> None:
        """Docs of my pipeline."""
        EmptyOperator(task_id="only")

    built = my_pipeline()
    assert isinstance(built, DAG)
    assert built.dag_id == "my_pipeline"
    assert built.doc_md == "Docs of my pipeline."
    assert built.task_ids == ["only"]
    assert current_dag() is None


def test_dag_decorator_with_id_and_arguments_passes_them_through() -> None:
    @dag("explicit_id", schedule="@daily", tags=["t"], catchup=True, doc_md="given")
    def builder(n: int) -> None:
        """Ignored: doc_md was given."""
        for i in range(n):
            EmptyOperator(task_id=f"t{i}")

    built = builder(3)
    assert built.dag_id == "explicit_id"
    assert built.schedule == "@daily"
    assert built.tags == ["t"]
    assert built.catchup is True
    assert built.doc_md == "given"
    assert built.task_ids == ["t0", "t1", "t2"]


def test_dag_decorator_with_keyword_arguments_only() -> None:
    @dag(schedule=timedelta(hours=1))
    def hourly() -> None:
        EmptyOperator(task_id="a")

    built = hourly()
    assert built.dag_id == "hourly"
    assert built.schedule == timedelta(hours=1)


# --- operators: validation ----------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["", "with space", "a/b", "x" * 251, 3, None])
def test_invalid_task_id_is_rejected(task_id: Any) -> None:
    with DAG("d"), pytest.raises(DagDefinitionError, match="invalid task_id"):
        EmptyOperator(task_id=task_id)


def test_duplicate_task_id_is_rejected() -> None:
    with DAG("d") as d:
        EmptyOperator(task_id="a")
        with pytest.raises(DagDefinitionError, match="appears twice"):
            EmptyOperator(task_id="a")
    assert d.task_ids == ["a"]


def test_task_outside_a_dag_is_rejected() -> None:
    with pytest.raises(DagDefinitionError, match="not in a DAG"):
        EmptyOperator(task_id="lonely")


@pytest.mark.parametrize("queue", ["", "has space", "-leading", ".leading", "a/b", "q" * 257, 7])
def test_invalid_queue_name_is_rejected_at_definition_time(queue: Any) -> None:
    with DAG("d"), pytest.raises(DagDefinitionError, match="invalid queue name"):
        EmptyOperator(task_id="a", queue=queue)


def test_invalid_queue_name_in_dag_default_args_is_rejected() -> None:
    with DAG("d", default_args={"queue": "bad queue"}), pytest.raises(DagDefinitionError):
        EmptyOperator(task_id="a")


@pytest.mark.parametrize("queue", ["gpu", "edge:site-1.rack_2", "Q" * 256, "0x"])
def test_valid_queue_names_are_accepted(queue: str) -> None:
    with DAG("d"):
        assert EmptyOperator(task_id="a", queue=queue).queue == queue


def test_unknown_operator_argument_is_rejected() -> None:
    with DAG("d"), pytest.raises(DagDefinitionError, match="invalid arguments.*colour"):
        EmptyOperator(task_id="a", colour="blue")


def test_bad_trigger_rule_is_rejected() -> None:
    with DAG("d"), pytest.raises(DagDefinitionError, match="trigger_rule"):
        EmptyOperator(task_id="a", trigger_rule="some_success")


@pytest.mark.parametrize("retries", [-1, 1.5, "2", True, None])
def test_retries_must_be_a_non_negative_integer(retries: Any) -> None:
    with DAG("d"), pytest.raises(DagDefinitionError, match="retries"):
        EmptyOperator(task_id="a", retries=retries)


def test_pool_slots_must_be_positive() -> None:
    with DAG("d"), pytest.raises(DagDefinitionError, match="pool_slots"):
        EmptyOperator(task_id="a", pool_slots=0)


def test_retry_delay_of_wrong_type_is_rejected() -> None:
    with DAG("d"), pytest.raises(DagDefinitionError, match="retry_delay"):
        EmptyOperator(task_id="a", retry_delay="5 minutes")


def test_builtin_defaults() -> None:
    with DAG("d"):
        op = EmptyOperator(task_id="a")
    assert op.queue == "default"
    assert op.retries == 0
    assert op.retry_delay == 300.0
    assert op.trigger_rule == "all_success"
    assert op.pool == "default_pool"
    assert op.pool_slots == 1
    assert op.execution_timeout is None
    assert op.do_xcom_push is True


def test_default_args_precedence() -> None:
    dag_defaults = {"retries": 1, "queue": "dagq", "owner": "dag-owner", "pool": "dagpool"}
    op_defaults = {"retries": 2, "queue": "opq", "owner": "op-owner"}
    with DAG("d", default_args=dag_defaults):
        explicit = EmptyOperator(task_id="a", default_args=op_defaults, retries=3)
        from_op = EmptyOperator(task_id="b", default_args=op_defaults)
        from_dag = EmptyOperator(task_id="c")
    # explicit kwarg > operator default_args > dag default_args > built-in default
    assert explicit.retries == 3
    assert explicit.queue == "opq"
    assert explicit.owner == "op-owner"
    assert explicit.pool == "dagpool"
    assert explicit.priority_weight == 1
    assert from_op.retries == 2
    assert from_op.queue == "opq"
    assert from_dag.retries == 1
    assert from_dag.queue == "dagq"
    assert from_dag.owner == "dag-owner"
    assert from_dag.trigger_rule == "all_success"


def test_default_args_keys_that_are_not_operator_arguments_are_ignored() -> None:
    defaults = {"start_date": datetime(2024, 1, 1, tzinfo=UTC), "retries": 4}
    with DAG("d", default_args=defaults):
        op = EmptyOperator(task_id="a")
    assert op.retries == 4


def test_timedeltas_become_seconds() -> None:
    with DAG("d", default_args={"retry_delay": timedelta(seconds=30)}):
        op = EmptyOperator(task_id="a", execution_timeout=timedelta(minutes=2), max_retry_delay=600)
    assert op.retry_delay == 30.0
    assert op.execution_timeout == 120.0
    assert op.max_retry_delay == 600.0


# --- dependencies ---------------------------------------------------------------------------


def test_rshift_sets_downstream_and_returns_the_right_side() -> None:
    with DAG("d") as d:
        a, b, c = (EmptyOperator(task_id=n) for n in "abc")
        assert (a >> b) is b
        b >> c
    assert _deps(d) == {"a": ["b"], "b": ["c"], "c": []}
    assert a.downstream_list == [b]
    assert c.upstream_list == [b]
    assert b.upstream_task_ids == {"a"}


def test_lshift_sets_upstream() -> None:
    with DAG("d") as d:
        a, b = EmptyOperator(task_id="a"), EmptyOperator(task_id="b")
        assert (b << a) is a
    assert _deps(d) == {"a": ["b"], "b": []}


def test_lists_on_either_side() -> None:
    with DAG("d") as d:
        a, b, c, x, y, z = (EmptyOperator(task_id=n) for n in "abcxyz")
        a >> [b, c]
        [b, c] >> x
        [y, z] << x
        a << [y]
    assert _deps(d) == {
        "a": ["b", "c"],
        "b": ["x"],
        "c": ["x"],
        "x": ["y", "z"],
        "y": ["a"],
        "z": [],
    }


def test_list_rshift_returns_the_operator_for_chaining() -> None:
    with DAG("d") as d:
        a, b, c = (EmptyOperator(task_id=n) for n in "abc")
        result = [a, b] >> c
    assert result is c
    assert d.get_task("c").upstream_task_ids == {"a", "b"}


def test_dependency_on_a_non_task_is_rejected() -> None:
    with DAG("d"):
        a = EmptyOperator(task_id="a")
        with pytest.raises(DagDefinitionError, match="cannot set a dependency"):
            a >> [EmptyOperator(task_id="b"), "c"]


def test_dependency_across_dags_is_rejected() -> None:
    with DAG("one"):
        a = EmptyOperator(task_id="a")
    with DAG("two"):
        b = EmptyOperator(task_id="b")
    with pytest.raises(DagDefinitionError, match="different DAGs"):
        a >> b
    assert a.downstream_task_ids == set()
    assert b.upstream_task_ids == set()


def test_task_cannot_depend_on_itself() -> None:
    with DAG("d"):
        a = EmptyOperator(task_id="a")
        with pytest.raises(DagDefinitionError, match="itself"):
            a >> a


def test_chain_with_a_list_in_the_middle() -> None:
    with DAG("d") as d:
        a, b, c, e, f = (EmptyOperator(task_id=n) for n in "abcef")
        chain(a, b, [c, e], f)
    assert _deps(d) == {"a": ["b"], "b": ["c", "e"], "c": ["f"], "e": ["f"], "f": []}


def test_chain_of_single_tasks_and_of_one_task() -> None:
    with DAG("d") as d:
        a, b, c = (EmptyOperator(task_id=n) for n in "abc")
        chain(a)
        assert _deps(d) == {"a": [], "b": [], "c": []}
        chain(c, b, a)
    assert _deps(d) == {"a": [], "b": ["a"], "c": ["b"]}


def test_topological_order_puts_upstream_first() -> None:
    with DAG("d") as d:
        c, b, a, z = (EmptyOperator(task_id=n) for n in "cbaz")
        a >> b >> c
        z >> c
    order = d.topological_order()
    assert sorted(order) == ["a", "b", "c", "z"]
    for t in d.tasks:
        for up in t.upstream_task_ids:
            assert order.index(up) < order.index(t.task_id)


@pytest.mark.parametrize("check", ["validate", "topological_order"])
def test_cycle_is_detected(check: str) -> None:
    with DAG("cyclic") as d:
        a, b, c = (EmptyOperator(task_id=n) for n in "abc")
        a >> b >> c >> a
    with pytest.raises(DagDefinitionError, match="cycle"):
        getattr(d, check)()


def test_validate_accepts_a_diamond() -> None:
    with DAG("diamond") as d:
        a, b, c, e = (EmptyOperator(task_id=n) for n in "abce")
        a >> [b, c] >> e
    d.validate()


def test_validate_rejects_a_dependency_on_a_task_not_in_the_dag() -> None:
    with DAG("d") as d:
        a = EmptyOperator(task_id="a")
    a.upstream_task_ids.add("ghost")
    with pytest.raises(DagDefinitionError, match="ghost"):
        d.validate()


# --- TaskFlow -----------------------------------------------------------------------------


def test_task_call_returns_xcomarg_and_creates_a_python_task() -> None:
    @task
    def extract() -> int:
        return 1

    with DAG("d") as d:
        result = extract()
    assert isinstance(result, XComArg)
    assert result.operator is d.get_task("extract")
    assert isinstance(result.operator, PythonOperator)
    assert result.key is None


def test_calling_a_task_twice_gives_unique_ids() -> None:
    @task
    def step() -> None:
        return None

    with DAG("d") as d:
        first, second, third = step(), step(), step()
    assert [first.operator.task_id, second.operator.task_id, third.operator.task_id] == [
        "step",
        "step__1",
        "step__2",
    ]
    assert d.task_ids == ["step", "step__1", "step__2"]


def test_override_sets_task_id_and_other_arguments() -> None:
    @task(retries=1, queue="q1")
    def step() -> None:
        return None

    with DAG("d") as d:
        plain = step()
        custom = step.override(task_id="custom", queue="q2")()
    assert plain.operator.task_id == "step"
    assert plain.operator.queue == "q1"
    assert plain.operator.retries == 1
    assert custom.operator.task_id == "custom"
    assert custom.operator.queue == "q2"
    assert custom.operator.retries == 1
    assert d.task_ids == ["step", "custom"]
    # override() does not change the original decorator
    assert step.task_kwargs == {"retries": 1, "queue": "q1"}


def test_task_python_form_and_invalid_task_argument() -> None:
    @task.python(retries=2)
    def step() -> None:
        return None

    @task(colour="red")
    def bad() -> None:
        return None

    with DAG("d"):
        assert step().operator.retries == 2
        with pytest.raises(DagDefinitionError, match="colour"):
            bad()


def test_task_called_outside_a_dag_is_rejected() -> None:
    @task
    def step() -> None:
        return None

    with pytest.raises(DagDefinitionError, match="outside a DAG"):
        step()


def test_passing_xcomargs_creates_dependencies() -> None:
    @task
    def source() -> dict[str, int]:
        return {"n": 1}

    @task
    def sink(a: Any, b: Any = None, c: Any = None) -> None:
        return None

    with DAG("d") as d:
        s1, s2, s3 = source(), source(), source()
        sink(s1, b=[1, {"deep": s2["n"]}], c=(s3,))
        sink(5)
    assert d.get_task("sink").upstream_task_ids == {"source", "source__1", "source__2"}
    assert d.get_task("sink__1").upstream_task_ids == set()
    assert d.get_task("source").downstream_task_ids == {"sink"}


def test_xcomarg_supports_shift_operators() -> None:
    @task
    def step() -> None:
        return None

    with DAG("d") as d:
        first = step()
        tail = EmptyOperator(task_id="tail")
        head = EmptyOperator(task_id="head")
        first >> tail
        first << head
    assert _deps(d) == {"step": ["tail"], "tail": [], "head": ["step"]}


def test_decorated_task_executes_with_resolved_inputs_and_context() -> None:
    @task
    def add(a: int, b: int, ti: Any = None) -> tuple[int, Any]:
        return a + b, ti

    @task
    def source() -> dict[str, int]:
        return {"x": 0}

    with DAG("d"):
        src = source()
        out = add(src["x"], b=src["y"])
    ti = TaskInstanceInfo(dag_id="d", task_id="add", run_id="r", try_number=1)
    context = {"inputs": {"source": {"x": 2, "y": 40}}, "ti": ti}
    assert out.operator.execute(context) == (42, ti)


def test_xcomarg_getitem_and_repr() -> None:
    with DAG("d"):
        op = EmptyOperator(task_id="up")
    whole = XComArg(op)
    keyed = whole["k"]
    assert keyed.operator is op
    assert keyed.key == "k"
    assert whole.key is None
    assert repr(whole) == "XComArg(up)"
    assert repr(keyed) == "XComArg(up)['k']"


def test_xcomarg_resolve() -> None:
    with DAG("d"):
        op = EmptyOperator(task_id="up")
    arg = XComArg(op)
    assert arg.resolve({"inputs": {"up": {"k": 1}}}) == {"k": 1}
    assert arg["k"].resolve({"inputs": {"up": {"k": 1}}}) == 1
    assert arg.resolve({"inputs": {"up": None}}) is None
    with pytest.raises(RuntimeError, match="was not provided"):
        arg.resolve({"inputs": {}})
    with pytest.raises(RuntimeError, match="was not provided"):
        arg.resolve({})
    with pytest.raises(RuntimeError, match="no key 'missing'"):
        arg["missing"].resolve({"inputs": {"up": {"k": 1}}})
    with pytest.raises(RuntimeError, match="no key"):
        arg["k"].resolve({"inputs": {"up": 5}})


def test_xcomarg_is_not_iterable() -> None:
    with DAG("d"):
        op = EmptyOperator(task_id="up")
    with pytest.raises(TypeError, match="not iterable"):
        list(XComArg(op))


def test_resolve_nested_structures() -> None:
    with DAG("d"):
        a = EmptyOperator(task_id="a")
        b = EmptyOperator(task_id="b")
    xa, xb = XComArg(a), XComArg(b)
    value = {"list": [xa, 1, (xb["k"], "s")], "plain": "x", "nested": {"deep": [[xb]]}}
    context = {"inputs": {"a": "A", "b": {"k": "K"}}}
    assert resolve(value, context) == {
        "list": ["A", 1, ("K", "s")],
        "plain": "x",
        "nested": {"deep": [[{"k": "K"}]]},
    }
    assert isinstance(resolve((xa,), context), tuple)
    assert resolve(7, context) == 7


def test_find_xcom_args_in_nested_structures() -> None:
    with DAG("d"):
        a = EmptyOperator(task_id="a")
        b = EmptyOperator(task_id="b")
    xa, xb = XComArg(a), XComArg(b)
    found = find_xcom_args([1, (xa,), {"k": [xb]}, "s"])
    assert found == [xa, xb]
    assert find_xcom_args(xa) == [xa]
    assert find_xcom_args({"xa": 1}) == []


# --- PythonOperator -------------------------------------------------------------------------


def _python(func: Any, **kwargs: Any) -> PythonOperator:
    with DAG("d"):
        return PythonOperator(task_id="p", python_callable=func, **kwargs)


def test_python_operator_passes_only_the_context_keys_it_declares() -> None:
    def func(x: int, ti: Any, params: Any = None) -> tuple[int, Any, Any]:
        return x, ti, params

    context = {"ti": "TI", "params": {"p": 1}, "ds": "2024-01-01", "run_id": "r"}
    assert _python(func, op_args=[1]).execute(context) == (1, "TI", {"p": 1})


def test_python_operator_passes_the_whole_context_to_var_keyword() -> None:
    seen: dict[str, Any] = {}

    def func(a: int, **kwargs: Any) -> int:
        seen.update(kwargs)
        return a

    context = {"ti": "TI", "ds": "2024-01-01"}
    assert _python(func, op_kwargs={"a": 3, "extra": 4}).execute(context) == 3
    assert seen == {"ti": "TI", "ds": "2024-01-01", "extra": 4}


def test_python_operator_op_args_and_op_kwargs_beat_context_keys() -> None:
    def func(ti: Any, params: Any) -> tuple[Any, Any]:
        return ti, params

    context = {"ti": "context-ti", "params": "context-params"}
    assert _python(func, op_args=["arg-ti"], op_kwargs={"params": "kw"}).execute(context) == (
        "arg-ti",
        "kw",
    )


def test_python_operator_without_xcom_push_returns_none() -> None:
    assert _python(lambda: 5, do_xcom_push=False).execute({}) is None
    assert _python(lambda: 5).execute({}) == 5


def test_python_operator_resolves_xcomargs_in_its_arguments() -> None:
    with DAG("d"):
        up = EmptyOperator(task_id="up")
        op = PythonOperator(
            task_id="p",
            python_callable=lambda a, b: (a, b),
            op_args=[XComArg(up)["x"]],
            op_kwargs={"b": [XComArg(up)]},
        )
    assert op.execute({"inputs": {"up": {"x": 1}}}) == (1, [{"x": 1}])


def test_python_operator_requires_a_callable() -> None:
    with DAG("d"), pytest.raises(DagDefinitionError, match="callable"):
        PythonOperator(task_id="p", python_callable="not callable")  # type: ignore[arg-type]


def test_bash_operator_requires_a_command() -> None:
    with DAG("d"), pytest.raises(DagDefinitionError, match="bash_command"):
        BashOperator(task_id="b", bash_command="   ")


# --- context ---------------------------------------------------------------------------------


def test_xcom_pull_from_task_instance_info() -> None:
    ti = TaskInstanceInfo(
        dag_id="d",
        task_id="t",
        run_id="r",
        try_number=1,
        inputs={"a": {"k": 1, "j": 2}, "b": {"k": 3}, "c": None},
    )
    assert ti.xcom_pull("a") == {"k": 1, "j": 2}
    assert ti.xcom_pull("a", key="j") == 2
    assert ti.xcom_pull(["a", "b"]) == [{"k": 1, "j": 2}, {"k": 3}]
    assert ti.xcom_pull(["a", "b"], key="k") == [1, 3]
    assert ti.xcom_pull(["c"]) == [None]
    assert ti.xcom_pull("c") is None
    with pytest.raises(KeyError, match="not a direct upstream"):
        ti.xcom_pull("zzz")
    with pytest.raises(KeyError, match="zzz"):
        ti.xcom_pull(["a", "zzz"])


def test_get_current_context_only_while_running() -> None:
    with pytest.raises(RuntimeError):
        get_current_context()
    outer = {"run_id": "outer"}
    inner = {"run_id": "inner"}
    with running(outer):
        assert get_current_context() is outer
        with running(inner):
            assert get_current_context() is inner
        assert get_current_context() is outer
    with pytest.raises(RuntimeError):
        get_current_context()


# --- serialize -------------------------------------------------------------------------------


def test_serialize_dag() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with DAG(
        "ser",
        schedule="@daily",
        start_date=start,
        catchup=True,
        tags=["x"],
        params={"p": 1, "n": Param(2, type="integer", description="how many")},
        default_args={"retry_delay": timedelta(seconds=90), "retries": 2},
    ) as d:
        last = EmptyOperator(task_id="last", queue="q2")
        middle = PythonOperator(task_id="middle", python_callable=print, trigger_rule="all_done")
        first = BashOperator(task_id="first", bash_command="true", pool_slots=2)
        first >> middle >> last
        first >> last
    out = serialize_dag(d)
    assert [t["task_id"] for t in out["tasks"]] == ["first", "middle", "last"]
    assert out["dag_id"] == "ser"
    assert out["schedule"] == "@daily"
    assert out["schedule_is_timedelta"] is False
    assert out["start_date"] == "2024-01-01T00:00:00+00:00"
    assert out["end_date"] is None
    assert out["catchup"] is True
    assert out["tags"] == ["x"]
    assert out["params"] == {
        "p": {"schema": {}, "description": None, "default": 1},
        "n": {"schema": {"type": "integer"}, "description": "how many", "default": 2},
    }
    tasks = {t["task_id"]: t for t in out["tasks"]}
    assert tasks["first"]["operator"] == "BashOperator"
    assert tasks["first"]["upstream"] == []
    assert tasks["first"]["downstream"] == ["last", "middle"]
    assert tasks["first"]["pool_slots"] == 2
    assert tasks["middle"]["upstream"] == ["first"]
    assert tasks["middle"]["downstream"] == ["last"]
    assert tasks["middle"]["trigger_rule"] == "all_done"
    assert tasks["last"]["upstream"] == ["first", "middle"]
    assert tasks["last"]["queue"] == "q2"
    assert tasks["last"]["retries"] == 2
    assert tasks["last"]["retry_delay"] == 90.0


def test_serialize_timedelta_schedule_and_decorated_operator_name() -> None:
    @task
    def step() -> None:
        return None

    with DAG("td", schedule=timedelta(hours=6)) as d:
        step()
    out = serialize_dag(d)
    assert out["schedule"] == 6 * 3600.0
    assert out["schedule_is_timedelta"] is True
    assert out["start_date"] is None
    assert out["tasks"][0]["operator"] == "PythonDecoratedOperator"
    assert out["tasks"][0]["retry_delay"] == 300.0


def test_serialize_rejects_a_cycle() -> None:
    with DAG("cyc") as d:
        a, b = EmptyOperator(task_id="a"), EmptyOperator(task_id="b")
        a >> b >> a
    with pytest.raises(DagDefinitionError, match="cycle"):
        serialize_dag(d)


# --- loader ----------------------------------------------------------------------------------


@pytest.fixture
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo the loader's changes to sys.path and forget the modules it imported."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("tether_dagfile_", "tether_unit_helper_")):
            del sys.modules[name]


def _write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


@pytest.mark.usefixtures("isolated_imports")
def test_load_dag_file_collects_every_dag_and_sets_fileloc(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    path = _write(
        root / "sub" / "pipelines.py",
        """
        from tether.sdk import DAG, EmptyOperator, dag

        with DAG("first"):
            EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")

        def make(n):
            return DAG(f"made_{n}")

        made = [make(i) for i in range(2)]

        @dag
        def decorated():
            EmptyOperator(task_id="x")

        decorated()
        """,
    )
    dags = load_dag_file(path, root)
    assert [d.dag_id for d in dags] == ["first", "made_0", "made_1", "decorated"]
    assert {d.fileloc for d in dags} == {"sub/pipelines.py"}
    assert dags[0].task_ids == ["a", "b"]
    assert dags[3].task_ids == ["x"]


@pytest.mark.usefixtures("isolated_imports")
def test_load_dag_file_can_import_a_helper_module_beside_it(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    _write(
        root / "tether_unit_helper_mod.py",
        """
        QUEUE = "from-helper"
        """,
    )
    path = _write(
        root / "uses_helper.py",
        """
        from tether.sdk import DAG, EmptyOperator
        from tether_unit_helper_mod import QUEUE

        with DAG("helped"):
            EmptyOperator(task_id="a", queue=QUEUE)
        """,
    )
    (loaded,) = load_dag_file(path, root)
    assert loaded.dag_id == "helped"
    assert loaded.fileloc == "uses_helper.py"
    assert loaded.get_task("a").queue == "from-helper"


@pytest.mark.usefixtures("isolated_imports")
def test_load_dag_file_rejects_a_duplicate_dag_id(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "dup.py",
        """
        from tether.sdk import DAG

        DAG("same")
        DAG("same")
        """,
    )
    with pytest.raises(DagDefinitionError, match="'same' is defined twice"):
        load_dag_file(path, tmp_path)


@pytest.mark.usefixtures("isolated_imports")
def test_load_dag_file_validates_each_dag(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "cyclic.py",
        """
        from tether.sdk import DAG, EmptyOperator

        with DAG("loop"):
            a = EmptyOperator(task_id="a")
            b = EmptyOperator(task_id="b")
            a >> b >> a
        """,
    )
    with pytest.raises(DagDefinitionError, match="cycle"):
        load_dag_file(path, tmp_path)


@pytest.mark.usefixtures("isolated_imports")
def test_load_dag_file_propagates_definition_errors(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "badqueue.py",
        """
        from tether.sdk import DAG, EmptyOperator

        with DAG("bad"):
            EmptyOperator(task_id="a", queue="no spaces allowed")
        """,
    )
    with pytest.raises(DagDefinitionError, match="invalid queue name"):
        load_dag_file(path, tmp_path)


@pytest.mark.usefixtures("isolated_imports")
def test_load_dag_file_without_dags_and_dags_made_outside_are_not_collected(
    tmp_path: Path,
) -> None:
    DAG("made_by_the_test")
    path = _write(tmp_path / "empty.py", "VALUE = 1\n")
    assert load_dag_file(path, tmp_path) == []


# --- fixed after review ---------------------------------------------------------------


def test_chain_links_side_by_side_lists_pairwise() -> None:
    with DAG("pairs") as the_dag:
        a, b, c, d, e, f = (EmptyOperator(task_id=n) for n in "abcdef")
        chain(a, [b, c], [d, e], f)
    assert _deps(the_dag) == {
        "a": ["b", "c"],
        "b": ["d"],
        "c": ["e"],
        "d": ["f"],
        "e": ["f"],
        "f": [],
    }


def test_chain_refuses_side_by_side_lists_of_different_lengths() -> None:
    with DAG("uneven"):
        a, b, c, d, e = (EmptyOperator(task_id=n) for n in "abcde")
        with pytest.raises(DagDefinitionError, match="lengths differ"):
            chain([a, b], [c, d, e])


def test_a_set_argument_is_resolved_too() -> None:
    with DAG("sets"):

        @task
        def five() -> int:
            return 5

        arg = five()
    assert resolve({arg}, {"inputs": {"five": 5}}) == {5}
    assert resolve(frozenset([arg]), {"inputs": {"five": 5}}) == frozenset([5])


def test_an_xcom_arg_given_to_a_python_operator_makes_its_task_upstream() -> None:
    with DAG("classic") as the_dag:

        @task
        def produce() -> int:
            return 1

        value = produce()
        PythonOperator(task_id="consume", python_callable=print, op_kwargs={"v": value})
    assert _deps(the_dag)["produce"] == ["consume"]


def _bash(command: str, **kwargs: Any) -> Any:
    with DAG(f"bash_{abs(hash(command))}"):
        op = BashOperator(task_id="b", bash_command=command, **kwargs)
    return op.execute({})


def test_bash_returns_its_last_non_empty_output_line() -> None:
    assert _bash("echo first; echo last; echo") == "last"


def test_bash_non_zero_exit_fails_naming_the_command_and_its_status() -> None:
    from tether.sdk.context import TaskCommandFailed

    with pytest.raises(TaskCommandFailed, match="^Command exited with status 3: exit 3$"):
        _bash("exit 3")


def test_bash_exit_99_skips() -> None:
    from tether.sdk import TetherSkipException

    with pytest.raises(TetherSkipException):
        _bash("exit 99")


def test_bash_env_replaces_the_environment_unless_appended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TETHER_TEST_OUTER", "outer")
    assert _bash('echo "${TETHER_TEST_OUTER:-unset} $MINE"', env={"MINE": "x"}) == "unset x"
    assert _bash('echo "$TETHER_TEST_OUTER $MINE"', env={"MINE": "x"}, append_env=True) == (
        "outer x"
    )


def test_dag_time_zone_comes_from_timezone_or_the_start_dates_zone() -> None:
    from zoneinfo import ZoneInfo

    assert DAG("utc_by_default").timezone == "UTC"
    local = DAG("local", start_date=datetime(2026, 1, 1, tzinfo=ZoneInfo("Asia/Tokyo")))
    assert local.timezone == "Asia/Tokyo"
    assert DAG("named", timezone="America/Chicago").timezone == "America/Chicago"
    assert serialize_dag(DAG("ser", timezone="Europe/Paris"))["timezone"] == "Europe/Paris"
    with pytest.raises(DagDefinitionError, match="unknown timezone 'Nowhere/Atlantis'"):
        DAG("bad_zone", timezone="Nowhere/Atlantis")


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_max_active_limits_must_be_positive_integers(limit: object) -> None:
    with pytest.raises(DagDefinitionError, match="must be an integer >= 1"):
        DAG("limited", max_active_runs=limit)  # type: ignore[arg-type]
    with pytest.raises(DagDefinitionError, match="must be an integer >= 1"):
        DAG("limited2", max_active_tasks=limit)  # type: ignore[arg-type]


def test_expand_serializes_literal_lengths_and_upstream_references() -> None:
    from tether import task

    with DAG("mapping") as d:

        @task
        def make() -> list[int]:
            return [1, 2]

        @task
        def use(x: int, y: str, fixed: int) -> None:
            return None

        use.partial(fixed=1).expand(x=make(), y=["a", "b", "c"])
    spec = {t["task_id"]: t for t in serialize_dag(d)["tasks"]}
    assert spec["use"]["mapped"] == [
        {"arg": "x", "task_id": "make", "key": None},
        {"arg": "y", "length": 3},
    ]
    assert spec["use"]["upstream"] == ["make"]
    assert spec["make"]["mapped"] is None


@pytest.mark.parametrize(
    ("mapped", "message"),
    [
        ({"x": 5}, "takes a list, a tuple or an upstream task's output, not int"),
        ({"x": list(range(1025))}, "makes 1025 task instances; the limit is 1024"),
        ({}, "expand\\(\\) needs at least one argument"),
    ],
)
def test_expand_refuses_what_it_cannot_map(mapped: dict[str, Any], message: str) -> None:
    from tether import task

    with DAG("bad_mapping"):

        @task
        def use(x: int) -> None:
            return None

        with pytest.raises(DagDefinitionError, match=message):
            use.expand(**mapped)


def test_partial_and_expand_may_not_name_the_same_argument() -> None:
    from tether import task

    with DAG("overlap"):

        @task
        def use(x: int) -> None:
            return None

        with pytest.raises(
            DagDefinitionError, match="x given to both partial\\(\\) and expand\\(\\)"
        ):
            use.partial(x=1).expand(x=[1, 2])


def test_a_task_may_read_its_own_its_dags_and_its_default_args_declarations() -> None:
    from tether.sdk.serialize import serialize_dag

    with DAG(
        "declares",
        connections=["warehouse"],
        variables=["region"],
        default_args={"connections": ["customer_db"]},
        include=["sql/*.sql"],
    ) as d:
        plain = BashOperator(task_id="plain", bash_command="true")
        own = BashOperator(
            task_id="own", bash_command="true", connections=["slack"], variables=["limits"]
        )
    assert plain.connections == ["customer_db", "warehouse"]
    assert own.connections == ["slack", "warehouse"]  # its own list replaces default_args'
    assert own.variables == ["limits", "region"]
    spec = serialize_dag(d)
    assert spec["include"] == ["sql/*.sql"]
    tasks = {t["task_id"]: t for t in spec["tasks"]}
    assert tasks["plain"]["connections"] == ["customer_db", "warehouse"]
    assert tasks["own"]["variables"] == ["limits", "region"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"connections": "warehouse"}, "must be a list of names"),
        ({"connections": ["../etc"]}, "invalid name '../etc'"),
        ({"variables": [""]}, "invalid name ''"),
        ({"include": ["../outside.sql"]}, "without '..'"),
        ({"include": ["/etc/passwd"]}, "without '..'"),
        ({"include": "sql/*.sql"}, "must be a list of paths"),
    ],
)
def test_bad_declarations_are_definition_errors(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(DagDefinitionError, match=re.escape(reason)):
        DAG("bad_declarations", **kwargs)
