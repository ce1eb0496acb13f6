"""The dag processor: watch the DAGs folder, parse what changed, bundle each DAG's
code, store each file's result as soon as it is known.

On every change the folder is packed into a snapshot (kept on the hub only)
and each DAG file that changed is imported in a child process with a
timeout, from the unpacked snapshot, so the stored DAGs match the code byte
for byte. A file is parsed again when it, or a file its last parse used,
changed (or, for a DAG with ``include``, when the folder's file list did).
Files are parsed two at a time and each file's DAGs, bundles and import
error are stored the moment it finishes: a file that hangs holds up no
other.

A file that raises or hangs becomes an import error; the DAGs it defined
before keep their last good version (they still run, shown as broken). A
DAG id belongs to the file that defined it first: another file that
defines it too is the import error.

Each DAG gets a bundle of its own: the files its file's import opened or
imported (the child reports them, :mod:`tether.hub.services.parse_child`) and
those its ``include`` names, packed from the same snapshot. A worker can
only ever download the bundles of runs it was handed work of, so a tenant's
worker never receives another tenant's DAG files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.hub.core import assets
from tether.hub.core.params import InvalidParams, check_defaults
from tether.hub.core.runs import utcnow
from tether.hub.core.timetable import InvalidSchedule, Timetable
from tether.hub.services import bundles as packing
from tether.hub.services.bundles import (
    CannotBundle,
    IncludeError,
    Listing,
    bundle_files,
    contents,
    fingerprint,
    included,
    pack,
    unpack,
)
from tether.hub.services.children import Children, kill_group
from tether.hub.store import effects
from tether.hub.store.db import Store
from tether.hub.store.dialect import lock_row
from tether.hub.store.models import Bundle, Dag, ImportError_
from tether.protocol import BundleError

log = logging.getLogger("tether.hub.dags")


class DuplicateDagId(ValueError):
    """A file defines a DAG id that another file already defines; it is refused."""


@dataclass
class Packed:
    """A DAG bundle made from the snapshot: its bytes and what it holds."""

    data: bytes
    files: list[list[Any]]


@dataclass
class FileResult:
    """What storing one parsed file found (for the log line and the next scan)."""

    dags: int = 0
    error: str | None = None
    #: Names of the folder the file's DAGs depend on: what its parse used, what
    #: their ``include`` names.
    depends: set[str] = field(default_factory=set)
    has_include: bool = False
    #: Refused for a DAG id another file holds: parsed again when anything changes.
    duplicate: bool = False


def parse_file(
    bundle_dir: Path, relpath: str, timeout: float, children: Children | None = None
) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """Import one file in a child process; its DAGs and the files it used, or an
    error message. Raises HubStopping if the hub stops meanwhile."""
    children = children or Children()
    with tempfile.TemporaryDirectory(prefix="tether-parse-") as tmp:
        out = Path(tmp) / "out.json"
        with children.start(
            "tether.hub.services.parse_child", str(bundle_dir), relpath, str(out), cwd=Path(tmp)
        ) as proc:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                proc.wait()
                return (
                    [],
                    [],
                    f"importing {relpath} took longer than {timeout:g}s (dag_file_timeout)",
                )
        try:
            result = json.loads(out.read_text())
        except (OSError, ValueError):
            return [], [], f"importing {relpath} crashed the parser (exit code {proc.returncode})"
    if "error" in result:
        return [], [], str(result["error"])
    dags: list[dict[str, Any]] = result["dags"]
    files = [f for f in result.get("files", []) if isinstance(f, str)]
    return dags, files, None


def check_specs(specs: list[dict[str, Any]]) -> None:
    """Raise InvalidSchedule or InvalidParams for a DAG the hub cannot schedule."""
    for spec in specs:
        Timetable.from_serialized(spec)
        check_defaults(spec)


def bundle_file(
    snapshot: Path, listing: Listing, fileloc: str, specs: list[dict[str, Any]], used: list[str]
) -> tuple[dict[str, Packed], set[str]]:
    """Pack the bundles of one file's DAGs from the snapshot; set ``bundle_sha`` on
    each spec. Returns the bundles and the names they hold.

    A DAG's bundle holds the files its file's import used and those its
    ``include`` names; the DAGs of one file with the same ``include`` share
    one. Raises IncludeError or CannotBundle.
    """
    packed: dict[str, Packed] = {}
    by_files: dict[frozenset[str], str] = {}
    depends: set[str] = set()
    for spec in specs:
        names = set(used) | {fileloc}
        names |= included(listing, snapshot, fileloc, spec.get("include") or [])
        key = frozenset(names)
        if key not in by_files:
            part = packing.select(listing, names)
            sha, data = pack(snapshot, part)
            packed[sha] = Packed(data, contents(part))
            by_files[key] = sha
        spec["bundle_sha"] = by_files[key]
        depends |= names
    return packed, depends


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


def _set_error(s: Session, fileloc: str, message: str, sha: str, now: datetime) -> None:
    err = s.get(ImportError_, fileloc)
    if err is None:
        s.add(ImportError_(fileloc=fileloc, message=message, bundle_sha=sha, created_at=now))
    elif err.message != message:
        err.message, err.bundle_sha, err.created_at = message, sha, now


def _store_bundles(s: Session, bundles: dict[str, Packed], now: datetime) -> None:
    """A bundle that is current again has its ``created_at`` moved to now: the
    cleaner deletes a bundle by how long ago it stopped being current."""
    for sha, made in bundles.items():
        held = s.get(Bundle, sha)
        if held is None:
            s.add(Bundle(sha=sha, data=made.data, created_at=now, files=made.files))
        else:
            held.created_at = now
            held.files = made.files


def _owner(s: Session, dag_id: str, fileloc: str, files: set[str]) -> str | None:
    """The other file that holds ``dag_id``, if one does: the DAG's row is active
    and names a DAG file that still exists (it may be broken just now)."""
    row = s.scalar(lock_row(select(Dag).where(Dag.dag_id == dag_id), s))
    if row is None or not row.is_active or row.fileloc == fileloc or row.fileloc not in files:
        return None
    return row.fileloc


def store_file(
    store: Store,
    snapshot_sha: str,
    fileloc: str,
    specs: list[dict[str, Any]],
    error: str | None,
    bundles: dict[str, Packed],
    files: set[str],
) -> FileResult:
    """Record one parsed file in one transaction: its DAGs, their bundles and
    assets, or its import error.

    A file that failed keeps the DAGs it defined before (their last good
    version runs; the import error shows they are broken). A file that
    parsed drops the DAGs it no longer defines. A DAG id another file holds
    (``files``: the DAG files of the folder now) makes this file the import
    error, and the DAG stays with its file.
    """
    now = utcnow()
    result = FileResult(error=error)
    with store.transaction() as s:
        if error is None:
            for spec in specs:
                other = _owner(s, spec["dag_id"], fileloc, files)
                if other is not None:
                    result.error = (
                        f"DuplicateDagId: DAG id {spec['dag_id']!r} is already defined in {other}"
                    )
                    result.duplicate = True
                    break
        if result.error is not None:
            _set_error(s, fileloc, result.error, snapshot_sha, now)
            return result
        _store_bundles(s, bundles, now)
        defined = {spec["dag_id"] for spec in specs}
        for spec in specs:
            row = s.get(Dag, spec["dag_id"])
            schedule_key = _schedule_key(spec)
            if row is None:
                row = Dag(dag_id=spec["dag_id"], is_paused=bool(spec["is_paused_upon_creation"]))
                s.add(row)
            if row.schedule != schedule_key or row.is_active is False or row.fileloc is None:
                row.next_dagrun, row.next_dagrun_create_after = initial_next_run(spec, now)
            row.schedule = schedule_key
            row.fileloc = fileloc
            row.bundle_sha = spec["bundle_sha"]
            row.serialized = spec
            row.max_active_runs = int(spec.get("max_active_runs", 16))
            row.max_active_tasks = int(spec.get("max_active_tasks", 16))
            row.is_active = True
            row.last_parsed_at = now
        for gone in s.scalars(select(Dag).where(Dag.fileloc == fileloc, Dag.is_active.is_(True))):
            if gone.dag_id not in defined:
                gone.is_active = False
        s.flush()
        assets.register(s, specs, now)
        stale = s.get(ImportError_, fileloc)
        if stale is not None:
            s.delete(stale)
        effects.poke_scheduler(s)  # its DAGs are schedulable the moment they are stored
    result.dags = len(specs)
    return result


def forget_files(store: Store, files: set[str], skipped: dict[str, str], sha: str) -> None:
    """The folder as a whole, after a scan: DAGs of files that are gone are
    inactive, import errors of files that are gone go, what the bundle left out
    is shown, and a problem of the whole folder is over."""
    now = utcnow()
    with store.transaction() as s:
        for row in s.scalars(select(Dag).where(Dag.is_active.is_(True))):
            if row.fileloc not in files:
                row.is_active = False
        for err in s.scalars(select(ImportError_)):
            if err.fileloc not in files and err.fileloc not in skipped:
                s.delete(err)
        for name, why in skipped.items():
            _set_error(s, name, f"left out of the bundle: {why}", sha, now)


class DagProcessor:
    """Re-parses what changed in the DAGs folder whenever its content changes."""

    def __init__(
        self,
        store: Store,
        dags_folder: Path,
        home: Path,
        timeout: float,
        *,
        parallel: int = 2,
    ) -> None:
        self.store = store
        self.dags_folder = dags_folder
        #: Unpacked snapshots of the whole folder, parsed from; only the last is kept.
        self.cache = home / "bundles" / "folder"
        self.timeout = timeout
        self.parallel = parallel
        self._fingerprint: tuple[object, ...] | None = None
        #: name -> (size, mtime) of the folder's files at the last scan.
        self._seen: dict[str, tuple[int, int]] = {}
        #: DAG file -> what its last stored parse depends on.
        self._files: dict[str, FileResult] = {}
        self.bundle_sha: str | None = None
        #: The parse children running; the hub's shutdown kills them (``stop``).
        self.children = Children()

    def stop(self) -> None:
        """Kill the parse children and start no more: the hub is stopping."""
        self.children.stop_all()

    def _changed(self, relpath: str, now: dict[str, tuple[int, int]], listed: bool) -> bool:
        """Whether ``relpath`` must be parsed again."""
        last = self._files.get(relpath)
        if last is None or last.duplicate or last.error is not None:
            return True  # new, refused for a taken id, or broken: try again
        if listed and last.has_include:
            return True  # a new file may match its include
        return any(now.get(name) != self._seen.get(name) for name in last.depends | {relpath})

    def process_once(self) -> bool:
        """Look at the folder; parse and store what changed. True if anything did."""
        if not self.dags_folder.is_dir():
            if self._fingerprint != ():
                log.warning("DAGs folder %s does not exist", self.dags_folder)
                self._fingerprint = ()
            return False
        listing = bundle_files(self.dags_folder)
        skipped = dict(sorted(listing.skipped.items()))
        prints = fingerprint(self.dags_folder, listing)
        current = (prints, tuple(skipped.items()))
        if current == self._fingerprint:
            return False
        try:
            sha, data = pack(self.dags_folder, listing)
        except CannotBundle as exc:
            log.error("DAGs folder %s: %s", self.dags_folder, exc)
            record_folder_error(self.store, str(exc))
            self._fingerprint = current
            return False
        target = self.cache / sha
        if not target.is_dir():
            try:
                self.cache.mkdir(parents=True, exist_ok=True)
                unpack(data, target)
            except BundleError as exc:  # the packer should never make one; say so, go on
                log.error("DAGs folder %s: the bundle is refused: %s", self.dags_folder, exc)
                record_folder_error(self.store, f"the bundle of the DAGs folder is refused: {exc}")
                self._fingerprint = current
                return False
        now = {name: (size, mtime) for name, size, mtime in prints}
        snapshot = bundle_files(target)  # the snapshot's own files, packed from
        dag_files = {name for name in now if name.endswith(".py")}
        listed = set(now) != set(self._seen)
        todo = sorted(f for f in dag_files if self._changed(f, now, listed))
        for name, why in skipped.items():
            log.warning("DAGs folder: %s left out of the bundle: %s", name, why)
        stored = self._parse(target, snapshot, sha, todo, dag_files)
        forget_files(self.store, dag_files, skipped, sha)
        refused = sorted(f for f, r in stored.items() if r.duplicate)
        if refused and len(refused) < len(stored):
            # A file parsed in this scan may have let go of the id a refused one wants.
            stored.update(self._parse(target, snapshot, sha, refused, dag_files))
        # Only now: a failed store is tried again at the next scan.
        self._files = {f: r for f, r in {**self._files, **stored}.items() if f in dag_files}
        self._seen = now
        self._fingerprint = current
        self.bundle_sha = sha
        for old in self.cache.iterdir():  # runs use DAG bundles, never a snapshot
            if old.name != sha:
                shutil.rmtree(old, ignore_errors=True)
        errors = sum(1 for r in stored.values() if r.error)
        log.info(
            "DAGs folder %s: %d file(s) parsed, %d DAG(s), %d import error(s)",
            sha[:12],
            len(stored),
            sum(r.dags for r in stored.values()),
            errors,
        )
        return True

    def _parse(
        self, target: Path, snapshot: Listing, sha: str, todo: list[str], dag_files: set[str]
    ) -> dict[str, FileResult]:
        """Parse ``todo`` from the snapshot, storing each file as it finishes."""
        stored: dict[str, FileResult] = {}
        if not todo:
            return stored
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            futures = {
                pool.submit(parse_file, target, f, self.timeout, self.children): f for f in todo
            }
            for future in as_completed(futures):
                relpath = futures[future]
                specs, used, error = future.result()
                bundles: dict[str, Packed] = {}
                depends: set[str] = set(used) | {relpath}
                if error is None:
                    try:
                        check_specs(specs)
                        bundles, depends = bundle_file(target, snapshot, relpath, specs, used)
                    except (InvalidSchedule, InvalidParams, IncludeError, CannotBundle) as exc:
                        error = f"{type(exc).__name__}: {exc}"
                result = store_file(self.store, sha, relpath, specs, error, bundles, dag_files)
                result.depends = depends
                result.has_include = any(spec.get("include") for spec in specs)
                stored[relpath] = result
        return stored


#: The import-error row of a problem with the DAGs folder as a whole.
FOLDER_ERROR = "."


def record_folder_error(store: Store, message: str) -> None:
    """Show a problem of the whole folder (it is too large to bundle) as an import
    error; the DAGs parsed before stay as they are."""
    now = utcnow()
    with store.transaction() as s:
        row = s.get(ImportError_, FOLDER_ERROR)
        if row is None:
            s.add(
                ImportError_(fileloc=FOLDER_ERROR, message=message, bundle_sha="", created_at=now)
            )
        else:
            row.message, row.created_at = message, now
