"""Ids that could name a folder: refused at the source (DAG files, the hub's
API) and never used raw as path parts on the worker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tether import DAG, BashOperator, DagDefinitionError
from tether.protocol import InvalidJob, Job, is_bundle_path, is_valid_id
from tether.worker.attempt import log_path_for

GOOD_JOB: dict[str, Any] = {
    "attempt_id": "0123456789abcdef0123456789abcdef",
    "dag_id": "etl",
    "task_id": "load",
    "run_id": "manual__2026-01-01T00:00:00+00:00",
    "try_number": 1,
    "queue": "default",
    "bundle_sha": "0" * 64,
    "fileloc": "sub/etl.py",
}


@pytest.mark.parametrize("bad", [".", "..", "...", "a/b", "a b", "", "x" * 251, "ä", "a\x00"])
def test_dag_and_task_ids_that_could_name_a_folder_are_definition_errors(bad: str) -> None:
    assert not is_valid_id(bad)
    with pytest.raises(DagDefinitionError, match="invalid dag_id"):
        DAG(bad)
    with DAG("fine"), pytest.raises(DagDefinitionError, match="invalid task_id"):
        BashOperator(task_id=bad, bash_command="true")


@pytest.mark.parametrize("good", ["etl", ".hidden", "a.b-c_d", "..x", "x" * 250])
def test_ids_with_a_letter_digit_or_underscore_are_fine(good: str) -> None:
    assert is_valid_id(good)
    assert DAG(good).dag_id == good


def test_run_ids_take_timestamps_but_not_dots_alone() -> None:
    assert is_valid_id("scheduled__2026-01-01T00:00:00+00:00", run=True)
    assert is_valid_id("manual__2026-12-02T01:16:14.671440+00:00~1", run=True)
    for bad in (".", "..", "../..", "a/b", "a\\b", "", "r" * 251):
        assert not is_valid_id(bad, run=True), bad


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("attempt_id", "../../etc", "attempt_id '../../etc' is not 32 hex digits"),
        ("attempt_id", "0123456789ABCDEF0123456789ABCDEF", "is not 32 hex digits"),
        ("bundle_sha", "../" + "0" * 61, "is not a sha256"),
        ("dag_id", "..", "dag_id '..' is not a valid id"),
        ("task_id", "a/b", "task_id 'a/b' is not a valid id"),
        ("run_id", "../../..", "is not a valid run id"),
        ("fileloc", "../../outside.py", "is not a .py file inside the bundle"),
        ("fileloc", "/etc/passwd.py", "is not a .py file inside the bundle"),
        ("fileloc", "etl.sh", "is not a .py file inside the bundle"),
        ("queue", "../q", "invalid queue name"),
        ("try_number", "1", "try_number '1' is not a whole number >= 1"),
        ("try_number", 0, "try_number 0 is not a whole number >= 1"),
        ("pool_slots", 0, "pool_slots 0 is not a whole number >= 1"),
        ("map_index", -2, "map_index -2 is not a whole number >= -1"),
    ],
)
def test_a_hostile_hubs_job_is_refused_before_it_names_any_path(
    field: str, value: object, reason: str
) -> None:
    assert Job.from_dict(GOOD_JOB).attempt_id == GOOD_JOB["attempt_id"]
    with pytest.raises(InvalidJob, match=re.escape(reason)):
        Job.from_dict({**GOOD_JOB, field: value})


def test_bundle_paths_stay_inside_the_bundle() -> None:
    assert is_bundle_path("a.py")
    assert is_bundle_path("sub/dir/a.py")
    for bad in ("", "/a.py", "../a.py", "a/../../b", "a//b", "./a.py", "a\\b.py", "a\x00.py", 5):
        assert not is_bundle_path(bad), bad


def test_a_log_path_is_one_folder_per_id_whatever_the_ids(tmp_path: Path) -> None:
    # Job() without from_dict: no check at all, as if one slipped through.
    job = Job(
        **{**GOOD_JOB, "dag_id": "..", "run_id": "../../..", "task_id": "a/../../b"}, map_index=3
    )
    path = log_path_for(tmp_path, job)
    assert path == (
        tmp_path
        / "logs"
        / "dag_id=.."
        / "run_id=..%2F..%2F.."
        / "task_id=a%2F..%2F..%2Fb"
        / "map_index=3"
        / "attempt=1.log"
    )
    assert path.resolve().is_relative_to((tmp_path / "logs").resolve())
    assert len(path.relative_to(tmp_path).parts) == 6
    normal = log_path_for(tmp_path, Job.from_dict(GOOD_JOB))
    assert normal.relative_to(tmp_path).as_posix() == (
        "logs/dag_id=etl/run_id=manual__2026-01-01T00%3A00%3A00%2B00%3A00/task_id=load/"
        "attempt=1.log"
    )


def test_the_longest_valid_ids_still_make_file_names_a_file_system_takes(tmp_path: Path) -> None:
    longest = "d" * 250
    colons = "a:" * 125  # a valid run id that percent-encoding makes 500 characters long
    job = Job.from_dict({**GOOD_JOB, "dag_id": longest, "run_id": colons, "task_id": longest})
    path = log_path_for(tmp_path, job)
    parts = path.relative_to(tmp_path / "logs").parts
    assert all(len(part.encode()) <= 255 for part in parts), [len(p) for p in parts]
    path.parent.mkdir(parents=True)  # the file system takes them
    path.touch()
    # Cut names stay one per id: a hash of the whole id ends them.
    other = log_path_for(tmp_path, Job.from_dict({**GOOD_JOB, "dag_id": "d" * 249 + "e"}))
    assert path.parts[-4] != other.parts[-4]
    assert parts[0].startswith("dag_id=ddd")
