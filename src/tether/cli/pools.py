"""``tether pools ...``: slots that limit how many tasks of a kind run at once."""

from __future__ import annotations

import argparse
import json

from tether.cli.rest import Api, out


def _slots(value: int | None) -> str:
    if value is None:
        return "missing"
    return "unlimited" if value < 0 else str(value)


def pools_list(args: argparse.Namespace) -> int:
    pools = Api(args.hub).get("/pools")["pools"]
    if args.json:
        out(json.dumps(pools, indent=2))
        return 0
    out(f"{'pool':30} {'slots':>10} {'occupied':>9} {'running':>8} {'queued':>7}  description")
    for p in pools:
        out(
            f"{p['name']:30} {_slots(p['slots']):>10} {p['occupied_slots']:>9} "
            f"{p['running']:>8} {p['queued']:>7}  {p['description'] or ''}"
        )
    return 0


def pools_set(args: argparse.Namespace) -> int:
    body = {"slots": args.slots, "description": args.description}
    pool = Api(args.hub).request("PUT", f"/pools/{args.name}", json=body).json()
    out(f"pool {pool['name']}: {_slots(pool['slots'])} slots")
    return 0


def pools_delete(args: argparse.Namespace) -> int:
    Api(args.hub).request("DELETE", f"/pools/{args.name}")
    out(f"pool {args.name} deleted")
    return 0
