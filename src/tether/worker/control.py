"""Control of a running worker from its own machine, without any socket.

``tether worker maintenance|stop|status`` and the worker process meet in
files under the worker's home: the command writes ``control.json``; the
worker reads it within a second and writes ``status.json`` whenever its state
changes. ``worker.pid`` names the running process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONTROL = "control.json"
STATUS = "status.json"
PID = "worker.pid"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        return {_UNREADABLE: f"it cannot be read as JSON ({type(exc).__name__})"}
    return data if isinstance(data, dict) else {_UNREADABLE: "it is not a JSON object"}


#: The key under which a read reports a file it could not read.
_UNREADABLE = "__unreadable__"

#: control.json's keys and the types each may have (None: the key is unset).
_CONTROL_TYPES: dict[str, tuple[type, ...]] = {
    "maintenance": (bool,),
    "comment": (str, type(None)),
    "stop": (bool,),
    "timeout": (int, float, type(None)),
}


def read_control(home: Path) -> dict[str, Any]:
    """The object in ``control.json``; one that cannot be read is reported under
    ``_UNREADABLE`` for :func:`checked_control` to tell."""
    return _read_json(home / CONTROL)


def checked_control(wanted: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``control.json`` as the worker may act on it, and what is wrong with it.

    The file is written by ``tether worker maintenance/stop``, but anyone with
    the home can edit it: a file that cannot be read, or a value of the wrong
    type, leaves the worker as it is (an empty control) instead of crashing it.
    """
    if _UNREADABLE in wanted:
        return {}, str(wanted[_UNREADABLE])
    for key, types in _CONTROL_TYPES.items():
        value = wanted.get(key)
        # JSON's true is no number of seconds, nor is 1 a yes.
        wrong_bool = isinstance(value, bool) and bool not in types
        if key in wanted and (not isinstance(value, types) or wrong_bool):
            kinds = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            return {}, f"{key} is {value!r:.40}, not {kinds}"
    timeout = wanted.get("timeout")
    if timeout is not None and not 0 <= timeout < 1e9:
        return {}, f"timeout is {timeout!r}, not a number of seconds"
    comment = wanted.get("comment")
    if comment is not None and len(comment) > 1000:
        return {}, "comment is longer than 1000 characters"
    return wanted, None


def update_control(home: Path, **changes: Any) -> dict[str, Any]:
    current = read_control(home)
    # One that could not be read is replaced, not merged into.
    data = {**({} if _UNREADABLE in current else current), **changes}
    _write_json(home / CONTROL, data)
    return data


def write_status(home: Path, status: dict[str, Any]) -> None:
    _write_json(home / STATUS, status)


def read_status(home: Path) -> dict[str, Any]:
    status = _read_json(home / STATUS)
    return {} if _UNREADABLE in status else status


def running_pid(home: Path) -> int | None:
    """The pid of the worker serving ``home``, if it is alive."""
    try:
        pid = int((home / PID).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid
