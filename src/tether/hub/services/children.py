"""The processes the hub starts to run DAG code (parse children, DAG callbacks).

Each runs in its own process group, so a timeout kills whatever it started
too, and none outlives the hub:

- when the hub stops, the service that started them calls
  :meth:`Children.stop_all`, which SIGKILLs every group still running and
  refuses to start another; the thread that waited for a killed child then
  gets :class:`HubStopping`, so its half-done work is not recorded (a parse
  is not an import error, a callback stays pending);
- if the hub dies without stopping (``kill -9``), the kernel SIGKILLs each
  child: the child calls :func:`tie_to_hub` before it imports DAG code
  (``PR_SET_PDEATHSIG``, Linux only). That signal follows the *thread* that
  started the child, so the thread that calls :meth:`Children.start` must
  wait for the child (as ``parse_file`` and the callback runner do). What
  such a child started itself is not tied to the hub.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

#: Carries the hub's pid to the child; the child removes it before DAG code runs.
PARENT_VARIABLE = "TETHER_HUB_PID"


class HubStopping(Exception):
    """The hub is stopping: no child is started, and one that was is killed."""


class Children:
    """The children one service of the hub started and still waits for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False

    @contextlib.contextmanager
    def start(
        self, module: str, *args: str, cwd: Path, capture: bool = False
    ) -> Iterator[subprocess.Popen[bytes]]:
        """Run ``python -m module args``; yields the process, to be waited for inside.

        ``capture`` pipes its stdout and stderr; otherwise they go nowhere.
        Raises HubStopping instead of starting it when the hub is stopping,
        and on leaving if the hub began to stop meanwhile (the child was killed).
        """
        from tether.hub.config import child_environment  # here: the children import this module

        output = subprocess.PIPE if capture else subprocess.DEVNULL
        with self._lock:
            if self._stopping:
                raise HubStopping("the hub is stopping")
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if capture else subprocess.DEVNULL,
                cwd=cwd,
                # DAG code never sees the hub's settings or secrets; its pid only
                # until tie_to_hub has read it.
                env={**child_environment(), PARENT_VARIABLE: str(os.getpid())},
                start_new_session=True,
            )
            self._running[proc.pid] = proc
        try:
            yield proc
        finally:
            with self._lock:
                self._running.pop(proc.pid, None)
        if self._stopping:
            raise HubStopping("the hub is stopping")

    def stop_all(self) -> None:
        """Kill every child still running and start no more (the hub is stopping)."""
        with self._lock:
            self._stopping = True
            for proc in self._running.values():
                if proc.returncode is None:  # not reaped: its pid is still its own
                    kill_group(proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (the child and what it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def tie_to_hub() -> None:
    """In the child, before any DAG code: die with the hub (Linux), and take
    the hub's pid out of the environment DAG code sees."""
    from tether.sdk._process import die_with_parent

    parent = os.environ.pop(PARENT_VARIABLE, None)
    die_with_parent(int(parent) if parent and parent.isdigit() else None)
