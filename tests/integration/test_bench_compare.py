"""bench/compare.py at a tiny size: Celery on Redis and Tether each finish every
task of every workload, and the JSON line has every figure and ratio. Nothing
here asserts a timing.

It needs PyPI (celery and redis go into a throw-away virtualenv) and Debian's
redis-server; without them it is skipped, except with CI=true, where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.processes import REPO, die_with_pytest

pytestmark = pytest.mark.integration

FANOUT, CHAIN, DISPATCH = 10, 4, 3
#: bench/compare.py's exit status when a prerequisite is missing.
MISSING = 3


def test_the_compare_bench_runs_both_sides_to_the_end() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "compare.py"), "--fanout", str(FANOUT)]
        + ["--chain", str(CHAIN), "--dispatch", str(DISPATCH)],
        capture_output=True,
        text=True,
        timeout=280,
        preexec_fn=die_with_pytest,
    )
    if done.returncode == MISSING:
        if os.environ.get("CI") == "true":
            pytest.fail(done.stderr)
        pytest.skip(done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])

    assert figures["bench"] == "compare"
    assert figures["store"] == "sqlite"
    assert (figures["fanout"], figures["chain"], figures["dispatch"]) == (FANOUT, CHAIN, DISPATCH)
    assert (figures["slots"], figures["tether_workers"], figures["tether_worker_slots"]) == (
        16,
        2,
        8,
    )
    celery, tether = figures["celery"], figures["tether"]
    assert set(celery["versions"]) == {"celery", "redis_py", "redis_server"}
    assert (celery["fanout_done"], celery["chain_done"], celery["dispatch_done"]) == (
        FANOUT,
        CHAIN,
        DISPATCH,
    )
    assert tether["fanout_bash_done"] == tether["fanout_python_done"] == FANOUT
    assert (tether["chain_done"], tether["dispatch_done"]) == (CHAIN, DISPATCH)
    latencies = ["chain_gap_ms_p50", "chain_gap_ms_p95", "dispatch_ms_p50", "dispatch_ms_p99"]
    for side, rates in (
        (celery, ["fanout_tasks_per_s"]),
        (tether, ["fanout_bash_tasks_per_s", "fanout_python_tasks_per_s"]),
    ):
        assert all(side[key] > 0 for key in rates), side
        assert all(isinstance(side[key], float) for key in latencies), side
        assert side["chain_gap_ms_p50"] <= side["chain_gap_ms_p95"]
        assert side["dispatch_ms_p50"] <= side["dispatch_ms_p99"]
        assert len(side["load_start"]) == 3
    assert set(figures["ratios"]) == {
        "fanout_bash_tasks_per_s",
        "fanout_python_tasks_per_s",
        *latencies,
    }
    assert all(value is not None for value in figures["ratios"].values()), figures["ratios"]
    assert len(figures["load_start"]) == len(figures["load_end"]) == 3
