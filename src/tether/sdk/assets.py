"""Assets: named pieces of data that tasks update and DAGs wait for (data-aware scheduling).

A task lists the assets it updates in ``outlets=[...]``; each success of it
records an *asset event* on the hub. A DAG with ``schedule=[a, b]`` runs once
every asset in its list has had a new event since its last run. Airflow 3
calls them Assets (Airflow 2: Datasets); the meaning is the same.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tether.sdk.dag import DagDefinitionError

#: Longest asset URI (and name) the hub stores.
MAX_URI_LENGTH = 1500
# Printable ASCII without spaces: URIs are identifiers, compared byte for byte.
ASSET_URI_PATTERN = r"^[!-~]+$"
_URI_RE = re.compile(ASSET_URI_PATTERN)


def validate_asset_uri(uri: object) -> str:
    """``uri`` if it is a valid asset URI, else DagDefinitionError with the reason."""
    if not isinstance(uri, str):
        raise DagDefinitionError(f"an asset URI must be a string, not {uri!r}")
    if not uri:
        raise DagDefinitionError("an asset URI must not be empty")
    if len(uri) > MAX_URI_LENGTH:
        raise DagDefinitionError(
            f"asset URI {uri[:40]!r}... is {len(uri)} characters long; "
            f"the limit is {MAX_URI_LENGTH}"
        )
    if not _URI_RE.fullmatch(uri):
        raise DagDefinitionError(
            f"invalid asset URI {uri!r}: use printable ASCII without spaces, "
            "e.g. 's3://lake/ledger' or 'tether://ledger'"
        )
    return uri


@dataclass(frozen=True, init=False, eq=True, repr=False)
class Asset:
    """A piece of data identified by its URI, e.g. ``Asset("s3://lake/ledger")``.

    Two assets are the same when their URIs are equal; ``name`` (default: the
    URI) and ``extra`` (JSON, shown in the hub's asset list) are descriptive.
    """

    uri: str
    extra: dict[str, Any] = field(compare=False)
    name: str = field(compare=False)

    def __init__(
        self, uri: str, extra: dict[str, Any] | None = None, *, name: str | None = None
    ) -> None:
        validate_asset_uri(uri)
        if extra is None:
            extra = {}
        if not isinstance(extra, dict):
            raise DagDefinitionError(f"asset {uri!r}: extra must be a dict, not {extra!r}")
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as exc:
            raise DagDefinitionError(f"asset {uri!r}: extra must be JSON: {exc}") from None
        if name is None:
            name = uri
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_URI_LENGTH:
            raise DagDefinitionError(
                f"asset {uri!r}: name must be a non-empty string of at most "
                f"{MAX_URI_LENGTH} characters"
            )
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "extra", dict(extra))
        object.__setattr__(self, "name", name)

    def __repr__(self) -> str:
        if self.name == self.uri:
            return f"Asset({self.uri!r})"
        return f"Asset({self.uri!r}, name={self.name!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "name": self.name, "extra": self.extra}


def asset_list(value: object, what: str) -> list[Asset]:
    """One Asset or an iterable of Assets, as a list without repeats (first one wins)."""
    if isinstance(value, Asset):
        items: Iterable[object] = [value]
    elif isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
        raise DagDefinitionError(f"{what} must be an Asset or a list of Assets, not {value!r}")
    else:
        items = value
    out: dict[str, Asset] = {}
    for item in items:
        if not isinstance(item, Asset):
            raise DagDefinitionError(f"{what} must hold only Assets, not {item!r}")
        out.setdefault(item.uri, item)
    return list(out.values())
