"""Tie a task's processes to their parent, so none outlives a killed worker.

Linux only (prctl PR_SET_PDEATHSIG); elsewhere this is a no-op. On Linux a
restarted worker also kills task processes its predecessor left (see the
worker's spool); other systems have neither safeguard yet.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent exits."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The parent may have died before the call above took effect.
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)
