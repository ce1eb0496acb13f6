"""What the worker must not forget across a lost link or a restart.

One JSON file per attempt under ``HOME/spool``: the job, the task's process
id and log file, and, once the task ended, its result. A file is removed only
when the hub has the whole log and the result (or refused them). On start the
worker finishes what a previous process left: it kills tasks that outlived
it (so no task runs twice) and delivers the spooled reports, in order.

A spool that cannot be written (a full disk, above all) does not stop the
worker: the entry is kept in memory, the report goes straight to the hub as
usual, and :attr:`Spool.problem` says why, for the worker's log (one line
per outage), its heartbeat (the hub shows it) and its poll (no new task is
taken meanwhile: a task started without an entry could not be stopped or
reported by a restarted worker). :meth:`Spool.recover` writes what is held
in memory once space returns.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.protocol import AttemptResult, Job

log = logging.getLogger("tether.worker")


@dataclass
class SpoolEntry:
    path: Path
    job: Job
    log_path: Path
    pid: int | None
    result: AttemptResult | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job.to_dict(),
            "log_path": str(self.log_path),
            "pid": self.pid,
            "result": self.result.to_dict() if self.result else None,
        }


def _describe(exc: OSError) -> str:
    """``ENOSPC: No space left on device``: the symbolic name people search for."""
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{name}: {exc.strerror or exc}"


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        #: Why the spool cannot be written just now (None: it can).
        self.problem: str | None = None
        #: Entries whose latest state is only in memory, by path.
        self._unsaved: dict[Path, SpoolEntry] = {}

    def _path(self, attempt_id: str) -> Path:
        return self.root / f"{attempt_id}.json"

    def _save(self, entry: SpoolEntry) -> None:
        """Write ``entry`` atomically (a crash leaves the old file or the new one)."""
        tmp = entry.path.with_suffix(".tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(entry.to_dict()))
            os.replace(tmp, entry.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a cut-short copy only takes the space left
            raise

    def write(self, entry: SpoolEntry) -> bool:
        """Record ``entry``; False if it stays in memory only (see :attr:`problem`)."""
        try:
            self._save(entry)
        except OSError as exc:
            self._unsaved[entry.path] = entry
            if self.problem is None:
                self.problem = f"the spool {self.root} cannot be written ({_describe(exc)})"
                log.error(
                    "%s; reports go to the hub from memory, and no new task is taken "
                    "until it can be written again",
                    self.problem,
                )
            return False
        self._unsaved.pop(entry.path, None)
        return True

    def recover(self) -> bool:
        """Try again to write what is held in memory; True once the spool works again.

        With nothing held, a small probe file tells whether there is room.
        """
        if self.problem is None:
            return True
        try:
            for entry in list(self._unsaved.values()):
                self._save(entry)
                del self._unsaved[entry.path]
            probe = self.root / ".probe"
            probe.write_text("{}")
            probe.unlink()
        except OSError:
            return False
        log.info("the spool %s can be written again", self.root)
        self.problem = None
        return True

    def open(self, job: Job, log_path: Path) -> SpoolEntry:
        entry = SpoolEntry(self._path(job.attempt_id), job, log_path, None, None)
        self.write(entry)
        return entry

    def remove(self, entry: SpoolEntry) -> None:
        self._unsaved.pop(entry.path, None)
        entry.path.unlink(missing_ok=True)

    def leftovers(self) -> list[SpoolEntry]:
        """Entries a previous process left, oldest first.

        An entry that cannot be read (cut short by a crash, edited by hand) is
        renamed ``*.bad`` with one log line: it never keeps the others from
        being delivered, and it is kept for a person to look at.
        """
        if not self.root.is_dir():
            return []
        entries = []
        paths = sorted(self.root.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for path in paths:
            try:
                data = json.loads(path.read_text())
                result = data.get("result")
                entry = SpoolEntry(
                    path=path,
                    job=Job.from_dict(data["job"]),
                    log_path=Path(data["log_path"]),
                    pid=data.get("pid"),
                    result=AttemptResult(**result) if result else None,
                )
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("spool entry %s cannot be read (%s); kept as .bad", path.name, exc)
                path.replace(path.with_suffix(".bad"))
                continue
            entries.append(entry)
        return entries


def clean_logs(root: Path, max_age: float, max_bytes: int, keep: set[Path]) -> int:
    """Delete local task logs older than ``max_age`` s, then the oldest beyond ``max_bytes``.

    Logs in ``keep`` (not yet delivered) are never deleted. Returns how many
    files were removed.
    """
    if not root.is_dir():
        return 0
    files = []
    for path in root.rglob("*.log"):
        try:
            st = path.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, path))
    files.sort()
    now = time.time()
    total = sum(size for _, size, _ in files)
    removed = 0
    for mtime, size, path in files:
        if path in keep:
            continue
        if now - mtime > max_age or total > max_bytes:
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        try:
            folder.rmdir()  # only empty ones
        except OSError:
            pass
    return removed
