"""The Celery side of bench/compare.py: the app, its no-op task, and the driver.

It runs only in the throw-away virtualenv compare.py makes (celery and redis
from PyPI); the project's environment has neither. ``celery -A compare_celery
worker`` imports it for the task, with COMPARE_REDIS naming the bench's own
redis-server (broker on database 0, results on 1). Run as a script it is the
driver: against a worker that is already running it enqueues the warm-up,
fan-out, chain and dispatch workloads one after the other and prints one JSON
line of raw time stamps, from which compare.py computes the same figures it
computes for Tether.

The task stamps its own start and end with time.time() and returns them, so
the stamps come back through the result backend: the role the hub's
``started_at``/``ended_at`` play for Tether.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import celery
import redis
from celery import Celery, chain, group

REDIS = os.environ["COMPARE_REDIS"]

app = Celery("compare_celery", broker=f"{REDIS}/0", backend=f"{REDIS}/1")
app.conf.broker_connection_retry_on_startup = True

#: How long the driver waits for any one workload: a stuck worker fails the
#: bench instead of hanging it.
TIMEOUT = 600


@app.task
def noop() -> tuple[float, float]:
    started = time.time()
    return started, time.time()


def fanout(tasks: int) -> dict[str, object]:
    """``tasks`` no-ops at once, as one group: when the first was sent, and
    each one's (start, end)."""
    enqueued = time.time()
    marks = group(noop.si() for _ in range(tasks)).apply_async().get(timeout=TIMEOUT)
    return {"enqueued": enqueued, "marks": marks}


def chained(tasks: int) -> list[tuple[float, float]]:
    """A chain of ``tasks`` no-ops: each one's (start, end), first to last.

    The chain's result is its last task's; the others are reached through
    ``parent``, each stored in the backend as it finished."""
    last = chain(noop.si() for _ in range(tasks)).apply_async()
    last.get(timeout=TIMEOUT)
    marks, node = [], last
    while node is not None:
        marks.append(node.get(timeout=TIMEOUT))
        node = node.parent
    return marks[::-1]


def singles(tasks: int) -> list[tuple[float, float]]:
    """``tasks`` no-ops one at a time on an idle worker: each one's
    (enqueued, start)."""
    stamps = []
    for _ in range(tasks):
        time.sleep(0.1)  # the previous task's process is back in the pool
        enqueued = time.time()
        started, _ = noop.delay().get(timeout=TIMEOUT)
        stamps.append((enqueued, started))
    return stamps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warmup", type=int, required=True, help="tasks to warm the pool with")
    parser.add_argument("--fanout", type=int, required=True)
    parser.add_argument("--chain", type=int, required=True)
    parser.add_argument("--dispatch", type=int, required=True)
    args = parser.parse_args()
    # Also what waits for the worker: the warm-up's messages wait in Redis until it is up.
    group(noop.si() for _ in range(args.warmup)).apply_async().get(timeout=TIMEOUT)
    figures = {
        "celery_version": celery.__version__,
        "redis_py_version": redis.__version__,
        "fanout": fanout(args.fanout),
        "chain": chained(args.chain),
        "dispatch": singles(args.dispatch),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
