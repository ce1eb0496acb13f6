"""Imported first by the worker's fork server: tie the fork server to its worker.

The worker starts the fork server from its main thread with
``TETHER_FORK_SERVER_PARENT`` set to its own pid. Importing this module in the
fork server asks the kernel to SIGKILL it when the worker dies, and ends it
at once if the worker died before that request took effect (Linux only, see
:mod:`tether.sdk._process`). :data:`SERVER_PID` is the fork server's pid, in
the fork server and in every task it forks: each task ties itself to it the
same way, so ``kill -9`` of the worker takes the fork server and then its
tasks with it.
"""

from __future__ import annotations

import os

from tether.sdk._process import die_with_parent

#: The variable that carries the worker's pid to the fork server (and no further).
PARENT_VARIABLE = "TETHER_FORK_SERVER_PARENT"
#: The pid of the process that imported this module: in a task, its fork server.
SERVER_PID = os.getpid()

_parent = os.environ.pop(PARENT_VARIABLE, None)
if _parent:
    die_with_parent(int(_parent))
