"""The worker's cache of DAG-code bundles, keyed by their sha256.

A bundle is a tar.gz of the files one DAG needs (its file, the helpers it
imports, what its ``include`` names). The worker downloads it over the worker
API, checks its hash and unpacks it once under its own home; it never reads
the hub's DAGs folder. The cache is kept small: a bundle unused for
``max_age`` seconds is deleted, and beyond ``max_bytes`` the least recently
used go first; a bundle a running task uses is never deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path

from tether.protocol import BundleError, unpack_bundle

__all__ = ["BundleCache", "BundleError"]

_SHA = re.compile(r"[0-9a-f]{64}")


def _size(folder: Path) -> int:
    total = 0
    for current, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(current, name)).st_size
            except OSError:
                pass
    return total


class BundleCache:
    def __init__(
        self,
        root: Path,
        fetch: Callable[[str], Awaitable[bytes]],
        *,
        max_age: float = 7 * 86400,
        max_bytes: int = 1024**3,
    ) -> None:
        self.root = root
        self._fetch = fetch
        self.max_age = max_age
        self.max_bytes = max_bytes
        self._locks: dict[str, asyncio.Lock] = {}

    def path_for(self, sha: str) -> Path:
        return self.root / sha

    async def ensure(self, sha: str) -> Path:
        """The unpacked bundle ``sha``, downloading it on first use."""
        if not isinstance(sha, str) or not _SHA.fullmatch(sha):
            raise BundleError(f"invalid bundle id {sha!r}")
        target = self.path_for(sha)
        if not target.is_dir():
            lock = self._locks.setdefault(sha, asyncio.Lock())
            async with lock:
                if not target.is_dir():
                    data = await self._fetch(sha)
                    actual = hashlib.sha256(data).hexdigest()
                    if actual != sha:
                        raise BundleError(f"bundle {sha} arrived with hash {actual}")
                    await asyncio.to_thread(unpack_bundle, data, target)
            self._locks.pop(sha, None)
        os.utime(target)  # its last use, for eviction
        return target

    def evict(self, in_use: Collection[str], now: float | None = None) -> list[str]:
        """Delete bundles unused for ``max_age``, then the least recently used beyond
        ``max_bytes``; never one of ``in_use``. Returns the deleted shas."""
        now = time.time() if now is None else now
        if not self.root.is_dir():
            return []
        cached: list[tuple[float, str, int]] = []
        for entry in self.root.iterdir():
            if entry.name.startswith("."):  # a download that died half-unpacked
                if entry.is_dir() and now - entry.stat().st_mtime > 3600:
                    shutil.rmtree(entry, ignore_errors=True)
                continue
            if not _SHA.fullmatch(entry.name) or not entry.is_dir():
                continue
            cached.append((entry.stat().st_mtime, entry.name, _size(entry)))
        cached.sort()  # least recently used first
        total = sum(size for _, _, size in cached)
        gone = []
        for used_at, sha, size in cached:
            if sha in in_use or sha in self._locks:
                continue
            if now - used_at > self.max_age or total > self.max_bytes:
                shutil.rmtree(self.path_for(sha), ignore_errors=True)
                total -= size
                gone.append(sha)
        return gone
