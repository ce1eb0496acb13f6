"""Private homes: what the hub and the worker keep on disk, only their user reads.

Both homes hold secrets (the hub's admin token, a worker's credential) and
run data in clear (a run's ``conf`` in ``job.json`` and the spool, task
logs, the SQLite store). :func:`private_home` creates a home 0700, or makes
an existing one so, and fixes what Tether keeps in it: folders 0700, files
0600 (0700 if their owner may run them), on every start, so a home made by
an older release or a careless ``cp`` is put right. Hub and worker processes run with
umask 077 (:func:`private_umask`), so what they write later is born private;
a task process gets back the umask its worker started with, so the files a
task writes for its own purposes keep their usual modes.

Stdlib only: the worker imports it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from pathlib import Path

#: What everything Tether itself writes may be: the owner's, no one else's.
PRIVATE_UMASK = 0o077


def private_umask() -> int:
    """Make this process create private files and folders; returns the umask it had."""
    return os.umask(PRIVATE_UMASK)


def private_path(path: Path) -> None:
    """Make ``path`` (a file or folder, not a link) its owner's only, if it exists."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        mode = 0o700
    else:
        mode = 0o700 if st.st_mode & stat.S_IXUSR else 0o600
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


#: What the hub keeps in its home (a DAGs folder kept there is not its to change).
HUB_ENTRIES = (
    "tether.db",
    "tether.db-wal",
    "tether.db-shm",
    "admin_token",
    "secret_key",
    "secret_key.tmp",
    "console_key",
    "bundles",
    "worker",
    "dist",
    "hub.lock",
)
#: What the worker keeps in its home.
WORKER_ENTRIES = (
    "credential.json",
    "connections.toml",
    "credential.tmp",
    "spool",
    "logs",
    "attempts",
    "bundles",
    "control.json",
    "status.json",
    "worker.lock",
    "worker.pid",
    "update",
)


def private_home(home: Path, entries: Collection[str]) -> None:
    """Create ``home`` (0700) or make it so, and fix Tether's own ``entries`` in
    it, recursively. Nothing else in the folder is touched: ``--home .`` in a
    project must not change the project's files."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path(home)
    for name in entries:
        top = home / name
        private_path(top)
        if top.is_dir() and not top.is_symlink():
            for current, dirs, files in os.walk(top):
                here = Path(current)
                for child in (*dirs, *files):
                    private_path(here / child)
