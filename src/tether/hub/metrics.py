"""Prometheus metrics at ``/metrics``: what a platform engineer alerts on.

Two kinds of series, in one registry per hub app (never the client's global
default, so several apps in one process do not collide):

- what the hub *measures* as it works: the wait from queued to claimed
  (``tether_dispatch_latency_seconds``, observed after the claim's commit),
  each scheduler pass (``tether_scheduler_pass_seconds``) and each request to
  the two APIs (``tether_api_request_duration_seconds``, by method, route
  *template* and status class, so ids never become label values);
- what the store *holds*, read at scrape time by :class:`StoreCollector` in
  one read-only transaction of three GROUP BY queries: queue depth and the
  age of the oldest queued task per queue, task instances by state, workers
  by state. Nothing is kept between scrapes, so every hub replica on a
  shared PostgreSQL store reports the same numbers, and a scrape never
  writes.

Who may read them is the auth gate's decision (``auth/gate.py``): any API
token (the viewer role), unless ``TETHER_PUBLIC_METRICS=1`` makes the path
public for a Prometheus inside the network.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import datetime

from fastapi import FastAPI, HTTPException, Request, Response, status
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.hub.auth.gate import METRICS_PATH, PRINCIPAL
from tether.hub.auth.principal import Principal
from tether.hub.core import queries
from tether.hub.core import states as S
from tether.hub.core.api_tokens import Role
from tether.hub.core.runs import utcnow
from tether.hub.store.db import Store
from tether.hub.store.models import TaskInstance, Worker

#: The requests timed by ``tether_api_request_duration_seconds``: both APIs.
API_PREFIX = "/api/"
#: The route label of a request no route took (a 404, or refused by the gate).
UNMATCHED = "unmatched"
#: Methods kept as they are in the method label; any other is ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: Seconds; the long poll holds a request up to its wait, hence the top buckets.
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Seconds; an unserved queue can hold a task for hours.
DISPATCH_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
SCHEDULER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StoreCollector(Collector):
    """The gauges the store holds, computed when Prometheus scrapes."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> Iterable[Metric]:
        return list(_families({}, [], [], [], utcnow()))

    def collect(self) -> Iterable[Metric]:
        with self.store.read() as s:
            queued = queries.count_queued(s)
            served = s.scalars(select(Worker.queues).where(Worker.state.in_(S.WORKER_LIVE)))
            live_queues = [q for queues in served for q in queues]
            tis = [
                (str(state), int(n))
                for state, n in s.execute(
                    select(TaskInstance.state, func.count()).group_by(TaskInstance.state)
                )
            ]
            workers = [
                (str(state), int(n))
                for state, n in s.execute(select(Worker.state, func.count()).group_by(Worker.state))
            ]
        return list(_families(queued, live_queues, tis, workers, utcnow()))


def _families(
    queued: dict[str, dict[str, object]],
    live_queues: list[str],
    tis: Iterable[tuple[str, int]],
    workers: Iterable[tuple[str, int]],
    now: datetime,
) -> Iterator[Metric]:
    """Every state appears, 0 if none is in it, so a series never vanishes; a
    queue appears while it holds queued work or a live worker serves it."""
    depth = GaugeMetricFamily(
        "tether_queue_depth",
        "Task instances queued on each queue, waiting for a worker.",
        labels=["queue"],
    )
    age = GaugeMetricFamily(
        "tether_queue_oldest_age_seconds",
        "Seconds the oldest queued task instance of each queue has waited (0: none waits).",
        labels=["queue"],
    )
    for queue in sorted(set(queued) | set(live_queues)):
        found = queued.get(queue, {})
        depth.add_metric([queue], float(str(found.get("queued", 0))))
        oldest = found.get("oldest_queued_at")
        waited = (now - oldest).total_seconds() if isinstance(oldest, datetime) else 0.0
        age.add_metric([queue], max(0.0, waited))
    yield depth
    yield age
    yield _by_state(
        "tether_task_instances",
        "Task instances in each state, across every DAG run the store keeps.",
        [str(s) for s in S.TaskState],
        tis,
    )
    yield _by_state(
        "tether_workers",
        "Enrolled workers in each state, as the REST API reports them "
        "(running: busy with at least one task).",
        [str(s) for s in S.WorkerState],
        workers,
    )


def _by_state(
    name: str, documentation: str, known: list[str], rows: Iterable[tuple[str, int]]
) -> GaugeMetricFamily:
    counts = dict.fromkeys(known, 0)
    counts.update({state: n for state, n in rows})
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state, n in counts.items():
        family.add_metric([state], float(n))
    return family


class Metrics:
    """A hub app's registry and the series it observes as it works."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StoreCollector(store))
        self.dispatch = Histogram(
            "tether_dispatch_latency_seconds",
            "Seconds from a task instance's queuing to the worker's claim that starts it.",
            ["queue"],
            buckets=DISPATCH_BUCKETS,
            registry=self.registry,
        )
        self.scheduler_pass = Histogram(
            "tether_scheduler_pass_seconds",
            "Seconds each scheduler pass took, a failed one included.",
            buckets=SCHEDULER_BUCKETS,
            registry=self.registry,
        )
        self.api = Histogram(
            "tether_api_request_duration_seconds",
            "Seconds the REST and worker APIs took to answer, by method, route template "
            "and status class (a long poll counts the time it was held).",
            ["method", "route", "status"],
            buckets=API_BUCKETS,
            registry=self.registry,
        )

    def dispatched(self, waits: Iterable[tuple[str, float]]) -> None:
        """Observe each claimed task's ``(queue, seconds queued)``."""
        for queue, seconds in waits:
            self.dispatch.labels(queue).observe(max(0.0, seconds))

    def render(self) -> bytes:
        """The text exposition format 0.0.4, which every Prometheus reads; reads
        the store (call it off the event loop).

        Not negotiated from the Accept header: the client's negotiation fails
        with a TypeError on a version such as ``abc``, and this path can be public.
        """
        return generate_latest(self.registry)


class TimeRequests:
    """ASGI middleware, outermost: times every request to the two APIs, from
    its arrival to the end of its answer, refusals by the gate included."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before it answers

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.api.labels(method, route_of(scope), f"{status // 100}xx").observe(
                time.perf_counter() - started
            )


def route_of(scope: Scope) -> str:
    """The template of the route that took the request (``/api/v1/dags/{dag_id}``),
    never the path it was called with."""
    template = getattr(scope.get("route"), "path_format", None)
    return template if isinstance(template, str) else UNMATCHED


def install(app: FastAPI, metrics: Metrics, public: bool) -> None:
    """Serve ``/metrics``, kept out of the OpenAPI documents (it is no JSON API).

    Unless ``public``, the gate has let only an API token through; every role
    includes the viewer's, so any API token reads them. The check here is the
    second lock, should the gate ever let a request by without a principal.
    """

    @app.get(METRICS_PATH, include_in_schema=False)
    async def scrape(request: Request) -> Response:
        principal = request.scope.get(PRINCIPAL)
        if not public and not (isinstance(principal, Principal) and principal.may(Role.VIEWER)):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        body = await run_in_threadpool(metrics.render)
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
