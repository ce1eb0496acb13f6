"""DAG-level callbacks (``on_success_callback``, ``on_failure_callback``), run on the hub.

When a run ends, the transaction that ends it records a CallbackRequest if
the DAG has a callback for that outcome; nothing is lost if the hub stops
before it runs. The hub runs each request in a child process, as it parses
DAG files: the DAG file is imported from the run's own bundle, the
callback gets a context (dag, run_id, dag_run, conf, logical_date, data
interval, reason) and has ``dag_file_timeout`` seconds. Its output goes
to the hub's log (logger ``tether.hub.callbacks``). Task-level callbacks
run on the worker instead, in the task process (see worker/runner.py).
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from tether.hub.services.bundles import unpack
from tether.hub.services.children import Children, HubStopping, kill_group
from tether.hub.store.db import Store
from tether.hub.store.models import Bundle, CallbackRequest, DagRun

log = logging.getLogger("tether.hub.callbacks")

#: Requests taken per pass.
BATCH = 20


@dataclass
class _Request:
    id: int
    dag_id: str
    run_id: str
    kind: str
    bundle_sha: str
    fileloc: str
    context: dict[str, Any]


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


class DagCallbacks:
    """Runs pending DAG callbacks, one child process each."""

    def __init__(self, store: Store, home: Path, timeout: float) -> None:
        self.store = store
        self.cache = home / "bundles"
        self.timeout = timeout
        #: The callback children running; the hub's shutdown kills them (``stop``).
        self.children = Children()

    def stop(self) -> None:
        """Kill the callback children and start no more: the hub is stopping."""
        self.children.stop_all()

    def run_pending(self) -> int:
        """Run the oldest pending callbacks; return how many were taken."""
        requests = self._take()
        for request in requests:
            try:
                self._run(request)
            except HubStopping:
                raise  # not run: the request stays, for the next start
            except Exception:
                log.exception(
                    "callback %s of %s run %s could not run",
                    request.kind,
                    request.dag_id,
                    request.run_id,
                )
            with self.store.transaction() as s:
                s.execute(delete(CallbackRequest).where(CallbackRequest.id == request.id))
        return len(requests)

    def _take(self) -> list[_Request]:
        out = []
        with self.store.transaction() as s:
            for req in s.scalars(select(CallbackRequest).order_by(CallbackRequest.id).limit(BATCH)):
                run = s.scalar(
                    select(DagRun).where(DagRun.dag_id == req.dag_id, DagRun.run_id == req.run_id)
                )
                context = {
                    "dag_id": req.dag_id,
                    "run_id": req.run_id,
                    "reason": req.reason,
                    "state": run.state if run else None,
                    "conf": run.conf if run else {},
                    "logical_date": _iso(run.logical_date) if run else None,
                    "data_interval_start": _iso(run.data_interval_start) if run else None,
                    "data_interval_end": _iso(run.data_interval_end) if run else None,
                }
                out.append(
                    _Request(
                        req.id,
                        req.dag_id,
                        req.run_id,
                        req.kind,
                        req.bundle_sha,
                        req.fileloc,
                        context,
                    )
                )
        return out

    def _bundle_dir(self, sha: str) -> Path:
        target = self.cache / sha
        if not target.is_dir():
            with self.store.transaction() as s:
                data = s.scalar(select(Bundle.data).where(Bundle.sha == sha))
            if data is None:
                raise LookupError(f"bundle {sha} is gone")
            unpack(data, target)
        return target

    def _run(self, request: _Request) -> None:
        bundle_dir = self._bundle_dir(request.bundle_sha)
        with tempfile.TemporaryDirectory(prefix="tether-callback-") as tmp:
            context_file = Path(tmp) / "context.json"
            context_file.write_text(json.dumps(request.context))
            with self.children.start(
                "tether.hub.services.callback_child",
                str(bundle_dir),
                request.fileloc,
                request.dag_id,
                request.kind,
                str(context_file),
                cwd=Path(tmp),
                capture=True,
            ) as proc:
                try:
                    output, _ = proc.communicate(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    kill_group(proc)
                    output, _ = proc.communicate()
                    log.error(
                        "%s of %s run %s took longer than %gs and was killed",
                        request.kind,
                        request.dag_id,
                        request.run_id,
                        self.timeout,
                    )
        for line in output.decode(errors="replace").splitlines():
            log.info("%s %s %s: %s", request.dag_id, request.run_id, request.kind, line)
        if proc.returncode:
            log.error(
                "%s of %s run %s failed (exit code %s)",
                request.kind,
                request.dag_id,
                request.run_id,
                proc.returncode,
            )
