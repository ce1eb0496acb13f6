"""Connections and variables, read by a running task: ``get_connection``, ``Variable``.

Need to know: a task reads only the names it (or its DAG, or its
``default_args``) declares with ``connections=[...]`` / ``variables=[...]``.
The job the worker receives carries no value; on first use, the task
process asks for each name

1. on its own worker's machine: the site-local secrets the worker was given
   for the declared names (``TETHER_CONN_<NAME>``, ``TETHER_VAR_<NAME>``, or
   the worker home's ``connections.toml``), which never leave that machine
   (the hub is told only that the name was used there), then
2. from the hub, with the token of its attempt: good only while that attempt
   runs, and only for the names its task declares; a connection restricted
   to queues is refused to a task on another queue.

Every value a task receives is registered with the log masker, so it shows
as ``***`` in the task's log.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tether.sdk.connection import Connection
from tether.sdk.context import get_current_context
from tether.sdk.masking import mask_secret

#: The worker API's prefix for what attempt tokens may fetch.
SECRETS_PATH = "/api/worker/v1/secrets"
#: Tries of one fetch when the hub cannot be reached or answers 5xx/429 (about 7 s).
FETCH_TRIES = 4


class SecretUnavailable(Exception):
    """A connection or variable the task asked for cannot be had (the message says why)."""


class UndeclaredSecret(SecretUnavailable):
    """The task asked for a name it does not declare."""


@dataclass
class SecretSource:
    """Where this task process gets its secrets; set by the task runner from the job."""

    hub_url: str | None = None
    token: str | None = None
    ca_file: str | None = None
    proxy: str | None = None
    #: Site-local values for the declared names: {"connections": {name: {...}}, "variables": {}}.
    site: dict[str, dict[str, Any]] = field(default_factory=dict)
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _http: Any = None

    def fetch(self, kind: str, name: str, *, local: bool = False) -> dict[str, Any] | None:
        """Ask the hub for ``kind`` (connections / variables) ``name``; None if it has none.

        With ``local`` the hub only records that the name was used from the
        worker's own store (it learns no value and sends none).
        """
        if not self.hub_url or not self.token:
            raise SecretUnavailable(
                f"{kind[:-1]} {name!r} is not on this worker and the task has no way to "
                "ask the hub for it (it was not started by a Tether worker)"
            )
        import httpx  # only tasks that read a secret pay for the import (the fork server
        # of the worker has it imported already)

        url = f"{self.hub_url.rstrip('/')}{SECRETS_PATH}/{kind}/{quote(name, safe='')}"
        # A link that drops for a moment must not fail the task: a few tries, backing off.
        for attempt in range(FETCH_TRIES):
            try:
                answer = self._client().get(
                    url,
                    params={"local": "true"} if local else None,
                    headers={"Authorization": f"Bearer {self.token}"},
                )
            except httpx.TransportError as exc:
                if attempt == FETCH_TRIES - 1:
                    raise SecretUnavailable(
                        f"could not reach the hub for {kind[:-1]} {name!r} "
                        f"after {FETCH_TRIES} tries: {exc}"
                    ) from None
            else:
                if answer.status_code < 500 and answer.status_code != 429:
                    break
                if attempt == FETCH_TRIES - 1:
                    break
            time.sleep(0.5 * 2**attempt)
        if answer.status_code == 404:
            return None
        if answer.status_code >= 400:
            try:
                body = answer.json()
            except ValueError:
                body = None
            reason = body.get("detail") if isinstance(body, dict) else None
            reason = str(reason or answer.text[:500])
            raise SecretUnavailable(
                f"the hub refused {kind[:-1]} {name!r} ({answer.status_code}): {reason}"
            )
        if local:
            return None
        try:
            data = answer.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise SecretUnavailable(f"the hub's answer for {kind[:-1]} {name!r} is not an object")
        return data

    def _client(self) -> Any:
        """One HTTP client for the process: a TLS context costs tens of ms to make."""
        import httpx

        with self._lock:
            if self._http is None:
                assert self.hub_url is not None
                verify: Any = _default_tls or True  # as the worker's: certifi's CAs
                if self.hub_url.startswith("http://"):
                    verify = False  # no TLS to set up (the worker allows this on loopback)
                elif self.ca_file:
                    verify = ssl.create_default_context(cafile=self.ca_file)
                self._http = httpx.Client(verify=verify, proxy=self.proxy, timeout=30.0)
            return self._http

    def cached(self, kind: str, name: str, load: Any) -> Any:
        with self._lock:
            key = (kind, name)
            if key not in self._cache:
                self._cache[key] = load()
            return self._cache[key]


#: This process's source (the task runner configures it before the task runs).
source = SecretSource()

#: The default TLS context, made ahead by :func:`warm` (None: made when needed).
_default_tls: ssl.SSLContext | None = None


def warm() -> None:
    """Do now what a first fetch would: import httpx and its transports, load the
    default CAs. The worker's fork server calls it once, for every task it forks."""
    global _default_tls
    import httpx

    _default_tls = httpx.create_ssl_context()
    httpx.Client(verify=_default_tls).close()  # imports what the first client imports


def configure(settings: dict[str, Any] | None) -> None:
    """Set where this task process gets its secrets (the runner calls it once)."""
    global source
    settings = settings or {}
    source = SecretSource(
        hub_url=settings.get("hub_url"),
        token=settings.get("token"),
        ca_file=settings.get("ca_file"),
        proxy=settings.get("proxy"),
        site={k: dict(v) for k, v in (settings.get("site") or {}).items() if isinstance(v, dict)},
    )


def _declared(kind: str, name: str) -> None:
    """Raise UndeclaredSecret unless the running task declares ``name``.

    An undeclared name is still put to the hub when the attempt has a token,
    so that the refusal is in the audit log; the task fails either way.
    """
    try:
        task = get_current_context()["task"]
    except (RuntimeError, KeyError):
        raise UndeclaredSecret(f"{kind[:-1]} {name!r} can only be read while a task runs") from None
    if name in getattr(task, kind, []):
        return
    word = "connections" if kind == "connections" else "variables"
    if source.token:
        with contextlib.suppress(SecretUnavailable):
            source.fetch(kind, name)
    raise UndeclaredSecret(
        f"task {task.task_id!r} does not declare {kind[:-1]} {name!r}: add "
        f"{word}=[{name!r}] to the task (or to its DAG or its default_args)"
    )


#: Extra keys whose values are masked too (Airflow's list): a key holding one of
#: these words, in any case, is a secret (``api_key``, ``Authorization``).
SENSITIVE_WORDS = (
    "access_token",
    "api_key",
    "apikey",
    "authorization",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "secret",
    "token",
    "keyfile_dict",
    "service_account",
)


def _mask_sensitive(value: Any, sensitive: bool = False) -> None:
    """Mask the strings under keys that look secret, at any depth of an extra."""
    if isinstance(value, dict):
        for key, item in value.items():
            hit = sensitive or any(w in str(key).lower() for w in SENSITIVE_WORDS)
            _mask_sensitive(item, hit)
    elif isinstance(value, list):
        for item in value:
            _mask_sensitive(item, sensitive)
    elif sensitive and isinstance(value, str):
        mask_secret(value)
    elif sensitive and value is not None and not isinstance(value, bool):
        mask_secret(json.dumps(value))


def _mask_connection(conn: Connection) -> None:
    """Register what of a connection is secret: its password, its whole URI and
    extra, and the extra's values under keys that look secret."""
    if conn.password:
        mask_secret(conn.password)
    if conn.password or conn.extra:
        mask_secret(conn.get_uri())
    if conn.extra:
        mask_secret(conn.extra)
        _mask_sensitive(conn.extra_dejson)


def _tell_hub(kind: str, name: str) -> None:
    """Tell the hub a site-local name was used (for its audit log; no value goes).

    The value is the worker's own, so a hub that cannot be told does not fail
    the task: the log says so instead.
    """
    if not source.token:
        return
    try:
        source.fetch(kind, name, local=True)
    except SecretUnavailable as exc:
        print(f"[tether] the hub was not told that site-local {kind[:-1]} {name!r} was used: {exc}")


def get_connection(conn_id: str) -> Connection:
    """The connection ``conn_id``, which the running task must declare.

    A site-local one (the worker's own) wins over the hub's.
    """
    _declared("connections", conn_id)

    def load() -> Connection:
        local = source.site.get("connections", {}).get(conn_id)
        if local is not None:
            conn = Connection.from_dict({**local, "conn_id": conn_id})
            _mask_connection(conn)
            _tell_hub("connections", conn_id)
            return conn
        data = source.fetch("connections", conn_id)
        if data is None:
            raise SecretUnavailable(
                f"no connection {conn_id!r}: neither this worker nor the hub has one "
                f"(add it with `tether connections add {conn_id} --uri ...`)"
            )
        conn = Connection.from_dict({**data, "conn_id": conn_id})
        _mask_connection(conn)
        return conn

    result: Connection = source.cached("connections", conn_id, load)
    return result


_NO_DEFAULT = object()


class Variable:
    """Airflow's ``Variable.get``: a named value, declared by the task that reads it."""

    @staticmethod
    def get(key: str, default: Any = _NO_DEFAULT, deserialize_json: bool = False) -> Any:
        _declared("variables", key)

        def load() -> tuple[bool, str | None]:
            local = source.site.get("variables", {}).get(key)
            if local is not None:
                value = str(local)
                mask_secret(value)  # a site-local value is kept on site for a reason
                _tell_hub("variables", key)
                return True, value
            data = source.fetch("variables", key)
            if data is None:
                return False, None
            value = str(data["value"])
            if data.get("is_secret"):
                mask_secret(value)
            return True, value

        found, value = source.cached("variables", key, load)
        if not found:
            if default is not _NO_DEFAULT:
                return default
            raise SecretUnavailable(
                f"no variable {key!r}: neither this worker nor the hub has one "
                f"(set it with `tether variables set {key} VALUE`)"
            )
        return json.loads(value) if deserialize_json else value


class _Connections:
    """``{{ conn.NAME.host }}`` in templates."""

    def __getattr__(self, name: str) -> Connection:
        return get_connection(name)

    def get(self, name: str) -> Connection:
        return get_connection(name)


class _Values:
    def __init__(self, as_json: bool) -> None:
        self._as_json = as_json

    def __getattr__(self, name: str) -> Any:
        return Variable.get(name, deserialize_json=self._as_json)

    def get(self, name: str, default: Any = None) -> Any:
        return Variable.get(name, default, deserialize_json=self._as_json)


class _Variables:
    """``{{ var.value.NAME }}`` and ``{{ var.json.NAME.key }}`` in templates."""

    def __init__(self) -> None:
        self.value = _Values(as_json=False)
        self.json = _Values(as_json=True)


def template_context() -> dict[str, Any]:
    """The ``conn`` and ``var`` entries of a task's template context."""
    return {"conn": _Connections(), "var": _Variables()}
