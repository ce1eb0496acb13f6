"""The dag processor: watch the DAGs folder, parse it, bundle each DAG's code, store it.

On every change the folder is packed into a snapshot (kept on the hub only)
and each DAG file is imported in a child process with a timeout, from the
unpacked snapshot, so the stored DAGs match the code byte for byte. A file
that raises or hangs becomes an import error; the other files still load.

Each DAG gets a bundle of its own: the files its file's import opened or
imported (the child reports them, :mod:`tether.hub.dags.parse_child`) and
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tether.hub.dags import bundles as packing
from tether.hub.dags.bundles import (
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
from tether.hub.dags.children import Children, kill_group
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
    #: fileloc -> the files of the folder its import used (itself among them).
    files: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Packed:
    """A DAG bundle made from the snapshot: its bytes and what it holds."""

    data: bytes
    files: list[list[Any]]


def parse_file(
    bundle_dir: Path, relpath: str, timeout: float, children: Children | None = None
) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """Import one file in a child process; its DAGs and the files it used, or an
    error message. Raises HubStopping if the hub stops meanwhile."""
    children = children or Children()
    with tempfile.TemporaryDirectory(prefix="tether-parse-") as tmp:
        out = Path(tmp) / "out.json"
        with children.start(
            "tether.hub.dags.parse_child", str(bundle_dir), relpath, str(out), cwd=Path(tmp)
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


def parse_bundle(
    bundle_dir: Path, timeout: float, parallel: int = 2, children: Children | None = None
) -> ParseResult:
    """Parse every .py file of an unpacked bundle (HubStopping if the hub stops meanwhile)."""
    children = children or Children()
    files = sorted(p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*.py"))
    result = ParseResult()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        outcomes = list(
            pool.map(lambda f: (f, *parse_file(bundle_dir, f, timeout, children)), files)
        )
    owner: dict[str, str] = {}
    for relpath, dags, used, error in outcomes:
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
        if dags:
            result.files[relpath] = used
    return result


def bundle_dags(snapshot: Path, result: ParseResult) -> dict[str, Packed]:
    """Pack each DAG's bundle from the unpacked snapshot; set ``bundle_sha`` on its spec.

    A DAG's bundle holds the files its file's import used and those its
    ``include`` names. The DAGs of one file with the same ``include`` share one
    bundle. A file whose bundle cannot be made (an ``include`` that names
    nothing, a bundle over the limits) becomes an import error and its DAGs
    are dropped from ``result``.
    """
    listing = bundle_files(snapshot)
    packed: dict[str, Packed] = {}
    by_files: dict[frozenset[str], str] = {}
    kept: list[dict[str, Any]] = []
    refused: dict[str, str] = {}
    for spec in result.dags:
        fileloc = spec["fileloc"]
        if fileloc in refused:
            continue
        try:
            names = set(result.files.get(fileloc, [fileloc])) | {fileloc}
            names |= included(listing, snapshot, fileloc, spec.get("include") or [])
            key = frozenset(names)
            if key not in by_files:
                part: Listing = packing.select(listing, names)
                sha, data = pack(snapshot, part)
                packed[sha] = Packed(data, contents(part))
                by_files[key] = sha
        except (IncludeError, CannotBundle) as exc:
            refused[fileloc] = f"DAG {spec['dag_id']!r}: its bundle cannot be made: {exc}"
            continue
        spec["bundle_sha"] = by_files[key]
        kept.append(spec)
    result.dags = [s for s in kept if s["fileloc"] not in refused]
    result.errors.update(refused)
    return packed


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


def store_parse(store: Store, sha: str, result: ParseResult, bundles: dict[str, Packed]) -> None:
    """Record a parsed snapshot ``sha``: its DAGs with their bundles and assets, its
    import errors, and DAGs that went away.

    A bundle that is current again has its ``created_at`` moved to now: the
    cleaner deletes a bundle by how long ago it stopped being current.
    """
    now = utcnow()
    with store.session() as s:
        for bundle_sha, made in bundles.items():
            held = s.get(Bundle, bundle_sha)
            if held is None:
                s.add(Bundle(sha=bundle_sha, data=made.data, created_at=now, files=made.files))
            else:
                held.created_at = now
                held.files = made.files
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
            row.bundle_sha = spec["bundle_sha"]
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
        #: Unpacked snapshots of the whole folder, parsed from; only the last is kept.
        self.cache = home / "bundles" / "folder"
        self.timeout = timeout
        self._fingerprint: tuple[object, ...] | None = None
        #: What the last stored bundle left out of the folder (shown as import errors).
        self._skipped: tuple[tuple[str, str], ...] = ()
        self.bundle_sha: str | None = None
        #: The parse children running; the hub's shutdown kills them (``stop``).
        self.children = Children()

    def stop(self) -> None:
        """Kill the parse children and start no more: the hub is stopping."""
        self.children.stop_all()

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
                self.cache.mkdir(parents=True, exist_ok=True)
                unpack(data, target)
            except BundleError as exc:  # the packer should never make one; say so, go on
                log.error("DAGs folder %s: the bundle is refused: %s", self.dags_folder, exc)
                record_folder_error(self.store, f"the bundle of the DAGs folder is refused: {exc}")
                self._fingerprint = current
                return False
        result = parse_bundle(target, self.timeout, children=self.children)
        bundles = bundle_dags(target, result)
        for name, why in listing.skipped.items():
            log.warning("DAGs folder: %s left out of the bundle: %s", name, why)
            result.errors[name] = f"left out of the bundle: {why}"
        store_parse(self.store, sha, result, bundles)
        for old in self.cache.iterdir():  # runs use DAG bundles, never a snapshot
            if old.name != sha:
                shutil.rmtree(old, ignore_errors=True)
        # Only now: a failed store is tried again at the next scan.
        self._fingerprint = current
        self._skipped = skipped
        self.bundle_sha = sha
        log.info(
            "DAGs folder %s: %d DAG(s) in %d bundle(s), %d import error(s)",
            sha[:12],
            len(result.dags),
            len(bundles),
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
