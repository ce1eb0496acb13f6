"""A DAG's code as the console shows it: the files of a bundle in the hub's store.

A run is pinned to the bundle it started with (``DagRun.bundle_sha``), so the
code of a run is the code that ran, even after the file changed; with no run
named, the DAG's current bundle. The bundle is read from the store as the
worker API serves it, never from the DAGs folder.

The bundle is streamed (``tarfile`` mode ``r|``) through a cap on what it
inflates to, and only regular files with names a bundle may hold are
listed. A file is shown up to :data:`MAX_SHOWN_BYTES`: a larger one is cut
there, and the page says so. The file asked for is matched against the
bundle's names, never used as a path.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from typing import Any

from sqlalchemy.orm import Session

from tether.hub.core import queries
from tether.hub.store.models import Bundle
from tether.protocol import bundle_limits, is_bundle_path

#: Most bytes of one file a page shows; past it the file is cut, with a note.
MAX_SHOWN_BYTES = 256 * 1024


class _Capped(io.RawIOBase):
    """Between gzip and tarfile: refuses to inflate past ``cap`` bytes."""

    def __init__(self, raw: Any, cap: int) -> None:
        self._raw, self._left = raw, cap

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        self._left -= len(data)
        if self._left < 0:
            raise queries.BadRequest("the bundle unpacks to more than its limit")
        buffer[: len(data)] = data
        return len(data)


def _read(data: bytes, wanted: str | None) -> tuple[list[dict[str, Any]], bytes | None]:
    """The regular files of a bundle (name and size, in its order) and the first
    :data:`MAX_SHOWN_BYTES` + 1 bytes of ``wanted``, if it holds that file."""
    max_bytes, max_files = bundle_limits()
    files: list[dict[str, Any]] = []
    content = None
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as inflated:
            stream = io.BufferedReader(_Capped(inflated, max_bytes + (max_files + 16) * 4096))
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if not member.isreg() or not is_bundle_path(member.name):
                        continue
                    files.append({"name": member.name, "size": member.size})
                    if member.name == wanted and content is None:
                        source = tar.extractfile(member)
                        content = source.read(MAX_SHOWN_BYTES + 1) if source else b""
                    if len(files) >= max_files:
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise queries.BadRequest(f"the bundle is not a valid tar.gz: {exc}") from None
    return files, content


def _text(raw: bytes) -> tuple[list[str], bool]:
    """A file's lines as text, and whether it is binary (holds a NUL: not shown)."""
    if b"\0" in raw:
        return [], True
    text = raw.decode("utf-8", errors="replace")
    return text.splitlines(), False


def code(
    session: Session, dag_id: str, run_id: str | None, name: str | None = None
) -> dict[str, Any]:
    """The code page: the files of the bundle that ``run_id`` pinned (the DAG's
    current one if None), and the text of one of them, the DAG's own file by
    default (``name``)."""
    dag = queries.get_dag(session, dag_id)
    run = queries.get_run(session, dag_id, run_id) if run_id is not None else None
    sha = run.bundle_sha if run is not None else dag.bundle_sha
    fileloc = str((run.serialized if run is not None else dag.serialized).get("fileloc") or "")
    bundle = session.get(Bundle, sha)
    if bundle is None:
        raise queries.NotFound(
            f"bundle {sha} is no longer stored (tether db clean removes bundles no run uses)"
        )
    wanted = name or fileloc
    files, raw = _read(bundle.data, wanted)
    if raw is None and name is None and files:
        wanted = files[0]["name"]  # a bundle from before the fileloc was recorded
        files, raw = _read(bundle.data, wanted)
    if raw is None:
        raise queries.NotFound(f"bundle {sha[:12]} holds no file {wanted!r}")
    size = next(f["size"] for f in files if f["name"] == wanted)
    lines, binary = _text(raw[:MAX_SHOWN_BYTES])
    return {
        **queries.dag_summary(dag, queries.file_error(session, dag.fileloc)),
        "run": None if run is None else {"run_id": run.run_id, "state": run.state},
        "sha": sha,
        "fileloc": fileloc,
        "files": files,
        "file": {
            "name": wanted,
            "size": size,
            "lines": lines,
            "binary": binary,
            "truncated": len(raw) > MAX_SHOWN_BYTES,
            "shown_bytes": min(len(raw), MAX_SHOWN_BYTES),
        },
    }
