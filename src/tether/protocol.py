"""Wire messages shared by the hub and the edge worker.

Stdlib only: both sides import this module, and the worker must stay thin.
Every message is a plain JSON object; the dataclasses here document the
fields and convert to and from dicts so that neither side hand-builds JSON.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Bumped when the worker protocol changes incompatibly.
PROTOCOL_VERSION = 1

WORKER_API_PREFIX = "/api/worker/v1"

#: Header that carries the worker process's session id (see POST /sessions).
SESSION_HEADER = "X-Tether-Session"

#: Longest a claim may be held open by the hub, in seconds.
MAX_CLAIM_WAIT = 60.0

# Queue names: 1 to 256 characters, letters, digits and ``. _ - :``,
# starting with a letter or digit. Safe in URLs, file names and log lines.
QUEUE_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,255}"
_QUEUE_NAME_RE = re.compile(QUEUE_NAME_PATTERN)


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


# Terminal states of an attempt as the worker reports them.
ATTEMPT_SUCCESS = "success"
ATTEMPT_FAILED = "failed"
ATTEMPT_SKIPPED = "skipped"
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class AttemptResult:
    """The end of an attempt, reported by the worker."""

    state: str
    output: Any = None
    error: str | None = None
    #: The task asked to fail without using its retries (TetherFailException).
    no_retry: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unpack_bundle(data: bytes, target: Path) -> None:
    """Unpack a DAG bundle (tar.gz) into ``target``, which must not exist yet.

    Unpacks beside it first and renames, so a reader never sees half a
    bundle; the ``data`` filter refuses absolute paths, ``..`` and links
    that leave the folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(tmp, filter="data")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
