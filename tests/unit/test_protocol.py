"""The worker API's messages: the hub's pydantic models and the shared
dataclasses of ``tether.protocol`` agree field by field, every route speaks
them, and the worker reads them strictly."""

from __future__ import annotations

import dataclasses
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from pydantic_core import PydanticUndefined

from tether import protocol
from tether.hub.worker_api import routes
from tether.protocol import (
    DIST_PREFIX,
    AttemptResult,
    Directives,
    DistFile,
    DistListing,
    EnrolReply,
    EnrolRequest,
    FinishReply,
    HeartbeatReply,
    LogAck,
    MalformedMessage,
    Message,
    PollReply,
    PollRequest,
    SessionReply,
    WorkerFacts,
    WorkerLogLines,
    wheel_name,
)

#: Every request body the hub reads, and the message the worker builds for it.
PAIRS: dict[type[BaseModel], type[Message]] = {
    routes.EnrolIn: EnrolRequest,
    routes.FactsIn: WorkerFacts,
    routes.PollIn: PollRequest,
    routes.FinishIn: AttemptResult,
    routes.WorkerLogIn: WorkerLogLines,
}
REQUIRED = "<required>"


def _plain(kind: Any) -> Any:
    """``kind`` without pydantic's ``Annotated`` bounds, at any depth."""
    origin, args = get_origin(kind), get_args(kind)
    if origin is Annotated:
        return _plain(args[0])
    if origin is None or origin is Literal:
        return kind
    if origin is Union or origin is types.UnionType:
        return Union[tuple(_plain(a) for a in args)]  # noqa: UP007 (built from a tuple)
    return origin[tuple(_plain(a) for a in args)]


def _model_fields(model: type[BaseModel]) -> dict[str, tuple[Any, Any]]:
    found = {}
    for name, info in model.model_fields.items():
        if info.default_factory is not None:
            default = info.default_factory()  # type: ignore[call-arg]
        elif info.default is PydanticUndefined:
            default = REQUIRED
        else:
            default = info.default
        found[name] = (_plain(info.annotation), default)
    return found


def _dataclass_fields(message: type[Message]) -> dict[str, tuple[Any, Any]]:
    hints = get_type_hints(message)
    found = {}
    for f in dataclasses.fields(message):  # type: ignore[arg-type]
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        elif f.default is dataclasses.MISSING:
            default = REQUIRED
        else:
            default = f.default
        found[f.name] = (_plain(hints[f.name]), default)
    return found


def _differences(model: type[BaseModel], message: type[Message]) -> list[str]:
    """What differs between the hub's model and the worker's message, field by field."""
    ours, theirs = _model_fields(model), _dataclass_fields(message)
    problems = [f"{name}: only in the hub's {model.__name__}" for name in ours.keys() - theirs]
    problems += [f"{name}: only in {message.__name__}" for name in theirs.keys() - ours]
    for name in ours.keys() & theirs:
        (hub_type, hub_default), (worker_type, worker_default) = ours[name], theirs[name]
        if hub_type != worker_type:
            problems.append(f"{name}: {hub_type} on the hub, {worker_type} on the worker")
        if hub_default != worker_default:
            problems.append(f"{name}: default {hub_default!r} on the hub, {worker_default!r}")
    return sorted(problems)


@pytest.mark.parametrize("model", list(PAIRS), ids=lambda m: m.__name__)
def test_the_hubs_model_and_the_workers_message_have_the_same_fields(
    model: type[BaseModel],
) -> None:
    assert _differences(model, PAIRS[model]) == []


@pytest.mark.parametrize("model", list(PAIRS), ids=lambda m: m.__name__)
def test_the_hub_refuses_fields_it_does_not_know(model: type[BaseModel]) -> None:
    assert model.model_config.get("extra") == "forbid"


def test_a_field_added_on_one_side_only_is_found() -> None:
    """The comparison is not vacuous: each kind of drift is named."""

    class Wider(routes.FactsIn):
        lost_timeout: float = 30.0

    class Narrower(routes.PollIn):
        wait: float = Field(default=10.0, ge=0)  # another default
        slots: int | None = None  # optional here, required there

    assert _differences(Wider, WorkerFacts) == ["lost_timeout: only in the hub's Wider"]
    default, kind, wait = _differences(Narrower, PollRequest)
    assert default == "slots: default None on the hub, '<required>'"
    assert kind.startswith("slots: ")
    assert kind.endswith(f"on the hub, {int} on the worker")
    assert wait == "wait: default 10.0 on the hub, 30.0"


def _worker_routes() -> list[APIRoute]:
    return [r for r in (*routes.router.routes, *routes.reports.routes) if isinstance(r, APIRoute)]


def test_every_worker_route_reads_a_paired_model_and_answers_a_protocol_message() -> None:
    answers: set[type[Message]] = set()
    for route in _worker_routes():
        body = route.body_field
        if body is not None and isinstance(body.field_info.annotation, type):
            assert body.field_info.annotation in PAIRS, route.path
        if route.response_model is None:  # the bundle and the secret are not JSON messages
            assert route.path.endswith(("/bundles/{sha}", "/{kind}/{name}")), route.path
            continue
        assert issubclass(route.response_model, Message), route.path
        answers.add(route.response_model)
    # Directives travels inside the heartbeat's and the poll's answers; the wheel's
    # listing is sent as bytes (for its ETag) by worker_api/dist.py.
    sent = {m for name in dir(protocol) if isinstance(m := getattr(protocol, name), type)}
    messages = {m for m in sent if issubclass(m, Message) and m is not Message}
    assert messages == answers | set(PAIRS.values()) | {Directives, DistListing, DistFile}


REPLIES: list[Message] = [
    EnrolReply("w", "ttw_x", ["a", "b"]),
    SessionReply("w", "s1", ["a"], 10.0, "1.0.0", max_task_output_bytes=5),
    HeartbeatReply(Directives(kill=["ab" * 16], maintenance=True, maintenance_comment="why")),
    PollReply([{"attempt_id": "x"}], Directives(shutdown=True)),
    LogAck(7),
    FinishReply("success"),
    WorkerFacts(2, 1, "1.0.0", 1, running=["a"], state="offline", queues=["q"]),
    PollRequest(3, wait=1.5),
    AttemptResult("failed", error="boom", no_retry=True),
    HeartbeatReply(Directives(update="0f" * 16)),
    WorkerFacts(1, 1, "0.0.9", 1, update_id="0f" * 16, update_error="pip failed"),
    DistListing(
        "0.2.0",
        [DistFile(wheel_name("0.2.0"), DIST_PREFIX + wheel_name("0.2.0"), 10, "a" * 64, ">=3.11")],
    ),
]

_LISTED = {"filename": wheel_name("0.2.0"), "url": DIST_PREFIX + wheel_name("0.2.0")}
_FILE = {**_LISTED, "size": 10, "sha256": "a" * 64}


@pytest.mark.parametrize("message", REPLIES, ids=lambda m: type(m).__name__)
def test_a_message_survives_its_wire_form(message: Message) -> None:
    assert type(message).from_wire(message.to_wire()) == message


def test_a_newer_hubs_extra_fields_are_ignored_by_the_worker() -> None:
    wire = {**REPLIES[1].to_wire(), "drain_hint": 30}
    assert SessionReply.from_wire(wire) == REPLIES[1]


@pytest.mark.parametrize(
    ("kind", "data", "reason"),
    [
        (SessionReply, {"session_id": "s"}, "'name' is missing"),
        (LogAck, {"size": "5"}, "LogAck.size: '5' is not int"),
        (LogAck, {"size": True}, "LogAck.size: True is not int"),
        (FinishReply, ["success"], "an object, not list"),
        (EnrolReply, {"name": "w", "credential": None, "queues": []}, "credential: None"),
        (EnrolReply, {"name": "w", "credential": "c", "queues": ["a", 1]}, r"queues\[1\]"),
        (EnrolReply, {"name": "w", "credential": "c", "queues": ["../x"]}, "invalid queue"),
        (HeartbeatReply, {"directives": "none"}, "Directives: an object, not str"),
        (HeartbeatReply, {"directives": {"kill": [3]}}, r"Directives.kill\[0\]"),
        (PollReply, {"jobs": "many"}, "PollReply.jobs: 'many' is not a list"),
        (AttemptResult, {"state": "great"}, "is not one of success, failed, skipped"),
        # A hostile hub's listing: what would name a file in the worker's home, or
        # another file than the wheel of that version, is refused.
        (DistListing, {"version": "../../x", "files": []}, "is not a version"),
        (DistListing, {"version": "0.2.0/..", "files": []}, "is not a version"),
        (DistListing, {"version": "0.2.0", "files": [{**_FILE, "filename": "../x.whl"}]}, "wheel"),
        (DistListing, {"version": "0.3.0", "files": [_FILE]}, "is not its wheel"),
        (DistListing, {"version": "0.2.0", "files": [{**_FILE, "url": "/x"}]}, "is not its wheel"),
        (DistListing, {"version": "0.2.0", "files": [{**_FILE, "sha256": "x"}]}, "sha256"),
        (
            SessionReply,
            {**REPLIES[1].to_wire(), "heartbeat_interval": 0},
            "heartbeat_interval is not positive",
        ),
        (
            SessionReply,
            {**REPLIES[1].to_wire(), "max_log_chunk_bytes": -1},
            "max_log_chunk_bytes is not positive",
        ),
    ],
)
def test_the_worker_refuses_a_message_of_the_wrong_shape_saying_where(
    kind: type[Message], data: Any, reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        kind.from_wire(data)


def test_json_numbers_are_read_as_the_field_wants() -> None:
    hello = SessionReply.from_wire({**REPLIES[1].to_wire(), "heartbeat_interval": 5})
    assert hello.heartbeat_interval == 5.0
    assert isinstance(hello.heartbeat_interval, float)
    assert PollReply.from_wire({}) == PollReply()  # an answer of a replaced poll
    assert PollReply().directives.maintenance is None  # "not said": nothing changes
