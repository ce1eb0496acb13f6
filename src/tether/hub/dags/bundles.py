"""Pack the DAGs folder into a content-addressed bundle (a reproducible tar.gz).

Only what is inside the DAGs folder goes in. The folder is walked without
following links: a symbolic link to a file inside the folder is packed as a
copy of that file; a link that leaves the folder (it could name the hub's own
admin token), a link to a folder, and anything that is not a regular file
(a fifo, a socket, a device) is left out, and the listing says so, so that
the dag processor can show it beside the import errors.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tether.protocol import bundle_limits, unpack_bundle

#: Folder and file names left out of bundles.
IGNORED_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", "node_modules"})


class BundleTooLarge(Exception):
    """The DAGs folder holds more than a bundle may (TETHER_MAX_BUNDLE_*)."""


@dataclass
class Listing:
    """What a bundle of a folder holds, and what it leaves out."""

    #: (name in the bundle, the file whose bytes it holds), sorted by name.
    files: list[tuple[str, Path]] = field(default_factory=list)
    #: name in the folder -> why it was left out.
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
            listing.files.append((rel, source))
    listing.files.sort()
    return listing


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

    Raises BundleTooLarge when the files are more or bigger than a worker
    would unpack (:func:`tether.protocol.bundle_limits`).
    """
    listing = listing or bundle_files(folder)
    max_bytes, max_files = bundle_limits()
    if len(listing.files) > max_files:
        raise BundleTooLarge(
            f"the DAGs folder holds {len(listing.files)} files; a bundle may hold "
            f"{max_files} (TETHER_MAX_BUNDLE_FILES)"
        )
    raw = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, source in listing.files:
            data = source.read_bytes()
            total += len(data)
            if total > max_bytes:
                raise BundleTooLarge(
                    f"the DAGs folder holds more than {max_bytes} bytes; a bundle may "
                    "hold that much (TETHER_MAX_BUNDLE_BYTES)"
                )
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o755 if source.stat().st_mode & 0o100 else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    packed = gzip.compress(raw.getvalue(), mtime=0)
    return hashlib.sha256(packed).hexdigest(), packed


# Unpacking is shared with the worker, which must not import the hub.
unpack = unpack_bundle
