"""DAG params on the hub: JSON-schema validation of defaults and of a run's values.

A serialized DAG carries ``params`` as ``{name: {"schema", "description",
"default"}}`` (``sdk/params.py``; no ``default``: the param is required).
The effective params of a run are the defaults overridden by the ``conf``
keys that name params; other ``conf`` keys stay in ``conf`` only. They are
validated when the run is triggered and recomputed, unvalidated, when a job
is built, which gives the same result since neither input changes.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.validators import validator_for


class InvalidParams(ValueError):
    """A DAG's params, or the values a run would give them, break their schema."""


def _specs(serialized: dict[str, Any]) -> dict[str, dict[str, Any]]:
    specs = serialized.get("params") or {}
    # A run created before params had schemas stored plain defaults.
    return {
        name: spec
        if isinstance(spec, dict) and "schema" in spec
        else {"schema": {}, "default": spec}
        for name, spec in specs.items()
    }


def _validator(name: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """A validator for ``schema``, or why the schema is not valid."""
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        return None, f"param {name!r} has an invalid schema: {exc.message}"
    return cls(schema, format_checker=cls.FORMAT_CHECKER), None


def _check(name: str, validator: Any, value: Any, suffix: str = "") -> str | None:
    """Why ``value`` does not fit the validator's schema, or None if it does."""
    try:
        error: ValidationError | None = best_match(validator.iter_errors(value))
    except Exception as exc:  # e.g. a $ref that leads nowhere: say so, never a 500
        return f"param {name!r} has a schema that cannot be used: {exc}"
    if error is None:
        return None
    where = f" (at {error.json_path})" if error.path else ""
    return f"param {name!r}: {error.message}{where}{suffix}"


def check_defaults(serialized: dict[str, Any]) -> None:
    """At parse time: schemas are valid, defaults fit them, and a scheduled DAG
    has a default for every param (a scheduled run has no ``conf`` to fill one)."""
    problems = []
    for name, spec in _specs(serialized).items():
        validator, problem = _validator(name, spec["schema"])
        if problem is None and "default" in spec:
            problem = _check(name, validator, spec["default"], " (the default)")
        elif problem is None and serialized.get("schedule") is not None:
            problem = f"param {name!r} has no default, which only a DAG without a schedule allows"
        if problem is not None:
            problems.append(problem)
    if problems:
        raise InvalidParams(f"DAG {serialized['dag_id']!r}: " + "; ".join(problems))


def effective(serialized: dict[str, Any], conf: dict[str, Any]) -> dict[str, Any]:
    """The run's params, without validation: defaults overridden by ``conf``."""
    return {
        name: conf[name] if name in conf else spec["default"]
        for name, spec in _specs(serialized).items()
        if name in conf or "default" in spec
    }


def problems(serialized: dict[str, Any], conf: dict[str, Any]) -> dict[str, str]:
    """Each param that ``conf`` (over the defaults) leaves wrong, with why: what
    :func:`resolve` refuses, one entry per param (the console shows each beside
    its field)."""
    values = effective(serialized, conf)
    found: dict[str, str] = {}
    for name, spec in _specs(serialized).items():
        if name not in values:
            found[name] = f"param {name!r} is required: it has no default and conf does not set it"
            continue
        validator, problem = _validator(name, spec["schema"])
        if problem is None:
            problem = _check(name, validator, values[name])
        if problem is not None:
            found[name] = problem
    return found


def specs(serialized: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The DAG's params as ``{name: {"schema", "description"?, "default"?}}``, in order."""
    return _specs(serialized)


def resolve(serialized: dict[str, Any], conf: dict[str, Any]) -> dict[str, Any]:
    """The run's params, validated; InvalidParams names each param that is wrong and why."""
    found = problems(serialized, conf)
    if found:
        raise InvalidParams("invalid params: " + "; ".join(found.values()))
    return effective(serialized, conf)
