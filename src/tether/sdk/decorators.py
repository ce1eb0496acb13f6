"""``@task``: TaskFlow tasks made from plain Python functions."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from tether.sdk.dag import DagDefinitionError, current_dag
from tether.sdk.operators import BranchPythonOperator, PythonOperator
from tether.sdk.xcom import XComArg


class _PythonDecoratedOperator(PythonOperator):
    """A PythonOperator made by ``@task``; its return value travels as an XComArg."""


class _BranchDecoratedOperator(BranchPythonOperator):
    """A BranchPythonOperator made by ``@task.branch``."""


class TaskDecorator:
    """What ``@task`` returns: call it inside a DAG to add a task."""

    operator_class: type[PythonOperator] = _PythonDecoratedOperator

    def __init__(self, function: Callable[..., Any], **task_kwargs: Any) -> None:
        if not callable(function):
            raise DagDefinitionError("@task decorates a function")
        functools.update_wrapper(self, function)
        self.function = function
        self.task_kwargs = task_kwargs

    def override(self, **task_kwargs: Any) -> TaskDecorator:
        """The same task with other arguments (``task_id``, ``queue``, ``retries``...)."""
        return type(self)(self.function, **{**self.task_kwargs, **task_kwargs})

    def __call__(self, *args: Any, **kwargs: Any) -> XComArg:
        return self._add(list(args), kwargs, None)

    def partial(self, **kwargs: Any) -> PartialTask:
        """Fix some arguments of a task that :meth:`PartialTask.expand` maps over the rest."""
        return PartialTask(self, kwargs)

    def expand(self, **mapped: Any) -> XComArg:
        """One task instance per value of ``mapped`` (a list, or an upstream task's list)."""
        return self.partial().expand(**mapped)

    def _add(
        self, args: list[Any], kwargs: dict[str, Any], mapped: dict[str, Any] | None
    ) -> XComArg:
        dag = self.task_kwargs.get("dag") or current_dag()
        if dag is None:
            raise DagDefinitionError(f"@task {self.function.__name__!r} was called outside a DAG")
        options = dict(self.task_kwargs)
        task_id = options.pop("task_id", None) or dag.unique_task_id(self.function.__name__)
        op = self.operator_class(
            task_id=task_id,
            python_callable=self.function,
            op_args=args,
            op_kwargs=kwargs,
            **options,
        )
        if mapped is not None:
            op.set_expand_input(mapped)
        return XComArg(op)


class PartialTask:
    """``my_task.partial(fixed=...)``: waits for ``.expand(mapped=[...])``."""

    def __init__(self, decorator: TaskDecorator, kwargs: dict[str, Any]) -> None:
        self.decorator = decorator
        self.kwargs = kwargs

    def expand(self, **mapped: Any) -> XComArg:
        both = set(self.kwargs) & set(mapped)
        if both:
            raise DagDefinitionError(
                f"{', '.join(sorted(both))} given to both partial() and expand()"
            )
        return self.decorator._add([], self.kwargs, mapped)


class BranchTaskDecorator(TaskDecorator):
    operator_class = _BranchDecoratedOperator


class _TaskNamespace:
    """``task`` itself: ``@task``, ``@task(...)`` and ``@task.python``."""

    def __call__(
        self, python_callable: Callable[..., Any] | None = None, **task_kwargs: Any
    ) -> Any:
        if python_callable is not None:
            return TaskDecorator(python_callable, **task_kwargs)
        return functools.partial(TaskDecorator, **task_kwargs)

    python = __call__

    def branch(self, python_callable: Callable[..., Any] | None = None, **task_kwargs: Any) -> Any:
        """``@task.branch``: the function returns the downstream task id(s) to follow."""
        if python_callable is not None:
            return BranchTaskDecorator(python_callable, **task_kwargs)
        return functools.partial(BranchTaskDecorator, **task_kwargs)


task = _TaskNamespace()
