"""What the hub's request handlers share: settings, store, tokens, wake-ups,
principals, keys, the worker's wheel and the metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tether.hub.auth.gate import Principals
from tether.hub.auth.tokens import Tokens
from tether.hub.config import HubConfig
from tether.hub.core.secret_keys import SecretKeys
from tether.hub.core.worker_logs import Budget
from tether.hub.dist import WorkerDist
from tether.hub.metrics import Metrics
from tether.hub.store.db import Store
from tether.hub.store.leadership import Lead
from tether.hub.wakeups import Wakeups

T = TypeVar("T")


@dataclass
class Hub:
    config: HubConfig
    store: Store
    tokens: Tokens
    wakeups: Wakeups
    principals: Principals
    #: Encrypts connections and variables at rest (``hub/core/vault.py``).
    secret_keys: SecretKeys
    #: Signs the web console's session cookies (``hub/auth/console.py``).
    console_key: bytes
    #: The worker's wheel the hub hands out (``hub/dist.py``).
    dist: WorkerDist
    #: This app's Prometheus registry and the series it observes (``hub/metrics.py``).
    metrics: Metrics
    #: Lines of their own log each worker may still send (``core/worker_logs.py``).
    worker_log_budget: Budget = field(
        default_factory=lambda: Budget(HubConfig.worker_log_lines_per_minute)
    )
    #: This process's claim to each role only one hub may act in at a time
    #: (``store/leadership.py``): ``scheduler`` (with DAG callbacks) and
    #: ``dag_processor``.
    leads: dict[str, Lead] = field(default_factory=dict)


async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


async def in_session(hub: Hub, fn: Callable[[Session], T]) -> T:
    """Run ``fn`` in one transaction, off the event loop: how a REST route calls the store.

    What ``fn`` raises goes on to the app's handlers, which answer domain
    errors by the table in ``hub/errors.py``.
    """

    def work() -> T:
        with hub.store.transaction() as s:
            return fn(s)

    return await run_in_threadpool(work)


async def in_read(hub: Hub, fn: Callable[[Session], T]) -> T:
    """Like :func:`in_session` for a route that only reads: a read-only
    transaction (``Store.read``), so on SQLite it never waits for the write lock
    and a write slipped into ``fn`` fails at once."""

    def work() -> T:
        with hub.store.read() as s:
            return fn(s)

    return await run_in_threadpool(work)
