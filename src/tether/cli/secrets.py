"""``tether connections|variables|secrets ...``: secrets kept on the hub, through its REST API.

A listing never prints a password, an extra or a secret value; ``get --reveal``
prints one (the hub audits it). A value or URI given as ``-`` is read from
standard input, so it stays out of the shell's history and the process list.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tether.cli.rest import Api, api_path, out


def _from_stdin(value: str) -> str:
    """``value``, or standard input (one trailing newline dropped) when it is ``-``."""
    if value != "-":
        return value
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


def _queues(text: str | None) -> list[str]:
    return [q.strip() for q in (text or "").split(",") if q.strip()]


def _queues_text(queues: list[str]) -> str:
    return ",".join(queues) or "(every queue)"


def connections_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "conn_id": args.name,
        "uri": _from_stdin(args.uri),
        "queues": _queues(args.queues),
        "description": args.description,
        "replace": args.replace,
    }
    if args.extra is not None:
        body["extra"] = args.extra  # the hub checks it is a JSON object
    answer = Api(args.hub).post("/connections", body)
    out(f"connection {answer['conn_id']}: {answer['state']}")
    return 0


def connections_list(args: argparse.Namespace) -> int:
    connections = Api(args.hub).get("/connections")["connections"]
    if args.json:
        out(json.dumps(connections, indent=2))
        return 0
    out(f"{'conn_id':30} {'type':16} {'host':30} {'queues':24} description")
    for c in connections:
        out(
            f"{c['conn_id']:30} {c['conn_type']:16} {c['host'] or '-':30} "
            f"{_queues_text(c['queues']):24} {c['description'] or ''}"
        )
    return 0


def connections_get(args: argparse.Namespace) -> int:
    params = {"reveal": "true"} if args.reveal else {}
    conn = Api(args.hub).get(api_path("connections", args.name), params=params)
    if args.json:
        out(json.dumps(conn, indent=2))
        return 0
    for field in ("conn_id", "conn_type", "host", "port", "login", "schema"):
        out(f"{field + ':':13} {conn[field] if conn[field] is not None else '-'}")
    if args.reveal:
        out(f"{'password:':13} {conn['password'] if conn['password'] is not None else '-'}")
    else:
        out(f"{'password:':13} {'(set; --reveal shows it)' if conn['has_password'] else '-'}")
    out(f"{'extra:':13} {json.dumps(conn['extra']) if conn['extra'] is not None else '-'}")
    out(f"{'queues:':13} {_queues_text(conn['queues'])}")
    out(f"{'description:':13} {conn['description'] or '-'}")
    if args.reveal:
        out(f"{'uri:':13} {conn['uri']}")
    return 0


def connections_delete(args: argparse.Namespace) -> int:
    Api(args.hub).request("DELETE", api_path("connections", args.name))
    out(f"connection {args.name} deleted")
    return 0


def variables_set(args: argparse.Namespace) -> int:
    body = {
        "value": _from_stdin(args.value),
        "is_secret": args.secret,
        "queues": _queues(args.queues),
        "description": args.description,
    }
    answer = Api(args.hub).request("PUT", api_path("variables", args.name), json=body).json()
    out(f"variable {answer['key']}: {answer['state']}")
    return 0


def variables_list(args: argparse.Namespace) -> int:
    variables = Api(args.hub).get("/variables")["variables"]
    if args.json:
        out(json.dumps(variables, indent=2))
        return 0
    out(f"{'key':40} {'secret':6} {'queues':24} description")
    for v in variables:
        out(
            f"{v['key']:40} {'yes' if v['is_secret'] else 'no':6} "
            f"{_queues_text(v['queues']):24} {v['description'] or ''}"
        )
    return 0


def variables_get(args: argparse.Namespace) -> int:
    params = {"reveal": "true"} if args.reveal else {}
    variable = Api(args.hub).get(api_path("variables", args.name), params=params)
    if args.json:
        out(json.dumps(variable, indent=2))
    elif "value" in variable:
        out(variable["value"])
    else:
        out(f"variable {args.name} is secret; --reveal shows its value")
        return 1
    return 0


def variables_delete(args: argparse.Namespace) -> int:
    Api(args.hub).request("DELETE", api_path("variables", args.name))
    out(f"variable {args.name} deleted")
    return 0


def secrets_rotate_key(args: argparse.Namespace) -> int:
    answer = Api(args.hub).post("/secrets/rotate-key", {})
    out(
        f"re-encrypted {answer['connections']} connection(s) and "
        f"{answer['variables']} variable(s): {answer['message']}"
    )
    return 0


def add_secrets_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    client_args: Any,
    lazy: Any,
) -> None:
    """``connections``, ``variables`` and ``secrets`` under the ``tether`` command."""

    def command(parent: Any, name: str, text: str, fn: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, help=text)
        client_args(sp)
        sp.set_defaults(func=lazy("tether.cli.secrets", fn))
        return sp

    conns = sub.add_parser("connections", help="connections kept (encrypted) on the hub")
    actions = conns.add_subparsers(dest="connections", required=True)
    sp = command(actions, "add", "store a connection", "connections_add")
    sp.add_argument("name")
    sp.add_argument(
        "--uri",
        required=True,
        help="Airflow-style URI, TYPE://LOGIN:PASSWORD@HOST:PORT/SCHEMA?EXTRA (- reads stdin)",
    )
    sp.add_argument("--extra", help="JSON object of extra fields (replaces the URI's)")
    sp.add_argument("--queues", help="comma-separated queues whose tasks may read it (default all)")
    sp.add_argument("--description")
    sp.add_argument("--replace", action="store_true", help="replace a connection of that name")
    sp = command(actions, "list", "connections, without secrets", "connections_list")
    sp.add_argument("--json", action="store_true")
    sp = command(actions, "get", "a connection's fields", "connections_get")
    sp.add_argument("name")
    sp.add_argument("--reveal", action="store_true", help="show the password and URI (audited)")
    sp.add_argument("--json", action="store_true")
    sp = command(actions, "delete", "delete a connection", "connections_delete")
    sp.add_argument("name")

    variables = sub.add_parser("variables", help="variables kept (encrypted) on the hub")
    actions = variables.add_subparsers(dest="variables", required=True)
    sp = command(actions, "set", "create or replace a variable", "variables_set")
    sp.add_argument("name")
    sp.add_argument("value", help="the value (- reads stdin)")
    sp.add_argument("--secret", action="store_true", help="never shown back, masked in task logs")
    sp.add_argument("--queues", help="comma-separated queues whose tasks may read it (default all)")
    sp.add_argument("--description")
    sp = command(actions, "list", "variables, without values", "variables_list")
    sp.add_argument("--json", action="store_true")
    sp = command(actions, "get", "a variable's value", "variables_get")
    sp.add_argument("name")
    sp.add_argument("--reveal", action="store_true", help="show a secret variable (audited)")
    sp.add_argument("--json", action="store_true")
    sp = command(actions, "delete", "delete a variable", "variables_delete")
    sp.add_argument("name")

    keys = sub.add_parser("secrets", help="the key that encrypts connections and variables")
    actions = keys.add_subparsers(dest="secrets", required=True)
    command(
        actions,
        "rotate-key",
        "re-encrypt every connection and variable under a new key, while the hub serves",
        "secrets_rotate_key",
    )
