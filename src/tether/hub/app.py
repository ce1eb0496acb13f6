"""The hub's ASGI application: worker API, REST API, web console, and the
dag processor and scheduler running beside them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether import __version__
from tether.homes import HUB_ENTRIES, private_home, private_path
from tether.hub import errors, metrics, openapi
from tether.hub.api.routes import router as api_router
from tether.hub.api.secrets import MAX_BODY as SECRETS_MAX_BODY
from tether.hub.api.secrets import router as secrets_router
from tether.hub.api.tokens import router as tokens_router
from tether.hub.auth import console
from tether.hub.auth.gate import AuthGate, Principals
from tether.hub.auth.tokens import Tokens
from tether.hub.config import HubConfig
from tether.hub.core.secret_keys import SecretKeys
from tether.hub.core.worker_logs import Budget
from tether.hub.dist import WorkerDist
from tether.hub.services.callbacks import DagCallbacks
from tether.hub.services.dag_processor import DagProcessor
from tether.hub.services.scheduler import Scheduler
from tether.hub.state import Hub
from tether.hub.store.broadcast import Listener
from tether.hub.store.db import Store, migrate
from tether.hub.store.leadership import RETRY_INTERVAL, Lead
from tether.hub.store.outages import Backoff, StoreUnavailable
from tether.hub.ui import pages as console_pages
from tether.hub.wakeups import Wakeups
from tether.hub.worker_api.dist import router as dist_router
from tether.hub.worker_api.routes import reports as worker_reports
from tether.hub.worker_api.routes import router as worker_router

log = logging.getLogger("tether.hub")

#: Room in a result's body beside the task's output: the error text and the envelope.
REPORT_OVERHEAD = 64 * 1024

#: Seconds between looks for pending DAG callbacks (they need no faster answer).
CALLBACK_CHECK_INTERVAL = 0.5

#: Seconds a client is asked to wait (Retry-After) while the database is away.
OUTAGE_RETRY_AFTER = 1


def build_hub(config: HubConfig, tokens: Tokens | None = None) -> Hub:
    """Migrate the store and gather what the app needs.

    The home is made private (0700, its files 0600; see ``tether.homes``),
    and so is an SQLite store kept elsewhere. The keys of secrets at rest are
    loaded (or made) before anything else, so a bad TETHER_SECRET_KEY stops
    the start (SecretKeyError) before the store is touched, and so is the
    console key that signs console sessions (ConsoleKeyError), and the admin
    token (AdminTokenError).
    """
    private_home(config.home, HUB_ENTRIES)
    secret_keys = SecretKeys.load(config.home)
    console_key = console.load_key(config.home)
    tokens = tokens or Tokens.load(config.home)
    migrate(config.database_url)
    if config.database_url.startswith("sqlite:///"):
        db = Path(config.database_url.removeprefix("sqlite:///"))
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            private_path(path)
    wakeups = Wakeups()
    # What a transaction queued or changed wakes whoever waits, after its commit.
    store = Store(config.database_url, sink=wakeups, direct_url=config.database_direct_url)
    return Hub(
        config=config,
        store=store,
        tokens=tokens,
        wakeups=wakeups,
        principals=Principals(config.auth_failures_per_minute),
        secret_keys=secret_keys,
        console_key=console_key,
        dist=WorkerDist(config.home, config.worker_wheel),
        metrics=metrics.Metrics(store),
        worker_log_budget=Budget(config.worker_log_lines_per_minute),
        leads={role: Lead(store, role) for role in ("scheduler", "dag_processor")},
    )


async def _process_dags(hub: Hub) -> None:
    """Scan and parse while this hub leads the dag processor (always on SQLite).

    A hub that takes the lead starts from a new processor, which parses
    every file once: what it remembered from an earlier lead is stale.
    """
    lead = hub.leads["dag_processor"]
    processor: DagProcessor | None = None
    backoff = Backoff(log)
    try:
        while True:
            if not await asyncio.to_thread(lead.hold):
                if processor is not None:
                    processor.stop()
                    processor = None
                await asyncio.sleep(RETRY_INTERVAL)
                continue
            if processor is None:
                processor = DagProcessor(
                    hub.store,
                    hub.config.dags_folder,
                    hub.config.home,
                    hub.config.dag_file_timeout,
                )
            wait = hub.config.dag_scan_interval
            try:
                await asyncio.to_thread(processor.process_once)
                backoff.succeeded()
            except Exception as exc:  # a lost database or a bug: this loop must not die
                wait = max(wait, backoff.failed(exc, "DAG processing"))
            await asyncio.sleep(wait)
    finally:  # cancelled: the hub stops; no parse child outlives it
        if processor is not None:
            processor.stop()
        await asyncio.to_thread(lead.release)


async def _run_dag_callbacks(hub: Hub) -> None:
    callbacks = DagCallbacks(hub.store, hub.config.home, hub.config.dag_file_timeout)
    backoff = Backoff(log, first=CALLBACK_CHECK_INTERVAL)
    lead = hub.leads["scheduler"]  # held (and checked) by the scheduler loop
    try:
        while True:
            if not lead.leading:
                await asyncio.sleep(CALLBACK_CHECK_INTERVAL)
                continue
            try:
                taken = await asyncio.to_thread(callbacks.run_pending)
                backoff.succeeded()
            except Exception as exc:  # a lost database or a bug: this loop must not die
                await asyncio.sleep(backoff.failed(exc, "running DAG callbacks"))
                continue
            if not taken:
                await asyncio.sleep(CALLBACK_CHECK_INTERVAL)
    finally:  # cancelled: the hub stops; no callback child outlives it
        callbacks.stop()


class _AnswerOutages:
    """ASGI middleware, outermost: a request that meets a lost database
    (StoreUnavailable, from a route or from the auth gate's credential lookup)
    gets 503 with ``Retry-After`` instead of a 500 and a traceback. Workers
    retry it; the store has logged the outage once (``store/outages.py``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except StoreUnavailable:
            if scope["type"] != "http" or started:
                raise
            answer = JSONResponse(
                {"detail": "the hub's database is unavailable; try again shortly"},
                status_code=503,
                headers={"Retry-After": str(OUTAGE_RETRY_AFTER)},
            )
            await answer(scope, receive, send)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """A client that hangs up mid-body: a worker cancels a log upload when its
    task ends, or its link drops. Normal, so one debug line and no traceback;
    the answer goes nowhere."""
    log.debug("the client went away during %s %s", request.method, request.url.path)
    return Response(status_code=400)


def create_app(hub: Hub) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.wakeups.bind(asyncio.get_running_loop())
        listener = None
        if hub.store.broadcasts:  # several hubs may share this database
            listener = Listener(hub.store.direct_connection, hub.store.sender, hub.wakeups)
            listener.start()
        scheduler = Scheduler(
            hub.store,
            hub.wakeups,
            min(hub.config.scheduler_sweep_interval, hub.config.worker_lost_timeout / 2),
            hub.config.worker_lost_timeout,
            on_pass=hub.metrics.scheduler_pass.observe,
            lead=hub.leads["scheduler"],
        )
        background = [
            asyncio.create_task(_process_dags(hub), name="dag-processor"),
            asyncio.create_task(scheduler.run(), name="scheduler"),
            asyncio.create_task(_run_dag_callbacks(hub), name="dag-callbacks"),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            hub.store.dispose()

    config = hub.config
    # A body over its route's limit gets 413 from its Content-Length alone, or
    # as soon as a chunked one passes the limit: never read whole.
    app = FastAPI(
        title="Tether hub",
        version=__version__,
        lifespan=lifespan,
        max_body_size=config.max_body_bytes,
        # Two documents and a /docs with no CDN, served by hub/openapi.py.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.hub = hub
    # Routes that stream their body (the log upload) see the hang-up as
    # ClientDisconnect; JSON bodies are read by FastAPI, which answers it with 400.
    app.add_exception_handler(ClientDisconnect, _client_gone)
    errors.install(app)  # domain errors → statuses, one table for both APIs
    app.include_router(api_router)
    app.include_router(secrets_router, max_body_size=min(config.max_body_bytes, SECRETS_MAX_BODY))
    app.include_router(tokens_router)
    app.include_router(worker_router)
    app.include_router(dist_router)
    # A result carries the task's output (at most max_task_output_bytes) and an
    # error text; log chunks are streamed to the store.
    app.include_router(
        worker_reports,
        max_body_size=max(
            config.max_log_chunk_bytes, config.max_task_output_bytes + REPORT_OVERHEAD
        ),
    )
    console_pages.install(app)
    openapi.install(app)  # /openapi.json, /api/worker/v1/openapi.json, /docs
    metrics.install(app, hub.metrics, config.public_metrics)
    # Outermost: no route reads a body before the gate has checked who sends it.
    app.add_middleware(AuthGate, hub=hub)
    app.add_middleware(_AnswerOutages)
    app.add_middleware(metrics.TimeRequests, metrics=hub.metrics)  # a 401 and a 503 count too

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(console_pages.HOME, status_code=303)

    return app
