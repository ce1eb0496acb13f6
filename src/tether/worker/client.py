"""The worker's HTTP client for the hub: one method per worker-API endpoint.

Every call goes through :meth:`HubClient._request`, which retries transport
errors and 5xx answers with exponential backoff and jitter (honouring
Retry-After), and turns 4xx answers into :class:`HubError` subclasses that
fail fast. The worker always dials out; nothing here listens.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import httpx

from tether import __version__
from tether.protocol import (
    PROTOCOL_VERSION,
    WORKER_API_PREFIX,
    WORKER_NAME_HEADER,
    AttemptResult,
    Job,
)

log = logging.getLogger("tether.worker")


class HubError(Exception):
    """The hub refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"hub answered {status}: {reason}")
        self.status = status
        self.reason = reason


class Unauthorized(HubError):
    """401: the token is wrong or revoked."""


class Forbidden(HubError):
    """403: this worker may not do this (an attempt held by another worker)."""


class Gone(HubError):
    """404/409: the hub does not know this attempt or no longer wants reports on it."""


def _error_for(response: httpx.Response) -> HubError:
    try:
        body = response.json()
        reason = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        reason = response.text
    cls: type[HubError] = HubError
    if response.status_code == 401:
        cls = Unauthorized
    elif response.status_code == 403:
        cls = Forbidden
    elif response.status_code in (404, 409):
        cls = Gone
    return cls(response.status_code, str(reason))


class HubClient:
    """Talks to one hub on behalf of one worker."""

    def __init__(
        self,
        hub_url: str,
        token: str,
        worker_name: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.worker_name = worker_name
        self.max_backoff = max_backoff
        self._http = httpx.AsyncClient(
            base_url=hub_url.rstrip("/") + WORKER_API_PREFIX,
            headers={
                "Authorization": f"Bearer {token}",
                WORKER_NAME_HEADER: worker_name,
                "User-Agent": f"tether-worker/{__version__}",
            },
            timeout=httpx.Timeout(30.0, connect=10.0),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        retry_for: float | None = None,
        read_timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request; retry transport errors and 5xx for ``retry_for`` seconds.

        ``retry_for=None`` retries until the hub answers: a report must not be
        lost because the link was down.
        """
        loop = asyncio.get_running_loop()
        deadline = None if retry_for is None else loop.time() + retry_for
        delay = 0.2
        if read_timeout is not None:
            kwargs["timeout"] = httpx.Timeout(read_timeout, connect=10.0)
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                retry_after = None
            else:
                if response.status_code < 400:
                    return response
                if response.status_code < 500 and response.status_code != 429:
                    raise _error_for(response)
                problem = f"HTTP {response.status_code}"
                retry_after = _retry_after(response)
            if deadline is not None and loop.time() >= deadline:
                raise ConnectionError(f"hub unreachable: {problem}")
            wait = retry_after if retry_after is not None else delay * random.uniform(0.5, 1.5)
            log.warning(
                "hub request %s %s failed (%s); retrying in %.1fs", method, path, problem, wait
            )
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.max_backoff)

    async def heartbeat(
        self, info: dict[str, Any], *, retry_for: float | None = None
    ) -> dict[str, Any]:
        body = {**info, "version": __version__, "protocol": PROTOCOL_VERSION}
        response = await self._request("POST", "/heartbeat", json=body, retry_for=retry_for)
        data: dict[str, Any] = response.json()
        return data

    async def claim(self, queues: list[str], slots: int, wait: float) -> list[Job]:
        """Long-poll for up to ``slots`` jobs; the hub holds the request up to ``wait`` s."""
        response = await self._request(
            "POST",
            "/claim",
            json={"queues": queues, "slots": slots, "wait": wait},
            read_timeout=wait + 30.0,
        )
        return [Job.from_dict(j) for j in response.json()["jobs"]]

    async def fetch_bundle(self, sha: str) -> bytes:
        response = await self._request("GET", f"/bundles/{sha}", read_timeout=120.0)
        return response.content

    async def upload_log(self, attempt_id: str, offset: int, data: bytes) -> int:
        """Append ``data`` at ``offset``; returns the hub's log size afterwards."""
        response = await self._request(
            "POST",
            f"/attempts/{attempt_id}/logs",
            params={"offset": offset},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        size: int = response.json()["size"]
        return size

    async def finish(self, attempt_id: str, result: AttemptResult) -> dict[str, Any]:
        response = await self._request(
            "POST", f"/attempts/{attempt_id}/finish", json=result.to_dict()
        )
        data: dict[str, Any] = response.json()
        return data


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), 300.0))
    except ValueError:
        return None
