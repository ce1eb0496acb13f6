"""BaseOperator: one task of a DAG, and the ``>>`` / ``<<`` dependency syntax."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tether.protocol import InvalidQueueName, is_valid_id, validate_queue_name
from tether.sdk.assets import Asset, asset_list
from tether.sdk.dag import DAG, DagDefinitionError, check_callbacks, current_dag, secret_names

if TYPE_CHECKING:
    from tether.sdk.context import Context


TRIGGER_RULES = frozenset(
    {
        "all_success",
        "all_failed",
        "all_done",
        "one_success",
        "one_failed",
        "none_failed",
        "none_failed_min_one_success",
        "none_skipped",
        "always",
    }
)

# Arguments every operator takes, their built-in defaults, and whether
# ``default_args`` may set them (Airflow applies default_args to these).
_BASE_DEFAULTS: dict[str, Any] = {
    "queue": "default",
    "retries": 0,
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": False,
    "max_retry_delay": None,
    "execution_timeout": None,
    "trigger_rule": "all_success",
    "pool": "default_pool",
    "pool_slots": 1,
    "priority_weight": 1,
    "owner": "tether",
    "email": None,
    "depends_on_past": False,
    "do_xcom_push": True,
    "doc_md": None,
    # Run in the task process on the worker when the try ends (see docs/scheduling.md).
    "on_success_callback": None,
    "on_failure_callback": None,
    "on_retry_callback": None,
    # Assets this task updates: each success records an event for every one of them.
    "outlets": None,
    # The connections and variables the task reads (added to its DAG's): it is
    # handed those and no others (see docs/secrets.md).
    "connections": None,
    "variables": None,
}


def _seconds(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise DagDefinitionError(f"{name} must be a timedelta or a number of seconds, not {value!r}")


class DependencyMixin:
    """``a >> b``, ``a << b``, ``a >> [b, c]`` and ``[a, b] >> c``."""

    def _operators(self) -> list[BaseOperator]:
        raise NotImplementedError

    def set_downstream(self, other: DependencyMixin | Sequence[DependencyMixin]) -> None:
        for op in self._operators():
            for target in _flatten(other):
                op._link(target)

    def set_upstream(self, other: DependencyMixin | Sequence[DependencyMixin]) -> None:
        for source in _flatten(other):
            for op in self._operators():
                source._link(op)

    def __rshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return other

    def __lshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: Any) -> DependencyMixin:
        # [a, b] >> self
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: Any) -> DependencyMixin:
        # [a, b] << self
        self.set_downstream(other)
        return self


def _flatten(items: DependencyMixin | Iterable[DependencyMixin]) -> list[BaseOperator]:
    if isinstance(items, DependencyMixin):
        return items._operators()
    out: list[BaseOperator] = []
    for item in items:
        if not isinstance(item, DependencyMixin):
            raise DagDefinitionError(f"cannot set a dependency on {item!r}")
        out.extend(item._operators())
    return out


class BaseOperator(DependencyMixin):
    """Base of every task. Subclasses implement :meth:`execute`."""

    #: Fields rendered as templates (used by the templating issue).
    template_fields: Sequence[str] = ()
    #: A branch returns the ids of the direct downstream tasks to follow; the
    #: hub skips the others (see BranchPythonOperator).
    is_branch: bool = False
    #: Mapped arguments (``expand()``), in order; empty for a task that is not mapped.
    expand_input: Sequence[tuple[str, Any]] = ()

    def __init__(
        self,
        *,
        task_id: str,
        dag: DAG | None = None,
        default_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - set(_BASE_DEFAULTS)
        if unknown:
            raise DagDefinitionError(
                f"invalid arguments for {type(self).__name__} {task_id!r}: "
                + ", ".join(sorted(unknown))
            )
        if not is_valid_id(task_id):
            raise DagDefinitionError(
                f"invalid task_id {task_id!r}: use 1 to 250 letters, digits, '_', '.' or '-', "
                "not only dots"
            )
        the_dag = dag or current_dag()
        if the_dag is None:
            raise DagDefinitionError(
                f"task {task_id!r} is not in a DAG: create it inside 'with DAG(...)' "
                "or a @dag function, or pass dag="
            )
        merged: dict[str, Any] = {}
        for source in (the_dag.default_args, default_args or {}, kwargs):
            merged.update({k: v for k, v in source.items() if k in _BASE_DEFAULTS})
        values = {**_BASE_DEFAULTS, **merged}

        self.task_id = task_id
        self.dag = the_dag
        try:
            self.queue: str = validate_queue_name(values["queue"])
        except InvalidQueueName as exc:
            raise DagDefinitionError(f"task {task_id!r}: {exc}") from None
        retries = values["retries"]
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise DagDefinitionError(f"task {task_id!r}: retries must be an integer >= 0")
        self.retries: int = retries
        self.retry_delay: float = _seconds(values["retry_delay"], "retry_delay") or 0.0
        self.retry_exponential_backoff = bool(values["retry_exponential_backoff"])
        self.max_retry_delay = _seconds(values["max_retry_delay"], "max_retry_delay")
        self.execution_timeout = _seconds(values["execution_timeout"], "execution_timeout")
        if values["trigger_rule"] not in TRIGGER_RULES:
            raise DagDefinitionError(
                f"task {task_id!r}: unknown trigger_rule {values['trigger_rule']!r}"
            )
        self.trigger_rule: str = values["trigger_rule"]
        self.pool: str = values["pool"]
        self.pool_slots: int = int(values["pool_slots"])
        if self.pool_slots < 1:
            raise DagDefinitionError(f"task {task_id!r}: pool_slots must be >= 1")
        self.priority_weight: int = int(values["priority_weight"])
        self.owner: str = values["owner"]
        self.do_xcom_push = bool(values["do_xcom_push"])
        self.doc_md = values["doc_md"]
        for kind in ("on_success_callback", "on_failure_callback", "on_retry_callback"):
            setattr(self, kind, check_callbacks(values[kind], f"task {task_id!r}: {kind}"))
        outlets = values["outlets"]
        self.outlets: list[Asset] = (
            [] if outlets is None else asset_list(outlets, f"task {task_id!r}: outlets")
        )
        #: Names of the connections and variables the task may read: its own and its DAG's.
        self.connections: list[str] = sorted(
            set(secret_names(values["connections"], f"task {task_id!r}: connections"))
            | set(the_dag.connections)
        )
        self.variables: list[str] = sorted(
            set(secret_names(values["variables"], f"task {task_id!r}: variables"))
            | set(the_dag.variables)
        )
        self.upstream_task_ids: set[str] = set()
        self.downstream_task_ids: set[str] = set()
        the_dag.add_task(self)

    def __repr__(self) -> str:
        return f"<Task({type(self).__name__}): {self.task_id}>"

    def _operators(self) -> list[BaseOperator]:
        return [self]

    def _link(self, downstream: BaseOperator) -> None:
        if downstream.dag is not self.dag:
            raise DagDefinitionError(
                f"cannot link {self.task_id!r} to {downstream.task_id!r}: different DAGs"
            )
        if downstream is self:
            raise DagDefinitionError(f"task {self.task_id!r} cannot depend on itself")
        self.downstream_task_ids.add(downstream.task_id)
        downstream.upstream_task_ids.add(self.task_id)

    @property
    def upstream_list(self) -> list[BaseOperator]:
        return [self.dag.task_dict[t] for t in sorted(self.upstream_task_ids)]

    @property
    def downstream_list(self) -> list[BaseOperator]:
        return [self.dag.task_dict[t] for t in sorted(self.downstream_task_ids)]

    def execute(self, context: Context) -> Any:
        """Run the task; the return value goes to downstream tasks."""
        raise NotImplementedError(f"{type(self).__name__} does not implement execute()")


def chain(*tasks: DependencyMixin | Sequence[DependencyMixin]) -> None:
    """``chain(a, b, [c, d], e)`` is ``a >> b >> [c, d] >> e``.

    Two lists side by side are linked pairwise, as in Airflow:
    ``chain(a, [b, c], [d, e])`` gives ``b >> d`` and ``c >> e``; their
    lengths must match.
    """
    for up, down in zip(tasks, tasks[1:], strict=False):
        if isinstance(up, Sequence) and isinstance(down, Sequence):
            if len(up) != len(down):
                raise DagDefinitionError(
                    f"chain() links side-by-side lists pairwise; their lengths differ "
                    f"({len(up)} and {len(down)})"
                )
            for left, right in zip(up, down, strict=True):
                left.set_downstream(right)
        else:
            for op in _flatten(up if isinstance(up, Sequence) else [up]):
                op.set_downstream(down)
