"""Moving the worker to its hub's version: what the ``update`` directive does.

The hub serves a wheel of its own version (``hub/worker_api/dist.py``).
Asked to update (``Directives.update``, from ``tether workers update``), the
worker (``agent.py: Worker._update``)

1. reads the hub's listing; when it already runs that version there is
   nothing to do, and it says so;
2. downloads the wheel with its own client, so with its credential, its CA
   and its proxy (the trust every other call has), and checks its sha256,
   before it drains: a hub with no wheel costs no running task anything;
3. drains: takes no new task, waits for the running ones and their reports;
4. installs the wheel into its own environment,
   ``sys.executable -m pip install --no-input WHEEL`` (pip takes a new
   dependency from the machine's usual index), and checks that the
   environment now holds that version;
5. exits :data:`~tether.protocol.UPDATED_EXIT`; its service manager starts
   the new version (``Restart=always`` in the printed unit).

Any failure leaves the old version running and taking work; the reason goes
to the log and into the heartbeat (``update_error``, shown by
``GET /api/v1/workers`` and ``tether workers list``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tether import __version__
from tether.protocol import MalformedMessage
from tether.worker.client import HubClient, HubError

#: Longest pip may take to install the wheel (and any new dependency), in seconds.
PIP_TIMEOUT = 600.0
#: How much of pip's output a failure reports.
OUTPUT_TAIL = 2000


class UpdateFailed(Exception):
    """The update did not happen; the message says why. The old version runs on."""


async def fetch(client: HubClient, home: Path) -> tuple[Path, str] | None:
    """The hub's wheel saved in ``home/update/`` and its version; None when this
    worker already runs the hub's version."""
    try:
        listing = await client.dist_listing()
        if listing.version == __version__:
            return None
        data = await client.fetch_wheel(listing)
    except (ConnectionError, HubError, MalformedMessage) as exc:
        # MalformedMessage: a listing of other than one wheel (DistListing.wheel).
        raise UpdateFailed(f"cannot get the hub's wheel: {exc}") from None
    folder = home / "update"
    target = folder / listing.wheel.filename  # its shape was checked (DistListing.check)
    partial = target.with_name(target.name + ".part")
    try:  # a full disk or a stray file is a failed update, reported like any other
        folder.mkdir(mode=0o700, exist_ok=True)
        for old in folder.iterdir():  # an earlier update's wheel
            old.unlink()
        partial.write_bytes(data)
        os.replace(partial, target)
    except OSError as exc:
        raise UpdateFailed(f"cannot save the hub's wheel in {folder}: {exc}") from None
    return target, listing.version


async def install(wheel: Path, version: str) -> None:
    """``pip install`` ``wheel`` into this interpreter's environment and check
    that it now holds tether ``version``; UpdateFailed if not."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        str(wheel),
    ]
    code, output = await _run(command, PIP_TIMEOUT)
    if code != 0:
        raise UpdateFailed(f"pip install failed (exit {code}): {output[-OUTPUT_TAIL:]}")
    probe = [sys.executable, "-c", "import importlib.metadata as m; print(m.version('tether'))"]
    code, output = await _run(probe, 60.0)
    installed = output.strip()
    if code != 0 or installed != version:
        raise UpdateFailed(
            f"pip said it installed {wheel.name}, but the environment holds tether "
            f"{installed[-200:] or '(none)'}"
        )


async def _run(command: list[str], limit: float) -> tuple[int, str]:
    """Run ``command``; its exit status and output (stdout and stderr together)."""
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        raise UpdateFailed(f"cannot run {command[0]}: {exc}") from None
    try:
        async with asyncio.timeout(limit):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise UpdateFailed(f"{' '.join(command[1:4])} took over {limit:.0f} s") from None
    assert process.returncode is not None
    return process.returncode, output.decode("utf-8", "replace")
