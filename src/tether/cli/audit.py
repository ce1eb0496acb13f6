"""``tether audit``: read the hub's audit log (``GET /api/v1/audit``).

Filters go to the hub as they are typed, so the hub's one rule for them
applies and a bad value comes back as its reason.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tether.cli.rest import Api, out


def audit_list(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    for key in ("since", "actor", "action", "before_id"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    page = Api(args.hub).get("/audit", params=params)
    if args.json:
        out(json.dumps(page, indent=2))
        return 0
    out(f"{'time':32} {'actor':24} {'action':24} {'target':32} {'address':15} details")
    for e in page["entries"]:
        details = json.dumps(e["details"], separators=(",", ":")) if e["details"] else ""
        out(
            f"{e['at']:32} {e['actor']:24} {e['action']:24} {e['target'] or '-':32} "
            f"{e['address'] or '-':15} {details}".rstrip()
        )
    if page["next_before_id"] is not None:
        out(f"more: --before-id {page['next_before_id']}")
    return 0
