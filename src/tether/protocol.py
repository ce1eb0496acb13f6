"""Wire messages shared by the hub and the edge worker.

Stdlib only: both sides import this module, and the worker must stay thin.
Every message is a plain JSON object; the dataclasses here document the
fields and convert to and from dicts so that neither side hand-builds JSON.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import types
import zlib
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import (
    Any,
    ClassVar,
    Final,
    Literal,
    Self,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

#: Bumped when the worker protocol changes incompatibly.
PROTOCOL_VERSION = 1

WORKER_API_PREFIX = "/api/worker/v1"

#: Where the hub serves the worker's wheel for its own version, and a listing
#: of it (``hub/worker_api/dist.py``; public unless TETHER_PUBLIC_DIST=0).
DIST_PREFIX = f"{WORKER_API_PREFIX}/dist/"
#: The hub's PEP 503 simple index: one project, ``tether``, one file, that wheel.
SIMPLE_INDEX = "/simple/"
SIMPLE_PROJECT = f"{SIMPLE_INDEX}tether/"


def wheel_name(version: str) -> str:
    """The file name of the worker's wheel of ``version`` (PEP 427: pure Python)."""
    return f"tether-{version.replace('-', '_')}-py3-none-any.whl"


#: Header that carries the worker process's session id (see POST /sessions).
SESSION_HEADER = "X-Tether-Session"

#: Headers of a task log answer of the REST API (read by ``tether tasks logs``):
#: the log's size so far in bytes (the ``offset`` to ask from next), the try it
#: is of, and the try's state (the log is complete once it is not ``running``).
LOG_SIZE_HEADER = "X-Tether-Log-Size"
TRY_NUMBER_HEADER = "X-Tether-Try-Number"
TRY_STATE_HEADER = "X-Tether-Try-State"

#: Longest a claim may be held open by the hub, in seconds.
MAX_CLAIM_WAIT = 60.0

#: The fencing contract. The session's answer tells the worker the hub's lost
#: timeout (``lost_timeout``, seconds), which the hub counts from the *arrival*
#: of a worker's last heartbeat or poll; a worker that has had no heartbeat
#: acknowledged for this share of it, counted from when that heartbeat was
#: *sent*, stops its tasks, so they are dead before the hub can retry them.
FENCE_SHARE = 0.75

# Queue names: 1 to 256 characters, letters, digits and ``. _ - :``,
# starting with a letter or digit. Safe in URLs, file names and log lines.
QUEUE_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,255}"
_QUEUE_NAME_RE = re.compile(QUEUE_NAME_PATTERN)


# DAG and task ids: 1 to 250 letters, digits and ``_ . -``, as in Airflow, but
# not only dots: "." and ".." must never name a folder. Run ids also allow
# ``: + ~`` (they hold a timestamp). Written without look-ahead, so that the
# same pattern works in pydantic, which checks patterns with Rust's regex.
ID_PATTERN = r"[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*"
RUN_ID_PATTERN = r"[A-Za-z0-9_.:+~-]*[A-Za-z0-9_:+~-][A-Za-z0-9_.:+~-]*"
MAX_ID_LENGTH = 250
_ID_RE = re.compile(ID_PATTERN)
_RUN_ID_RE = re.compile(RUN_ID_PATTERN)


def is_valid_id(value: object, *, run: bool = False) -> bool:
    """Whether ``value`` is a valid DAG or task id (``run``: a valid run id)."""
    pattern = _RUN_ID_RE if run else _ID_RE
    return (
        isinstance(value, str)
        and len(value) <= MAX_ID_LENGTH
        and pattern.fullmatch(value) is not None
    )


_ATTEMPT_ID_RE = re.compile(r"[0-9a-f]{32}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")


class InvalidJob(ValueError):
    """A job from the hub that names something the worker will not touch."""


def is_bundle_path(path: object) -> bool:
    """Whether ``path`` is a relative path that stays inside a bundle.

    Forward slashes only; no empty, ``.`` or ``..`` part; no NUL or backslash.
    """
    if not isinstance(path, str) or not path or len(path) > 1000:
        return False
    if "\x00" in path or "\\" in path or path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


class InvalidQueueName(ValueError):
    """A queue name breaks the rule in :data:`QUEUE_NAME_PATTERN`."""


def validate_queue_name(name: object) -> str:
    """Return ``name`` if it is a valid queue name, else raise InvalidQueueName."""
    if not isinstance(name, str) or not _QUEUE_NAME_RE.fullmatch(name):
        raise InvalidQueueName(
            f"invalid queue name {name!r}: use 1 to 256 characters from "
            "letters, digits, '.', '_', '-' and ':', starting with a letter or digit"
        )
    return name


#: Largest return value of a task, as compact JSON, unless the hub says otherwise
#: (TETHER_MAX_TASK_OUTPUT_BYTES; the session's answer carries the hub's figure).
DEFAULT_MAX_TASK_OUTPUT_BYTES = 1024 * 1024
#: Most input data (upstream return values) one job carries, as JSON
#: (TETHER_MAX_JOB_BYTES): a reduce over many mapped outputs passes references.
DEFAULT_MAX_JOB_BYTES = 16 * 1024 * 1024
#: Longest error text of an attempt, in characters; the worker cuts a longer one.
MAX_ERROR_CHARS = 8000
#: Deepest nesting of lists and objects in a value that crosses the wire (a
#: return value, a run's conf, an asset event's extra).
MAX_JSON_DEPTH = 64
#: How much deeper a message may nest than the values it carries: a request
#: body holds a value one level down, a job holds upstream return values three
#: levels down and asset-event extras six.
ENVELOPE_DEPTH = 8
#: Integers on the wire fit a signed 64-bit column.
MAX_WIRE_INT = 2**63 - 1


class WireError(ValueError):
    """A value that cannot cross the wire; the message names the part and why."""


def check_wire_value(value: Any, what: str = "value", max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise WireError unless ``value`` is strict JSON both stores keep as it is.

    Strict: null, booleans, integers within 64 bits, finite floats, strings
    that are valid Unicode without NUL (no lone surrogate, which UTF-8
    cannot encode; PostgreSQL keeps no NUL in text), lists, and objects with
    string keys, nested at most ``max_depth`` deep (:data:`MAX_JSON_DEPTH` for
    a value; a message carrying values may be :data:`ENVELOPE_DEPTH` deeper).
    The hub checks every body it is sent and the values in it; the worker
    checks a task's result the same way before sending it, so a report is
    never refused for its form.
    """
    stack: list[tuple[Any, str, int]] = [(value, what, 0)]
    while stack:
        item, where, depth = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not -MAX_WIRE_INT - 1 <= item <= MAX_WIRE_INT:
                raise WireError(f"{where}: the integer does not fit in 64 bits")
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise WireError(f"{where}: {item!r} is not a JSON number")
        elif isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, list | dict):
            if depth >= max_depth:
                raise WireError(f"{what}: nested more than {max_depth} levels deep")
            if isinstance(item, list):
                stack.extend((v, _child(where, i), depth + 1) for i, v in enumerate(item))
                continue
            for key, v in item.items():
                if not isinstance(key, str):
                    raise WireError(f"{where}: object keys must be strings, not {key!r}")
                _check_text(key, f"{where}: a key")
                stack.append((v, _child(where, key), depth + 1))
        else:
            raise WireError(f"{where}: a {type(item).__name__} is not JSON")


def _child(where: str, key: int | str) -> str:
    return f"{where}[{key if isinstance(key, int) else repr(key[:40])}]"


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise WireError(f"{where}: strings cannot contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WireError(
            f"{where}: {text[exc.start : exc.end]!r} at position {exc.start} is not valid "
            "Unicode (a lone surrogate, such as a file name decoded with surrogateescape)"
        ) from None


def _refuse_constant(name: str) -> Any:
    raise WireError(f"{name} is not a JSON number")


def loads_strict(data: bytes | str) -> Any:
    """Parse a message (a request body) and check it with :func:`check_wire_value`.

    The message may be :data:`ENVELOPE_DEPTH` deeper than a value; the
    values in it are checked against :data:`MAX_JSON_DEPTH` where they are
    taken (a return value, a conf, an extra). WireError if anything fails.
    """
    depth = MAX_JSON_DEPTH + ENVELOPE_DEPTH
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise WireError(f"value: nested more than {depth} levels deep") from None
    except UnicodeDecodeError as exc:
        raise WireError(f"the body is not UTF-8: {exc.reason}") from None
    except WireError:
        raise
    except ValueError as exc:  # JSONDecodeError, and int() of more than 4300 digits
        raise WireError(f"invalid JSON: {exc}") from None
    check_wire_value(value, max_depth=depth)
    return value


def to_wire(value: Any, what: str = "value") -> Any:
    """``value`` as it will travel (a JSON round trip turns tuples into lists), checked.

    Raises WireError naming what is wrong: a value JSON cannot hold, or one
    :func:`check_wire_value` refuses.
    """
    try:
        # NaN and infinities survive the round trip, so that the check below
        # names where they are.
        value = json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise WireError(f"{what}: {exc}") from None
    except RecursionError:
        raise WireError(f"{what}: nested more than {MAX_JSON_DEPTH} levels deep") from None
    check_wire_value(value, what)
    return value


def wire_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON: what task-output limits count."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def output_too_large(size: int, limit: int) -> str:
    """Why a task whose return value is ``size`` bytes as JSON fails."""
    return (
        f"the task's return value is {size} bytes as JSON; the hub keeps at most {limit} "
        "(TETHER_MAX_TASK_OUTPUT_BYTES). Return a reference to the data (a path, a URI, "
        "a table name), not the data itself"
    )


def sendable_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` as a report can always carry it: valid Unicode, no NUL, at most ``limit``.

    A lone surrogate (a file name decoded with surrogateescape) becomes its
    ``\\udcXX`` escape, NUL becomes ``\\x00``, and a longer text is cut, saying so.
    """
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if len(text) <= limit:
        return text
    note = f"... [cut: {len(text)} characters in all; the whole text is in the task's log]"
    return text[: limit - len(note)] + note


# Terminal states of an attempt as the worker reports them.
ATTEMPT_SUCCESS: Final = "success"
ATTEMPT_FAILED: Final = "failed"
ATTEMPT_SKIPPED: Final = "skipped"
AttemptState = Literal["success", "failed", "skipped"]
ATTEMPT_END_STATES = frozenset({ATTEMPT_SUCCESS, ATTEMPT_FAILED, ATTEMPT_SKIPPED})


@dataclass(frozen=True)
class Job:
    """One attempt of one task instance, handed to a worker by a claim."""

    attempt_id: str
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    queue: str
    bundle_sha: str
    fileloc: str  # path of the DAG file inside the bundle
    conf: dict[str, Any] = field(default_factory=dict)
    #: The run's params: the DAG's defaults overridden by ``conf``, validated by the hub.
    params: dict[str, Any] = field(default_factory=dict)
    #: Return values of upstream tasks, by task id (TaskFlow arguments).
    inputs: dict[str, Any] = field(default_factory=dict)
    logical_date: str | None = None
    data_interval_start: str | None = None
    data_interval_end: str | None = None
    execution_timeout: float | None = None
    #: Worker slots the task takes (``pool_slots``).
    pool_slots: int = 1
    #: Tries the task instance has in all (its retries + 1): the task's
    #: on_retry_callback runs while tries are left, on_failure_callback after.
    max_tries: int = 1
    #: Index of a mapped task instance (``expand()``); -1 when the task is not mapped.
    map_index: int = -1
    #: Names of the connections and variables the task declares (never their values).
    connections: list[str] = field(default_factory=list)
    variables: list[str] = field(default_factory=list)
    #: The token the task process asks the hub for those with; good only while this
    #: attempt runs and only for those names. None when the task declares none.
    secrets_token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """A job from its wire form, checked: InvalidJob names what is wrong."""
        if not isinstance(data, dict):
            raise InvalidJob(f"a job must be an object, not {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        try:
            job = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise InvalidJob(f"job fields: {exc}") from None
        job.check()
        return job

    def check(self) -> None:
        """Raise InvalidJob unless every field that names a file or folder is safe.

        The worker builds paths from the attempt id, the bundle sha, the DAG,
        run and task ids and the DAG file's path in the bundle; a hostile or
        broken hub must not make it write, read or delete outside its home.
        """
        problems = []
        if not (isinstance(self.attempt_id, str) and _ATTEMPT_ID_RE.fullmatch(self.attempt_id)):
            problems.append(f"attempt_id {self.attempt_id!r} is not 32 hex digits")
        if not (isinstance(self.bundle_sha, str) and _SHA_RE.fullmatch(self.bundle_sha)):
            problems.append(f"bundle_sha {self.bundle_sha!r} is not a sha256")
        for name in ("dag_id", "task_id"):
            if not is_valid_id(getattr(self, name)):
                problems.append(f"{name} {getattr(self, name)!r} is not a valid id")
        if not is_valid_id(self.run_id, run=True):
            problems.append(f"run_id {self.run_id!r} is not a valid run id")
        if not is_bundle_path(self.fileloc) or not self.fileloc.endswith(".py"):
            problems.append(f"fileloc {self.fileloc!r} is not a .py file inside the bundle")
        for name, least in (
            ("try_number", 1),
            ("map_index", -1),
            ("pool_slots", 1),
            ("max_tries", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                problems.append(f"{name} {value!r} is not a whole number >= {least}")
        try:
            validate_queue_name(self.queue)
        except InvalidQueueName as exc:
            problems.append(str(exc))
        for name in ("connections", "variables"):
            # The worker looks these names up in its environment and its own files.
            names = getattr(self, name)
            if not isinstance(names, list) or not all(is_valid_id(n) for n in names):
                problems.append(f"{name} {names!r} is not a list of valid names")
        token = self.secrets_token
        if token is not None and not (
            isinstance(token, str) and len(token) <= 100 and token.isascii() and token.isprintable()
        ):
            problems.append("secrets_token is not a printable ASCII string of <= 100 characters")
        if problems:
            raise InvalidJob("; ".join(problems))


class MalformedMessage(ValueError):
    """A message from the other side that is not of its type; the text names the field."""


class Message:
    """A worker-API message: a frozen dataclass that turns to and from its JSON form.

    ``from_wire`` checks every field against its annotation (a bool is not an
    int, ``None`` only where the type says so, the items of lists and dicts
    too), then the message's own :meth:`check`. Fields it does not know are
    ignored: a newer hub may answer with more than this worker reads. The
    hub's side is stricter (its pydantic models forbid unknown fields), and
    ``tests/unit/test_protocol.py`` keeps those models and these dataclasses
    field by field alike. Adding a field is one line here and one there.
    """

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_wire(self) -> dict[str, Any]:
        """The message as the JSON object that travels."""
        return asdict(self)

    @classmethod
    def from_wire(cls, data: object) -> Self:
        """The message in ``data`` (a parsed JSON object), checked; MalformedMessage if not."""
        if not isinstance(data, dict):
            raise MalformedMessage(f"{cls.__name__}: an object, not {type(data).__name__}")
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise MalformedMessage(f"{cls.__name__}: {f.name!r} is missing")
                continue
            values[f.name] = _parse(data[f.name], hints[f.name], f"{cls.__name__}.{f.name}")
        message = cls(**values)
        message.check()
        return message

    def check(self) -> None:
        """Rules beyond the types (a positive interval, valid queue names); none by default."""


def _parse(value: Any, kind: Any, where: str) -> Any:
    """``value`` checked to be of type ``kind``; a nested message is built from its dict."""
    origin, args = get_origin(kind), get_args(kind)
    if kind is Any:
        return value
    if origin is Union or origin is types.UnionType:
        for option in args:
            try:
                return _parse(value, option, where)
            except MalformedMessage:
                continue
        raise MalformedMessage(f"{where}: {value!r:.60} is not {_name(kind)}")
    if origin is Literal:
        if value in args and isinstance(value, str):
            return value
        raise MalformedMessage(f"{where}: {value!r:.60} is not one of {', '.join(args)}")
    if isinstance(kind, type) and is_dataclass(kind) and issubclass(kind, Message):
        return kind.from_wire(value)
    if origin is list:
        if not isinstance(value, list):
            raise MalformedMessage(f"{where}: {value!r:.60} is not a list")
        return [_parse(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise MalformedMessage(f"{where}: {value!r:.60} is not an object")
        return {k: _parse(v, args[1], f"{where}[{k!r:.40}]") for k, v in value.items()}
    if kind is type(None):
        ok = value is None
    elif kind is float:  # JSON has one kind of number: 30 is a float too
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise MalformedMessage(f"{where}: {value!r:.60} is not {_name(kind)}")
    return float(value) if kind is float else value


def _name(kind: Any) -> str:
    return "null" if kind is type(None) else getattr(kind, "__name__", str(kind))


def _check_queues(what: str, queues: list[str]) -> None:
    try:
        for q in queues:
            validate_queue_name(q)
    except InvalidQueueName as exc:
        raise MalformedMessage(f"{what}: {exc}") from None


@dataclass(frozen=True)
class AttemptResult(Message):
    """The end of an attempt, reported by the worker (``POST /attempts/ID/finish``)."""

    state: AttemptState
    output: Any = None
    error: str | None = None
    #: The task asked to fail without using its retries (TetherFailException).
    no_retry: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the worker API's messages, in the order a worker sends them ------------------------


@dataclass(frozen=True)
class EnrolRequest(Message):
    """``POST /enrol``: a one-time enrolment token, to exchange for a credential."""

    token: str


@dataclass(frozen=True)
class EnrolReply(Message):
    """The worker's name, its own credential and the queues it may ever serve."""

    name: str
    credential: str
    queues: list[str]

    def check(self) -> None:
        _check_queues("EnrolReply.queues", self.queues)


@dataclass(frozen=True)
class WorkerFacts(Message):
    """What a worker process says about itself: ``POST /sessions`` and every ``/heartbeat``."""

    concurrency: int
    free_slots: int
    version: str
    protocol: int
    running: list[str] = field(default_factory=list)
    #: "offline": the process is exiting (its last heartbeat).
    state: Literal["online", "offline"] = "online"
    maintenance: bool = False
    maintenance_comment: str | None = None
    #: Stopping: it takes no new task and exits once the running ones end.
    draining: bool = False
    hostname: str | None = None
    platform: str | None = None
    python: str | None = None
    #: Why the worker's spool cannot be written (a full disk); None when it can.
    spool_error: str | None = None
    #: Queues the process serves; empty means every queue the credential allows.
    queues: list[str] = field(default_factory=list)
    #: The update request (:attr:`Directives.update`) this process last acted on,
    #: and why it failed (None: nothing to do, it was on the hub's version).
    update_id: str | None = None
    update_error: str | None = None


@dataclass(frozen=True)
class SessionReply(Message):
    """The hub took this process on: its session id, queues and the hub's limits."""

    name: str
    session_id: str
    queues: list[str]
    heartbeat_interval: float
    hub_version: str
    #: Silent this long, the worker is lost and its tasks run elsewhere; the worker
    #: stops them well before (:data:`FENCE_SHARE`). Older hubs send none: no fencing.
    lost_timeout: float | None = None
    #: A task's return value larger than this (as JSON) fails the task on the worker.
    max_task_output_bytes: int | None = None
    #: The worker sends log chunks of at most this many bytes.
    max_log_chunk_bytes: int | None = None

    def check(self) -> None:
        _check_queues("SessionReply.queues", self.queues)
        if self.heartbeat_interval <= 0:
            raise MalformedMessage("SessionReply.heartbeat_interval is not positive")
        for name in ("max_task_output_bytes", "max_log_chunk_bytes"):
            if (limit := getattr(self, name)) is not None and limit <= 0:
                raise MalformedMessage(f"SessionReply.{name} is not positive")
        if self.lost_timeout is not None and not 0 < self.lost_timeout < 1e12:
            raise MalformedMessage("SessionReply.lost_timeout is not a positive duration")


@dataclass(frozen=True)
class Directives(Message):
    """What the hub wants of a worker, carried by heartbeat and poll replies.

    Computed from the store on every reply, so a lost one loses nothing. An
    empty object (a poll that another poll replaced) changes nothing:
    ``maintenance`` is then None, "not said".
    """

    #: Attempts the hub gave up on: the worker kills them.
    kill: list[str] = field(default_factory=list)
    maintenance: bool | None = None
    maintenance_comment: str | None = None
    shutdown: bool = False
    #: An operator asked this worker to move to the hub's version: the id of that
    #: request. The worker drains, installs the hub's wheel and exits
    #: :data:`UPDATED_EXIT` for its service manager to start the new version.
    update: str | None = None


#: Exit status of a worker that installed the hub's wheel: start it again.
UPDATED_EXIT = 5
#: What an update request's id looks like (hex, from the hub).
UPDATE_ID_PATTERN = r"[0-9a-f]{16,32}"
#: A version as the hub's wheel listing may name it (PEP 440's characters).
VERSION_PATTERN = r"[0-9][0-9A-Za-z.+!_-]{0,49}"


@dataclass(frozen=True)
class DistFile(Message):
    """One file of the hub's wheel listing (``GET /dist/``)."""

    filename: str
    url: str
    size: int
    sha256: str
    requires_python: str | None = None


@dataclass(frozen=True)
class DistListing(Message):
    """``GET /api/worker/v1/dist/``: the hub's version and its worker wheel.

    A worker that updates itself reads it; ``check`` holds the values it
    would put in a path or a command to safe shapes (a hostile hub or a
    proxy's page gets no further).
    """

    version: str
    files: list[DistFile]
    index_url: str = SIMPLE_INDEX

    def check(self) -> None:
        if not re.fullmatch(VERSION_PATTERN, self.version):
            raise MalformedMessage(f"DistListing.version: {self.version!r:.60} is not a version")
        for file in self.files:
            if file.filename != wheel_name(self.version) or file.url != DIST_PREFIX + file.filename:
                raise MalformedMessage(f"DistListing: {file.filename!r:.80} is not its wheel")
            if not re.fullmatch(r"[0-9a-f]{64}", file.sha256):
                raise MalformedMessage("DistListing: a file's sha256 is not 64 hex digits")

    @property
    def wheel(self) -> DistFile:
        """The wheel of :attr:`version`."""
        if len(self.files) != 1:
            raise MalformedMessage(f"DistListing: {len(self.files)} files, not one wheel")
        return self.files[0]


@dataclass(frozen=True)
class HeartbeatReply(Message):
    directives: Directives


@dataclass(frozen=True)
class PollRequest(Message):
    """``POST /poll``: how many slots are free and what runs; held up to ``wait`` s."""

    slots: int
    running: list[str] = field(default_factory=list)
    #: The worker is in maintenance (for whatever reason): it takes no job.
    maintenance: bool = False
    #: Maintenance the worker last heard the centre ask for.
    central_maintenance: bool = False
    #: The worker is already stopping (a shutdown directive is old news).
    draining: bool = False
    wait: float = 30.0


@dataclass(frozen=True)
class PollReply(Message):
    """Jobs claimed for the worker, and directives.

    Each job stays a dict here and is read by :meth:`Job.from_dict` on its own,
    so one job naming an unsafe path is refused without losing the others.
    """

    jobs: list[dict[str, Any]] = field(default_factory=list)
    directives: Directives = field(default_factory=Directives)


@dataclass(frozen=True)
class LogAck(Message):
    """``POST /attempts/ID/logs``: the size of the log the hub holds afterwards."""

    size: int


@dataclass(frozen=True)
class WorkerLogLines(Message):
    """``POST /worker-log``: the worker's own log lines (not its tasks'), oldest first.

    Each line is one line of what the worker writes to its stderr, masked;
    ``dropped`` counts the lines its bounded buffer let go since the last
    batch the hub took (the hub was out of reach for long).
    """

    lines: list[str]
    dropped: int = 0


@dataclass(frozen=True)
class WorkerLogAck(Message):
    """``POST /worker-log``: how many lines the hub kept (it may drop what is over its rate)."""

    kept: int


@dataclass(frozen=True)
class FinishReply(Message):
    """``POST /attempts/ID/finish``: the state the task instance is in now."""

    state: str


#: The hub's bounds on a worker's own log lines (``POST /worker-log``): characters
#: of one line, lines of one batch, bytes of one request.
MAX_WORKER_LOG_LINE = 2000
MAX_WORKER_LOG_BATCH = 500
MAX_WORKER_LOG_BODY = 1024 * 1024


#: Most bytes a bundle may unpack to, and most files it may hold, unless
#: TETHER_MAX_BUNDLE_BYTES / TETHER_MAX_BUNDLE_FILES say otherwise (hub and worker).
MAX_BUNDLE_BYTES = 100 * 1024 * 1024
MAX_BUNDLE_FILES = 10_000


class BundleError(Exception):
    """A bundle that cannot be fetched, fails its hash, or is not one Tether unpacks."""


def bundle_limits() -> tuple[int, int]:
    """Most bytes and files of an unpacked bundle (the environment may raise them)."""
    return (
        int(os.environ.get("TETHER_MAX_BUNDLE_BYTES") or MAX_BUNDLE_BYTES),
        int(os.environ.get("TETHER_MAX_BUNDLE_FILES") or MAX_BUNDLE_FILES),
    )


class _Capped(io.RawIOBase):
    """A reader that fails once more than ``cap`` bytes came through it.

    Between gzip and tarfile: a small bundle that inflates to gigabytes (in
    file data or in tar headers, which tarfile reads whole) is refused while
    it is read, not after it filled the disk or the memory.
    """

    def __init__(self, raw: Any, cap: int) -> None:
        self._raw, self._left = raw, cap

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        self._left -= len(data)
        if self._left < 0:
            raise BundleError("the bundle unpacks to more than its limit")
        buffer[: len(data)] = data
        return len(data)


def unpack_bundle(
    data: bytes, target: Path, *, max_bytes: int | None = None, max_files: int | None = None
) -> None:
    """Unpack a DAG bundle (tar.gz) into ``target``, which must not exist yet.

    Every member is checked here, not left to ``tarfile``'s filters (which
    some Python releases let a crafted archive get around): regular files and
    folders only (no links, devices or fifos), each name a relative path that
    stays inside the bundle (:func:`is_bundle_path`), at most ``max_bytes``
    unpacked and ``max_files`` files (see :func:`bundle_limits`). Files are
    created with ``O_EXCL | O_NOFOLLOW`` in a fresh folder beside ``target``,
    renamed into place when complete, so a reader never sees half a bundle
    and nothing outside the folder is ever written. BundleError says why a
    bundle was refused.
    """
    limit_bytes, limit_files = bundle_limits()
    max_bytes = limit_bytes if max_bytes is None else max_bytes
    max_files = limit_files if max_files is None else max_files
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        # Headers and padding: 512 bytes a member, a few more for long names.
        cap = max_bytes + (max_files + 16) * 4096
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as inflated:
            stream = io.BufferedReader(_Capped(inflated, cap))
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                _extract_members(tar, tmp, max_bytes, max_files)
        tmp.rename(target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, tarfile.TarError | OSError | EOFError | zlib.error):
            raise BundleError(f"the bundle is not a valid tar.gz: {exc}") from None
        raise


def _extract_members(tar: tarfile.TarFile, root: Path, max_bytes: int, max_files: int) -> None:
    files = total = 0
    for member in tar:
        name = member.name.rstrip("/") if member.isdir() else member.name
        if not is_bundle_path(name):
            raise BundleError(f"refused {member.name!r}: not a relative path inside the bundle")
        path = root / name
        if not (member.isdir() or member.isreg()):
            raise BundleError(
                f"refused {member.name!r}: bundles hold regular files and folders only"
            )
        files += 1  # folders count too: a million empty ones cost as much
        if files > max_files:
            raise BundleError(f"the bundle holds more than {max_files} files and folders")
        if member.isdir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        total += member.size
        if total > max_bytes:
            raise BundleError(f"the bundle unpacks to more than {max_bytes} bytes")
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o755 if member.mode & 0o100 else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        source = tar.extractfile(member)
        assert source is not None  # a regular file
        with os.fdopen(fd, "wb") as out, source:
            shutil.copyfileobj(source, out, 1024 * 1024)


def sendable_result(
    state: str,
    output: Any = None,
    error: object = None,
    no_retry: bool = False,
    *,
    max_output: int = DEFAULT_MAX_TASK_OUTPUT_BYTES,
) -> AttemptResult:
    """A result the hub will take as it is, whatever the task produced.

    An output that cannot travel (not JSON, NaN, a lone surrogate, deeper
    than the wire allows) or is larger than ``max_output`` turns a success
    into a failure whose error says why; error texts are made sendable. So a
    report is never refused for its form, and the worker's spool never holds
    one the hub cannot read.
    """
    if state not in ATTEMPT_END_STATES:
        return AttemptResult(ATTEMPT_FAILED, error=f"the task reported an unknown state {state!r}")
    if state != ATTEMPT_SUCCESS:
        output = None
    else:
        try:
            output = to_wire(output, "return value")
        except WireError as exc:
            state, output = ATTEMPT_FAILED, None
            error = (
                f"the task's return value cannot be sent to the hub ({exc}). Return dicts, "
                "lists, strings, booleans and finite numbers, or set do_xcom_push=False"
            )
        else:
            size = wire_size(output)
            if size > max_output:
                state, output = ATTEMPT_FAILED, None
                error = output_too_large(size, max_output)
    text = None if error is None else sendable_text(str(error))
    return AttemptResult(cast(AttemptState, state), output, text, bool(no_retry))
