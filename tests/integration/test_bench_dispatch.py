"""bench/dispatch.py at a tiny size, on SQLite (its PostgreSQL path is the hub's
own, which the rest of the suite covers; the suite has 15 minutes): every run
it starts succeeds and it reports every figure. Nothing here asserts a timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.processes import run_bench

pytestmark = pytest.mark.integration


def test_the_dispatch_bench_runs_every_task_and_reports_every_figure(tmp_path: Path) -> None:
    database_url, kind = f"sqlite:///{tmp_path / 'bench.db'}", "bash"
    figures = run_bench(
        "dispatch.py",
        ["--database-url", database_url]
        + ["--kind", kind, "--workers", "2", "--concurrency", "2"]
        + ["--wide", "8", "--chain", "3", "--singles", "2"],
    )

    assert figures["bench"] == "dispatch"
    assert figures["store"] == "sqlite"
    assert (figures["kind"], figures["workers"], figures["concurrency"]) == (kind, 2, 2)
    assert (figures["chain_state"], figures["wide_state"]) == ("success", "success")
    assert (figures["chain_tasks"], figures["wide_tasks"]) == (3, 8)
    for low, high in (("dispatch_ms_p50", "dispatch_ms_p99"), ("handoff_ms_p50", "handoff_ms_p95")):
        assert 0 <= figures[low] <= figures[high], (low, high)
    assert figures["task_run_ms_p50"] > 0
    assert figures["chain_ms_per_task"] > 0
    assert figures["throughput_tasks_per_s"] > 0
    assert figures["worker_rss_mb"] > 10
    assert figures["hub_rss_mb"] > 10
    assert len(figures["load_start"].split()) == len(figures["load_end"].split()) == 3
