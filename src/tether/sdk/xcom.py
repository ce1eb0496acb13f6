"""XComArg: a reference to an upstream task's return value (TaskFlow)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether.sdk.baseoperator import BaseOperator, DependencyMixin
from tether.sdk.context import Context

if TYPE_CHECKING:
    from collections.abc import Iterator


class XComArg(DependencyMixin):
    """Stands for ``operator``'s return value until the task runs.

    Passing it to another task makes that task downstream of ``operator``;
    at run time it is replaced by the value. ``arg["key"]`` selects a key of
    a dict return value.
    """

    def __init__(self, operator: BaseOperator, key: str | None = None) -> None:
        self.operator = operator
        self.key = key

    def __repr__(self) -> str:
        suffix = f"[{self.key!r}]" if self.key is not None else ""
        return f"XComArg({self.operator.task_id}){suffix}"

    def __getitem__(self, key: str) -> XComArg:
        return XComArg(self.operator, key)

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("an XComArg is not iterable until its task has run")

    def _operators(self) -> list[BaseOperator]:
        return [self.operator]

    def resolve(self, context: Context) -> Any:
        inputs: dict[str, Any] = context.get("inputs", {})
        task_id = self.operator.task_id
        if task_id not in inputs:
            raise RuntimeError(f"the return value of upstream task {task_id!r} was not provided")
        value = inputs[task_id]
        if self.key is not None:
            try:
                return value[self.key]
            except (KeyError, TypeError, IndexError):
                raise RuntimeError(
                    f"upstream task {task_id!r} returned no key {self.key!r}"
                ) from None
        return value


def find_xcom_args(value: Any) -> list[XComArg]:
    """Every XComArg inside ``value`` (lists, tuples, sets and dict values)."""
    if isinstance(value, XComArg):
        return [value]
    if isinstance(value, list | tuple | set | frozenset):
        return [x for item in value for x in find_xcom_args(item)]
    if isinstance(value, dict):
        return [x for item in value.values() for x in find_xcom_args(item)]
    return []


def resolve(value: Any, context: Context) -> Any:
    """``value`` with each XComArg replaced by the upstream task's return value."""
    if isinstance(value, XComArg):
        return value.resolve(context)
    if isinstance(value, list):
        return [resolve(v, context) for v in value]
    if isinstance(value, tuple):
        return tuple(resolve(v, context) for v in value)
    if isinstance(value, set | frozenset):
        return type(value)(resolve(v, context) for v in value)
    if isinstance(value, dict):
        return {k: resolve(v, context) for k, v in value.items()}
    return value
