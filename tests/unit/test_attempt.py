"""The worker's attempt runner against a hub simulated with httpx.MockTransport."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx

from tether.protocol import Job
from tether.worker.attempt import AttemptRunner, clear_workdirs
from tether.worker.bundles import BundleCache
from tether.worker.client import HubClient
from tether.worker.site_secrets import SiteSecrets
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


class _EndedProcess:
    """A task process that wrote its result and exited."""

    pid = 2**22 + 1  # no process of ours

    def __init__(self, ended: asyncio.Event) -> None:
        self.ended = ended

    @property
    def returncode(self) -> int | None:
        return 0

    async def wait(self) -> int:
        self.ended.set()
        return 0


def test_the_job_file_with_site_secrets_is_gone_once_the_task_ended_hub_or_no_hub(
    tmp_path: Path,
) -> None:
    """job.json holds the worker's own secrets of the declared names: it goes when
    the task process ends, even if the report then waits for a hub that is down
    and the worker is stopped meanwhile."""
    job = Job(**{**JOB.to_dict(), "connections": ["db"], "secrets_token": "tta_x"})
    (tmp_path / "connections.toml").write_text(
        '[connections.db]\nuri = "postgres://u:site-only-pw-93@h/s"\n'
    )
    (tmp_path / "bundles" / job.bundle_sha).mkdir(parents=True)
    seen: list[str] = []

    def hub_down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("the hub is down", request=request)

    async def scenario() -> None:
        ended = asyncio.Event()

        class Launcher:
            async def start(
                self, job_file: Path, result_file: Path, log: Path, cwd: Path, env: object
            ) -> _EndedProcess:
                seen.append(await asyncio.to_thread(job_file.read_text))
                await asyncio.to_thread(result_file.write_text, json.dumps({"state": "success"}))
                return _EndedProcess(ended)

        client = HubClient("http://hub", "ttw_x", transport=httpx.MockTransport(hub_down))
        runner = AttemptRunner(
            job,
            client,
            BundleCache(tmp_path / "bundles", client.fetch_bundle),
            Spool(tmp_path / "spool"),
            tmp_path,
            launcher=Launcher(),
            site_secrets=SiteSecrets(tmp_path, {}),
        )
        running = asyncio.create_task(runner.run())
        await asyncio.wait_for(ended.wait(), 10)
        await asyncio.sleep(0.2)  # the runner is now trying to report to the hub
        running.cancel()  # the worker stops
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await client.aclose()

    asyncio.run(scenario())
    assert "site-only-pw-93" in seen[0]  # the task was handed it
    assert not (tmp_path / "attempts" / job.attempt_id).exists()


def test_a_worker_starting_again_deletes_the_job_files_a_killed_one_left(tmp_path: Path) -> None:
    left = tmp_path / "attempts" / ("cd" * 16)
    left.mkdir(parents=True)
    (left / "job.json").write_text('{"secrets": {"site": {"variables": {"v": "pw-1234"}}}}')
    clear_workdirs(tmp_path)
    assert not left.exists()
