"""Pack the DAGs folder into a content-addressed bundle (a reproducible tar.gz)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

from tether.protocol import unpack_bundle

#: Folder and file names left out of bundles.
IGNORED_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", "node_modules"})


def bundle_files(folder: Path) -> list[Path]:
    """The files that go into a bundle of ``folder``, sorted."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part in IGNORED_NAMES or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix not in (".pyc", ".pyo"):
            out.append(path)
    return out


def fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detection: names, sizes and modification times."""
    result = []
    for path in bundle_files(folder):
        st = path.stat()
        result.append((path.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(result)


def pack(folder: Path) -> tuple[str, bytes]:
    """``(sha256, tar.gz bytes)`` of ``folder``; the same files give the same bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in bundle_files(folder):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.size = len(data)
            info.mode = 0o755 if path.stat().st_mode & 0o100 else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    packed = gzip.compress(raw.getvalue(), mtime=0)
    return hashlib.sha256(packed).hexdigest(), packed


# Unpacking is shared with the worker, which must not import the hub.
unpack = unpack_bundle
