"""The hub killed with SIGKILL at random moments of a busy workload and
restarted each time: every run completes, no task body runs twice, none is
lost, and every successful try's log reaches the hub (tests/faults/chaos.py
checks it from a side channel the bodies write outside Tether)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.faults.chaos import BODIES_PER_RUN, soak

pytestmark = pytest.mark.integration

RUNS = 13  # about 100 task bodies
KILLS = 3


def test_runs_complete_with_each_body_run_once_across_hub_kills(
    database_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("TETHER_CHAOS_SEED", random.randrange(2**32)))
    print(f"chaos seed {seed} (TETHER_CHAOS_SEED={seed} repeats it)")
    report = soak(tmp_path, database_url, runs=RUNS, kills=KILLS, seed=seed)
    print(report.summary())
    assert report.lost == [], (seed, report.lost)
    assert report.run_twice == [], (seed, report.run_twice)
    assert report.bad_logs == [], (seed, report.bad_logs)
    assert report.runs == RUNS
    assert report.tasks == RUNS * BODIES_PER_RUN
    assert report.attempts >= report.tasks
    assert report.log_bytes > 0
