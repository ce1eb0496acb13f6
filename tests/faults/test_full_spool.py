"""The worker's spool on a full file system.

The size cap is real: ``HOME/spool`` is a 128 KiB tmpfs mounted by the test
(it runs as root, as CI does), filled to the last block by a file the test
owns. Task logs and the tasks' working folders stay on the home's own disk,
so the tasks themselves can end well: what is shown is what the worker does
with results it cannot spool. Where mounting is not allowed the test is
skipped, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.processes import Hub, Worker, wait_for

pytestmark = pytest.mark.integration

DAGS = """
    from tether import DAG, BashOperator

    # One line per body run in $OUT; each waits until the test creates $GO.
    WAIT = ('echo "$TETHER_RUN_ID $TETHER_TASK_ID" >> "$OUT"; '
            'while [ ! -e "$GO" ]; do sleep 0.1; done')

    with DAG("spooled"):
        for i in range(3):
            BashOperator(task_id=f"t{i}", bash_command=WAIT)

    with DAG("later"):
        BashOperator(task_id="t", bash_command='echo "$TETHER_RUN_ID t" >> "$OUT"')
"""


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "128k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``where``, unmounted on the way out."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a small tmpfs: {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield where
    finally:
        # Lazily: a process the test failed to stop must not leave the mount behind.
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no byte left."""
    for size in (4096, 1):  # blocks, then what is left of the last one
        with path.open("ab", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


def _heartbeats(hub: Hub, name: str, count: int) -> None:
    """Wait until the worker has sent ``count`` more heartbeats."""
    seen: set[str] = set()

    def more() -> bool:
        seen.add(hub.api.worker(name)["last_heartbeat"])
        return len(seen) > count

    wait_for(more, 30, f"{count} more heartbeats of {name}")


def _bodies(out: Path) -> Counter[str]:
    return Counter(out.read_text().splitlines()) if out.exists() else Counter()


def test_a_full_spool_is_reported_once_and_work_resumes_when_space_returns(
    tmp_path: Path,
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "spool.py").write_text(textwrap.dedent(DAGS))
    out, go = tmp_path / "bodies.txt", tmp_path / "go"
    home = tmp_path / "w"
    with small_filesystem(home / "spool") as spool:
        hub = Hub(
            tmp_path / "hub",
            dags,
            f"sqlite:///{tmp_path / 'hub.db'}",
            TETHER_WORKER_HEARTBEAT="1",
        )
        worker = None
        try:
            worker = Worker(hub, home, "default", "w1", env={"OUT": str(out), "GO": str(go)})
            worker.wait_registered()
            hub.api.wait_dags("spooled", "later")
            filler = spool / "filler"
            fill(filler)
            run_id = hub.api.trigger("spooled")
            # The first job's entry cannot be written: the worker says so once, tells
            # the hub, and takes no more work; what it took runs from memory.
            wait_for(lambda: "ENOSPC" in worker.output(), 30, "the worker to say why")
            seen = wait_for(
                lambda: hub.api.worker("w1").get("spool_error"), 30, "the hub to be told"
            )
            assert "ENOSPC" in seen
            assert str(spool) in seen
            wait_for(lambda: _bodies(out), 30, "a task to start")
            go.touch()  # the tasks end; their results cannot be spooled, and go straight

            # No new task while the spool cannot be written, but the worker lives on.
            later = hub.api.trigger("later")
            _heartbeats(hub, "w1", 2)
            assert hub.api.tasks(hub.api.run("later", later))["t"]["state"] == "queued"
            assert worker.popen.poll() is None
            ran = {line.split()[1] for line in _bodies(out)}
            tasks = hub.api.tasks(hub.api.run("spooled", run_id))
            assert {t for t in ran if tasks[t]["state"] == "success"} == ran  # delivered

            filler.unlink()
            assert hub.api.wait_run("spooled", run_id, timeout=60)["state"] == "success"
            assert hub.api.wait_run("later", later, timeout=60)["state"] == "success"
            wait_for(
                lambda: hub.api.worker("w1").get("spool_error") is None, 30, "the error cleared"
            )
            wait_for(lambda: not list(spool.glob("*.json")), 30, "the spool to empty")
            log = worker.output()
            errors = [line for line in log.splitlines() if "ENOSPC" in line]
            assert len(errors) == 1, log  # one line for the outage, not one per write
            assert str(spool) in errors[0]
            assert "can be written again" in log
            assert "Traceback" not in log, log
            bodies = _bodies(out)
            assert set(bodies.values()) == {1}, bodies
            assert set(bodies) == {f"{run_id} t{i}" for i in range(3)} | {f"{later} t"}
        finally:
            if worker is not None:
                worker.stop()
            hub.stop()
