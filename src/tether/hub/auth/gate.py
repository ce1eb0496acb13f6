"""Who is calling: decided once per request, before anything reads its body.

The hub's ASGI app is wrapped in :class:`AuthGate` (see ``hub/app.py``). For
each HTTP request it

1. resolves the bearer token to a principal: on ``/api/v1`` a
   :class:`~tether.hub.auth.principal.Principal` with a role (the built-in
   admin token by a constant-time compare, a named API token by a read-only
   lookup of its hash each time, ``auth/principal.py``), on the worker API an
   enrolled worker (a read-only store lookup, which never takes SQLite's
   write lock, behind a cache of credentials known good), and puts it in the
   request scope, where the routes' dependencies (``auth/deps.py``) take it
   and check its role (403 naming the role needed);
2. answers 401 at once, before any of the body is read, when the path needs a
   principal the request does not carry, with the reason ("missing bearer
   token", "invalid token", "token expired", "token revoked"): ``/api/v1/...``
   needs an API token, ``/api/worker/v1/secrets/...`` a token some task
   attempt was given (a read-only lookup; the route checks that the attempt
   still runs), the rest of ``/api/worker/v1/...`` a worker credential (but
   ``/enrol``, which is public and takes tiny bodies only, and the worker
   API's OpenAPI document). So an anonymous client cannot make the hub read,
   parse or store anything. ``/metrics`` needs an API token too (any role:
   each includes the viewer's), unless ``TETHER_PUBLIC_METRICS=1`` makes it
   public for a Prometheus that scrapes from inside the network. The
   worker's wheel and the simple index (``DIST_PATHS``, ``worker_api/dist.py``)
   are public, GET and HEAD only, unless ``TETHER_PUBLIC_DIST=0``: then they
   need a worker credential or any API token (a viewer's will do), as a bearer
   token or as the password of HTTP Basic auth (pip's
   ``https://user:TOKEN@HUB/simple``). Any other path below them is 404 here,
   whoever asks, so nothing added there later becomes public by accident;
3. counts every 401 the hub answers, per client address (the socket's peer,
   or the client a trusted proxy names: ``TETHER_FORWARDED_ALLOW_IPS``). An
   address that has spent its budget (``TETHER_AUTH_FAILURES_PER_MINUTE``)
   gets 429 with Retry-After instead of 401, and for any enrolment before its
   token is looked up; a good credential still passes (a worker behind the
   same NAT as a misbehaving client keeps working), at the cost of a
   read-only lookup for made-up ones that look like credentials (or API
   tokens: what has not their shape is refused without one).

The gate never looks at cookies: the web console (``/ui/...``) checks its own
signed session cookie (``auth/console.py``), and a console cookie is no
credential for any API path.

The worker cache only saves lookups: the worker routes check the credential again
inside their own transaction (``worker_api/routes.py: _as_worker``), so a
revocation takes effect at the next request. A revocation through this
process also drops the cached entry (:meth:`Principals.forget`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.hub.auth.principal import ADMIN, LastUsed, Principal, resolve
from tether.hub.core import api_tokens, credentials
from tether.hub.core.audit import Who
from tether.protocol import DIST_PREFIX, SIMPLE_INDEX, SIMPLE_PROJECT, WORKER_API_PREFIX

#: Where the gate leaves the principal in the ASGI scope: a Principal on the
#: REST API (``ADMIN`` for the built-in admin token), a WorkerIdentity or an
#: AttemptToken on the worker API.
PRINCIPAL = "tether.principal"

REST_PREFIX = "/api/v1/"
ENROL_PATH = f"{WORKER_API_PREFIX}/enrol"
#: What task processes call with their attempt's token (``core/handout.py``).
SECRETS_PREFIX = f"{WORKER_API_PREFIX}/secrets/"
#: The worker API's OpenAPI document: public, as the REST one (``/openapi.json``) is.
WORKER_OPENAPI_PATH = f"{WORKER_API_PREFIX}/openapi.json"
#: Prometheus metrics (``hub/metrics.py``): an API token's, unless TETHER_PUBLIC_METRICS.
METRICS_PATH = "/metrics"
#: Paths anyone may call; everything else under the two API prefixes needs a principal.
PUBLIC_PATHS = frozenset({"/api/v1/health", ENROL_PATH, WORKER_OPENAPI_PATH})
#: Where the worker's wheel is served: below these, only :func:`dist_paths` exist.
DIST_AREAS = (DIST_PREFIX.rstrip("/"), SIMPLE_INDEX.rstrip("/"))
DIST_METHODS = frozenset({"GET", "HEAD"})

#: How long a credential found good is trusted without a lookup, in seconds.
CACHE_SECONDS = 60.0
#: Most credentials kept in the cache (each entry is a few hundred bytes).
CACHE_ENTRIES = 100_000
#: Most client addresses the failure counter remembers at once.
THROTTLED_ADDRESSES = 100_000


@dataclass(frozen=True)
class WorkerIdentity:
    """The worker a credential belongs to, as of this request."""

    name: str
    credential_hash: str
    allowed_queues: tuple[str, ...]
    #: The session the request claims to be part of (X-Tether-Session).
    presented_session: str | None = None


@dataclass(frozen=True)
class AttemptToken:
    """A task attempt's token, as presented: the route checks it in its transaction
    (the attempt must be running), so nothing about it is cached."""

    token_hash: str


class Throttle:
    """Failed authentications per client address: a token bucket each.

    An address may fail ``per_minute`` times in a burst; its budget refills at
    ``per_minute`` a minute. Past ``THROTTLED_ADDRESSES`` addresses the one
    that failed longest ago is forgotten, so the table stays bounded and each
    failure costs O(1).
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        #: address -> (tokens left, when counted); least recently failed first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may fail again; None if it may now."""
        level = self._level(address, self._clock())
        return None if level >= 1.0 else (1.0 - level) / self.rate

    def failed(self, address: str) -> None:
        now = self._clock()
        self._buckets[address] = (max(0.0, self._level(address, now) - 1.0), now)
        self._buckets.move_to_end(address)
        if len(self._buckets) > THROTTLED_ADDRESSES:
            self._buckets.popitem(last=False)  # the one that failed longest ago


class Principals:
    """What the gate remembers: credentials known good, failures per address."""

    def __init__(
        self, failures_per_minute: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.throttle = Throttle(failures_per_minute, clock)
        self.last_used = LastUsed(clock)
        self._clock = clock
        self._known: dict[str, tuple[WorkerIdentity, float]] = {}

    def known(self, credential_hash: str) -> WorkerIdentity | None:
        """The identity of a credential found good lately; each use keeps it cached."""
        entry = self._known.get(credential_hash)
        if entry is None:
            return None
        identity, until = entry
        now = self._clock()
        if until < now:
            del self._known[credential_hash]
            return None
        self._known[credential_hash] = (identity, now + CACHE_SECONDS)
        return identity

    def remember(self, identity: WorkerIdentity) -> None:
        if len(self._known) >= CACHE_ENTRIES:
            self._known.clear()  # rare, and only costs lookups
        self._known[identity.credential_hash] = (identity, self._clock() + CACHE_SECONDS)

    def forget(self, worker_name: str) -> None:
        """Drop a worker's cached credential (it was revoked, removed or re-enrolled)."""
        for key in [k for k, (i, _) in self._known.items() if i.name == worker_name]:
            del self._known[key]


def dist_paths(wheel_filename: str) -> frozenset[str]:
    """Every path of the worker's wheel and the simple index, and nothing else."""
    return frozenset({DIST_PREFIX, DIST_PREFIX + wheel_filename, SIMPLE_INDEX, SIMPLE_PROJECT})


def in_dist_area(path: str) -> bool:
    return any(path == area or path.startswith(area + "/") for area in DIST_AREAS)


def needs(path: str) -> str | None:
    """``"api"``, ``"worker"``, ``"attempt"`` or None: the principal ``path`` needs."""
    if path in PUBLIC_PATHS:
        return None
    if path.startswith(REST_PREFIX) or path == METRICS_PATH:
        return "api"
    if path.startswith(SECRETS_PREFIX):
        return "attempt"
    if path.startswith(WORKER_API_PREFIX + "/"):
        return "worker"
    return None


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if not value or not value.lower().startswith("bearer "):
        return None
    return value[7:].strip() or None


def _basic_password(headers: Headers) -> str | None:
    """The password of HTTP Basic auth (or the user name, if that is all there
    is): how pip sends a token it found in an index URL."""
    value = headers.get("authorization")
    if not value or not value.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return password or user or None


async def _answer(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class AuthGate:
    """ASGI middleware: resolve the principal, refuse the anonymous, throttle failures."""

    def __init__(self, app: ASGIApp, hub: Any) -> None:
        self.app = app
        self.hub = hub
        self.dist_paths = dist_paths(hub.dist.filename)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        token = _bearer(headers)
        challenge = "Bearer"
        if in_dist_area(path):
            if path not in self.dist_paths:  # `..`, other versions, other names
                await _answer(send, 404, "no such file")
                return
            if scope["method"] not in DIST_METHODS:
                await _answer(send, 405, "method not allowed", {"Allow": "GET, HEAD"})
                return
            if self.hub.config.public_dist:
                await self.app(scope, receive, send)
                return
            need: str | None = "reader"
            token = token or _basic_password(headers)
            challenge = 'Bearer, Basic realm="tether"'
        else:
            need = needs(path)
            if path == METRICS_PATH and self.hub.config.public_metrics:
                need = None
            if need is None and path != ENROL_PATH:  # health, the console, the schema
                await self.app(scope, receive, send)
                return
        principals: Principals = self.hub.principals
        address = (scope.get("client") or ("unknown",))[0]
        blocked = principals.throttle.retry_after(address)
        if path == ENROL_PATH and blocked is not None:
            # Every enrolment looks a token up; an address over its budget gets none.
            await _too_many(send, blocked)
            return
        principal, refusal = await self._resolve(need, token)
        if refusal is not None:
            # A credential that is good passes whatever its neighbours did; one
            # that is not gets 429 rather than 401 while its address is over budget.
            if blocked is not None:
                await _too_many(send, blocked)
                return
            principals.throttle.failed(address)
            await _answer(send, 401, refusal, {"WWW-Authenticate": challenge})
            return
        scope[PRINCIPAL] = principal

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                principals.throttle.failed(address)
            await send(message)

        await self.app(scope, receive, counting_send)

    async def _resolve(self, need: str | None, token: str | None) -> tuple[object, str | None]:
        """The principal ``token`` stands for on a path that needs ``need``, or why
        not. ``"reader"`` (the private worker wheel) takes any API token or a worker."""
        if need is None:
            return None, None
        if token is None:
            return None, "missing bearer token"
        if need == "api":
            return await self._api(token)
        if need == "reader" and (
            hmac.compare_digest(token.encode(), self.hub.tokens.admin.encode())
            or api_tokens.looks_like_token(token)
        ):
            return await self._api(token)  # any API token; else a worker's credential
        if need == "attempt":
            return await self._attempt(token)
        known = self.hub.principals.known(hashlib.sha256(token.encode()).hexdigest())
        if known is not None:
            return known, None
        return await self._worker(token)

    async def _api(self, token: str) -> tuple[Principal | None, str | None]:
        """The built-in admin token, or a named API token: a lookup for each request
        (no cache, so a revocation holds at the next), and none for what has not
        a token's shape."""
        if hmac.compare_digest(token.encode(), self.hub.tokens.admin.encode()):
            return ADMIN, None
        if not api_tokens.looks_like_token(token):
            return None, "invalid token"
        found = await resolve(self.hub, api_tokens.token_hash(token))
        return (found, None) if isinstance(found, Principal) else (None, found)

    async def _attempt(self, token: str) -> tuple[AttemptToken | None, str | None]:
        """A token some attempt was given; a made-up one is refused here, after a
        read that never takes SQLite's write lock, and counts against its address."""
        if not credentials.looks_like_attempt_token(token):
            return None, "invalid attempt token"
        hashed = credentials.attempt_token_hash(token)

        def lookup() -> bool:
            with self.hub.store.read() as s:
                return credentials.is_attempt_token(s, hashed)

        if not await run_in_threadpool(lookup):
            return None, "invalid attempt token"
        return AttemptToken(hashed), None

    async def _worker(self, token: str) -> tuple[WorkerIdentity | None, str | None]:
        if not credentials.looks_like_credential(token):
            return None, "invalid worker credential"  # no lookup for what cannot be one

        def lookup() -> WorkerIdentity:
            with self.hub.store.read() as s:
                worker = credentials.authenticate(s, token)
                assert worker.credential_hash is not None
                return WorkerIdentity(
                    worker.name, worker.credential_hash, tuple(worker.allowed_queues)
                )

        try:
            identity = await run_in_threadpool(lookup)
        except credentials.InvalidCredential as exc:
            return None, str(exc)
        self.hub.principals.remember(identity)
        return identity, None


async def _too_many(send: Send, wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    await _answer(
        send,
        429,
        f"too many failed authentications from this address; retry in {seconds} s",
        {"Retry-After": str(seconds)},
    )


def who(request: Request | None) -> Who:
    """The :class:`Who` of ``request`` (see :func:`actor_of`)."""
    actor, address = actor_of(request)
    return Who(actor, address)


def actor_of(request: Request | None) -> tuple[str, str | None]:
    """``(actor, address)`` of the request: ``admin`` (the built-in admin
    token), an API token's name or ``worker:NAME``, and the client's address
    as the gate saw it (the socket's peer, or the client a trusted proxy
    names)."""
    if request is None:
        return "cli", None
    principal = request.scope.get(PRINCIPAL)
    if isinstance(principal, Principal):
        actor = principal.name
    elif isinstance(principal, WorkerIdentity):
        actor = f"worker:{principal.name}"
    else:
        actor = "anonymous"
    client = request.scope.get("client")
    return actor, (str(client[0])[:100] if client else None)
