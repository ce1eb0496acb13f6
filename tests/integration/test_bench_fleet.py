"""bench/fleet.py at a tiny size, on both stores: it runs, connects the whole fleet,
hands every job out once, and reports every figure. Nothing here asserts a timing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_database_url
from tests.integration.processes import run_bench

pytestmark = pytest.mark.integration

WORKERS, CLIENTS, RUNS = 20, 2, 3


def test_the_fleet_bench_connects_every_worker_and_hands_out_every_job(
    database_url: str,
) -> None:
    figures = run_bench(
        "fleet.py",
        ["--database-url", database_url]
        + ["--workers", str(WORKERS), "--clients", str(CLIENTS), "--runs", str(RUNS)]
        + ["--active", "0.1", "--duration", "10", "--heartbeat-interval", "2"],
    )

    assert figures["bench"] == "fleet"
    assert figures["store"] == database_url.split(":", 1)[0]
    assert (figures["workers"], figures["clients"], figures["active"]) == (WORKERS, CLIENTS, 2)
    assert (figures["error_count"], figures["errors"]) == (0, {})
    assert (figures["connected"], figures["connect_failed"]) == (WORKERS, 0)
    expected = RUNS * 2
    assert figures["jobs_expected"] == expected
    assert figures["jobs_received"] == figures["jobs_finished"] == expected
    assert figures["jobs_received_twice"] == 0
    assert figures["runs_succeeded"] == RUNS
    # Every worker heartbeats at least once in a 10 s window at a 2 s interval.
    assert figures["heartbeats"] >= WORKERS
    for name in ("connect_ms", "heartbeat_ms", "poll_to_job_ms"):
        ranks = [
            figures[f"{name}_p{p}"] for p in ((50, 99) if name == "connect_ms" else (50, 95, 99))
        ]
        assert all(isinstance(v, float) and v > 0 for v in ranks), (name, ranks)
        assert ranks == sorted(ranks), (name, ranks)
    assert figures["connect_total_s"] * 1000 >= figures["connect_ms_p99"]
    assert figures["hub_cpu_core_share"] > 0
    assert figures["hub_cpu_ms_per_worker_s"] > 0
    assert figures["hub_rss_mb_peak"] > 10
    assert figures["clients_cpu_core_share"] > 0
    assert len(figures["load_start"]) == len(figures["load_end"]) == 3
    assert figures["duration_s"] >= 10


@pytest.fixture
def postgres_url(tmp_path: Path, _postgres_reason: str | None) -> Iterator[str]:
    yield from make_database_url("postgres", tmp_path, _postgres_reason)


def test_the_fleet_bench_spreads_its_workers_over_two_hubs_on_one_postgresql(
    postgres_url: str,
) -> None:
    figures = run_bench(
        "fleet.py",
        ["--database-url", postgres_url, "--hubs", "2"]
        + ["--workers", str(WORKERS), "--clients", str(CLIENTS), "--runs", str(RUNS)]
        + ["--active", "0.1", "--duration", "10", "--heartbeat-interval", "2"],
    )
    assert (figures["store"], figures["hubs"]) == ("postgresql+psycopg", 2)
    assert (figures["error_count"], figures["errors"]) == (0, {})
    assert (figures["connected"], figures["connect_failed"]) == (WORKERS, 0)
    # The runs go in through the first hub; the jobs of the workers on the second
    # reach them through its notifications.
    assert figures["jobs_received"] == figures["jobs_finished"] == RUNS * 2
    assert figures["jobs_received_twice"] == 0
    assert figures["runs_succeeded"] == RUNS
    each = figures["hub_cpu_core_share_each"]
    assert len(each) == 2
    assert all(share > 0 for share in each), each
    assert figures["hub_cpu_core_share"] == pytest.approx(sum(each), abs=0.002)
