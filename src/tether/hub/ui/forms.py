"""The console's forms as typed text in, checked values out: a DAG's params form,
run ids, dates, worker comments and enrolment tokens.

Every field comes from a browser, so every one is hostile until checked here:
a value that cannot be used gives the reason, beside its field when there is
one, and never reaches a store function. The params form is built from the
DAG's params (``core/params.py``): each param becomes a field by its schema's
``enum`` or ``type`` (or, with no type, its default's), filled with its
default; what was typed comes back as JSON values that
:func:`tether.hub.core.params.problems` then judges against the schemas,
exactly as a trigger through the REST API is judged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tether.hub.core import params
from tether.hub.core.credentials import WORKER_NAME_PATTERN
from tether.protocol import (
    MAX_ID_LENGTH,
    RUN_ID_PATTERN,
    InvalidQueueName,
    WireError,
    check_wire_value,
    loads_strict,
    validate_queue_name,
)

#: Field names of the params form: ``param.NAME``.
PARAM_PREFIX = "param."
#: Years a logical date or a backfill's ends may have (as the REST API has them:
#: schedules are computed in the DAG's zone, where Python's extreme years overflow).
YEARS = (1900, 9000)
#: Longest maintenance comment (as the REST API's).
MAX_COMMENT = 1000
#: Longest lifetime of an enrolment token, in hours (the REST API's 365 days).
MAX_TOKEN_HOURS = 365 * 24
_RUN_ID = re.compile(RUN_ID_PATTERN)
_WORKER_NAME = re.compile(WORKER_NAME_PATTERN)


class FormError(ValueError):
    """A form field that cannot be used; the message says why."""


@dataclass
class ParamField:
    """One param of a DAG as a form field."""

    name: str
    #: ``select`` (an enum, or a boolean), ``integer``, ``number``, ``string``, ``date``
    #: or ``json`` (anything else: arrays, objects, several types).
    kind: str
    #: What the field holds: the default as the form writes it, or what was typed.
    value: str
    required: bool
    description: str | None
    #: For ``select``: (value as the form sends it, label).
    options: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None

    @property
    def key(self) -> str:
        return PARAM_PREFIX + self.name


def _kind(schema: dict[str, Any], spec: dict[str, Any]) -> str:
    if isinstance(schema.get("enum"), list) or schema.get("type") == "boolean":
        return "select"
    kind = schema.get("type")
    if kind is None and "default" in spec:
        default = spec["default"]
        kind = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
            type(default), "json"
        )
        if kind == "boolean":
            return "select"
    if kind is None:
        return "string"
    if kind == "string" and schema.get("format") == "date":
        return "date"
    return kind if kind in ("integer", "number", "string") else "json"


def _as_text(kind: str, value: Any) -> str:
    """A value as its field shows it."""
    if kind in ("string", "date") and isinstance(value, str):
        return value
    if kind == "json":
        return json.dumps(value, indent=2)
    return json.dumps(value)


def _options(schema: dict[str, Any], spec: dict[str, Any]) -> list[tuple[str, str]]:
    values = schema["enum"] if isinstance(schema.get("enum"), list) else [True, False]
    options = [] if "default" in spec else [("", "(choose)")]
    for value in values:
        label = value if isinstance(value, str) else json.dumps(value)
        options.append((json.dumps(value), label))
    return options


def param_fields(
    serialized: dict[str, Any], typed: dict[str, str] | None = None
) -> list[ParamField]:
    """The DAG's params as fields, holding what was typed (``typed``, the form's
    fields) or else each param's default."""
    fields = []
    for name, spec in params.specs(serialized).items():
        found = spec.get("schema")
        schema: dict[str, Any] = found if isinstance(found, dict) else {}
        kind = _kind(schema, spec)
        if typed is not None:
            value = typed.get(PARAM_PREFIX + name, "")
        elif "default" in spec:
            value = _as_text(kind, spec["default"])
            if kind == "select":
                value = json.dumps(spec["default"])
        else:
            value = ""
        fields.append(
            ParamField(
                name=name,
                kind=kind,
                value=value,
                required="default" not in spec,
                description=spec.get("description"),
                options=_options(schema, spec) if kind == "select" else [],
            )
        )
    return fields


def _value(f: ParamField) -> Any:
    """The JSON value of a filled field; FormError if it is not one of its kind."""
    text = f.value if f.kind in ("string", "date") else f.value.strip()
    if f.kind in ("string", "date"):
        return text
    if f.kind == "select" and text not in {v for v, _ in f.options}:
        raise FormError("not one of the choices")
    try:
        value = loads_strict(text)
    except WireError as exc:
        if f.kind == "integer":
            raise FormError(f"{text[:100]!r} is not a whole number") from None
        if f.kind == "number":
            raise FormError(f"{text[:100]!r} is not a number") from None
        raise FormError(f"not valid JSON (a string goes in double quotes): {exc}") from None
    if f.kind == "integer" and (type(value) is not int):
        raise FormError(f"{text[:100]!r} is not a whole number")
    if f.kind == "number" and (type(value) not in (int, float)):
        raise FormError(f"{text[:100]!r} is not a number")
    return value


def read_params(
    serialized: dict[str, Any], form: dict[str, str]
) -> tuple[list[ParamField], dict[str, Any]]:
    """The params form as typed, each field with its problem (if any), and the
    ``conf`` it gives. An empty field sets nothing: the param keeps its default
    (one without a default is then reported as required)."""
    fields = param_fields(serialized, form)
    conf: dict[str, Any] = {}
    for f in fields:
        if f.value == "" or (f.kind != "string" and f.value.strip() == ""):
            continue
        try:
            value = _value(f)
            check_wire_value(value, f"param {f.name!r}")
        except (FormError, WireError) as exc:
            f.error = str(exc)
            continue
        conf[f.name] = value
    problems = params.problems(serialized, conf)
    for f in fields:
        if f.error is None and f.name in problems:
            f.error = problems[f.name]
    return fields, conf


def run_id(text: str) -> str | None:
    """A run id as typed (None: the hub makes one)."""
    text = text.strip()
    if not text:
        return None
    if len(text) > MAX_ID_LENGTH or not _RUN_ID.fullmatch(text):
        raise FormError(
            f"a run id is at most {MAX_ID_LENGTH} letters, digits and _ . : + ~ - (not only dots)"
        )
    return text


def iso_datetime(text: str, what: str) -> datetime:
    """An ISO 8601 date or datetime as typed (naive if it has no offset)."""
    text = text.strip()
    if len(text) > 40:
        raise FormError(f"{what} is an ISO 8601 date or datetime, at most 40 characters")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise FormError(f"{what} {text!r} is not an ISO 8601 date or datetime") from None
    low, high = YEARS
    if not low <= parsed.year <= high:
        raise FormError(f"{what} {text!r} is not in the years {low} to {high}")
    return parsed


def logical_date(text: str) -> datetime | None:
    """A trigger's logical date as typed, in UTC (a date without an offset is UTC,
    as the REST API reads it); None: now."""
    if not text.strip():
        return None
    parsed = iso_datetime(text, "the logical date")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def comment(text: str) -> str | None:
    """A maintenance comment as typed (None if empty)."""
    text = text.strip()
    if len(text) > MAX_COMMENT:
        raise FormError(f"a comment is at most {MAX_COMMENT} characters")
    try:
        check_wire_value(text, "the comment")
    except WireError as exc:
        raise FormError(str(exc)) from None
    return text or None


def switch(text: str | None, what: str) -> bool:
    """A yes/no field the console wrote itself: ``1`` or ``0``."""
    if text not in ("0", "1"):
        raise FormError(f"{what} must be 0 or 1")
    return text == "1"


@dataclass(frozen=True)
class TokenRequest:
    """An enrolment token as the form asks for it."""

    queues: list[str]
    name: str | None
    hours: float
    replace: bool


def token_request(form: dict[str, str]) -> tuple[TokenRequest | None, dict[str, str]]:
    """The enrolment-token form checked: the request, or each field's problem."""
    problems: dict[str, str] = {}
    queues = [q.strip() for q in form.get("queues", "").split(",") if q.strip()]
    if not queues:
        problems["queues"] = "name at least one queue"
    elif len(queues) > 100:
        problems["queues"] = "at most 100 queues"
    else:
        try:
            queues = [validate_queue_name(q) for q in queues]
        except InvalidQueueName as exc:
            problems["queues"] = str(exc)
    name = form.get("name", "").strip() or None
    if name is not None and not _WORKER_NAME.fullmatch(name):
        problems["name"] = (
            "a worker name starts with a letter or digit and holds at most 250 letters, "
            "digits and . _ : @ -"
        )
    hours = 0.0
    try:
        hours = float(form.get("hours", "").strip())
    except ValueError:
        problems["hours"] = "a number of hours"
    else:
        if not 0 < hours <= MAX_TOKEN_HOURS:  # NaN fails this too
            problems["hours"] = f"more than 0 and at most {MAX_TOKEN_HOURS} hours"
    replace = form.get("replace", "") in ("1", "on")
    if problems:
        return None, problems
    return TokenRequest(queues, name, hours, replace), {}
