"""Site-local secrets: connections and variables a worker holds itself, that never
leave its machine.

Two places, read by the worker (not by tasks):

- its environment: ``TETHER_CONN_<NAME>`` (a connection URI, Airflow's
  format) and ``TETHER_VAR_<NAME>`` (a value), where ``<NAME>`` is the name
  in upper case (as Airflow's ``AIRFLOW_CONN_<CONN_ID>``);
- ``connections.toml`` in its home (kept 0600 like the rest of the home)::

      [connections.customer_db]
      uri = "postgresql://etl:s3cret@db.internal:5432/sales"

      [connections.ftp]          # or the parts, as Airflow names them
      conn_type = "ftp"
      host = "ftp.internal"
      login = "etl"
      password = "..."
      extra = {passive = true}

      [variables]
      region = "eu-west-1"

The environment wins over the file, and both win over the hub: a task that
declares ``customer_db`` reads the worker's own, and the hub learns only that
the name was used. A task is handed only the names it declares (its job
lists them), through its private job file; the task process does not
inherit the worker's ``TETHER_*`` variables.
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tether.protocol import Job, is_valid_id
from tether.sdk.connection import Connection

log = logging.getLogger("tether.worker")

FILE_NAME = "connections.toml"
CONN_PREFIX = "TETHER_CONN_"
VAR_PREFIX = "TETHER_VAR_"
#: Parts of a connection a file entry may give instead of a URI.
_PARTS = ("conn_type", "host", "login", "password", "schema", "port", "extra", "description")


class SiteSecretsError(ValueError):
    """``connections.toml`` or a ``TETHER_CONN_`` variable cannot be read; the worker
    says why and does not start."""


def _connection(name: str, entry: Any, where: str) -> dict[str, Any]:
    """A connection's parts (``Connection.to_dict``) from a URI or a table of parts."""
    try:
        if isinstance(entry, str):
            return Connection.from_uri(name, entry).to_dict()
        if not isinstance(entry, dict):
            raise SiteSecretsError(f"{where}: a connection is a URI or a table of its parts")
        if "uri" in entry:
            if set(entry) - {"uri"}:
                raise SiteSecretsError(f"{where}: give either uri or the parts, not both")
            return Connection.from_uri(name, str(entry["uri"])).to_dict()
        unknown = set(entry) - set(_PARTS)
        if unknown:
            raise SiteSecretsError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        parts = {k: v for k, v in entry.items() if k != "description"}
        if isinstance(parts.get("extra"), dict):
            parts["extra"] = json.dumps(parts["extra"])
        if "port" in parts and not isinstance(parts["port"], int):
            raise SiteSecretsError(f"{where}: port must be a whole number")
        parts.setdefault("conn_type", "generic")
        return Connection(conn_id=name, **parts).to_dict()
    except (ValueError, TypeError) as exc:
        if isinstance(exc, SiteSecretsError):
            raise
        raise SiteSecretsError(f"{where}: {exc}") from None


class SiteSecrets:
    """What this worker holds of its own; re-reads ``connections.toml`` when it changes."""

    def __init__(self, home: Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = home / FILE_NAME
        env = os.environ if environ is None else environ
        # Names are looked up in upper case: TETHER_CONN_WAREHOUSE is "warehouse".
        self._env_connections = {
            k[len(CONN_PREFIX) :]: v for k, v in env.items() if k.startswith(CONN_PREFIX)
        }
        self._env_variables = {
            k[len(VAR_PREFIX) :]: v for k, v in env.items() if k.startswith(VAR_PREFIX)
        }
        for key, uri in self._env_connections.items():
            _connection(key.lower(), uri, f"{CONN_PREFIX}{key}")  # refuse a bad one at start
        self._seen: tuple[int, int] | None = None
        self._file: dict[str, Any] = {"connections": {}, "variables": {}}
        self.reload()

    def reload(self) -> None:
        """Read ``connections.toml`` if it changed; SiteSecretsError if it is invalid."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._file = None, {"connections": {}, "variables": {}}
            return
        if self._seen == (st.st_mtime_ns, st.st_size):
            return
        try:
            data = tomllib.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SiteSecretsError(f"{self.path} cannot be read: {exc}") from None
        unknown = set(data) - {"connections", "variables"}
        if unknown:
            raise SiteSecretsError(
                f"{self.path}: unknown tables {', '.join(sorted(unknown))} "
                "(only [connections.NAME] and [variables])"
            )
        for table in ("connections", "variables"):
            if not isinstance(data.get(table, {}), dict):
                raise SiteSecretsError(f"{self.path}: {table} must be a table ([{table}...])")
        connections, variables = {}, {}
        for name, entry in data.get("connections", {}).items():
            if not is_valid_id(name):
                raise SiteSecretsError(f"{self.path}: invalid connection name {name!r}")
            connections[name] = _connection(name, entry, f"{self.path} [connections.{name}]")
        for name, value in data.get("variables", {}).items():
            if not is_valid_id(name):
                raise SiteSecretsError(f"{self.path}: invalid variable name {name!r}")
            try:
                variables[name] = value if isinstance(value, str) else json.dumps(value)
            except TypeError:  # a TOML date or time: JSON has none (quote it)
                raise SiteSecretsError(
                    f"{self.path} [variables] {name}: a value is text or JSON data, "
                    f"not a {type(value).__name__}"
                ) from None
        self._file = {"connections": connections, "variables": variables}
        self._seen = (st.st_mtime_ns, st.st_size)

    def for_job(self, job: Job) -> dict[str, dict[str, Any]]:
        """The site-local values of the names ``job`` declares, and of no other."""
        try:
            self.reload()
        except SiteSecretsError as exc:  # keep the last good file, and say so
            log.error("%s; the last good %s is used", exc, FILE_NAME)
        connections: dict[str, Any] = {}
        for name in job.connections:
            uri = self._env_connections.get(name.upper())
            if uri is not None:
                connections[name] = _connection(name, uri, f"{CONN_PREFIX}{name.upper()}")
            elif name in self._file["connections"]:
                connections[name] = self._file["connections"][name]
        variables: dict[str, Any] = {}
        for name in job.variables:
            value = self._env_variables.get(name.upper())
            if value is None:
                value = self._file["variables"].get(name)
            if value is not None:
                variables[name] = value
        return {"connections": connections, "variables": variables}

    def names(self) -> dict[str, list[str]]:
        """What it holds, by name only (for the worker's start-up line)."""
        return {
            "connections": sorted(
                {k.lower() for k in self._env_connections} | set(self._file["connections"])
            ),
            "variables": sorted(
                {k.lower() for k in self._env_variables} | set(self._file["variables"])
            ),
        }
