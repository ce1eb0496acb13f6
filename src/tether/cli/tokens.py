"""``tether tokens ...``: named API tokens with a role, through the hub's REST API.

The name, role and expiry go to the hub as typed, so its one rule for them
applies and a bad value comes back with its reason. A new token is printed
once, on standard output (the note about it goes to standard error, so
``TOKEN=$(tether tokens create ...)`` keeps just the token); the hub keeps
only its hash and can never show it again.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tether.cli.rest import Api, api_path, out


def tokens_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "role": args.role}
    if args.expires is not None:
        body["expires"] = args.expires
    answer = Api(args.hub).post("/tokens", body)
    out(answer["token"])
    expiry = f"expires {answer['expires_at']}" if answer["expires_at"] else "never expires"
    sys.stderr.write(
        f"API token {answer['name']!r} with the {answer['role']} role ({expiry}). "
        "It is shown only once: the hub keeps only its hash. Give it as TETHER_TOKEN.\n"
    )
    return 0


def tokens_list(args: argparse.Namespace) -> int:
    tokens = Api(args.hub).get("/tokens")["tokens"]
    if args.json:
        out(json.dumps(tokens, indent=2))
        return 0
    out(
        f"{'name':24} {'role':9} {'state':8} {'created':33} {'expires':33} {'revoked':33} last used"
    )
    for t in tokens:
        created = t["created_at"] or ("(built in)" if t["builtin"] else "-")
        out(
            f"{t['name']:24} {t['role']:9} {t['state']:8} {created:33} "
            f"{t['expires_at'] or 'never':33} {t['revoked_at'] or '-':33} "
            f"{t['last_used_at'] or '-'}"
        )
    return 0


def tokens_revoke(args: argparse.Namespace) -> int:
    answer = Api(args.hub).post(api_path("tokens", args.name, "revoke"), {})
    out(f"API token {answer['name']}: {answer['state']}")
    return 0
