"""The read side of the console's catalog pages: pools, assets, connections,
variables and the audit log (``hub/ui/catalog.py``).

Each read is the REST API's own (``limits.list_pools``,
``queries.list_assets``, ``vault.list_connections``, ``audit.list_entries``),
so a page shows what a viewer may read through the API and nothing more.
Connections and variables are read from the columns that hold no secret:
nothing is decrypted, so no password, extra or value can reach a page.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

from tether.hub.core import audit, limits, queries, vault

#: Asset events the assets page lists, newest first.
RECENT_EVENTS = 50
#: Audit entries per page.
AUDIT_PAGE = 50
#: What an audit filter may be (as ``GET /api/v1/audit`` has them).
AUDIT_ACTOR = re.compile(r"[^\x00-\x1f\x7f]{1,300}")
AUDIT_ACTION = re.compile(r"[a-z0-9_.]{1,100}")


def pools(session: Session) -> list[dict[str, Any]]:
    """Every pool with its slots and use, and pools tasks name that nobody made."""
    listed = limits.list_pools(session)
    for pool in listed:
        slots = pool["slots"]
        pool["unlimited"] = slots is not None and slots < 0
        pool["open_slots"] = (
            None if slots is None or slots < 0 else max(0, slots - pool["occupied_slots"])
        )
    return listed


def assets(session: Session) -> dict[str, Any]:
    """Every asset with the tasks that produce it and the DAGs it schedules, and the
    newest events of all of them."""
    return {
        "assets": queries.list_assets(session),
        "events": queries.list_asset_events(session, None, RECENT_EVENTS),
    }


def connections(session: Session) -> list[dict[str, Any]]:
    """Each connection's name, type, the queues it is limited to and description."""
    return [
        {k: c[k] for k in ("conn_id", "conn_type", "queues", "description")}
        for c in vault.list_connections(session)
    ]


def variables(session: Session) -> list[dict[str, Any]]:
    """Each variable's name, whether it is secret, its queues and description."""
    return [
        {k: v[k] for k in ("key", "is_secret", "queues", "description")}
        for v in vault.list_variables(session)
    ]


def audit_filter_error(actor: str | None, action: str | None) -> str | None:
    """Why an audit filter cannot be applied, if it cannot (the page says so)."""
    if actor is not None and not AUDIT_ACTOR.fullmatch(actor):
        return "An actor is 1 to 300 characters, none of them a control character."
    if action is not None and not AUDIT_ACTION.fullmatch(action):
        return (
            "An action is a prefix of 1 to 100 lowercase letters, digits, '_' and '.' "
            "(worker. finds every worker action)."
        )
    return None


def audit_page(
    session: Session, actor: str | None, action: str | None, before_id: int | None
) -> dict[str, Any]:
    """One page of the audit log, newest first, filtered as the REST API filters it."""
    return audit.list_entries(
        session, actor=actor, action=action, limit=AUDIT_PAGE, before_id=before_id
    )
