"""The worker's update fetch against a hub simulated with httpx.MockTransport:
whatever goes wrong before anything is installed is an UpdateFailed, which the
worker reports in its heartbeat, never an exception that ends the update
silently."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest

from tether.protocol import DIST_PREFIX, wheel_name
from tether.worker import update
from tether.worker.client import HubClient

VERSION = "99.0.0"
WHEEL = b"PK not really a wheel"


def _hub(files: int) -> httpx.MockTransport:
    name = wheel_name(VERSION)
    listed = {
        "filename": name,
        "url": DIST_PREFIX + name,
        "size": len(WHEEL),
        "sha256": hashlib.sha256(WHEEL).hexdigest(),
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == DIST_PREFIX:
            return httpx.Response(200, json={"version": VERSION, "files": [listed] * files})
        if request.url.path == DIST_PREFIX + name:
            return httpx.Response(200, content=WHEEL)
        return httpx.Response(404, json={"detail": "no such file"})

    return httpx.MockTransport(answer)


def _fetch(home: Path, files: int = 1) -> tuple[Path, str] | None:
    async def main() -> tuple[Path, str] | None:
        client = HubClient("http://hub", "ttw_x", transport=_hub(files))
        try:
            return await update.fetch(client, home)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_the_wheel_is_saved_in_the_home(tmp_path: Path) -> None:
    fetched = _fetch(tmp_path)
    assert fetched is not None
    wheel, version = fetched
    assert (wheel, version) == (tmp_path / "update" / wheel_name(VERSION), VERSION)
    assert wheel.read_bytes() == WHEEL


def test_a_wheel_that_cannot_be_saved_is_a_failed_update(tmp_path: Path) -> None:
    (tmp_path / "update").write_text("a file where the folder goes")
    with pytest.raises(update.UpdateFailed, match="cannot save the hub's wheel"):
        _fetch(tmp_path)


def test_a_listing_of_other_than_one_wheel_is_a_failed_update(tmp_path: Path) -> None:
    for files in (0, 2):
        with pytest.raises(update.UpdateFailed, match="files, not one wheel"):
            _fetch(tmp_path, files)
