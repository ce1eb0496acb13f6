"""``tether tasks logs``: a try's log, whole, or followed while the task runs;
``tether workers logs``: a worker's own log, likewise.

Following asks the hub every :data:`POLL_INTERVAL` seconds for the bytes
after those already printed (the log route's ``offset``); the answer's
headers say the log's new size and the try's state, and the command stops
once the try has ended: an ended attempt takes no more log, so what came
with that answer is the end of it. A hub that is away (restarting, a proxy
answering 502) is asked again for up to :data:`AWAY_LIMIT` seconds.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from tether.cli.rest import Api, CliError, HubAway, api_path
from tether.cli.run_ids import resolve_run_id
from tether.protocol import LOG_SIZE_HEADER, TRY_NUMBER_HEADER, TRY_STATE_HEADER

#: Seconds between two looks at a followed log.
POLL_INTERVAL = 0.5
#: Seconds a follower keeps asking a hub that does not answer before giving up.
AWAY_LIMIT = 300.0
#: Task instance states in which a task that has not run yet may still run.
WAITING_STATES = (None, "queued", "running", "up_for_retry")

#: Most lines of a worker's own log one read brings (the hub's bound).
WORKER_LOG_MAX_LINES = 5000

T = TypeVar("T")


def tasks_logs(args: argparse.Namespace) -> int:
    api = Api(args.hub)
    run_id = resolve_run_id(api, args.dag_id, args.run_id)
    path = api_path("dags", args.dag_id, "runs", run_id, "tasks", args.task_id, "logs")
    params: dict[str, Any] = {}
    if args.map_index is not None:
        params["map_index"] = args.map_index
    if not args.follow:
        if args.try_number is not None:
            params["try_number"] = args.try_number
        _write(api.request("GET", path, params=params).content)
        return 0
    patience = Patience()
    number = args.try_number
    if number is None:
        number = patience.call(
            lambda: _started_try(api, args.dag_id, run_id, args.task_id, args.map_index)
        )
    return _follow(api, path, {**params, "try_number": number}, patience)


def workers_logs(args: argparse.Namespace) -> int:
    """A worker's own log; followed, asked for the lines after the last one printed."""
    if not 1 <= args.lines <= WORKER_LOG_MAX_LINES:
        raise CliError(f"--lines must be between 1 and {WORKER_LOG_MAX_LINES}")
    api = Api(args.hub)
    path = api_path("workers", args.name, "log")
    patience = Patience()
    params: dict[str, Any] = {"lines": args.lines}
    while True:
        answer = patience.call(functools.partial(api.get, path, params=params))
        for entry in answer["lines"]:
            sys.stdout.write(entry["line"] + "\n")
        sys.stdout.flush()
        if not args.follow:
            return 0
        if answer["last_id"] is not None:
            params = {"lines": WORKER_LOG_MAX_LINES, "after": answer["last_id"]}
        time.sleep(POLL_INTERVAL)


def _follow(api: Api, path: str, params: dict[str, Any], patience: Patience) -> int:
    """Print the try's log as it grows; when it has ended, say how, on stderr."""
    offset = 0
    while True:
        ask = functools.partial(api.request, "GET", path, params={**params, "offset": offset})
        response = patience.call(ask)
        _write(response.content)
        offset = max(offset, _header_int(response, LOG_SIZE_HEADER))
        state = response.headers.get(TRY_STATE_HEADER)
        if state is None:
            raise CliError(f"the hub does not say the try's state ({TRY_STATE_HEADER}): too old?")
        if state != "running":
            number = response.headers.get(TRY_NUMBER_HEADER, params["try_number"])
            sys.stderr.write(f"try {number} ended: {state}\n")
            return 0 if state == "success" else 1
        time.sleep(POLL_INTERVAL)


def _started_try(api: Api, dag_id: str, run_id: str, task_id: str, map_index: int | None) -> int:
    """The task instance's latest try, once it has one (it may still be waiting)."""
    while True:
        run = api.get(api_path("dags", dag_id, "runs", run_id))
        tis = [t for t in run["tasks"] if t["task_id"] == task_id]
        if not tis:
            raise CliError(f"run {run_id} of DAG {dag_id} has no task {task_id}")
        want = -1 if map_index is None else map_index
        ti = next((t for t in tis if t["map_index"] == want), None)
        if ti is None and map_index is None:
            indexes = ", ".join(str(t["map_index"]) for t in tis)
            raise CliError(f"task {task_id} is mapped: give --map-index ({indexes})")
        if ti is not None and ti["try_number"] >= 1:
            number: int = ti["try_number"]
            return number
        finished = (
            ti["state"] not in WAITING_STATES if ti else run["state"] in ("success", "failed")
        )
        if finished:
            state = ti["state"] if ti else f"not there (run {run['state']})"
            raise CliError(f"task {task_id} has not run and will not: it is {state}")
        time.sleep(POLL_INTERVAL)


class Patience:
    """Calls that a hub away for a moment does not fail: each is retried every
    :data:`POLL_INTERVAL` while the hub stays away, for :data:`AWAY_LIMIT` seconds
    in all, with one line on stderr when it goes and one when it is back."""

    def __init__(self) -> None:
        self.away_since: float | None = None

    def call(self, fn: Callable[[], T]) -> T:
        while True:
            try:
                value = fn()
            except HubAway as exc:
                now = time.monotonic()
                if self.away_since is None:
                    self.away_since = now
                    sys.stderr.write(f"tether: {exc}; trying again\n")
                elif now - self.away_since > AWAY_LIMIT:
                    raise CliError(f"{exc} (for {AWAY_LIMIT:.0f} s: giving up)") from None
                time.sleep(POLL_INTERVAL)
                continue
            if self.away_since is not None:
                self.away_since = None
                sys.stderr.write("tether: the hub answers again\n")
            return value


def _header_int(response: httpx.Response, name: str) -> int:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        raise CliError(f"the hub's log answer has no valid {name} header: too old?") from None


def _write(data: bytes) -> None:
    """The log's bytes as they are (a task may print any encoding)."""
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
