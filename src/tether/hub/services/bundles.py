"""Pack files of the DAGs folder into content-addressed bundles (reproducible tar.gz).

The dag processor packs the whole folder once per change, as the snapshot it
parses (it stays on the hub), and then one bundle per DAG file from that
snapshot: the files its parse used, and its DAGs' ``include`` (see
:func:`select`). A worker only ever gets the latter.

Only what is inside the DAGs folder goes in. The folder is walked without
following links: a symbolic link to a file inside the folder is packed as a
copy of that file; a link that leaves the folder (it could name the hub's own
admin token), a link to a folder, and anything that is not a regular file
(a fifo, a socket, a device) is left out, and the listing says so, so that
the dag processor can show it beside the import errors.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.protocol import bundle_limits, is_bundle_path, unpack_bundle

#: Folder and file names left out of bundles.
IGNORED_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", "node_modules"})


class CannotBundle(Exception):
    """The DAGs folder cannot be bundled now: it holds more than a bundle may
    (TETHER_MAX_BUNDLE_*), or a file changed or vanished while it was packed."""


@dataclass
class Listing:
    """What a bundle of a folder holds, and what it leaves out."""

    #: (name in the bundle, the file whose bytes it holds), sorted by name.
    files: list[tuple[str, Path]] = field(default_factory=list)
    #: name in the bundle -> (st_dev, st_ino) of the file the walk found:
    #: ``pack`` reads that very file or none (it may be swapped for a link since).
    inodes: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: name in the folder (made printable) -> why it was left out.
    skipped: dict[str, str] = field(default_factory=dict)


def _ignored(name: str) -> bool:
    return name in IGNORED_NAMES or name.startswith(".")


def bundle_files(folder: Path) -> Listing:
    """The files that go into a bundle of ``folder``, and what is left out."""
    root = folder.resolve()
    listing = Listing()
    for current, dirs, names in os.walk(root, followlinks=False):
        here = Path(current)
        for name in list(dirs):
            path = here / name
            if _ignored(name):
                dirs.remove(name)
            elif path.is_symlink():
                dirs.remove(name)
                listing.skipped[_rel(path, root)] = "a symbolic link to a folder is not followed"
        for name in names:
            if _ignored(name) or name.endswith((".pyc", ".pyo")):
                continue
            path = here / name
            rel = _rel(path, root)
            problem = _unpackable(rel)
            if problem is not None:
                listing.skipped[_shown(rel)] = problem
                continue
            source = path
            if path.is_symlink():
                source = Path(os.path.realpath(path))
                if not source.is_relative_to(root):
                    listing.skipped[rel] = (
                        "a symbolic link to a file outside the DAGs folder is never packed"
                    )
                    continue
            try:
                mode = source.stat().st_mode
            except OSError as exc:
                listing.skipped[rel] = f"cannot be read: {exc.strerror}"
                continue
            if not stat.S_ISREG(mode):
                listing.skipped[rel] = "not a regular file"
                continue
            st = source.stat()
            listing.files.append((rel, source))
            listing.inodes[rel] = (st.st_dev, st.st_ino)
    listing.files.sort()
    return listing


def select(listing: Listing, names: Iterable[str]) -> Listing:
    """The part of ``listing`` that ``names`` name (names it does not hold are ignored)."""
    wanted = set(names)
    return Listing(
        files=[(rel, source) for rel, source in listing.files if rel in wanted],
        inodes={rel: inode for rel, inode in listing.inodes.items() if rel in wanted},
    )


class IncludeError(ValueError):
    """A DAG's ``include`` entry names no file of the folder."""


def included(listing: Listing, root: Path, fileloc: str, patterns: Iterable[str]) -> set[str]:
    """The files of ``listing`` that a DAG's ``include`` patterns name.

    Each pattern is a path or glob (``**`` included) relative to the DAG
    file's folder; a folder stands for every file under it. One that matches
    nothing is an error, so that a typo is seen at parse time and not when a
    task cannot find its template.
    """
    names = {rel for rel, _ in listing.files}
    base = posixpath.dirname(fileloc)
    found: set[str] = set()
    for pattern in patterns:
        full = posixpath.normpath(posixpath.join(base, pattern))
        if full == ".." or full.startswith(("../", "/")):
            raise IncludeError(f"include entry {pattern!r} leaves the DAGs folder")
        matched: set[str] = set()
        for hit in glob.glob(full, root_dir=root, recursive=True):
            rel = Path(hit).as_posix()
            matched |= {rel} & names
            matched |= {n for n in names if n.startswith(rel.rstrip("/") + "/")}
        if not matched:
            raise IncludeError(
                f"include entry {pattern!r} matches no file of the DAGs folder "
                f"(it is relative to {base or 'the DAGs folder'}/)"
            )
        found |= matched
    return found


def contents(listing: Listing) -> list[list[Any]]:
    """``[[name, size], ...]`` of what ``listing`` holds (shown by ``dags show``)."""
    return [[rel, source.stat().st_size] for rel, source in listing.files]


def _unpackable(rel: str) -> str | None:
    """Why a file of this name cannot travel in a bundle, if it cannot."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if not is_bundle_path(rel):
        return "its name cannot travel in a bundle (a backslash, or longer than 1000 characters)"
    return None


def _shown(rel: str) -> str:
    """A name as an import error can show it (valid Unicode, at most 900 characters)."""
    text = rel.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 900 else text[:880] + "..."


def _read(rel: str, source: Path, inode: tuple[int, int] | None) -> tuple[bytes, int]:
    """The bytes and mode of the file the listing found, read through one descriptor.

    ``O_NOFOLLOW`` and the inode check refuse a file that was swapped for a
    link (or another file) between the walk and now.
    """
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != inode:
            raise CannotBundle(f"{rel} changed while the DAGs folder was being packed")
        return f.read(), st.st_mode


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def fingerprint(folder: Path, listing: Listing | None = None) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detection: names, sizes and modification times."""
    result = []
    for rel, source in (listing or bundle_files(folder)).files:
        st = source.stat()
        result.append((rel, st.st_size, st.st_mtime_ns))
    return tuple(result)


def pack(folder: Path, listing: Listing | None = None) -> tuple[str, bytes]:
    """``(sha256, tar.gz bytes)`` of ``folder``; the same files give the same bytes.

    Raises CannotBundle when the files are more or bigger than a worker
    would unpack (:func:`tether.protocol.bundle_limits`).
    """
    listing = listing or bundle_files(folder)
    max_bytes, max_files = bundle_limits()
    if len(listing.files) > max_files:
        raise CannotBundle(
            f"the DAGs folder holds {len(listing.files)} files; a bundle may hold "
            f"{max_files} (TETHER_MAX_BUNDLE_FILES)"
        )
    raw = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, source in listing.files:
            try:
                data, mode = _read(rel, source, listing.inodes.get(rel))
            except OSError as exc:
                raise CannotBundle(f"{rel} could not be read: {exc.strerror}") from None
            total += len(data)
            if total > max_bytes:
                raise CannotBundle(
                    f"the DAGs folder holds more than {max_bytes} bytes; a bundle may "
                    "hold that much (TETHER_MAX_BUNDLE_BYTES)"
                )
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o755 if mode & 0o100 else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    packed = gzip.compress(raw.getvalue(), mtime=0)
    return hashlib.sha256(packed).hexdigest(), packed


# Unpacking is shared with the worker, which must not import the hub.
unpack = unpack_bundle
