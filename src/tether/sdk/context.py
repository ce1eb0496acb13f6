"""The run-time context a task receives, with the keys Airflow users know."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Context = dict[str, Any]

_current: list[Context] = []


class TetherSkipException(Exception):
    """Raise inside a task to end it as ``skipped``."""


class TetherFailException(Exception):
    """Raise inside a task to end it as ``failed`` without using its retries."""


class TaskCommandFailed(Exception):
    """A command the task ran exited with a non-zero status (BashOperator).

    The task fails as for any exception, retries included, but its log gets
    the message as one line instead of a traceback: the runner's own frames
    say nothing, and the command's output above the line says why.
    """


@dataclass
class TaskInstanceInfo:
    """What a running task knows about itself (``context["ti"]``)."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int = -1
    queue: str = "default"
    attempt_id: str = ""
    #: Return values of the upstream tasks, by task id.
    inputs: dict[str, Any] = field(default_factory=dict)

    def xcom_pull(self, task_ids: str | list[str], key: str | None = None) -> Any:
        """The return value of upstream task(s), as Airflow's ``ti.xcom_pull``.

        Only direct upstream tasks' values reach a task.
        """
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
        values = []
        for task_id in ids:
            if task_id not in self.inputs:
                raise KeyError(f"no return value of {task_id!r}: it is not a direct upstream task")
            value = self.inputs[task_id]
            values.append(value[key] if key is not None else value)
        return values[0] if isinstance(task_ids, str) else values


@dataclass
class DagRunInfo:
    """``context["dag_run"]``."""

    dag_id: str
    run_id: str
    conf: dict[str, Any] = field(default_factory=dict)
    logical_date: Any = None
    data_interval_start: Any = None
    data_interval_end: Any = None


def get_current_context() -> Context:
    """The context of the task running in this process."""
    if not _current:
        raise RuntimeError("get_current_context() is only available while a task runs")
    return _current[-1]


class running:
    """Makes ``context`` the current one while a task executes."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def __enter__(self) -> Context:
        _current.append(self.context)
        return self.context

    def __exit__(self, *exc: object) -> None:
        _current.pop()
