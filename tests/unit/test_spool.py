"""The worker's spool and local log cleanup."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tether.protocol import AttemptResult, Job
from tether.worker.spool import Spool, clean_logs

A1, A2 = "a1".rjust(32, "0"), "a2".rjust(32, "0")


def _job(attempt_id: str) -> Job:
    return Job(
        attempt_id=attempt_id,
        dag_id="d",
        task_id="t",
        run_id="r",
        try_number=1,
        queue="q",
        bundle_sha="0" * 64,
        fileloc="d.py",
    )


def test_spool_entries_survive_a_restart_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first = spool.open(_job(A1), tmp_path / "a1.log")
    first.pid = 123
    spool.write(first)
    os.utime(first.path, (time.time() - 10, time.time() - 10))
    second = spool.open(_job(A2), tmp_path / "a2.log")
    second.result = AttemptResult(state="success", output={"n": 1})
    spool.write(second)

    again = Spool(tmp_path / "spool").leftovers()  # a new process reads them back
    assert [e.job.attempt_id for e in again] == [A1, A2]
    assert (again[0].pid, again[0].result) == (123, None)
    assert again[1].result == AttemptResult(state="success", output={"n": 1})
    spool.remove(again[0])
    assert [e.job.attempt_id for e in spool.leftovers()] == [A2]


def test_a_bad_spool_entry_is_set_aside_and_blocks_none_of_the_others(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    good = spool.open(_job(A2), tmp_path / "a2.log")
    os.utime(good.path, (time.time() + 10, time.time() + 10))  # the newest
    root = tmp_path / "spool"
    (root / "broken.json").write_text("{not json")
    (root / "no-job.json").write_text('{"log_path": "x"}')
    (root / "hostile.json").write_text(
        '{"job": {"attempt_id": "../../etc", "dag_id": "d", "task_id": "t", "run_id": "r", '
        '"try_number": 1, "queue": "q", "bundle_sha": "' + "0" * 64 + '", "fileloc": "d.py"}, '
        '"log_path": "x", "pid": null, "result": null}'
    )
    assert [e.job.attempt_id for e in Spool(root).leftovers()] == [A2]
    assert sorted(p.name for p in root.iterdir()) == [
        f"{A2}.json",
        "broken.bad",
        "hostile.bad",
        "no-job.bad",
    ]


def _log(root: Path, name: str, size: int, age: float) -> Path:
    path = root / name / "attempt=1.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_logs_are_cleaned_by_age_then_size_but_undelivered_ones_are_kept(
    tmp_path: Path,
) -> None:
    root = tmp_path / "logs"
    ancient = _log(root, "ancient", 10, age=30 * 86400)
    undelivered = _log(root, "undelivered", 10, age=40 * 86400)
    old = _log(root, "old", 600, age=3600)
    new = _log(root, "new", 600, age=10)
    removed = clean_logs(root, max_age=7 * 86400, max_bytes=1000, keep={undelivered})
    assert removed == 2
    assert not ancient.exists()
    assert not old.exists()  # oldest first until under 1000 bytes
    assert new.exists()
    assert undelivered.exists()
    assert not (root / "ancient").exists()  # its empty folder went too


def test_an_unwritable_spool_keeps_entries_in_memory_says_so_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "spool"
    root.write_text("a file where the spool folder should be")  # every write fails
    spool = Spool(root)
    first = spool.open(_job(A1), tmp_path / "a1.log")
    first.result = AttemptResult(state="success")
    assert spool.write(first) is False
    spool.open(_job(A2), tmp_path / "a2.log")
    assert spool.problem is not None
    assert str(root) in spool.problem
    assert [r.levelname for r in caplog.records] == ["ERROR"]  # one line, not one per write
    assert spool.recover() is False

    root.unlink()  # space is back
    assert spool.recover() is True
    assert spool.problem is None
    held = {e.job.attempt_id: e.result for e in Spool(root).leftovers()}
    assert held == {A1: AttemptResult(state="success"), A2: None}
