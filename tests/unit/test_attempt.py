"""The worker's attempt runner against a hub simulated with httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tether.protocol import Job
from tether.worker.attempt import AttemptRunner
from tether.worker.bundles import BundleCache
from tether.worker.client import HubClient
from tether.worker.spool import Spool

JOB = Job(
    attempt_id="ab" * 16,
    dag_id="d",
    task_id="t",
    run_id="r",
    try_number=1,
    queue="default",
    bundle_sha="0" * 64,
    fileloc="d.py",
)


def test_a_task_the_worker_cannot_even_prepare_is_reported_failed_with_the_reason(
    tmp_path: Path,
) -> None:
    (tmp_path / "logs").write_text("a file where the logs folder should be")
    sent: list[tuple[str, dict[str, object]]] = []

    def hub(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, json.loads(request.content or b"{}")))
        return httpx.Response(200, json={"state": "failed"})

    async def scenario() -> None:
        client = HubClient("http://hub", "ttw_x", transport=httpx.MockTransport(hub))
        runner = AttemptRunner(
            JOB,
            client,
            BundleCache(tmp_path / "bundles", client.fetch_bundle),
            Spool(tmp_path / "spool"),
            tmp_path,
        )
        result = await runner.run()
        await client.aclose()
        assert result.state == "failed"
        assert "the worker could not prepare this task" in (result.error or "")

    asyncio.run(scenario())
    ((path, body),) = sent
    assert path == f"/api/worker/v1/attempts/{JOB.attempt_id}/finish"
    assert body["state"] == "failed"
    assert "could not prepare this task" in str(body["error"])
