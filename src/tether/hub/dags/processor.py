"""The dag processor: watch the DAGs folder, bundle it, parse it, store the result.

Each DAG file is imported in a child process with a timeout, from the
unpacked bundle, so the stored DAGs match the bundle byte for byte. A file
that raises or hangs becomes an import error; the other files still load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tether.hub.config import child_environment
from tether.hub.dags.bundles import CannotBundle, bundle_files, fingerprint, pack, unpack
from tether.hub.dags.params import InvalidParams, check_defaults
from tether.hub.scheduler import assets
from tether.hub.scheduler.runs import utcnow
from tether.hub.scheduler.timetable import InvalidSchedule, Timetable
from tether.hub.store.db import Store
from tether.hub.store.models import Bundle, Dag, ImportError_
from tether.protocol import BundleError

log = logging.getLogger("tether.hub.dags")


class DuplicateDagId(ValueError):
    """Two files define the same DAG id; the later file (by path) is refused."""


@dataclass
class ParseResult:
    dags: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # fileloc -> message


def parse_file(
    bundle_dir: Path, relpath: str, timeout: float
) -> tuple[list[dict[str, Any]], str | None]:
    """Import one file in a child process; its DAGs or an error message."""
    with tempfile.TemporaryDirectory(prefix="tether-parse-") as tmp:
        out = Path(tmp) / "out.json"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether.hub.dags.parse_child",
                str(bundle_dir),
                relpath,
                str(out),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp,
            env=child_environment(),  # DAG code never sees the hub's secrets
            start_new_session=True,
        )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return [], f"importing {relpath} took longer than {timeout:g}s (dag_file_timeout)"
        try:
            result = json.loads(out.read_text())
        except (OSError, ValueError):
            return [], f"importing {relpath} crashed the parser (exit code {proc.returncode})"
    if "error" in result:
        return [], str(result["error"])
    dags: list[dict[str, Any]] = result["dags"]
    return dags, None


def parse_bundle(bundle_dir: Path, timeout: float, parallel: int = 2) -> ParseResult:
    """Parse every .py file of an unpacked bundle."""
    files = sorted(p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*.py"))
    result = ParseResult()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        outcomes = list(pool.map(lambda f: (f, *parse_file(bundle_dir, f, timeout)), files))
    owner: dict[str, str] = {}
    for relpath, dags, error in outcomes:
        if error is not None:
            result.errors[relpath] = error
            continue
        try:
            for spec in dags:
                Timetable.from_serialized(spec)
                check_defaults(spec)
                if spec["dag_id"] in owner:
                    raise DuplicateDagId(
                        f"DAG id {spec['dag_id']!r} is already defined in {owner[spec['dag_id']]}"
                    )
        except (InvalidSchedule, InvalidParams, DuplicateDagId) as exc:
            result.errors[relpath] = f"{type(exc).__name__}: {exc}"
            continue
        for spec in dags:
            owner[spec["dag_id"]] = relpath
            result.dags.append(spec)
    return result


def initial_next_run(
    spec: dict[str, Any], now: datetime
) -> tuple[datetime | None, datetime | None]:
    timetable = Timetable.from_serialized(spec)
    if timetable is None:
        return None, None
    interval = timetable.next_interval(None, now, now)
    return (interval[0], interval[1]) if interval else (None, None)


def _schedule_key(spec: dict[str, Any]) -> str | None:
    """What decides a DAG's scheduled runs; when it changes, next_dagrun starts afresh.

    Fits ``dag.schedule`` (200 characters): a longer one (a list of asset
    URIs, say) is kept as its sha256.
    """
    if spec["schedule"] is None:
        return None
    key = json.dumps([spec["schedule"], spec["start_date"], spec["catchup"], spec.get("timezone")])
    if len(key) > 200:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def store_parse(store: Store, sha: str, data: bytes, result: ParseResult) -> None:
    """Record a parsed bundle: its DAGs and their assets, its import errors, and DAGs
    that went away."""
    now = utcnow()
    with store.session() as s:
        if s.get(Bundle, sha) is None:
            s.add(Bundle(sha=sha, data=data, created_at=now))
        existing = {d.dag_id: d for d in s.scalars(select(Dag))}
        seen = set()
        for spec in result.dags:
            seen.add(spec["dag_id"])
            row = existing.get(spec["dag_id"])
            schedule_key = _schedule_key(spec)
            if row is None:
                row = Dag(dag_id=spec["dag_id"], is_paused=bool(spec["is_paused_upon_creation"]))
                s.add(row)
            if row.schedule != schedule_key or row.is_active is False or row.fileloc is None:
                row.next_dagrun, row.next_dagrun_create_after = initial_next_run(spec, now)
            row.schedule = schedule_key
            row.fileloc = spec["fileloc"]
            row.bundle_sha = sha
            row.serialized = spec
            row.max_active_runs = int(spec.get("max_active_runs", 16))
            row.max_active_tasks = int(spec.get("max_active_tasks", 16))
            row.is_active = True
            row.last_parsed_at = now
        for dag_id, row in existing.items():
            if dag_id not in seen:
                row.is_active = False
        s.flush()
        assets.register(s, result.dags, now)
        errors = {e.fileloc: e for e in s.scalars(select(ImportError_))}
        for fileloc, message in result.errors.items():
            err = errors.pop(fileloc, None)
            if err is None:
                s.add(
                    ImportError_(fileloc=fileloc, message=message, bundle_sha=sha, created_at=now)
                )
            else:
                err.message, err.bundle_sha, err.created_at = message, sha, now
        for stale in errors.values():
            s.delete(stale)


class DagProcessor:
    """Re-parses the DAGs folder whenever its content changes."""

    def __init__(self, store: Store, dags_folder: Path, home: Path, timeout: float) -> None:
        self.store = store
        self.dags_folder = dags_folder
        self.cache = home / "bundles"
        self.timeout = timeout
        self._fingerprint: tuple[object, ...] | None = None
        #: What the last stored bundle left out of the folder (shown as import errors).
        self._skipped: tuple[tuple[str, str], ...] = ()
        self.bundle_sha: str | None = None

    def process_once(self) -> bool:
        """Look at the folder; parse and store it if it changed. True if it did."""
        if not self.dags_folder.is_dir():
            if self._fingerprint != ():
                log.warning("DAGs folder %s does not exist", self.dags_folder)
                self._fingerprint = ()
            return False
        listing = bundle_files(self.dags_folder)
        skipped = tuple(sorted(listing.skipped.items()))
        current = (fingerprint(self.dags_folder, listing), skipped)
        if current == self._fingerprint:
            return False
        try:
            sha, data = pack(self.dags_folder, listing)
        except CannotBundle as exc:
            log.error("DAGs folder %s: %s", self.dags_folder, exc)
            record_folder_error(self.store, str(exc))
            self._fingerprint = current
            return False
        if sha == self.bundle_sha and skipped == self._skipped:
            self._fingerprint = current
            return False
        target = self.cache / sha
        if not target.is_dir():
            try:
                unpack(data, target)
            except BundleError as exc:  # the packer should never make one; say so, go on
                log.error("DAGs folder %s: the bundle is refused: %s", self.dags_folder, exc)
                record_folder_error(self.store, f"the bundle of the DAGs folder is refused: {exc}")
                self._fingerprint = current
                return False
        result = parse_bundle(target, self.timeout)
        for name, why in listing.skipped.items():
            log.warning("DAGs folder: %s left out of the bundle: %s", name, why)
            result.errors[name] = f"left out of the bundle: {why}"
        store_parse(self.store, sha, data, result)
        # Only now: a failed store is tried again at the next scan.
        self._fingerprint = current
        self._skipped = skipped
        self.bundle_sha = sha
        log.info(
            "bundle %s: %d DAG(s), %d import error(s)",
            sha[:12],
            len(result.dags),
            len(result.errors),
        )
        return True


#: The import-error row of a problem with the DAGs folder as a whole.
FOLDER_ERROR = "."


def record_folder_error(store: Store, message: str) -> None:
    """Show a problem of the whole folder (it is too large to bundle) as an import
    error; the DAGs parsed before stay as they are."""
    now = utcnow()
    with store.session() as s:
        row = s.get(ImportError_, FOLDER_ERROR)
        if row is None:
            s.add(
                ImportError_(fileloc=FOLDER_ERROR, message=message, bundle_sha="", created_at=now)
            )
        else:
            row.message, row.created_at = message, now
