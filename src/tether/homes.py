"""Private homes: what the hub and the worker keep on disk, only their user reads.

Both homes hold secrets (the hub's admin token, a worker's credential) and
run data in clear (a run's ``conf`` in ``job.json`` and the spool, task
logs, the SQLite store). :func:`private_home` creates a home 0700, or makes
an existing one so, and fixes what is in it: folders 0700, files 0600 (0700
if their owner may run them), on every start, so a home made by an older
release or a careless ``cp`` is put right. Hub and worker processes run with
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


def private_home(home: Path, *, skip: Collection[Path] = ()) -> None:
    """Create ``home`` (0700) or fix it and everything in it; ``skip`` folders
    inside it that are not Tether's (a DAGs folder kept in the hub's home)."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path(home)
    skipped = {p.resolve() for p in skip}
    for current, dirs, files in os.walk(home):
        here = Path(current)
        dirs[:] = [d for d in dirs if (here / d).resolve() not in skipped]
        for name in (*dirs, *files):
            private_path(here / name)
