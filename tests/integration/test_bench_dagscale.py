"""bench/dagscale.py at a tiny size, on SQLite (the suite has 15 minutes; catch-up
on PostgreSQL is tests/integration/test_scheduling.py's): every generated DAG is seen,
changes are noticed, and every scheduled interval gets exactly one run, which
succeeds; every figure is reported. Nothing here asserts a timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.processes import run_bench

pytestmark = pytest.mark.integration

FILES, TASKS, CHANGES, SCHEDULED, INTERVALS = 30, 5, 2, 3, 6


def test_the_dagscale_bench_sees_every_dag_and_runs_every_interval_once(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'bench.db'}"
    figures = run_bench(
        "dagscale.py",
        ["--database-url", database_url]
        + ["--files", str(FILES), "--tasks", str(TASKS), "--changes", str(CHANGES)]
        + ["--idle", "3", "--scheduled", str(SCHEDULED), "--intervals", str(INTERVALS)]
        + ["--concurrency", "8", "--scan-interval", "0.5"],
    )

    assert figures["bench"] == "dagscale"
    assert figures["store"] == database_url.split(":", 1)[0]
    assert (figures["files"], figures["tasks"]) == (FILES, TASKS)
    assert figures["dags_listed"] == FILES
    assert figures["import_errors"] == 0
    # One file was added and one deleted: as many DAGs as at the start.
    assert figures["dags_listed_after_changes"] == FILES
    assert figures["changes"] == CHANGES
    assert (figures["scheduled_dags"], figures["intervals"]) == (SCHEDULED, INTERVALS)
    assert figures["runs_expected"] == SCHEDULED * INTERVALS
    for name in ("runs_missing", "runs_duplicated", "runs_extra", "runs_unsuccessful"):
        assert figures[name] == 0, name

    for name in ("api_up_s", "all_listed_s", "files_per_s", "list_dags_ms_p50"):
        assert figures[name] > 0, name
    for name in ("changed_s_p50", "changed_s_max", "new_file_s", "deleted_file_s"):
        assert figures[name] > 0, name
    assert figures["changed_s_p50"] <= figures["changed_s_max"]
    for name in ("load_hub_cpu_s", "load_children_cpu_s", "load_cpu_core_share"):
        assert figures[name] > 0, name
    for name in ("load_rss_mb_peak", "rss_mb_after_load", "rss_mb_idle", "rss_mb_end"):
        assert figures[name] > 10, name
    assert figures["idle_hub_cpu_core_share"] >= 0
    # The scheduler passes while the runs are created and run (it is poked by
    # each parse and each run's end); an idle 3 s window may hold none.
    assert figures["catchup_scheduler_passes"] > 0
    assert figures["catchup_scheduler_pass_ms_mean"] > 0
    low, high = (
        figures["catchup_scheduler_pass_ms_p50_le"],
        figures["catchup_scheduler_pass_ms_max_le"],
    )
    assert low is not None
    assert high is not None
    assert 0 < low <= high
    assert figures["idle_scheduler_passes"] >= 0
    assert (
        0 < figures["scheduled_listed_s"] <= figures["runs_created_s"] <= figures["runs_finished_s"]
    )
    assert figures["runs_per_s"] > 0
    for name in ("load_start", "load_before_scheduled", "load_end"):
        assert len(figures[name]) == 3, name
