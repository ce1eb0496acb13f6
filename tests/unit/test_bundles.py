"""DAG-code bundles: packing on the hub and the worker's cache of unpacked bundles."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tether.hub.services.bundles import CannotBundle, bundle_files, fingerprint, pack, unpack
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
    assert [name for name, _ in bundle_files(folder).files] == sorted(_tree(target))


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
    with pytest.raises(BundleError, match="not a valid tar.gz"):
        asyncio.run(cache.ensure(sha))
    assert not cache.path_for(sha).exists()
    assert list((tmp_path / "cache").iterdir()) == []


# --- only the DAGs folder goes in, and unpacking trusts no member ----------------------------


def test_links_out_of_the_folder_and_to_folders_are_left_out_and_named(tmp_path: Path) -> None:
    secret = tmp_path / "hub-home" / "admin_token"
    secret.parent.mkdir()
    secret.write_text("the-admin-token\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "lib.py").write_text("X = 1\n")
    folder = _make_folder(tmp_path / "dags")
    (folder / "token.txt").symlink_to(secret)
    (folder / "relative_escape.txt").symlink_to("../hub-home/admin_token")
    (folder / "vendored").symlink_to(outside)
    (folder / "helpers" / "loop").symlink_to(folder)
    (folder / "alias.py").symlink_to(folder / "dag_a.py")  # inside: packed as a copy
    os.mkfifo(folder / "pipe")
    listing = bundle_files(folder)
    assert listing.skipped == {
        "token.txt": "a symbolic link to a file outside the DAGs folder is never packed",
        "relative_escape.txt": "a symbolic link to a file outside the DAGs folder is never packed",
        "vendored": "a symbolic link to a folder is not followed",
        "helpers/loop": "a symbolic link to a folder is not followed",
        "pipe": "not a regular file",
    }
    _, data = pack(folder, listing)
    unpack(data, tmp_path / "out")
    tree = _tree(tmp_path / "out")
    assert tree["alias.py"] == (folder / "dag_a.py").read_bytes()
    assert sorted(tree) == [
        "alias.py",
        "dag_a.py",
        "helpers/data/blob.bin",
        "helpers/util.py",
        "sql/query.sql",
    ]
    assert b"the-admin-token" not in gzip.decompress(data)


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue())


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([_file("/etc/evil")], "not a relative path inside the bundle"),
        ([_file("../credential.json")], "not a relative path inside the bundle"),
        ([_file("a/../../credential.json")], "not a relative path inside the bundle"),
        ([_file("a//b")], "not a relative path inside the bundle"),
        ([_special("link", tarfile.SYMTYPE, "../../credential.json")], "regular files and folders"),
        # The bypass of tarfile's "data" filter: a link, then a file written through it.
        (
            [_special("l", tarfile.SYMTYPE, ".."), _file("l/credential.json", b"{}")],
            "regular files and folders",
        ),
        ([_special("hard", tarfile.LNKTYPE, "dag.py")], "regular files and folders"),
        ([_special("dev", tarfile.CHRTYPE)], "regular files and folders"),
        ([_special("fifo", tarfile.FIFOTYPE)], "regular files and folders"),
    ],
)
def test_unpack_refuses_members_that_could_leave_the_folder(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], reason: str
) -> None:
    home = tmp_path / "worker-home"
    (home / "bundles").mkdir(parents=True)
    (home / "credential.json").write_text('{"credential": "ttw_mine"}')
    with pytest.raises(BundleError, match=reason):
        unpack(_tar(members), home / "bundles" / ("0" * 64))
    assert (home / "credential.json").read_text() == '{"credential": "ttw_mine"}'
    assert list((home / "bundles").iterdir()) == []  # nothing half unpacked is left


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_unpack_refuses_a_bomb_while_reading_it(tmp_path: Path) -> None:
    # 256 MiB of zeros compress to a few hundred KiB; nothing like it is written.
    packed = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=packed, mode="wb", compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        info = tarfile.TarInfo("zeros.bin")
        info.size = 256 * 1024 * 1024
        tar.addfile(info, io.BufferedReader(_Zeros(info.size)))
    bomb = packed.getvalue()
    assert len(bomb) < 1024 * 1024
    with pytest.raises(BundleError, match="more than"):
        unpack(bomb, tmp_path / "out")  # the default limit, 100 MiB
    assert list(tmp_path.iterdir()) == []
    # A small limit is enforced the same way, by the header's size and by the bytes read.
    with pytest.raises(BundleError, match="more than 8388608 bytes"):
        unpack(bomb, tmp_path / "out", max_bytes=8 * 1024 * 1024)


def test_unpack_refuses_a_bomb_in_the_tar_headers(tmp_path: Path) -> None:
    # tarfile reads a pax header whole: 64 MiB of it, in a 100 KiB bundle.
    info, data = _file("dag.py")
    info.pax_headers = {"comment": "x" * (64 * 1024 * 1024)}
    bomb = _tar([(info, data)])
    assert len(bomb) < 1024 * 1024
    with pytest.raises(BundleError, match="more than its limit"):
        unpack(bomb, tmp_path / "out", max_bytes=1024 * 1024, max_files=10)


def test_unpack_refuses_too_many_files_and_pack_refuses_a_folder_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    many = _tar([_file(f"f{i}.py") for i in range(30)])
    with pytest.raises(BundleError, match="more than 20 files"):
        unpack(many, tmp_path / "out", max_files=20)
    folder = _make_folder(tmp_path / "dags")
    monkeypatch.setenv("TETHER_MAX_BUNDLE_FILES", "3")
    with pytest.raises(CannotBundle, match="holds 4 files; a bundle may hold 3"):
        pack(folder)
    monkeypatch.setenv("TETHER_MAX_BUNDLE_FILES", "100")
    monkeypatch.setenv("TETHER_MAX_BUNDLE_BYTES", "20")
    with pytest.raises(CannotBundle, match="more than 20 bytes"):
        pack(folder)


def test_names_a_bundle_cannot_carry_are_left_out_and_named(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "dags")
    (folder / "notes\\draft.txt").write_text("a backslash")
    long = folder / ("d" * 200) / ("e" * 200) / ("f" * 200) / ("g" * 200) / ("h" * 200)
    long.mkdir(parents=True)
    (long / "deep.py").write_text("")
    with open(os.fsencode(folder) + b"/caf\xe9.py", "w"):  # a Latin-1 name
        pass
    listing = bundle_files(folder)
    assert listing.skipped["notes\\draft.txt"].startswith("its name cannot travel in a bundle")
    assert listing.skipped["caf\\udce9.py"] == "its name is not valid UTF-8"
    (too_long,) = [k for k in listing.skipped if k.startswith("dddd")]
    assert len(too_long) <= 900
    _, data = pack(folder, listing)
    unpack(data, tmp_path / "out")  # what was packed unpacks
    assert sorted(_tree(tmp_path / "out")) == sorted(
        _tree(folder.parent / "dags")
        and [
            "dag_a.py",
            "helpers/data/blob.bin",
            "helpers/util.py",
            "sql/query.sql",
        ]
    )


def test_pack_reads_only_the_file_the_listing_found(tmp_path: Path) -> None:
    secret = tmp_path / "admin_token"
    secret.write_text("the-admin-token\n")
    folder = _make_folder(tmp_path / "dags")
    listing = bundle_files(folder)
    (folder / "dag_a.py").unlink()
    (folder / "dag_a.py").symlink_to(secret)  # swapped after the walk
    with pytest.raises(CannotBundle, match="dag_a.py"):
        pack(folder, listing)


def test_unpack_counts_folders_toward_the_limit(tmp_path: Path) -> None:
    folders = [_special(f"d{i}", tarfile.DIRTYPE) for i in range(30)]
    with pytest.raises(BundleError, match="more than 20 files and folders"):
        unpack(_tar(folders), tmp_path / "out", max_files=20)
    assert list(tmp_path.iterdir()) == []
