"""DAG: a named graph of tasks with a schedule, as in Airflow."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tether.protocol import is_valid_id

if TYPE_CHECKING:
    from tether.sdk.assets import Asset
    from tether.sdk.baseoperator import BaseOperator
    from tether.sdk.params import ParamsDict


#: Schedule presets and the cron expression each stands for (``@once`` is kept as is).
SCHEDULE_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# DAGs created while a file is imported, in creation order (see collecting()).
_collected: list[DAG] | None = None
# Stack of DAGs opened with ``with DAG(...)``.
_context: list[DAG] = []


class DagDefinitionError(ValueError):
    """A DAG or task is defined in a way Tether cannot run."""


def current_dag() -> DAG | None:
    """The DAG of the innermost ``with DAG(...)`` block, if any."""
    return _context[-1] if _context else None


class collecting:
    """Context manager that records every DAG created inside it."""

    def __enter__(self) -> list[DAG]:
        global _collected
        self._previous = _collected
        _collected = []
        return _collected

    def __exit__(self, *exc: object) -> None:
        global _collected
        _collected = self._previous


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise DagDefinitionError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def check_callbacks(value: Any, what: str) -> Any:
    """A callback, a list of callbacks, or None; anything else is a definition error."""
    items = value if isinstance(value, list | tuple) else [value]
    if value is not None and not all(callable(v) for v in items):
        raise DagDefinitionError(f"{what} must be a callable or a list of callables")
    return value


def _zone_name(name: str | None, start_date: datetime | None) -> str:
    """The DAG's time zone: ``timezone=``, else start_date's zone (a ZoneInfo), else UTC."""
    if name is None and start_date is not None:
        name = getattr(start_date.tzinfo, "key", None)
    if name is None or name == "UTC":
        return "UTC"
    if not isinstance(name, str):
        raise DagDefinitionError(
            f"timezone must be an IANA name such as 'Europe/Paris', not {name!r}"
        )
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DagDefinitionError(
            f"unknown timezone {name!r}: use an IANA name such as 'Europe/Paris'"
        ) from None
    return name


def _schedule(dag_id: str, value: object) -> str | timedelta | list[Asset] | None:
    from tether.sdk.assets import Asset, asset_list  # assets imports this module

    if value is None or isinstance(value, str | timedelta):
        return value
    if isinstance(value, Asset) or (
        isinstance(value, list | tuple) and value and all(isinstance(v, Asset) for v in value)
    ):
        return asset_list(value, f"DAG {dag_id!r}: schedule")
    if isinstance(value, list | tuple) and not value:
        raise DagDefinitionError(
            f"DAG {dag_id!r}: schedule=[] names no asset; use schedule=None for a DAG "
            "that runs only when triggered"
        )
    raise DagDefinitionError(
        f"DAG {dag_id!r}: schedule must be None, a cron string, a preset, a timedelta "
        f"or a list of Assets, not {value!r}"
    )


def secret_names(value: object, what: str) -> list[str]:
    """The connection or variable names a task or DAG declares, checked and sorted."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise DagDefinitionError(f"{what} must be a list of names, not {value!r}")
    for name in value:
        if not is_valid_id(name):
            raise DagDefinitionError(
                f"{what}: invalid name {name!r}: use 1 to 250 letters, digits, '_', '.' or '-'"
            )
    return sorted(set(value))


def _include(dag_id: str, value: object) -> list[str]:
    """``include=[...]``: relative glob patterns that cannot leave the DAGs folder."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise DagDefinitionError(f"DAG {dag_id!r}: include must be a list of paths, not {value!r}")
    for pattern in value:
        if (
            not isinstance(pattern, str)
            or not pattern
            or pattern.startswith("/")
            or "\\" in pattern
            or ".." in pattern.split("/")
        ):
            raise DagDefinitionError(
                f"DAG {dag_id!r}: include entry {pattern!r} must be a path or glob pattern "
                "relative to the DAG file's folder, without '..'"
            )
    return list(value)


class DAG:
    """A directed acyclic graph of tasks.

    Used as a context manager: operators created inside ``with DAG(...)`` join it.
    Argument names and meanings follow Airflow's.
    """

    def __init__(
        self,
        dag_id: str,
        *,
        description: str | None = None,
        schedule: str | timedelta | Asset | Sequence[Asset] | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        catchup: bool = False,
        default_args: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        max_active_runs: int = 16,
        max_active_tasks: int = 16,
        params: dict[str, Any] | None = None,
        doc_md: str | None = None,
        is_paused_upon_creation: bool | None = None,
        timezone: str | None = None,
        dagrun_timeout: timedelta | None = None,
        on_success_callback: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        on_failure_callback: Callable[..., Any] | list[Callable[..., Any]] | None = None,
        include: Sequence[str] | None = None,
        connections: Sequence[str] | None = None,
        variables: Sequence[str] | None = None,
    ) -> None:
        if not is_valid_id(dag_id):
            raise DagDefinitionError(
                f"invalid dag_id {dag_id!r}: use 1 to 250 letters, digits, '_', '.' or '-', "
                "not only dots"
            )
        self.dag_id = dag_id
        self.description = description
        #: A cron string or preset, a timedelta, the Assets the DAG waits for, or None.
        self.schedule: str | timedelta | list[Asset] | None = _schedule(dag_id, schedule)
        self.start_date = _aware(start_date, "start_date")
        self.timezone = _zone_name(timezone, self.start_date)
        self.end_date = _aware(end_date, "end_date")
        self.catchup = bool(catchup)
        self.default_args: dict[str, Any] = dict(default_args or {})
        self.tags = list(tags or [])
        for name, limit in (
            ("max_active_runs", max_active_runs),
            ("max_active_tasks", max_active_tasks),
        ):
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise DagDefinitionError(f"{name} must be an integer >= 1, not {limit!r}")
        if dagrun_timeout is not None and (
            not isinstance(dagrun_timeout, timedelta) or dagrun_timeout <= timedelta(0)
        ):
            raise DagDefinitionError(
                f"dagrun_timeout must be a positive timedelta, not {dagrun_timeout!r}"
            )
        self.dagrun_timeout = dagrun_timeout
        self.on_success_callback = check_callbacks(on_success_callback, "on_success_callback")
        self.on_failure_callback = check_callbacks(on_failure_callback, "on_failure_callback")
        self.max_active_runs = max_active_runs
        self.max_active_tasks = max_active_tasks
        from tether.sdk.params import ParamsDict  # params.py imports this module

        try:
            self.params: ParamsDict = ParamsDict(params)
        except DagDefinitionError as exc:
            raise DagDefinitionError(f"DAG {dag_id!r}: {exc}") from None
        self.doc_md = doc_md
        self.is_paused_upon_creation = is_paused_upon_creation
        #: Files of the DAGs folder the tasks read at run time that the parse did not
        #: open (SQL templates, say), as glob patterns relative to the DAG file's folder.
        self.include: list[str] = _include(dag_id, include)
        #: Connections and variables every task of the DAG may read.
        self.connections: list[str] = secret_names(connections, f"DAG {dag_id!r}: connections")
        self.variables: list[str] = secret_names(variables, f"DAG {dag_id!r}: variables")
        self.fileloc: str | None = None
        self.task_dict: dict[str, BaseOperator] = {}
        if _collected is not None:
            _collected.append(self)

    def __repr__(self) -> str:
        return f"<DAG {self.dag_id}>"

    def __enter__(self) -> DAG:
        _context.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _context.pop()

    @property
    def tasks(self) -> list[BaseOperator]:
        return list(self.task_dict.values())

    @property
    def task_ids(self) -> list[str]:
        return list(self.task_dict)

    def get_task(self, task_id: str) -> BaseOperator:
        try:
            return self.task_dict[task_id]
        except KeyError:
            raise KeyError(f"DAG {self.dag_id!r} has no task {task_id!r}") from None

    def add_task(self, task: BaseOperator) -> None:
        if task.task_id in self.task_dict and self.task_dict[task.task_id] is not task:
            raise DagDefinitionError(
                f"task id {task.task_id!r} appears twice in DAG {self.dag_id!r}"
            )
        self.task_dict[task.task_id] = task

    def unique_task_id(self, base: str) -> str:
        """``base``, or ``base__N`` when the id is taken (TaskFlow reuse of a function)."""
        if base not in self.task_dict:
            return base
        n = 1
        while f"{base}__{n}" in self.task_dict:
            n += 1
        return f"{base}__{n}"

    def topological_order(self) -> list[str]:
        """Task ids in an order where every task follows its upstream tasks.

        Raises DagDefinitionError on a cycle.
        """
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = visiting, 2 = done

        def visit(task_id: str, path: list[str]) -> None:
            mark = state.get(task_id)
            if mark == 2:
                return
            if mark == 1:
                cycle = " >> ".join([*path[path.index(task_id) :], task_id])
                raise DagDefinitionError(f"DAG {self.dag_id!r} has a cycle: {cycle}")
            state[task_id] = 1
            for up in sorted(self.task_dict[task_id].upstream_task_ids):
                visit(up, [*path, task_id])
            state[task_id] = 2
            order.append(task_id)

        for task_id in self.task_dict:
            visit(task_id, [])
        return order

    def validate(self) -> None:
        """Check the whole graph; raise DagDefinitionError with the reason."""
        for task in self.task_dict.values():
            for other in task.upstream_task_ids | task.downstream_task_ids:
                if other not in self.task_dict:
                    raise DagDefinitionError(
                        f"task {task.task_id!r} of DAG {self.dag_id!r} depends on "
                        f"{other!r}, which is in another DAG"
                    )
        self.topological_order()

    def iter_tasks(self) -> Iterator[BaseOperator]:
        return iter(self.task_dict.values())


def dag(dag_id: str | Callable[..., Any] | None = None, **dag_kwargs: Any) -> Any:
    """Decorator form of :class:`DAG` (TaskFlow).

    The decorated function builds the tasks; calling it returns the DAG. The
    DAG id defaults to the function's name.
    """

    def decorator(func: Callable[..., Any]) -> Callable[..., DAG]:
        @functools.wraps(func)
        def factory(*args: Any, **kwargs: Any) -> DAG:
            the_id = dag_id if isinstance(dag_id, str) else func.__name__
            kw = dict(dag_kwargs)
            if func.__doc__ and "doc_md" not in kw:
                kw["doc_md"] = func.__doc__
            with DAG(the_id, **kw) as built:
                func(*args, **kwargs)
            return built

        return factory

    if callable(dag_id):
        func, dag_id = dag_id, None
        return decorator(func)
    return decorator
