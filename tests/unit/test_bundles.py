"""DAG-code bundles: packing on the hub and the worker's cache of unpacked bundles."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from tether.hub.dags.bundles import bundle_files, fingerprint, pack, unpack
from tether.worker.bundles import BundleCache, BundleError


def _make_folder(root: Path) -> Path:
    files: dict[str, str | bytes] = {
        "dag_a.py": "print('a')\n",
        "helpers/util.py": "X = 1\n",
        "helpers/data/blob.bin": b"\x00\x01\xff binary",
        "sql/query.sql": "select 1;\n",
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- pack / unpack (hub) ----------------------------------------------------------------


def test_pack_is_deterministic(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "dags")
    sha1, data1 = pack(folder)
    sha2, data2 = pack(folder)
    assert sha1 == sha2
    assert data1 == data2
    assert sha1 == hashlib.sha256(data1).hexdigest()


def test_pack_ignores_modification_times(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "dags")
    before, _ = pack(folder)
    for i, path in enumerate(sorted(folder.rglob("*"))):
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    after, _ = pack(folder)
    assert after == before


def test_pack_ignores_the_folder_location(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "dags")
    copy = tmp_path / "elsewhere" / "other_name"
    shutil.copytree(folder, copy)
    assert pack(copy)[0] == pack(folder)[0]


def test_pack_leaves_out_caches_compiled_and_hidden_files(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "dags")
    sha_clean, _ = pack(folder)
    junk = [
        "__pycache__/dag_a.cpython-311.pyc",
        "helpers/__pycache__/util.cpython-311.pyc",
        "stray.pyc",
        "helpers/stray.pyo",
        ".hidden",
        "helpers/.env",
        ".git/config",
        ".venv/lib/x.py",
        "node_modules/pkg/index.js",
        ".secret_dir/dag_b.py",
    ]
    for rel in junk:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("junk")
    sha, data = pack(folder)
    assert sha == sha_clean
    target = tmp_path / "out"
    unpack(data, target)
    assert sorted(_tree(target)) == [
        "dag_a.py",
        "helpers/data/blob.bin",
        "helpers/util.py",
        "sql/query.sql",
    ]
    assert [p.relative_to(folder).as_posix() for p in bundle_files(folder)] == sorted(_tree(target))


@pytest.mark.parametrize(
    "change",
    ["edit", "add", "rename", "delete"],
)
def test_a_content_change_changes_the_sha(tmp_path: Path, change: str) -> None:
    folder = _make_folder(tmp_path / "dags")
    before, _ = pack(folder)
    if change == "edit":
        (folder / "helpers/util.py").write_text("X = 2\n")
    elif change == "add":
        (folder / "new_dag.py").write_text("")
    elif change == "rename":
        (folder / "dag_a.py").rename(folder / "dag_b.py")
    else:
        (folder / "sql/query.sql").unlink()
    after, _ = pack(folder)
    assert after != before


def test_the_executable_bit_is_part_of_the_bundle(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "dags")
    script = folder / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    plain, _ = pack(folder)
    script.chmod(0o755)
    executable, data = pack(folder)
    assert executable != plain
    unpack(data, tmp_path / "out")
    assert os.stat(tmp_path / "out" / "run.sh").st_mode & 0o100
    assert not os.stat(tmp_path / "out" / "dag_a.py").st_mode & 0o100


def test_unpack_round_trips(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "dags")
    _, data = pack(folder)
    target = tmp_path / "deep" / "target"
    unpack(data, target)
    assert _tree(target) == _tree(folder)
    assert not (tmp_path / "deep" / "target.tmp").exists()
    # packing the unpacked copy gives the same bundle
    assert pack(target)[1] == data


def test_fingerprint_tracks_bundle_files_sizes_and_mtimes(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "dags")
    first = fingerprint(folder)
    assert [name for name, _, _ in first] == [
        "dag_a.py",
        "helpers/data/blob.bin",
        "helpers/util.py",
        "sql/query.sql",
    ]
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_bytes(b"x")
    assert fingerprint(folder) == first
    os.utime(folder / "dag_a.py", ns=(1_000_000_000, 1_000_000_000))
    assert fingerprint(folder) != first


# --- BundleCache (worker) -------------------------------------------------------------------


class FakeHub:
    """Serves bundles by sha, counting the downloads.

    With ``hold=True`` each download waits for :attr:`release` after setting
    :attr:`started`, so that a test can pile up concurrent requests.
    """

    def __init__(self, bundles: dict[str, bytes], *, hold: bool = False) -> None:
        self.bundles = bundles
        self.calls: list[str] = []
        self.hold = hold
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def fetch(self, sha: str) -> bytes:
        self.calls.append(sha)
        if self.hold:
            self.started.set()
            await self.release.wait()
        return self.bundles[sha]


def test_ensure_downloads_checks_and_unpacks(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "dags")
    sha, data = pack(folder)
    hub = FakeHub({sha: data})
    cache = BundleCache(tmp_path / "cache", hub.fetch)
    path = asyncio.run(cache.ensure(sha))
    assert path == tmp_path / "cache" / sha
    assert path == cache.path_for(sha)
    assert _tree(path) == _tree(folder)
    assert hub.calls == [sha]
    # nothing but the bundle is left in the cache folder
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [sha]


def test_second_ensure_does_not_fetch_again(tmp_path: Path) -> None:
    sha, data = pack(_make_folder(tmp_path / "dags"))
    hub = FakeHub({sha: data})
    cache = BundleCache(tmp_path / "cache", hub.fetch)

    async def twice() -> tuple[Path, Path]:
        return await cache.ensure(sha), await cache.ensure(sha)

    first, second = asyncio.run(twice())
    assert first == second
    assert hub.calls == [sha]
    # a new cache over the same folder (a worker restart) finds it on disk
    again = BundleCache(tmp_path / "cache", hub.fetch)
    assert asyncio.run(again.ensure(sha)) == first
    assert hub.calls == [sha]


def test_concurrent_ensures_fetch_once(tmp_path: Path) -> None:
    sha, data = pack(_make_folder(tmp_path / "dags"))

    async def many() -> list[Path]:
        hub = FakeHub({sha: data}, hold=True)
        cache = BundleCache(tmp_path / "cache", hub.fetch)
        pending = asyncio.gather(*(cache.ensure(sha) for _ in range(5)))
        await hub.started.wait()  # the first download is in flight, the others wait
        hub.release.set()
        paths = list(await pending)
        assert hub.calls == [sha]
        return paths

    paths = asyncio.run(many())
    assert paths == [tmp_path / "cache" / sha] * 5


def test_hash_mismatch_is_rejected_and_nothing_is_kept(tmp_path: Path) -> None:
    sha, _ = pack(_make_folder(tmp_path / "dags"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "evil.py").write_text("raise SystemExit\n")
    _, wrong = pack(other)
    hub = FakeHub({sha: wrong})
    cache = BundleCache(tmp_path / "cache", hub.fetch)
    with pytest.raises(BundleError, match="hash"):
        asyncio.run(cache.ensure(sha))
    assert not cache.path_for(sha).exists()
    # the next attempt downloads again rather than trusting anything cached
    with pytest.raises(BundleError):
        asyncio.run(cache.ensure(sha))
    assert hub.calls == [sha, sha]


@pytest.mark.parametrize(
    "sha",
    [
        "",
        "abc",
        "0" * 63,
        "0" * 65,
        "A" * 64,
        "g" * 64,
        "../" + "0" * 61,
        "0" * 62 + "/x",
    ],
)
def test_invalid_sha_is_rejected_without_fetching(tmp_path: Path, sha: str) -> None:
    hub = FakeHub({})
    cache = BundleCache(tmp_path / "cache", hub.fetch)
    with pytest.raises(BundleError, match="invalid bundle id"):
        asyncio.run(cache.ensure(sha))
    assert hub.calls == []
    assert not (tmp_path / "cache").exists()


def test_corrupt_bundle_with_matching_hash_leaves_no_partial_unpack(tmp_path: Path) -> None:
    data = b"this is not a tar.gz"
    sha = hashlib.sha256(data).hexdigest()
    hub = FakeHub({sha: data})
    cache = BundleCache(tmp_path / "cache", hub.fetch)
    with pytest.raises(tarfile.TarError):
        asyncio.run(cache.ensure(sha))
    assert not cache.path_for(sha).exists()
    assert list((tmp_path / "cache").iterdir()) == []
