"""The worker's wheel, as the hub hands it out (``worker_api/dist.py``).

A machine being set up as a worker has pip and the hub's address, and often
no public registry that carries Tether: the hub serves a wheel of the very
version it runs, so a worker installed from it always matches its hub.
Where that wheel comes from, the first that applies:

1. ``TETHER_WORKER_WHEEL``: a file the operator points at (a release's or
   CI's artefact). It must be a wheel of the hub's own version.
2. A source checkout (the running ``tether`` package is ``ROOT/src/tether``
   next to the project's ``pyproject.toml``, as after ``uv sync`` or
   ``pip install -e``): built by the project's own backend, hatchling, in a
   child process, into ``HUB_HOME/dist/VERSION-SOURCEHASH/``, so a hub
   restarted on the same source builds nothing. Without hatchling in the
   hub's environment, ``pip wheel`` builds it (pip fetches hatchling from
   the index it is configured with).
3. An installed wheel: the files the distribution's RECORD lists are packed
   back into a wheel, each checked against its recorded hash (a changed or
   missing file refuses: the hub would hand out what no release contained).
   What the installer added (INSTALLER, REQUESTED, direct_url.json, the
   compiled files, the console script) is left out and the RECORD written
   anew. The result is deterministic, so its sha256 holds across restarts.

The first request that needs the wheel makes it, in a thread and under a
lock: concurrent first requests wait for one build, later ones are served
from memory, and the hub's start costs nothing. A built file is renamed into
place, so a half-written wheel is never found. A failure is remembered for
``RETRY_FAILED_AFTER`` seconds: anonymous requests cannot make the hub build
again and again. Whatever its origin, a wheel is checked before it is
served: a sound zip whose METADATA names ``tether`` at the hub's version and
whose WHEEL says pure Python (``py3-none-any``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import zipfile
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path, PurePosixPath

import tether
from tether.hub.config import child_environment
from tether.protocol import wheel_name

log = logging.getLogger("tether.hub.dist")

#: Seconds a failed build is remembered before a request may try again.
RETRY_FAILED_AFTER = 60.0
#: Longest a build of the wheel from the source checkout may take, in seconds.
BUILD_TIMEOUT = 300.0
#: What of a dist-info folder belongs to the wheel (the rest an installer wrote).
WHEEL_METADATA = frozenset({"METADATA", "WHEEL", "entry_points.txt"})
WHEEL_METADATA_FOLDERS = frozenset({"licenses", "sboms"})
#: The time stamp of every file in a repacked wheel (as hatchling's own).
ZIP_DATE = (2020, 2, 2, 0, 0, 0)
#: What a source checkout's wheel is built from (the hash that names its cache).
SOURCE_FILES = ("pyproject.toml", "README.md", ".gitignore")


class DistUnavailable(Exception):
    """The hub has no worker wheel to serve; the message says why."""


@dataclass(frozen=True)
class WorkerWheel:
    """A checked wheel of the hub's version, held in memory (a few hundred kB)."""

    filename: str
    version: str
    data: bytes
    sha256: str
    requires_python: str | None
    #: Where it came from, for the log.
    origin: str


class WorkerDist:
    """The hub's one worker wheel, made on first use (see the module docstring)."""

    def __init__(
        self, home: Path, configured: Path | None = None, version: str = tether.__version__
    ) -> None:
        self.home = home
        self.configured = configured
        self.version = version
        self._lock = threading.Lock()
        self._wheel: WorkerWheel | None = None
        #: Why the last attempt failed, and until when that stands.
        self._failed: tuple[str, float] | None = None

    @property
    def filename(self) -> str:
        return wheel_name(self.version)

    async def wheel(self) -> WorkerWheel:
        """The wheel; the first call makes it off the event loop. Raises DistUnavailable."""
        if self._wheel is not None:
            return self._wheel
        return await asyncio.to_thread(self.get)

    def get(self) -> WorkerWheel:
        """The wheel, made now if need be (blocking). Raises DistUnavailable."""
        with self._lock:
            if self._wheel is not None:
                return self._wheel
            if self._failed is not None and time.monotonic() < self._failed[1]:
                raise DistUnavailable(self._failed[0])
            try:
                wheel = self._make()
            except Exception as exc:  # whatever broke, the route answers 503 with the reason
                reason = str(exc) if isinstance(exc, DistUnavailable) else repr(exc)
                log.error("cannot serve the worker's wheel: %s", reason)
                self._failed = (reason, time.monotonic() + RETRY_FAILED_AFTER)
                raise DistUnavailable(reason) from exc
            log.info(
                "serving the worker's wheel %s (%s), sha256 %s",
                wheel.filename,
                wheel.origin,
                wheel.sha256,
            )
            self._wheel, self._failed = wheel, None
            return wheel

    def _make(self) -> WorkerWheel:
        if self.configured is not None:
            origin = f"TETHER_WORKER_WHEEL={self.configured}"
            try:
                data = self.configured.read_bytes()
            except OSError as exc:
                raise DistUnavailable(f"{origin} cannot be read: {exc.strerror}") from None
            return self._check(data, origin)
        root = source_root()
        if root is not None:
            return self._built(root)
        return self._check(repack_installed(), "repacked from the installed distribution")

    def _built(self, root: Path) -> WorkerWheel:
        key = f"{self.version}-{source_hash(root)[:16]}"
        cache = self.home / "dist"
        folder = cache / key
        target = folder / self.filename
        origin = f"built from the source checkout {root}"
        if target.is_file():
            try:
                return self._check(target.read_bytes(), origin)
            except DistUnavailable as exc:
                log.warning("rebuilding the worker's wheel: the cached one is bad: %s", exc)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as out:
            built = build_wheel(root, Path(out))
            wheel = self._check(built.read_bytes(), origin)
            os.replace(built, target)  # same file system: never seen half-written
        for other in cache.iterdir():  # older versions and sources: no one asks for them
            if other.name != key:
                shutil.rmtree(other, ignore_errors=True)
        return wheel

    def _check(self, data: bytes, origin: str) -> WorkerWheel:
        """``data`` as a WorkerWheel if it is a sound pure wheel of tether at our version."""
        info = f"tether-{self.version.replace('-', '_')}.dist-info"
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                bad = zf.testzip()
                metadata = zf.read(f"{info}/METADATA")
                tags = zf.read(f"{info}/WHEEL")
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise DistUnavailable(
                f"{origin} is not a wheel of tether {self.version}: {exc}"
            ) from None
        if bad is not None:
            raise DistUnavailable(f"{origin} is corrupt: {bad} fails its CRC")
        meta = BytesParser().parsebytes(metadata, headersonly=True)
        name = re.sub(r"[-_.]+", "-", str(meta.get("Name", ""))).lower()
        if name != "tether" or meta.get("Version") != self.version:
            raise DistUnavailable(
                f"{origin} is {meta.get('Name')} {meta.get('Version')}, "
                f"not tether {self.version} (the hub's own version)"
            )
        wheel_meta = BytesParser().parsebytes(tags, headersonly=True)
        if (
            "py3-none-any" not in (wheel_meta.get_all("Tag") or [])
            or str(wheel_meta.get("Root-Is-Purelib", "")).lower() != "true"
        ):
            raise DistUnavailable(f"{origin} is not a pure Python (py3-none-any) wheel")
        requires = meta.get("Requires-Python")
        return WorkerWheel(
            filename=self.filename,
            version=self.version,
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            requires_python=str(requires) if requires else None,
            origin=origin,
        )


def source_root() -> Path | None:
    """The project folder when the running ``tether`` is a source checkout's ``src/tether``."""
    package = Path(tether.__file__).resolve().parent
    root = package.parent.parent
    if package.parent.name != "src" or not (root / "pyproject.toml").is_file():
        return None
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return root if project.get("project", {}).get("name") == "tether" else None


def source_hash(root: Path) -> str:
    """sha256 over what the wheel is built from: the package's files and the
    project's metadata (compiled files left out: they come and go)."""
    digest = hashlib.sha256()
    paths = [root / name for name in SOURCE_FILES if (root / name).is_file()]
    for current, dirs, files in os.walk(root / "src" / "tether"):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        paths += [Path(current) / f for f in sorted(files) if not f.endswith((".pyc", ".pyo"))]
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_wheel(root: Path, out: Path) -> Path:
    """Build the project at ``root`` into ``out`` with its backend; the wheel's path."""
    if importlib.util.find_spec("hatchling") is not None:
        # The PEP 517 hook itself: no isolation, no registry.
        script = "import sys, hatchling.build as b; print(b.build_wheel(sys.argv[1]))"
        command = [sys.executable, "-c", script, str(out)]
    elif importlib.util.find_spec("pip") is not None:
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), "."]
    else:
        raise DistUnavailable(
            f"neither hatchling nor pip is installed beside the hub to build the worker's "
            f"wheel from {root}; install hatchling there or set TETHER_WORKER_WHEEL"
        )
    try:
        done = subprocess.run(
            command,
            cwd=root,
            env=child_environment(),  # no admin token or database password for the build
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise DistUnavailable(
            f"building the worker's wheel took over {BUILD_TIMEOUT:.0f} s"
        ) from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise DistUnavailable(f"building the worker's wheel failed ({done.returncode}): {tail}")
    wheels = sorted(out.glob("tether-*.whl"))
    if len(wheels) != 1:
        raise DistUnavailable(f"building the worker's wheel left {len(wheels)} wheels, not one")
    return wheels[0]


def repack_installed() -> bytes:
    """The installed distribution the running ``tether`` comes from, as a wheel."""
    try:
        dist = importlib.metadata.distribution("tether")
    except importlib.metadata.PackageNotFoundError:
        raise DistUnavailable("tether is not an installed distribution here") from None
    running = Path(tether.__file__).resolve()
    if Path(str(dist.locate_file("tether/__init__.py"))).resolve() != running:
        raise DistUnavailable(
            f"the running tether ({running.parent}) is neither a source checkout nor the "
            f"installed distribution; set TETHER_WORKER_WHEEL"
        )
    return repack(dist)


def repack(dist: importlib.metadata.Distribution) -> bytes:
    """An installed distribution of ``tether`` packed back into its wheel's bytes.

    Only files the RECORD lists with a hash, and only the package's and the
    wheel's own metadata; each file read must still have its recorded hash.
    """
    members: list[tuple[str, bytes]] = []
    info: str | None = None
    for record in dist.files or ():
        parts = PurePosixPath(record).parts
        if parts[0] == "tether":
            if "__pycache__" in parts or record.suffix in (".pyc", ".pyo"):
                continue
        elif parts[0].endswith(".dist-info") and len(parts) > 1:
            if parts[1] not in WHEEL_METADATA and parts[1] not in WHEEL_METADATA_FOLDERS:
                continue  # INSTALLER, REQUESTED, direct_url.json, RECORD: the installer's
            info = parts[0]
        else:
            continue  # the console script, .pth files: an installer wrote them
        if record.hash is None:
            raise DistUnavailable(f"the installed {record} has no hash in RECORD")
        try:
            data = Path(str(dist.locate_file(record))).read_bytes()
        except OSError as exc:
            raise DistUnavailable(f"the installed {record} cannot be read: {exc}") from None
        if _record_hash(data, record.hash.mode) != record.hash.value:
            raise DistUnavailable(
                f"the installed {record} is not what was installed (its RECORD hash "
                f"differs); reinstall tether or set TETHER_WORKER_WHEEL"
            )
        members.append((PurePosixPath(record).as_posix(), data))
    if info is None or not any(name.startswith("tether/") for name, _ in members):
        raise DistUnavailable("the installed tether's RECORD lists no package files")
    # The package first, its dist-info last and RECORD at the very end, as wheels are.
    members.sort(key=lambda m: (m[0].startswith(info), m[0]))
    lines = [f"{name},sha256={_record_hash(data, 'sha256')},{len(data)}" for name, data in members]
    members.append((f"{info}/RECORD", ("\n".join([*lines, f"{info}/RECORD,,"]) + "\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            entry = zipfile.ZipInfo(name, ZIP_DATE)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, data)
    return buffer.getvalue()


def _record_hash(data: bytes, mode: str) -> str:
    """A RECORD hash value: urlsafe base64 of the digest, without padding."""
    try:
        digest = hashlib.new(mode, data).digest()
    except ValueError:
        raise DistUnavailable(f"RECORD uses an unknown hash {mode!r}") from None
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
