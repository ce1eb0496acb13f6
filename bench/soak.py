"""The hub killed -9 at random moments of a full-scale workload, restarted each
time, and the result checked from a side channel the task bodies write.

The full-scale form of tests/faults/test_hub_kills.py: ``--runs`` runs of the
chaos DAG (8 task bodies each: Bash and Python, chained, parallel and
mapped), two workers of 4 slots, ``--kills`` SIGKILLs of the hub, each
followed by a restart on the same home, port and database, and
``--worker-kills`` SIGKILLs of a worker, each restarted at once. The workload and
the check live in tests/faults/chaos.py, shared with the test. Prints the
figures and a final JSON line; exits 1 if anything was lost or ran twice.
Usage:
    python3 -m uv run python bench/soak.py [--runs 63] [--kills 10] [--worker-kills 0] [--seed N]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/soak]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.faults.chaos import BODIES_PER_RUN, soak


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=63, help=f"{BODIES_PER_RUN} bodies each")
    parser.add_argument("--kills", type=int, default=10, help="hub kills")
    parser.add_argument(
        "--worker-kills", type=int, default=0, help="kill -9 of a worker, restarted at once"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (printed)")
    parser.add_argument(
        "--database-url", default=None, help="an empty database (default: SQLite in a temp dir)"
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    root = Path(tempfile.mkdtemp(prefix="tether-soak-"))
    database_url = args.database_url or f"sqlite:///{root / 'tether.db'}"
    began = time.monotonic()
    try:
        report = soak(
            root,
            database_url,
            runs=args.runs,
            kills=args.kills,
            worker_kills=args.worker_kills,
            seed=seed,
            timeout=60 + 2 * args.runs,
        )
    except BaseException:
        print(f"soak failed; logs kept in {root}", file=sys.stderr)
        raise
    elapsed = time.monotonic() - began
    figures = {
        "bench": "soak",
        "store": database_url.split(":", 1)[0],
        "seed": seed,
        "kills": args.kills,
        "worker_kills": args.worker_kills,
        **report.summary(),
        "wall_s": round(elapsed, 1),
    }
    for name in ("lost", "run_twice", "bad_logs"):
        for line in getattr(report, name)[:20]:
            print(f"{name}: {line}")
    for key, value in figures.items():
        print(f"{key:>12}  {value}")
    print(json.dumps(figures))
    failed = report.lost or report.run_twice or report.bad_logs
    if failed:
        print(f"logs kept in {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
