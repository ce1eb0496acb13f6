"""The task process: ``python -m tether.worker.runner JOB_FILE RESULT_FILE``.

The worker starts one per attempt, with stdout and stderr going to the
attempt's log file. It imports the DAG file from the unpacked bundle, runs
the one task and writes the result as JSON. If this process dies before
writing the result, the worker reports the attempt failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from tether.protocol import (
    ATTEMPT_FAILED,
    ATTEMPT_SKIPPED,
    ATTEMPT_SUCCESS,
    DEFAULT_MAX_TASK_OUTPUT_BYTES,
    AttemptResult,
    Job,
    sendable_result,
)
from tether.sdk import secrets
from tether.sdk._process import die_with_parent
from tether.sdk.context import (
    DagRunInfo,
    TaskCommandFailed,
    TaskInstanceInfo,
    TetherFailException,
    TetherSkipException,
    running,
)
from tether.sdk.loader import load_dag_file
from tether.sdk.masking import redact
from tether.sdk.templating import render_params, render_template_fields
from tether.worker.masked_output import masked_output


def _date(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def build_context(job: Job, dag: Any, task: Any) -> dict[str, Any]:
    """The Airflow-style context: what ``execute`` receives and templates see."""
    logical = _date(job.logical_date)
    ti = TaskInstanceInfo(
        dag_id=job.dag_id,
        task_id=job.task_id,
        run_id=job.run_id,
        try_number=job.try_number,
        map_index=job.map_index,
        queue=job.queue,
        attempt_id=job.attempt_id,
        inputs=job.inputs,
    )
    start, end = _date(job.data_interval_start), _date(job.data_interval_end)
    return {
        "dag": dag,
        "task": task,
        "run_id": job.run_id,
        "try_number": job.try_number,
        "conf": job.conf,
        "params": dict(job.params),
        "logical_date": logical,
        "ds": logical.strftime("%Y-%m-%d") if logical else None,
        "ds_nodash": logical.strftime("%Y%m%d") if logical else None,
        "ts": logical.isoformat() if logical else None,
        "ts_nodash": logical.strftime("%Y%m%dT%H%M%S") if logical else None,
        "data_interval_start": start,
        "data_interval_end": end,
        "ti": ti,
        "task_instance": ti,
        "dag_run": DagRunInfo(
            dag_id=job.dag_id,
            run_id=job.run_id,
            conf=job.conf,
            logical_date=logical,
            data_interval_start=start,
            data_interval_end=end,
        ),
        "inputs": job.inputs,
        # An asset-triggered run: per asset URI, the events that started it (Airflow 3's key).
        "triggering_asset_events": job.conf.get("triggering_asset_events", {}),
        # {{ conn.NAME.host }}, {{ var.value.NAME }}: declared names only (sdk/secrets.py).
        **secrets.template_context(),
        "env_vars": {
            "TETHER_DAG_ID": job.dag_id,
            "TETHER_TASK_ID": job.task_id,
            "TETHER_RUN_ID": job.run_id,
            "TETHER_TRY_NUMBER": str(job.try_number),
            "TETHER_MAP_INDEX": str(job.map_index),
            # Names this try apart from a re-run of the same try number (docs/dags.md).
            "TETHER_ATTEMPT_ID": job.attempt_id,
        },
    }


class TetherTaskTimeout(Exception):
    """The task ran past its ``execution_timeout`` (raised inside the task process)."""


@contextlib.contextmanager
def execution_timeout(seconds: float | None) -> Iterator[None]:
    """Raise TetherTaskTimeout in the task after ``seconds`` (SIGALRM, as Airflow does).

    The task fails as an ordinary failure (retries and on_failure_callback
    apply). The worker kills the process if it does not stop by itself.
    """
    if not seconds:
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise TetherTaskTimeout(f"execution_timeout of {seconds:g}s exceeded")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load_task(job: Job, bundle_dir: Path) -> tuple[Any, Any]:
    """The job's DAG and task, imported from the bundle."""
    dags = load_dag_file(bundle_dir / job.fileloc, bundle_dir)
    matches = [d for d in dags if d.dag_id == job.dag_id]
    if not matches:
        raise LookupError(f"DAG {job.dag_id!r} is not defined in {job.fileloc} any more")
    dag = matches[0]
    return dag, dag.get_task(job.task_id)


def _param_values(job: Job, dag: Any) -> tuple[dict[str, Any], set[str]]:
    """The run's params, and which of them are templates.

    A param the run's ``conf`` sets is data, as the hub validated it; every
    other one takes its default from the DAG file imported here (the only
    text that may be a template), not from the job.
    """
    values = dict(job.params)
    templates = set()
    for name in dag.params:
        param = dag.params.get_param(name)
        if name not in job.conf and param.has_value:
            values[name] = param.value
            templates.add(name)
    return values, templates


def run(job: Job, dag: Any, task: Any, context: dict[str, Any]) -> dict[str, Any]:
    """Run the job's task; return the result message."""
    os.environ.update(context["env_vars"])
    # As in Airflow: params first (fields see them rendered), then the fields.
    values, templates = _param_values(job, dag)
    with running(context):  # templates may read the task's declared connections
        context["params"] = render_params(values, {**context, "params": values}, templates)
        render_template_fields(task, context)
        with execution_timeout(job.execution_timeout):
            output = task.execute(context)
    return {"state": ATTEMPT_SUCCESS, "output": output}


def run_task_callbacks(task: Any, context: dict[str, Any], result: AttemptResult, job: Job) -> None:
    """The task's on_success / on_retry / on_failure callbacks, in this process.

    A callback that raises is logged and changes nothing.
    """
    if result.state == ATTEMPT_SUCCESS:
        kind = "on_success_callback"
    elif result.state == ATTEMPT_FAILED:
        retries_left = job.try_number < job.max_tries and not result.no_retry
        kind = "on_retry_callback" if retries_left else "on_failure_callback"
    else:
        return
    callbacks = getattr(task, kind, None)
    if callbacks is None:
        return
    for callback in callbacks if isinstance(callbacks, list | tuple) else [callbacks]:
        name = getattr(callback, "__name__", repr(callback))
        print(f"[tether] running {kind} {name}", flush=True)
        try:
            with running(context):
                callback(context)
        except BaseException:
            print(f"[tether] {kind} {name} failed:", flush=True)
            traceback.print_exc()


# Before anything runs, so all this process and its children write is masked.
@masked_output()
def main(argv: list[str] | None = None) -> int:
    parent = os.environ.get("TETHER_WORKER_PID")
    die_with_parent(int(parent) if parent else None)
    args = sys.argv[1:] if argv is None else argv
    job_file, result_file = Path(args[0]), Path(args[1])
    payload = json.loads(job_file.read_text())
    # The worker writes with umask 077; the task gets the one the worker started with.
    os.umask(int(payload.get("umask", 0o022)))
    job = Job.from_dict(payload["job"])
    bundle_dir = Path(payload["bundle_dir"])
    # Where the task's declared connections and variables come from; no values yet.
    secrets.configure(payload.get("secrets"))
    print(
        f"[tether] dag={job.dag_id} task={job.task_id} run={job.run_id} "
        f"try={job.try_number} attempt={job.attempt_id}"
        + (f" map_index={job.map_index}" if job.map_index >= 0 else ""),
        flush=True,
    )
    # The hub's limit on a return value (told at session start); older hubs say none.
    max_output = int(payload.get("max_output_bytes", DEFAULT_MAX_TASK_OUTPUT_BYTES))
    result: AttemptResult
    task: Any = None
    context: dict[str, Any] = {}
    try:
        dag, task = load_task(job, bundle_dir)
        context = build_context(job, dag, task)
        ran = run(job, dag, task, context)
        # Whatever it returned, the report must be one the hub takes as it is.
        result = sendable_result(ran["state"], ran.get("output"), max_output=max_output)
        if result.state == ATTEMPT_FAILED:
            print(f"[tether] {result.error}", flush=True)
    except TetherSkipException as exc:
        print(f"[tether] task skipped: {_describe(exc, with_type=False)}", flush=True)
        result = sendable_result(ATTEMPT_SKIPPED, error=_describe(exc, with_type=False))
    except TaskCommandFailed as exc:
        # The command's output is the story; the runner's frames would bury its end.
        print(f"[tether] {_describe(exc, with_type=False)}", flush=True)
        result = sendable_result(ATTEMPT_FAILED, error=_describe(exc, with_type=False))
        context["exception"] = exc
    except TetherFailException as exc:
        traceback.print_exc()
        result = sendable_result(
            ATTEMPT_FAILED, error=_describe(exc, with_type=False), no_retry=True
        )
        context["exception"] = exc
    except BaseException as exc:
        traceback.print_exc()
        result = sendable_result(ATTEMPT_FAILED, error=_describe(exc))
        context["exception"] = exc
    if result.error:  # str(exc) may quote a secret the task was handed
        result = dataclasses.replace(result, error=redact(result.error))
    if task is not None and context:
        run_task_callbacks(task, context, result, job)
    sys.stdout.flush()
    sys.stderr.flush()
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_dict()))
    tmp.replace(result_file)
    print(f"[tether] task ended: {result.state}", flush=True)
    return 0


def _describe(exc: BaseException, *, with_type: bool = True) -> str:
    """An exception as its report says it (its ``str`` may itself raise)."""
    try:
        text = str(exc)
    except Exception:
        text = f"<{type(exc).__name__} whose message could not be read>"
    return f"{type(exc).__name__}: {text}" if with_type else text


if __name__ == "__main__":
    sys.exit(main())
