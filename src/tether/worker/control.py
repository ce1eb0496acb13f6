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
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def read_control(home: Path) -> dict[str, Any]:
    return _read_json(home / CONTROL)


def update_control(home: Path, **changes: Any) -> dict[str, Any]:
    data = {**read_control(home), **changes}
    _write_json(home / CONTROL, data)
    return data


def write_status(home: Path, status: dict[str, Any]) -> None:
    _write_json(home / STATUS, status)


def read_status(home: Path) -> dict[str, Any]:
    return _read_json(home / STATUS)


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
