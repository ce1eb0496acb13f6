"""The worker's bundle cache: downloads once, checks the hash, and stays small."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from tether.protocol import BundleError
from tether.worker.bundles import BundleCache


def _bundle(name: str, size: int) -> tuple[str, bytes]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BytesIO(b"x" * size))
    data = gzip.compress(raw.getvalue(), mtime=0)
    return hashlib.sha256(data).hexdigest(), data


def test_a_bundle_is_downloaded_once_and_its_hash_checked(tmp_path: Path) -> None:
    sha, data = _bundle("dag.py", 10)
    fetched: list[str] = []

    async def fetch(wanted: str) -> bytes:
        fetched.append(wanted)
        return data if wanted == sha else b"not what was asked"

    async def scenario() -> None:
        cache = BundleCache(tmp_path, fetch)
        first, second = await asyncio.gather(cache.ensure(sha), cache.ensure(sha))
        assert first == second == tmp_path / sha
        assert (first / "dag.py").read_bytes() == b"x" * 10
        with pytest.raises(BundleError, match="arrived with hash"):
            await cache.ensure("a" * 64)
        with pytest.raises(BundleError, match="invalid bundle id"):
            await cache.ensure("../../etc")

    asyncio.run(scenario())
    assert fetched == [sha, "a" * 64]


def test_eviction_by_age_then_by_size_never_touches_a_bundle_in_use(tmp_path: Path) -> None:
    bundles = {name: _bundle(f"{name}.py", 1000) for name in ("old", "busy", "lru", "fresh")}
    by_sha = {sha: data for sha, data in bundles.values()}

    async def fetch(sha: str) -> bytes:
        return by_sha[sha]

    cache = BundleCache(tmp_path, fetch, max_age=3600, max_bytes=2500)
    now = time.time()

    async def fill() -> None:
        for sha, _ in bundles.values():
            await cache.ensure(sha)

    asyncio.run(fill())
    ages = {"old": 7200, "busy": 9000, "lru": 600, "fresh": 10}
    for name, (sha, _) in bundles.items():
        os.utime(tmp_path / sha, (now - ages[name], now - ages[name]))
    (tmp_path / ".partial-download").mkdir()
    os.utime(tmp_path / ".partial-download", (now - 7200, now - 7200))

    busy = bundles["busy"][0]
    gone = cache.evict({busy}, now=now)

    # "old" is past the age; then the total (3000 bytes) is over 2500, so the least
    # recently used of the rest goes ("lru"); "busy" stays although it is older.
    assert set(gone) == {bundles["old"][0], bundles["lru"][0]}
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {busy, bundles["fresh"][0]}
