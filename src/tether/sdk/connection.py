"""Connections: where a system is and how to log in to it, as Airflow has them.

A :class:`Connection` is a plain value shared by the hub (which stores it
encrypted) and the task process (which reads it); it depends on the standard
library only, since the worker must not import the hub.

URIs follow Airflow's connection URI format, so a URI that works in an
``AIRFLOW_CONN_*`` variable works here::

    postgres://LOGIN:PASSWORD@HOST:PORT/SCHEMA?sslmode=require

- the scheme is the connection type, ``-`` read as ``_`` (``google-cloud-platform``
  is ``google_cloud_platform``) and ``postgresql`` as ``postgres``;
- login, password, host and schema are percent-decoded, so a password holding
  ``@ : / ? # %`` is written with ``%40 %3A %2F %3F %23 %25``;
- the path (without its leading ``/``) is the schema;
- query parameters become the extra (a JSON object of strings), unless the one
  parameter ``__extra__`` holds the extra as JSON text;
- a host that carries its own protocol is written after the type:
  ``http://https://example.com`` is type ``http``, host ``https://example.com``.

Error messages never quote the URI or the password: both may be secret.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

#: The query parameter that holds the whole extra as JSON text.
EXTRA_KEY = "__extra__"

# A URI scheme (RFC 3986) and, after normalising, a connection type.
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-_]*")
# A host's own protocol ("https" in http://https://example.com).
_PROTOCOL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# Characters no host, login, schema or type may hold (PostgreSQL refuses NUL in text,
# and a control character in a host name is never meant).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

FIELDS = ("conn_id", "conn_type", "host", "login", "password", "schema", "port", "extra")


def _normalise_type(scheme: str) -> str:
    conn_type = scheme.lower()
    if conn_type == "postgresql":
        return "postgres"
    return conn_type.replace("-", "_")


def _decode(text: str, what: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(
            f"the {what} of the connection URI is not UTF-8 once percent-decoded"
        ) from None


def _check_extra(extra: str | None) -> None:
    if extra is None:
        return
    try:
        value = json.loads(extra)
    except ValueError:
        raise ValueError("the connection's extra is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError(
            f"the connection's extra must be a JSON object, not {type(value).__name__}"
        )


@dataclass(frozen=True)
class Connection:
    """A connection's fields, as in Airflow. ``extra`` is JSON text (an object) or None.

    The password and the extra are left out of ``repr`` so that printing a
    connection, or an exception that shows one, does not leak them.
    """

    conn_id: str
    conn_type: str
    host: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    schema: str | None = None
    port: int | None = None
    extra: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in FIELDS:
            value = getattr(self, name)
            if name == "port":
                continue
            if value is not None and not isinstance(value, str):
                raise ValueError(
                    f"the connection's {name} must be text, not {type(value).__name__}"
                )
        if not self.conn_id:
            raise ValueError("a connection needs a conn_id")
        if not _SCHEME_RE.fullmatch(self.conn_type):
            raise ValueError(
                "the connection type must start with a letter and hold only letters, "
                "digits and '+ . - _'"
            )
        for name in ("conn_id", "host", "login", "schema"):
            value = getattr(self, name)
            if value is not None and _CONTROL_RE.search(value):
                raise ValueError(f"the connection's {name} holds a control character")
        if self.port is not None and (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not 1 <= self.port <= 65535
        ):
            raise ValueError("the connection's port must be a whole number from 1 to 65535")
        _check_extra(self.extra)

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """The extra as a dict (empty when there is none)."""
        if not self.extra:
            return {}
        value: dict[str, Any] = json.loads(self.extra)
        return value

    @classmethod
    def from_uri(cls, conn_id: str, uri: str) -> Connection:
        """The connection a URI in Airflow's format describes (see the module docstring).

        Raises ValueError saying what is wrong; the message never quotes the URI.
        """
        if not isinstance(uri, str):
            raise ValueError(f"a connection URI must be text, not {type(uri).__name__}")
        scheme, sep, rest = uri.partition("://")
        if not sep or not scheme:
            raise ValueError("a connection URI starts with its type: TYPE://LOGIN:PASSWORD@HOST...")
        if not _SCHEME_RE.fullmatch(scheme):
            raise ValueError(
                "the type of a connection URI (before '://') must start with a letter and "
                "hold only letters, digits and '+ . - _'"
            )
        if _CONTROL_RE.search(uri):
            # urlsplit would silently drop tabs and newlines; refuse rather than guess.
            raise ValueError("a connection URI holds no control characters; percent-encode them")
        protocol = None
        if "://" in rest:
            protocol, _, rest = rest.partition("://")
            if not _PROTOCOL_RE.fullmatch(protocol):
                raise ValueError(
                    "a connection URI has one '://' after its type, and another only before "
                    "a host's own protocol; percent-encode ':' and '/' in a login or password"
                )
        try:
            parts = urlsplit("//" + rest)
        except ValueError:  # urlsplit's only complaint: an IPv6 host with unmatched brackets
            raise ValueError(
                "the host of the connection URI opens '[' and never closes it, or the other way"
            ) from None
        if parts.fragment or rest.endswith("#"):
            raise ValueError(
                "a connection URI has no '#' part; percent-encode '#' in a password as %23"
            )
        userinfo, at, hostport = parts.netloc.rpartition("@")
        login = password = None
        if at:
            login_text, colon, password_text = userinfo.partition(":")
            login = _decode(login_text, "login") or None
            password = _decode(password_text, "password") if colon else None
        host_text, port = _split_port(hostport)
        host = _decode(host_text, "host") or None
        if protocol is not None:
            host = f"{protocol}://{host or ''}"
        schema = _decode(parts.path[1:], "schema") or None
        extra = None
        if parts.query:
            try:
                query = dict(parse_qsl(parts.query, keep_blank_values=True, errors="strict"))
            except (UnicodeDecodeError, ValueError):
                raise ValueError(
                    "the query of the connection URI is not UTF-8 once percent-decoded"
                ) from None
            extra = query[EXTRA_KEY] if EXTRA_KEY in query else json.dumps(query)
        return cls(
            conn_id=conn_id,
            conn_type=_normalise_type(scheme),
            host=host,
            login=login,
            password=password,
            schema=schema,
            port=port,
            extra=extra,
        )

    def get_uri(self) -> str:
        """This connection as a URI in Airflow's format; :meth:`from_uri` reads it back."""
        uri = self.conn_type.lower().replace("_", "-") + "://"
        host = self.host
        if host and "://" in host:
            protocol, _, host = host.partition("://")
            uri += protocol + "://"
        authority = ""
        if self.login is not None:
            authority += quote(self.login, safe="")
        if self.password is not None:
            authority += ":" + quote(self.password, safe="")
        if authority:
            uri += authority + "@"
        host_block = quote(host, safe="") if host else ""
        if self.port:
            # "@:PORT" when there is neither login nor host, so the port is not read as one.
            host_block += f":{self.port}" if host_block or authority else f"@:{self.port}"
        if self.schema:
            host_block += "/" + quote(self.schema, safe="")
        uri += host_block
        if self.extra:
            extra = self.extra_dejson
            query = None
            if all(isinstance(v, str) for v in extra.values()):
                query = urlencode(extra)
                if dict(parse_qsl(query, keep_blank_values=True)) != extra:
                    query = None
            if query is None or EXTRA_KEY in extra:
                query = urlencode({EXTRA_KEY: self.extra})
            if query:
                uri += ("?" if self.schema else "/?") + query
        return uri

    def to_dict(self) -> dict[str, Any]:
        """Every field, as JSON-ready values (for the wire; it holds the password)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Connection:
        """The connection :meth:`to_dict` made; ValueError for anything else."""
        if not isinstance(data, dict):
            raise ValueError(f"a connection must be a JSON object, not {type(data).__name__}")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown connection fields: {', '.join(map(str, unknown))}")
        for required in ("conn_id", "conn_type"):
            if not isinstance(data.get(required), str):
                raise ValueError(f"a connection needs {required} (text)")
        return cls(**data)


def _split_port(hostport: str) -> tuple[str, int | None]:
    """``(host, port)`` of the part after ``@``; an IPv6 host is in brackets."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError("the host of the connection URI opens '[' and never closes it")
        host, after = hostport[1:end], hostport[end + 1 :]
        if after and not after.startswith(":"):
            raise ValueError("a connection URI's bracketed host is followed by ':PORT' or nothing")
        port_text = after[1:] if after else ""
    else:
        host, colon, port_text = hostport.rpartition(":")
        if not colon:
            host, port_text = hostport, ""
    if not port_text:
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(
            "the port of the connection URI must be a number from 1 to 65535 "
            "(percent-encode ':' in a host or password)"
        )
    return host, int(port_text)
