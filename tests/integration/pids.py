"""Processes seen through ``/proc`` (Linux): a process tree, and whether a
process is still the one that was seen (a pid can be reused; a zombie is dead).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` if it runs (a zombie does not), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def descendants(pid: int) -> dict[int, int]:
    """Every live process under ``pid`` (not itself): pid -> start time."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = parent(int(entry.name))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, int] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        started = start_time(child)
        if started is not None:
            found[child] = started
        todo.extend(children.get(child, []))
    return found


def alive(pid: int, started: int) -> bool:
    """Whether the process seen as ``pid`` with start time ``started`` still runs."""
    return start_time(pid) == started


def kill_left(seen: dict[int, int]) -> None:
    """SIGKILL what still runs of ``seen`` (processes a test started): clean-up only."""
    for pid, started in seen.items():
        if alive(pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
