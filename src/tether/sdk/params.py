"""DAG params: named run inputs with a default and a JSON schema, as Airflow's ``Param``.

``DAG(params={"n": Param(5, type="integer", minimum=1), "label": "x"})``: a
plain value is a param with that default and no schema. The SDK only records
the schema and checks that values are JSON; validation (``jsonschema``) runs
on the hub, at parse time for the defaults and when a run is triggered for
the values it gets, so the worker install needs no validator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from tether.sdk.dag import DagDefinitionError


class _NotSet:
    def __repr__(self) -> str:
        return "NOTSET"


#: The default of a param that has none: a run must get its value from ``conf``.
NOTSET: Any = _NotSet()


def _as_json(value: Any, what: str) -> Any:
    """``value`` as it will travel (a JSON round trip: tuples become lists)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise DagDefinitionError(
            f"{what} must be JSON: strings, numbers, booleans, None, and lists and dicts of "
            f"them; a date goes in as an ISO string ({exc})"
        ) from None


class Param:
    """A DAG param: ``Param(default, type="integer", minimum=1, description="...")``.

    Keyword arguments other than ``description`` are JSON-schema keywords
    (``type``, ``enum``, ``minimum``, ``maxLength``, ``pattern``, ``format``,
    ``items``, ...). Without a default, a manual run must set the param in its
    ``conf``, and the DAG cannot have a schedule.
    """

    def __init__(self, default: Any = NOTSET, description: str | None = None, **schema: Any):
        self.value: Any = default if default is NOTSET else _as_json(default, "a param default")
        self.description = description
        self.schema: dict[str, Any] = _as_json(schema, "a param schema")

    @property
    def has_value(self) -> bool:
        return self.value is not NOTSET

    def __repr__(self) -> str:
        return f"Param({self.value!r}, schema={self.schema!r})"

    def serialize(self) -> dict[str, Any]:
        """The JSON form the hub validates with: schema, description and default if any."""
        out: dict[str, Any] = {"schema": self.schema, "description": self.description}
        if self.has_value:
            out["default"] = self.value
        return out


class ParamsDict(Mapping[str, Any]):
    """``dag.params``: reads give the defaults; :meth:`get_param` gives the Param."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self._params: dict[str, Param] = {}
        for name, value in (params or {}).items():
            if not isinstance(name, str) or not name:
                raise DagDefinitionError(f"param names must be non-empty strings, not {name!r}")
            try:
                self._params[name] = value if isinstance(value, Param) else Param(value)
            except DagDefinitionError as exc:
                raise DagDefinitionError(f"param {name!r}: {exc}") from None

    def __getitem__(self, name: str) -> Any:
        param = self._params[name]
        if not param.has_value:
            raise KeyError(f"param {name!r} has no default; a run gets it from its conf")
        return param.value

    def __contains__(self, name: object) -> bool:
        return name in self._params

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __repr__(self) -> str:
        return f"ParamsDict({self._params!r})"

    def get_param(self, name: str) -> Param:
        return self._params[name]

    def serialize(self) -> dict[str, dict[str, Any]]:
        return {name: p.serialize() for name, p in self._params.items()}
