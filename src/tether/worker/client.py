"""The worker's HTTP client for the hub: one method per worker-API endpoint.

Every call goes through :meth:`HubClient._request`, which retries transport
errors and 5xx answers with exponential backoff and jitter (honouring
Retry-After), and turns 4xx answers into :class:`HubError` subclasses that
fail fast. A success the worker cannot read (an HTML page from a proxy or a
captive portal, JSON of the wrong shape, a bundle with the wrong hash) is a
transport error too: each endpoint reads its answer inside the retry loop, so
no caller ever gets a half-understood answer or an unexpected exception.
Requests and answers are the messages of :mod:`tether.protocol`, built and
read there (``to_wire`` / ``from_wire``), never as loose dicts. The worker
always dials out; nothing here listens.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from tether import __version__
from tether.protocol import (
    DEFAULT_MAX_TASK_OUTPUT_BYTES,
    SESSION_HEADER,
    WORKER_API_PREFIX,
    AttemptResult,
    Directives,
    DistListing,
    EnrolReply,
    EnrolRequest,
    FinishReply,
    HeartbeatReply,
    InvalidJob,
    Job,
    LogAck,
    MalformedMessage,
    Message,
    PollReply,
    PollRequest,
    SessionReply,
    WorkerFacts,
    WorkerLogAck,
    WorkerLogLines,
    bundle_limits,
)

log = logging.getLogger("tether.worker")

#: Largest log chunk a worker sends in one request (the hub may ask for less).
LOG_CHUNK_BYTES = 512 * 1024
#: Largest answer the worker reads from its hub (a poll's jobs, a heartbeat's
#: directives); a bundle may be as large as it may unpack to, the wheel
#: :data:`MAX_WHEEL_BYTES`. Whatever answers (a hostile hub, a proxy gone
#: wrong) cannot fill the worker's memory: past its bound an answer is
#: dropped while it arrives and the request retried like a lost connection.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: Largest worker wheel an update downloads (Tether's is well under 1 MiB).
MAX_WHEEL_BYTES = 64 * 1024 * 1024

T = TypeVar("T")
M = TypeVar("M", bound=Message)


class HubError(Exception):
    """The hub refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"hub answered {status}: {reason}")
        self.status = status
        self.reason = reason


class Unauthorized(HubError):
    """401: the credential is wrong or revoked."""


class Forbidden(HubError):
    """403: this worker may not do this (another tenant's queue, another worker's attempt)."""


class Gone(HubError):
    """404/409: the hub does not know this attempt or no longer wants reports on it."""


class Superseded(HubError):
    """409 on a session call: another process of this worker took over."""


class IncompatibleVersion(HubError):
    """426: the hub does not accept this worker's version."""


class MalformedAnswer(ValueError):
    """A success answer that is not what the hub sends (retried like a lost connection)."""


async def _read_capped(
    http: httpx.AsyncClient, method: str, path: str, max_bytes: int, **kwargs: Any
) -> httpx.Response:
    """The answer to a request, its body read whole but never past ``max_bytes``
    (MalformedAnswer then, with what is read so far let go). The body comes
    decoded, so a small compressed answer that inflates past the bound is
    stopped too."""
    async with http.stream(method, path, **kwargs) as answer:
        declared = answer.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise MalformedAnswer(f"the answer would be {declared} bytes, over {max_bytes}")
        body = bytearray()
        async for piece in answer.aiter_bytes():
            body += piece
            if len(body) > max_bytes:
                raise MalformedAnswer(f"the answer is larger than {max_bytes} bytes")
        # Already decoded: the copy must not say it is still compressed.
        headers = [
            (name, value)
            for name, value in answer.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            answer.status_code, headers=headers, content=bytes(body), request=answer.request
        )


def _json_object(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or MalformedAnswer saying what came instead."""
    try:
        data = response.json()
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        kind = response.headers.get("Content-Type", "no Content-Type")
        start = response.content[:60].decode("utf-8", "replace")
        raise MalformedAnswer(f"the answer is not JSON ({kind}): {start!r}") from None
    if not isinstance(data, dict):
        raise MalformedAnswer(f"the answer is JSON {type(data).__name__}, not an object")
    return data


def _reply(kind: type[M]) -> Callable[[httpx.Response], M]:
    """A reader of answers that must be a ``kind`` message (MalformedAnswer if not)."""

    def read(response: httpx.Response) -> M:
        try:
            return kind.from_wire(_json_object(response))
        except MalformedMessage as exc:
            raise MalformedAnswer(f"the answer is not a {kind.__name__}: {exc}") from None

    return read


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_hub_url(url: str, *, insecure_http: bool = False) -> None:
    """Raise ValueError for a hub URL this worker must not talk to.

    HTTPS anywhere; plain HTTP only to this machine (loopback), unless
    ``insecure_http``: the credential, and every task's inputs, logs and
    results, would otherwise cross the network in clear.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"invalid hub URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"the hub URL must be https://HOST[:PORT], not {url!r}")
    if parsed.scheme == "http" and not insecure_http and not _is_loopback(parsed.host):
        raise ValueError(
            f"refusing plain HTTP to {parsed.host}: the worker's credential and every task's "
            "inputs, logs and results would cross the network unencrypted. Use https:// "
            "(tether hub --tls-cert/--tls-key), or pass --insecure-http if the path to the hub "
            "is protected another way (an SSH tunnel, a private link you trust)"
        )


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
    elif response.status_code == 426:
        cls = IncompatibleVersion
    elif response.status_code in (404, 409):
        cls = Gone
    return cls(response.status_code, str(reason))


class HubClient:
    """Talks to one hub on behalf of one worker.

    TLS: httpx's default trust (certifi, or SSL_CERT_FILE), or ``ca_file`` for a
    private CA.
    Proxies: ``proxy`` if given, else HTTPS_PROXY / HTTP_PROXY / NO_PROXY from
    the environment (httpx's ``trust_env``).
    """

    def __init__(
        self,
        hub_url: str,
        credential: str | None = None,
        *,
        ca_file: str | None = None,
        proxy: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_backoff: float = 10.0,
    ) -> None:
        self.max_backoff = max_backoff
        self.session_id: str | None = None
        # The hub's limits, told in the session's answer (older hubs tell none):
        #: the largest log chunk to send (ours, or the hub's if lower)...
        self.log_chunk_bytes = LOG_CHUNK_BYTES
        #: ...and the largest return value of a task, as JSON.
        self.max_output_bytes = DEFAULT_MAX_TASK_OUTPUT_BYTES
        #: ...and after how many seconds of silence it declares this worker lost.
        self.lost_timeout: float | None = None
        #: What a task process needs to reach the hub for its declared secrets (with
        #: its attempt's token, never this worker's credential).
        self.task_access: dict[str, Any] = {
            "hub_url": hub_url.rstrip("/"),
            "ca_file": ca_file,
            "proxy": proxy,
        }
        headers = {"User-Agent": f"tether-worker/{__version__}"}
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        self._http = httpx.AsyncClient(
            base_url=hub_url.rstrip("/") + WORKER_API_PREFIX,
            headers=headers,
            timeout=httpx.Timeout(30.0, connect=10.0),
            transport=transport,
            # A private CA replaces the default trust for this hub.
            verify=ssl.create_default_context(cafile=ca_file) if ca_file else True,
            proxy=proxy,
            trust_env=True,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        read: Callable[[httpx.Response], T],
        *,
        retry_for: float | None = None,
        read_timeout: float | None = None,
        max_bytes: int | None = None,
        **kwargs: Any,
    ) -> T:
        """Send a request and ``read`` the answer; retry transport errors, 5xx,
        and answers ``read`` cannot make sense of (MalformedAnswer) or larger
        than ``max_bytes`` (:data:`MAX_ANSWER_BYTES` by default) for
        ``retry_for`` seconds, then raise ConnectionError.

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
                response = await _read_capped(
                    self._http, method, path, max_bytes or MAX_ANSWER_BYTES, **kwargs
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                retry_after = None
            except MalformedAnswer as exc:
                problem = str(exc)
                retry_after = None
            else:
                retry_after = None
                if response.status_code < 400:
                    try:
                        return read(response)
                    except MalformedAnswer as exc:
                        problem = f"HTTP {response.status_code}, but {exc}"
                elif response.status_code < 500 and response.status_code != 429:
                    raise _error_for(response)
                else:
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

    def _session_headers(self) -> dict[str, str]:
        return {SESSION_HEADER: self.session_id} if self.session_id else {}

    async def _session_call(
        self,
        path: str,
        body: Message,
        read: Callable[[httpx.Response], T],
        **kwargs: Any,
    ) -> T:
        try:
            return await self._request(
                "POST", path, read, json=body.to_wire(), headers=self._session_headers(), **kwargs
            )
        except Gone as exc:
            if exc.status == 409:
                raise Superseded(exc.status, exc.reason) from None
            raise

    async def enrol(self, token: str) -> EnrolReply:
        """Exchange a one-time enrolment token for this worker's credential."""
        body = EnrolRequest(token).to_wire()
        return await self._request("POST", "/enrol", _reply(EnrolReply), json=body)

    async def start_session(self, facts: WorkerFacts) -> SessionReply:
        """Announce this process; the hub checks its version and lets it take over."""
        hello = await self._request("POST", "/sessions", _reply(SessionReply), json=facts.to_wire())
        self.session_id = hello.session_id
        if hello.max_log_chunk_bytes is not None:  # older hubs tell no limits
            self.log_chunk_bytes = min(LOG_CHUNK_BYTES, hello.max_log_chunk_bytes)
        if hello.max_task_output_bytes is not None:
            self.max_output_bytes = hello.max_task_output_bytes
        self.lost_timeout = hello.lost_timeout
        return hello

    async def heartbeat(self, facts: WorkerFacts, *, retry_for: float | None = None) -> Directives:
        reply = await self._session_call(
            "/heartbeat", facts, _reply(HeartbeatReply), retry_for=retry_for
        )
        return reply.directives

    async def ship_log(self, batch: WorkerLogLines) -> int:
        """Send lines of the worker's own log, once: no retry (``own_log.ship``
        tries again later) and so no line about a failure; the lines the hub kept."""
        reply = await self._session_call("/worker-log", batch, _reply(WorkerLogAck), retry_for=0.0)
        return reply.kept

    async def poll(self, request: PollRequest) -> tuple[list[Job], Directives]:
        """Long-poll for jobs and directives; the hub holds it up to ``request.wait`` s.

        A job that names an unsafe path (``Job.check``) is left out with an
        error line: the worker never runs it, and the hub, which no heartbeat
        tells of it, gives up on it (reconciliation).
        """
        reply = await self._session_call(
            "/poll", request, _reply(PollReply), read_timeout=request.wait + 30.0
        )
        jobs = []
        for item in reply.jobs:
            try:
                jobs.append(Job.from_dict(item))
            except InvalidJob as exc:
                log.error("refusing a job from the hub: %s", exc)
        return jobs, reply.directives

    async def fetch_bundle(self, sha: str) -> bytes:
        """The bundle ``sha``; a body with another hash (a proxy's page) is retried."""

        def read(response: httpx.Response) -> bytes:
            if hashlib.sha256(response.content).hexdigest() != sha:
                kind = response.headers.get("Content-Type", "no Content-Type")
                raise MalformedAnswer(f"the bundle arrived with another hash ({kind})")
            return response.content

        return await self._request(
            "GET", f"/bundles/{sha}", read, read_timeout=120.0, max_bytes=bundle_limits()[0]
        )

    async def dist_listing(self) -> DistListing:
        """The hub's version and its worker wheel (``GET /dist/``), for an update."""
        return await self._request("GET", "/dist/", _reply(DistListing), retry_for=60.0)

    async def fetch_wheel(self, listing: DistListing) -> bytes:
        """The listed wheel's bytes, checked against the listed sha256 (another
        body, a proxy's page or a cut-off download, is retried, then fails)."""
        wheel = listing.wheel

        def read(response: httpx.Response) -> bytes:
            if hashlib.sha256(response.content).hexdigest() != wheel.sha256:
                kind = response.headers.get("Content-Type", "no Content-Type")
                raise MalformedAnswer(f"the wheel arrived with another hash ({kind})")
            return response.content

        path = f"/dist/{wheel.filename}"
        return await self._request(
            "GET", path, read, retry_for=60.0, read_timeout=120.0, max_bytes=MAX_WHEEL_BYTES
        )

    async def upload_log(self, attempt_id: str, offset: int, data: bytes) -> int:
        """Append ``data`` at ``offset``; returns the hub's log size afterwards."""
        ack = await self._request(
            "POST",
            f"/attempts/{attempt_id}/logs",
            _reply(LogAck),
            params={"offset": offset},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return ack.size

    async def finish(self, attempt_id: str, result: AttemptResult) -> FinishReply:
        return await self._request(
            "POST", f"/attempts/{attempt_id}/finish", _reply(FinishReply), json=result.to_wire()
        )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), 300.0))
    except ValueError:
        return None
