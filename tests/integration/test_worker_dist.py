"""The worker's wheel served by the hub, in process (httpx ASGI transport):
the listing, the PEP 503 index, HEAD and ETags, hostile paths, and that the
routes are public while nothing else became so."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.metadata
import io
import logging
import re
import shutil
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from tests.hubtools import ADMIN, create_app, make_hub
from tether import __version__
from tether.hub.auth.gate import Principals
from tether.hub.dist import DistUnavailable, WorkerDist, repack
from tether.hub.state import Hub
from tether.protocol import wheel_name

WHEEL = wheel_name(__version__)
DIST = "/api/worker/v1/dist/"
PUBLIC = {DIST, DIST + WHEEL, "/simple/", "/simple/tether/"}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = make_hub(tmp_path, f"sqlite:///{tmp_path / 'dist.db'}", tmp_path / "dags")
    yield hub
    hub.store.dispose()


Scenario = Callable[[httpx.AsyncClient], Awaitable[Any]]


def run(hub: Hub, scenario: Scenario) -> Any:
    """``scenario`` with an anonymous client of ``hub``'s app."""

    async def main() -> Any:
        transport = httpx.ASGITransport(app=create_app(hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as anon:
            return await scenario(anon)

    return asyncio.run(main())


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_anyone_gets_the_hubs_wheel_from_the_listing_and_the_simple_index(hub: Hub) -> None:
    async def scenario(anon: httpx.AsyncClient) -> None:
        listing = await anon.get(DIST)
        assert listing.status_code == 200, listing.text
        assert listing.headers["content-type"] == "application/json"
        listed = listing.json()
        assert listed["version"] == __version__
        [entry] = listed["files"]
        assert entry["filename"] == WHEEL
        assert entry["url"] == DIST + WHEEL
        assert entry["requires_python"] == ">=3.11"
        assert listed["index_url"] == "/simple/"

        wheel = await anon.get(entry["url"])
        assert wheel.status_code == 200
        assert wheel.headers["content-type"] == "application/octet-stream"
        assert int(wheel.headers["content-length"]) == len(wheel.content) == entry["size"]
        sha = hashlib.sha256(wheel.content).hexdigest()
        assert sha == entry["sha256"]
        assert wheel.headers["etag"] == f'"{sha}"'
        members = _members(wheel.content)
        metadata = members[f"tether-{__version__}.dist-info/METADATA"].decode()
        assert f"\nVersion: {__version__}\n" in metadata
        assert "tether/worker/agent.py" in members
        assert "tether/hub/app.py" in members  # the hub too: `tether[hub]` from here works
        assert not any("__pycache__" in name or name.endswith(".pyc") for name in members)

        # HEAD: the same headers, no body.
        head = await anon.head(entry["url"])
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == wheel.headers["content-length"]
        assert head.headers["etag"] == wheel.headers["etag"]
        # A client that has this copy is told so.
        same = await anon.get(entry["url"], headers={"If-None-Match": wheel.headers["etag"]})
        assert same.status_code == 304
        assert same.content == b""
        other = await anon.get(entry["url"], headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200

        # PEP 503: the root lists the project, the project page the file with its hash.
        root = await anon.get("/simple/")
        assert root.status_code == 200
        assert root.headers["content-type"] == "text/html; charset=utf-8"
        assert re.findall(r'<a href="([^"]*)">tether</a>', root.text) == ["tether/"]
        page = await anon.get("/simple/tether/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        [(href, requires, text)] = re.findall(
            r'<a href="([^"]*)" data-requires-python="([^"]*)">([^<]*)</a>', page.text
        )
        assert text == WHEEL
        assert requires == "&gt;=3.11"
        url, _, fragment = urljoin("http://hub/simple/tether/", href).partition("#")
        assert url == f"http://hub{DIST}{WHEEL}"
        assert fragment == f"sha256={sha}"
        assert (await anon.head("/simple/tether/")).content == b""

    run(hub, scenario)


HOSTILE = [
    DIST + wheel_name("0.0.1"),  # another version
    DIST + wheel_name(__version__ + ".post1"),
    DIST + WHEEL + ".tmp",
    DIST + WHEEL + "/",
    DIST + "tether-" + __version__ + ".tar.gz",
    DIST + "..%2F..%2F..%2Fadmin_token",  # an encoded slash
    DIST + "%2e%2e/%2e%2e/admin_token",
    DIST + "%2E%2E%2Fsecret_key",
    "/api/worker/v1/dist",  # the folder without its slash
    "/api/worker/v1/dist//" + WHEEL,
    "/api/worker/v1/dist/x/" + WHEEL,
    "/simple",
    "/simple/other/",
    "/simple/Tether/",
    "/simple/tether",
    "/simple/tether/" + WHEEL,
    "/simple/tether/..%2F..%2Fadmin_token",
    "/simple/%2e%2e/%2e%2e/api/v1/dags",
]


def test_any_other_path_below_the_dist_routes_is_404_whoever_asks(hub: Hub) -> None:
    async def scenario(anon: httpx.AsyncClient) -> None:
        answers: dict[str, tuple[int, int]] = {}
        for path in HOSTILE:
            plain = await anon.get(path)
            admin = await anon.get(path, headers={"Authorization": f"Bearer {ADMIN}"})
            answers[path] = (plain.status_code, admin.status_code)
            assert plain.json() == {"detail": "no such file"}, path
            assert b"PK" not in plain.content
        assert answers == dict.fromkeys(HOSTILE, (404, 404))
        # GET and HEAD only.
        for path in PUBLIC:
            for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
                refused = await anon.request(method, path, content=b"x" * 100)
                assert refused.status_code == 405, (method, path)
                assert refused.headers["allow"] == "GET, HEAD"

    run(hub, scenario)


def _fill(path: str) -> str:
    return re.sub(r"{[^}]+}", "x", path)


def test_nothing_else_became_public(hub: Hub) -> None:
    """Every operation of both APIs but the known public ones refuses an anonymous caller."""
    public = {
        "/api/v1/health",
        "/api/worker/v1/enrol",
        DIST,
        DIST + "{filename}",
    }
    hub.principals = Principals(failures_per_minute=10_000)  # each refusal counts

    async def scenario(anon: httpx.AsyncClient) -> None:
        paths: dict[str, Any] = {}
        for document in ("/openapi.json", "/api/worker/v1/openapi.json"):  # both APIs
            paths.update((await anon.get(document)).json()["paths"])
        checked = []
        for path, operations in paths.items():
            assert path.startswith("/api/"), path
            if path in public:
                continue
            for method in operations:
                answer = await anon.request(method, _fill(path), json={})
                assert answer.status_code == 401, (method, path, answer.text)
                checked.append((method, path))
        assert len(checked) > 40  # both APIs, every route
        assert {DIST, DIST + "{filename}"} <= set(paths)
        # Names next to the dist folder are not part of it.
        assert (await anon.get("/api/worker/v1/distx")).status_code == 401
        assert (await anon.get("/api/worker/v1/dist-" + WHEEL)).status_code == 401

    run(hub, scenario)


def _basic(password: str, user: str = "worker") -> dict[str, str]:
    value = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def test_with_public_dist_off_the_wheel_needs_a_worker_or_the_admin(hub: Hub) -> None:
    hub.config.public_dist = False

    async def scenario(anon: httpx.AsyncClient) -> None:
        for path in sorted(PUBLIC):
            refused = await anon.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == 'Bearer, Basic realm="tether"'
            assert (await anon.get(path, headers=_basic("wrong-token"))).status_code == 401
            bearer = await anon.get(path, headers={"Authorization": f"Bearer {ADMIN}"})
            assert bearer.status_code == 200, path
            # pip sends the token of https://user:TOKEN@HUB/simple as Basic auth.
            assert (await anon.get(path, headers=_basic(ADMIN))).status_code == 200
            assert (await anon.get(path, headers=_basic("", user=ADMIN))).status_code == 200
        assert (await anon.get(DIST + wheel_name("0.0.1"))).status_code == 404

        # A worker's own credential will do.
        made = await anon.post(
            "/api/v1/workers/enrolment-tokens",
            json={"queues": ["default"], "name": "w1"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        enrolled = await anon.post("/api/worker/v1/enrol", json={"token": made.json()["token"]})
        credential = enrolled.json()["credential"]
        got = await anon.get(DIST + WHEEL, headers={"Authorization": f"Bearer {credential}"})
        assert got.status_code == 200
        assert zipfile.is_zipfile(io.BytesIO(got.content))
        assert (await anon.get("/simple/tether/", headers=_basic(credential))).status_code == 200

    run(hub, scenario)


def test_concurrent_first_requests_build_the_wheel_once(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(anon: httpx.AsyncClient) -> list[bytes]:
        answers = await asyncio.gather(*(anon.get(DIST + WHEEL) for _ in range(6)))
        assert [a.status_code for a in answers] == [200] * 6
        return [a.content for a in answers]

    with caplog.at_level(logging.INFO, logger="tether.hub.dist"):
        bodies = run(hub, scenario)
    assert len(set(bodies)) == 1
    assert [r.message for r in caplog.records].count(
        next(r.message for r in caplog.records if r.message.startswith("serving"))
    ) == 1
    # One cache folder with one finished wheel: no temporary file left behind.
    cache = hub.config.home / "dist"
    [folder] = list(cache.iterdir())
    assert folder.name.startswith(__version__ + "-")
    assert [p.name for p in folder.iterdir()] == [WHEEL]
    assert (folder / WHEEL).read_bytes() == bodies[0]

    # A hub restarted on the same source and home takes the cached file.
    stamp = (folder / WHEEL).stat().st_mtime_ns
    again = WorkerDist(hub.config.home).get()
    assert again.data == bodies[0]
    assert (folder / WHEEL).stat().st_mtime_ns == stamp
    # A folder left by another version or source is gone after the next build.
    shutil.rmtree(folder)
    (cache / "0.0.1-0123456789abcdef").mkdir()
    assert WorkerDist(hub.config.home).get().data == bodies[0]
    assert [p.name for p in cache.iterdir()] == [folder.name]


def test_an_operators_wheel_is_served_as_it_is_and_a_wrong_one_refused(
    hub: Hub, tmp_path: Path
) -> None:
    built = WorkerDist(tmp_path / "other-home").get().data
    mine = tmp_path / "from-ci.whl"
    mine.write_bytes(built)
    hub.dist.configured = mine

    async def served(anon: httpx.AsyncClient) -> bytes:
        answer = await anon.get(DIST + WHEEL)
        assert answer.status_code == 200
        return answer.content

    assert run(hub, served) == built
    assert not (hub.config.home / "dist").exists()  # nothing built

    # Another version, or not a wheel at all: 503 with the reason, never served.
    wrong = tmp_path / "wrong.whl"
    with zipfile.ZipFile(wrong, "w") as zf:
        zf.writestr("tether-0.0.1.dist-info/METADATA", "Name: tether\nVersion: 0.0.1\n")
        zf.writestr("tether-0.0.1.dist-info/WHEEL", "Root-Is-Purelib: true\nTag: py3-none-any\n")
    cases = {wrong: "is not a wheel of tether", tmp_path / "missing.whl": "cannot be read"}
    garbage = tmp_path / "garbage.whl"
    garbage.write_bytes(b"not a zip")
    cases[garbage] = "is not a wheel of tether"
    for path, reason in cases.items():
        hub.dist = WorkerDist(hub.config.home, path)
        urls = (DIST, DIST + WHEEL, "/simple/tether/")
        assert run(hub, _refusals) == dict.fromkeys(urls, reason), path


async def _refusals(anon: httpx.AsyncClient) -> dict[str, str]:
    """Why each route that needs the wheel refuses (each a 503 with Retry-After)."""
    reasons = {}
    for url in (DIST, DIST + WHEEL, "/simple/tether/"):
        answer = await anon.get(url)
        assert answer.status_code == 503, url
        assert answer.headers["retry-after"] == "60"
        detail: str = answer.json()["detail"]
        reasons[url] = next((r for r in REASONS if r in detail), detail)
    return reasons


REASONS = ("is not a wheel of tether", "cannot be read")


def _install(wheel: bytes, site: Path) -> Path:
    """What an installer does with a wheel, plainly: unpack it, add its own files."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        zf.extractall(site)
    info = site / f"tether-{__version__}.dist-info"
    (info / "INSTALLER").write_text("pip\n")
    (site / "tether" / "__pycache__").mkdir()
    (site / "tether" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"compiled")
    with (info / "RECORD").open("a") as record:
        record.write(f"tether-{__version__}.dist-info/INSTALLER,sha256=x,4\n")
        record.write("tether/__pycache__/__init__.cpython-311.pyc,,\n")
        record.write("../../../bin/tether,sha256=y,200\n")
    return info


def test_an_installed_distribution_repacks_into_the_same_wheel(tmp_path: Path) -> None:
    wheel = WorkerDist(tmp_path / "home").get().data
    info = _install(wheel, tmp_path / "site")
    dist = importlib.metadata.Distribution.at(info)
    repacked = repack(dist)
    record = f"tether-{__version__}.dist-info/RECORD"
    ours, theirs = _members(repacked), _members(wheel)
    assert sorted(ours.pop(record).splitlines()) == sorted(theirs.pop(record).splitlines())
    assert ours == theirs  # every file the same, and none more: not INSTALLER, no .pyc
    assert repack(dist) == repacked  # deterministic: the same sha256 after a restart
    checked = WorkerDist(tmp_path / "home")._check(repacked, "repacked")
    assert checked.version == __version__

    # A file changed after the install, or gone: refused, and the message says which.
    agent = tmp_path / "site" / "tether" / "worker" / "agent.py"
    agent.write_text(agent.read_text() + "\n# patched\n")
    with pytest.raises(DistUnavailable, match="tether/worker/agent.py is not what was installed"):
        repack(dist)
    agent.unlink()
    with pytest.raises(DistUnavailable, match="tether/worker/agent.py cannot be read"):
        repack(dist)
