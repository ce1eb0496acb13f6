"""Dynamic task mapping: ``my_task.expand(x=[...])`` makes one task instance per value.

A mapped argument is a literal list (known when the DAG file is parsed) or
the list an upstream task returns (known when that task has run). With
several mapped arguments the task runs once per combination (their cross
product), the last argument varying fastest, as in Airflow. The hub
creates the task instances (map indexes 0..n-1) when the task's upstream
tasks are done; each worker run picks its own values by its map index.
A downstream task that takes the mapped task's output gets the list of
every index's return value, in map-index order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.sdk.dag import DagDefinitionError
from tether.sdk.xcom import XComArg

#: Most task instances one mapped task may expand to (Airflow's max_map_length).
MAX_MAP_LENGTH = 1024

Source = list[Any] | tuple[Any, ...] | XComArg


def check_expand(task_id: str, mapped: dict[str, Any]) -> list[tuple[str, Source]]:
    """The mapped arguments of ``task_id``, in order, or DagDefinitionError."""
    if not mapped:
        raise DagDefinitionError(f"task {task_id!r}: expand() needs at least one argument")
    out: list[tuple[str, Source]] = []
    size = 1
    for name, source in mapped.items():
        if isinstance(source, XComArg):
            out.append((name, source))
            continue
        if not isinstance(source, list | tuple):
            raise DagDefinitionError(
                f"task {task_id!r}: expand({name}=...) takes a list, a tuple or an upstream "
                f"task's output, not {type(source).__name__}"
            )
        size *= len(source)
        out.append((name, source))
    if size > MAX_MAP_LENGTH:
        raise DagDefinitionError(
            f"task {task_id!r}: expand() makes {size} task instances; the limit is {MAX_MAP_LENGTH}"
        )
    return out


def serialize_expand(expand_input: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    """What the hub needs to count the map indexes: literal lengths, upstream references."""
    out: list[dict[str, Any]] = []
    for name, source in expand_input:
        if isinstance(source, XComArg):
            out.append({"arg": name, "task_id": source.operator.task_id, "key": source.key})
        else:
            out.append({"arg": name, "length": len(source)})
    return out


def mapped_values(
    expand_input: Sequence[tuple[str, Any]], map_index: int, inputs: dict[str, Any]
) -> dict[str, Any]:
    """The argument values of one map index."""
    sequences: list[tuple[str, list[Any]]] = []
    for name, source in expand_input:
        if isinstance(source, XComArg):
            value = source.resolve({"inputs": inputs})
            if not isinstance(value, list | tuple):
                raise TypeError(
                    f"expand({name}=...) needs a list from task {source.operator.task_id!r}, "
                    f"which returned {type(value).__name__}"
                )
            sequences.append((name, list(value)))
        else:
            sequences.append((name, list(source)))
    total = 1
    for _, seq in sequences:
        total *= len(seq)
    if not 0 <= map_index < total:
        raise IndexError(f"map index {map_index} is outside 0..{total - 1}")
    values: dict[str, Any] = {}
    rest = map_index
    for name, seq in reversed(sequences):
        values[name] = seq[rest % len(seq)]
        rest //= len(seq)
    return values
