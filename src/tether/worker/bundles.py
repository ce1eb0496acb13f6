"""The worker's cache of DAG-code bundles, keyed by their sha256.

A bundle is a tar.gz of the hub's DAGs folder. The worker downloads it over
the worker API, checks its hash and unpacks it once under its own home; it
never reads the hub's DAGs folder.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from tether.protocol import BundleError, unpack_bundle

__all__ = ["BundleCache", "BundleError"]


class BundleCache:
    def __init__(self, root: Path, fetch: Callable[[str], Awaitable[bytes]]) -> None:
        self.root = root
        self._fetch = fetch
        self._locks: dict[str, asyncio.Lock] = {}

    def path_for(self, sha: str) -> Path:
        return self.root / sha

    async def ensure(self, sha: str) -> Path:
        """The unpacked bundle ``sha``, downloading it on first use."""
        if not sha or not all(c in "0123456789abcdef" for c in sha) or len(sha) != 64:
            raise BundleError(f"invalid bundle id {sha!r}")
        target = self.path_for(sha)
        if target.is_dir():
            return target
        lock = self._locks.setdefault(sha, asyncio.Lock())
        async with lock:
            if target.is_dir():
                return target
            data = await self._fetch(sha)
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha:
                raise BundleError(f"bundle {sha} arrived with hash {actual}")
            await asyncio.to_thread(unpack_bundle, data, target)
        return target
