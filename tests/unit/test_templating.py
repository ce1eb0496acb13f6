"""Unit tests of templating (tether.sdk.templating) and of the task process's rendering
step (tether.worker.runner.run on a DAG file, no worker, no hub)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tether import DAG, BaseOperator, BashOperator, DagDefinitionError, PythonOperator, task
from tether.protocol import Job
from tether.sdk.context import Context
from tether.sdk.templating import (
    TemplateRenderError,
    check_templates,
    render_params,
    render_template_fields,
    render_value,
)
from tether.sdk.xcom import XComArg
from tether.worker.runner import build_context, load_task, run

CONTEXT: dict[str, Any] = {
    "ds": "2026-03-25",
    "run_id": "manual__1",
    "params": {"n": 5, "label": "x"},
    "logical_date": datetime(2026, 3, 25, 7, 30, tzinfo=UTC),
}


def _run(job: Job, bundle_dir: Path) -> dict[str, Any]:
    """What the task process does with a job: import its DAG, build the context, run."""
    dag, task = load_task(job, bundle_dir)
    return run(job, dag, task, build_context(job, dag, task))


# --- render_value -----------------------------------------------------------------------------


def test_strings_render_with_the_context() -> None:
    assert render_value("{{ ds }} {{ params.n + 1 }} {{ params['label'] }}", CONTEXT) == (
        "2026-03-25 6 x"
    )


def test_datetimes_render_as_iso_8601() -> None:
    assert render_value("{{ logical_date }}", CONTEXT) == "2026-03-25T07:30:00+00:00"
    assert render_value("{{ logical_date.strftime('%H%M') }}", CONTEXT) == "0730"


def test_strings_inside_containers_render_and_other_values_are_kept() -> None:
    value = {
        "cmd": ["echo", "{{ ds }}", ("{{ run_id }}", 3)],
        "flags": {"{{ not_a_key_template }}": "{{ params.label }}"},
        "n": 1,
        "none": None,
    }
    assert render_value(value, CONTEXT) == {
        "cmd": ["echo", "2026-03-25", ("manual__1", 3)],
        "flags": {"{{ not_a_key_template }}": "x"},  # dict keys are not templates
        "n": 1,
        "none": None,
    }


def test_a_string_without_template_syntax_is_unchanged() -> None:
    text = "line one\nno templates here: $HOME, ${PATH}, 'quoted'\n"
    assert render_value(text, CONTEXT) == text
    assert render_value("trailing newline {{ ds }}\n", CONTEXT) == "trailing newline 2026-03-25\n"


def test_an_undefined_variable_is_an_error_naming_it() -> None:
    with pytest.raises(TemplateRenderError, match="'missing_var' is undefined"):
        render_value("echo {{ missing_var }}", CONTEXT)
    with pytest.raises(TemplateRenderError, match="has no attribute 'nope'"):
        render_value("echo {{ params.nope }}", CONTEXT)


def test_a_syntax_error_is_an_error_with_its_line() -> None:
    with pytest.raises(TemplateRenderError, match="syntax error on line 2"):
        render_value("ok\n{{ ds ", CONTEXT)


def test_templates_cannot_reach_python_internals() -> None:
    with pytest.raises(TemplateRenderError, match="unsafe"):
        render_value("{{ ''.__class__.__mro__ }}", CONTEXT)
    with pytest.raises(TemplateRenderError, match="unsafe"):
        render_value("{{ ds.__class__ }}", CONTEXT)


def test_raw_blocks_keep_jinja_syntax_literal() -> None:
    assert render_value("{% raw %}${#arr[@]}{% endraw %}", CONTEXT) == "${#arr[@]}"


# --- operators --------------------------------------------------------------------------------


def test_bash_operator_renders_command_env_and_cwd() -> None:
    with DAG("t"):
        op = BashOperator(
            task_id="b",
            bash_command="echo {{ ds }} {{ params.n }}",
            env={"LABEL": "{{ params.label }}", "PLAIN": "1"},
            cwd="/tmp/{{ ds_nodash }}",
        )
    render_template_fields(op, {**CONTEXT, "ds_nodash": "20260325"})
    assert op.bash_command == "echo 2026-03-25 5"
    assert op.env == {"LABEL": "x", "PLAIN": "1"}
    assert op.cwd == "/tmp/20260325"


def test_python_and_taskflow_arguments_render_and_xcomargs_stay_for_execute() -> None:
    @task
    def produce() -> int:
        return 1

    @task
    def consume(value: int, when: str, tags: list[str]) -> str:
        return f"{value} {when} {tags}"

    with DAG("t"):
        arg = produce()
        out = consume(arg, when="{{ ds }}", tags=["{{ run_id }}", "plain"])
        op = PythonOperator(task_id="p", python_callable=print, op_args=["{{ params.label }}", arg])
    consumer = out.operator
    render_template_fields(consumer, CONTEXT)
    assert isinstance(consumer, PythonOperator)
    assert consumer.op_args == [arg]
    assert consumer.op_kwargs == {"when": "2026-03-25", "tags": ["manual__1", "plain"]}
    render_template_fields(op, CONTEXT)
    assert op.op_args[0] == "x"
    assert isinstance(op.op_args[1], XComArg)
    result = consumer.execute({**CONTEXT, "inputs": {"produce": 41}})
    assert result == "41 2026-03-25 ['manual__1', 'plain']"


class Greet(BaseOperator):
    template_fields: Sequence[str] = ("greeting",)

    def __init__(self, *, greeting: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.greeting = greeting

    def execute(self, context: Context) -> str:
        return self.greeting


def test_own_operators_declare_their_template_fields() -> None:
    with DAG("t"):
        op = Greet(task_id="g", greeting="hello {{ params.label }}")
    render_template_fields(op, CONTEXT)
    assert op.greeting == "hello x"


def test_a_render_error_names_the_task_and_the_field() -> None:
    with DAG("t"):
        op = BashOperator(task_id="b", bash_command="echo ok", env={"A": "{{ nope }}"})
    with pytest.raises(TemplateRenderError) as caught:
        render_template_fields(op, CONTEXT)
    assert str(caught.value) == (
        "task 'b': cannot render env: 'nope' is undefined in template '{{ nope }}'"
    )


def test_string_params_render_with_the_unrendered_params() -> None:
    params = {"path": "/data/{{ ds }}/{{ params.n }}", "n": 5, "tags": ["{{ run_id }}"]}
    assert render_params(params, {**CONTEXT, "params": params}, set(params)) == {
        "path": "/data/2026-03-25/5",
        "n": 5,
        "tags": ["manual__1"],
    }
    with pytest.raises(TemplateRenderError, match="cannot render param 'bad': 'zz' is undefined"):
        render_params({"bad": "{{ zz }}"}, CONTEXT, {"bad"})


def test_params_that_are_not_templates_stay_as_they_are() -> None:
    params = {"from_dag": "{{ ds }}", "from_conf": "{{ ds }} {{ nope }}"}
    assert render_params(params, CONTEXT, {"from_dag"}) == {
        "from_dag": "2026-03-25",
        "from_conf": "{{ ds }} {{ nope }}",
    }


@pytest.mark.parametrize(
    "template",
    [
        "{{ params.update({'n': 6}) }}",
        "{{ env_vars.update({'BASH_ENV': '/tmp/x'}) }}",
        "{{ env_vars.__setitem__('A', 'b') }}",
        "{{ env_vars.setdefault('A', 'b') }}",
        "{{ conf.pop('k') }}",
        "{{ items.append(1) }}",
        "{{ items.extend([1]) }}",
        "{{ tags.add(1) }}",
        "{{ task.env.update({'A': 'b'}) }}",
        "{{ task.set_downstream(task) }}",
        "{{ dag.add_task(task) }}",
        "{% set _ = env_vars.update(A='b') %}",
    ],
)
def test_a_template_cannot_change_anything_in_its_context(template: str) -> None:
    with DAG("t"):
        op = BashOperator(task_id="b", bash_command="true", env={"A": "a"})
    context = {
        **CONTEXT,
        "conf": {"k": 1},
        "env_vars": {"TETHER_DAG_ID": "t"},
        "items": [],
        "tags": set(),
        "task": op,
        "dag": op.dag,
    }
    with pytest.raises(TemplateRenderError, match="never change it"):
        render_value(template, context)
    assert context["env_vars"] == {"TETHER_DAG_ID": "t"}
    assert context["params"] == {"n": 5, "label": "x"}
    assert op.env == {"A": "a"}
    assert op.downstream_task_ids == set()


def test_templates_may_call_read_only_methods() -> None:
    from tether.sdk.context import TaskInstanceInfo

    ti = TaskInstanceInfo("t", "b", "r", 1, inputs={"up": {"rows": 3}})
    context = {**CONTEXT, "ti": ti, "conf": {"k": "v"}}
    template = (
        "{{ ti.xcom_pull(task_ids='up')['rows'] }} {{ conf.get('k') }} {{ conf.keys() | list }} "
        "{{ ds.replace('-', '') }} {{ logical_date.strftime('%Y') }}"
    )
    assert render_value(template, context) == "3 v ['k'] 20260325 2026"


# --- parse-time check -------------------------------------------------------------------------


def test_check_templates_refuses_a_syntax_error_in_a_field() -> None:
    with DAG("t") as d:
        BashOperator(task_id="b", bash_command="echo ${#names[@]}")
    with pytest.raises(DagDefinitionError, match="task 'b': bash_command: syntax error on line 1"):
        check_templates(d)


def test_check_templates_refuses_a_syntax_error_in_a_param_default() -> None:
    with DAG("t", params={"p": "{% if %}"}) as d:
        pass
    with pytest.raises(DagDefinitionError, match="DAG 't': param 'p': syntax error"):
        check_templates(d)


def test_check_templates_refuses_a_template_field_that_is_not_an_attribute() -> None:
    class Broken(Greet):
        template_fields = ("greeting", "missing")

    with DAG("t") as d:
        Broken(task_id="g", greeting="hi")
    with pytest.raises(DagDefinitionError, match="template field 'missing' is not an attribute"):
        check_templates(d)


def test_check_templates_accepts_undefined_names() -> None:
    with DAG("t") as d:
        BashOperator(task_id="b", bash_command="echo {{ known_only_at_run_time }}")
    check_templates(d)


# --- the task process -------------------------------------------------------------------------


def _job(task_id: str, **extra: Any) -> Job:
    fields: dict[str, Any] = {
        "attempt_id": "a1",
        "dag_id": "rendered",
        "task_id": task_id,
        "run_id": "manual__2026-03-25T07:30:00+00:00",
        "try_number": 1,
        "queue": "default",
        "bundle_sha": "0" * 64,
        "fileloc": "rendered.py",
        "logical_date": "2026-03-25T07:30:00+00:00",
        "data_interval_start": "2026-03-24T00:00:00+00:00",
        "data_interval_end": "2026-03-25T00:00:00+00:00",
        **extra,
    }
    return Job(**fields)


def test_the_task_process_renders_with_the_jobs_params_before_execute(tmp_path: Path) -> None:
    (tmp_path / "rendered.py").write_text(
        textwrap.dedent(
            """
            from tether import DAG, Param, task

            with DAG("rendered", params={"n": Param(1, type="integer"), "day": "{{ ds }}"}):
                @task
                def show(line: str, params: dict, conf: dict) -> dict:
                    return {"line": line, "params": params, "conf": conf}

                show(
                    "{{ ds }}|{{ ds_nodash }}|{{ ts }}|{{ run_id }}|{{ data_interval_start }}"
                    "|{{ data_interval_end }}|{{ params.n }}|{{ params.day }}|{{ conf.free }}"
                    "|{{ dag.dag_id }}|{{ task.task_id }}|{{ ti.try_number }}"
                    "|{{ dag_run.conf.free }}"
                )
            """
        )
    )
    # The job's "day" is not the DAG file's: only the DAG file's own default is a template.
    job = _job("show", params={"n": 7, "day": "{{ ds_nodash }}"}, conf={"n": 7, "free": "f"})
    result = _run(job, tmp_path)
    assert result["state"] == "success"
    assert result["output"] == {
        "line": "2026-03-25|20260325|2026-03-25T07:30:00+00:00"
        "|manual__2026-03-25T07:30:00+00:00|2026-03-24T00:00:00+00:00"
        "|2026-03-25T00:00:00+00:00|7|2026-03-25|f|rendered|show|1|f",
        # The job's params (hub-validated); the DAG's string default rendered.
        "params": {"n": 7, "day": "2026-03-25"},
        "conf": {"n": 7, "free": "f"},
    }
    # A param given in the conf is data: printed by a template, never rendered itself.
    conf = {"day": "{{ ds_nodash }}", "free": "{{ run_id }}"}
    result = _run(_job("show", params={"n": 1, "day": conf["day"]}, conf=conf), tmp_path)
    assert result["output"]["line"].split("|")[7:9] == ["{{ ds_nodash }}", "{{ run_id }}"]
    assert result["output"]["params"] == {"n": 1, "day": "{{ ds_nodash }}"}


def test_literal_mapped_values_render_and_upstream_values_do_not(tmp_path: Path) -> None:
    (tmp_path / "rendered.py").write_text(
        textwrap.dedent(
            """
            from tether import DAG, task

            with DAG("rendered"):
                @task
                def make() -> list:
                    return ["{{ ds }} stays literal"]

                @task
                def show(day: str, raw: str, fixed: str) -> str:
                    return f"{day} | {raw} | {fixed}"

                show.partial(fixed="{{ run_id }}").expand(
                    day=["a {{ ds }}", "b {{ ds_nodash }}"], raw=make()
                )
            """
        )
    )
    inputs = {"make": ["{{ ds }} stays literal"]}
    result = _run(_job("show", map_index=1, inputs=inputs), tmp_path)
    assert result["output"] == (
        "b 20260325 | {{ ds }} stays literal | manual__2026-03-25T07:30:00+00:00"
    )


def test_check_templates_looks_at_literal_mapped_values() -> None:
    @task
    def show(x: str) -> None:
        return None

    with DAG("t") as d:
        show.expand(x=["ok", "{{ broken"])
    with pytest.raises(DagDefinitionError, match=r"task 'show': expand\(x=...\): syntax error"):
        check_templates(d)


def test_the_task_process_fails_on_an_undefined_variable(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "rendered.py").write_text(
        "from tether import DAG, BashOperator\n"
        "with DAG('rendered'):\n"
        f"    BashOperator(task_id='b', bash_command='touch {marker}; echo {{{{ nope_var }}}}')\n"
    )
    with pytest.raises(TemplateRenderError, match="'nope_var' is undefined"):
        _run(_job("b"), tmp_path)
    assert not marker.exists()  # rendering failed before the command ran
