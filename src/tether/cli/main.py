"""The ``tether`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from tether import __version__
from tether.cli.rest import CliError
from tether.cli.secrets import add_secrets_parsers
from tether.cli.worker import add_worker_parser

SUPPRESS_HELP = argparse.SUPPRESS

HUB_EXTRA_HINT = "this command needs the hub's dependencies: pip install 'tether[hub]'"
RUN_STATES = ["queued", "running", "success", "failed"]
RUN_TYPES = ["manual", "scheduled", "backfill", "asset_triggered"]
RUN_ID_HELP = "a run's id, the start of one only one run has, or latest (the newest run)"
HUB_MODULES = frozenset({"fastapi", "uvicorn", "sqlalchemy", "alembic", "croniter", "starlette"})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tether", description="Tether workflow orchestrator")
    p.add_argument("--version", action="version", version=f"tether {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def hub_args(sp: argparse.ArgumentParser, dags_default: str) -> None:
        sp.add_argument("--home", type=_path, help="hub home (default: $TETHER_HOME or ~/.tether)")
        sp.add_argument(
            "--dags",
            type=_path,
            help=f"DAGs folder (default: $TETHER_DAGS_FOLDER or {dags_default})",
        )
        sp.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        sp.add_argument("--port", type=int, help="port to listen on (default 8080)")

    sp = sub.add_parser("standalone", help="hub + one local worker + the example DAGs")
    hub_args(sp, "examples/dags")
    sp.add_argument("--queues", default="default", help="queues of the local worker")
    sp.add_argument("--concurrency", type=int, default=4, help="slots of the local worker")
    sp.set_defaults(func=_lazy("tether.cli.serve", "standalone_command"))

    sp = sub.add_parser("hub", help="run the hub (API, scheduler, dag processor)")
    hub_args(sp, "HOME/dags")
    sp.add_argument(
        "--tls-cert",
        type=_path,
        help="serve HTTPS with this PEM certificate chain (default: $TETHER_TLS_CERT)",
    )
    sp.add_argument(
        "--tls-key", type=_path, help="the certificate's PEM private key (default: $TETHER_TLS_KEY)"
    )
    sp.set_defaults(func=_lazy("tether.cli.serve", "hub_command"))

    add_worker_parser(sub)

    db = sub.add_parser("db", help="metadata store").add_subparsers(dest="db", required=True)
    sp = db.add_parser("migrate", help="create or upgrade the database schema")
    sp.add_argument("--home", type=_path)
    sp.set_defaults(func=_lazy("tether.cli.commands", "db_migrate"))
    sp = db.add_parser(
        "clean",
        help="delete finished runs older than a cutoff, with their tasks, logs and outputs",
        description="Delete runs that finished before now minus --older-than, with their "
        "task instances, attempts, logs and outputs, and bundles no DAG or run uses any more; "
        "and audit entries older than --audit-older-than (a year by default). "
        "Works on the database directly, in short batches, while the hub keeps serving.",
    )
    sp.add_argument(
        "--older-than", required=True, help="age of what to delete: 90s, 30m, 24h, 14d or seconds"
    )
    sp.add_argument(
        "--audit-older-than",
        default="365d",
        help="age of the audit entries to delete (default 365d); they are kept apart from runs",
    )
    sp.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    sp.add_argument(
        "--batch-size",
        type=int,
        default=200,
        help="runs deleted per transaction (default 200): smaller holds up the hub less",
    )
    sp.add_argument("--home", type=_path)
    sp.set_defaults(func=_lazy("tether.cli.commands", "db_clean"))

    dags = sub.add_parser("dags", help="DAGs on the hub").add_subparsers(dest="dags", required=True)

    def client_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--hub", help="hub URL (default: $TETHER_HUB_URL or http://127.0.0.1:8080)")

    sp = dags.add_parser("list", help="list DAGs")
    client_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.commands", "dags_list"))
    sp = dags.add_parser("show", help="a DAG: its tasks, and the files its bundle holds")
    sp.add_argument("dag_id")
    client_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.commands", "dags_show"))
    sp = dags.add_parser("errors", help="list DAG files that failed to import")
    client_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.commands", "dags_errors"))
    sp = dags.add_parser("trigger", help="start a run of a DAG")
    client_args(sp)
    sp.add_argument("dag_id")
    sp.add_argument("--conf", help="JSON object passed to the run")
    sp.add_argument("--run-id", help="the run's id (default: manual__<logical date>)")
    sp.add_argument(
        "--logical-date",
        help="the run's logical date, ISO 8601; without an offset it is UTC (default: now)",
    )
    sp.add_argument(
        "--wait", action="store_true", help="wait for the run; exit 0 only if it succeeded"
    )
    sp.add_argument("--timeout", type=float, default=None, help="give up waiting after S s")
    sp.set_defaults(func=_lazy("tether.cli.commands", "dags_trigger"))
    sp = dags.add_parser("backfill", help="run a DAG for the past intervals between two dates")
    client_args(sp)
    sp.add_argument("dag_id")
    sp.add_argument(
        "--start", required=True, help="first logical date (ISO date or datetime; DAG's zone)"
    )
    sp.add_argument("--end", required=True, help="last logical date, included")
    sp.add_argument("--no-wait", action="store_true", help="create the runs and return")
    sp.add_argument("--timeout", type=float, default=None, help="give up waiting after S s")
    sp.add_argument("--interval", type=float, default=1.0, help=SUPPRESS_HELP)
    sp.set_defaults(func=_lazy("tether.cli.backfill", "dags_backfill"))
    for action, text in (
        ("pause", "stop scheduling a DAG (running and manual runs go on)"),
        ("unpause", "schedule a DAG again"),
    ):
        sp = dags.add_parser(action, help=text)
        client_args(sp)
        sp.add_argument("dag_id")
        sp.set_defaults(func=_lazy("tether.cli.commands", f"dags_{action}"))
    sp = dags.add_parser("runs", help="list a DAG's runs, newest first")
    client_args(sp)
    sp.add_argument("dag_id")
    sp.add_argument("--state", choices=RUN_STATES, help="only runs in this state")
    sp.add_argument("--type", dest="run_type", choices=RUN_TYPES, help="only runs of this type")
    sp.add_argument("--limit", type=int, default=25, help="at most this many (default 25)")
    sp.add_argument("--offset", type=int, default=0, help="skip the newest N")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.commands", "dags_runs"))

    runs = sub.add_parser("runs", help="one run of a DAG").add_subparsers(
        dest="runs", required=True
    )
    sp = runs.add_parser("show", help="a run and the state of each of its tasks")
    client_args(sp)
    sp.add_argument("dag_id")
    sp.add_argument("run_id", help=RUN_ID_HELP)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.commands", "runs_show"))
    sp = runs.add_parser(
        "mark",
        help="set a run success or failed with its unfinished tasks (running ones are killed)",
    )
    client_args(sp)
    sp.add_argument("dag_id")
    sp.add_argument("run_id", help=RUN_ID_HELP)
    sp.add_argument("state", choices=["success", "failed"])
    sp.set_defaults(func=_lazy("tether.cli.commands", "runs_mark"))
    sp = runs.add_parser("clear", help="run a run's tasks again")
    client_args(sp)
    sp.add_argument("dag_id")
    sp.add_argument("run_id", help=RUN_ID_HELP)
    sp.add_argument(
        "--only-failed", action="store_true", help="only failed and upstream_failed tasks"
    )
    sp.set_defaults(func=_lazy("tether.cli.commands", "runs_clear"))

    tasks = sub.add_parser("tasks", help="one task of a run").add_subparsers(
        dest="tasks", required=True
    )
    sp = tasks.add_parser(
        "logs",
        help="a try's log (the latest by default); --follow prints it as it grows",
        description="Print the log of one try of a task. With --follow, print new output as "
        "it arrives and exit when the try ends: 0 if it succeeded, 1 otherwise (its state "
        "on stderr).",
    )
    client_args(sp)
    sp.add_argument("dag_id")
    sp.add_argument("run_id", help=RUN_ID_HELP)
    sp.add_argument("task_id")
    sp.add_argument("--try", dest="try_number", type=int, help="this try (default: the latest)")
    sp.add_argument("--map-index", type=int, help="one instance of a mapped task")
    sp.add_argument(
        "--follow", "-f", action="store_true", help="print new output until the try ends"
    )
    sp.set_defaults(func=_lazy("tether.cli.logs", "tasks_logs"))
    sp = tasks.add_parser(
        "mark", help="set a task success or failed (a running one is killed); the run moves on"
    )
    client_args(sp)
    sp.add_argument("dag_id")
    sp.add_argument("run_id", help=RUN_ID_HELP)
    sp.add_argument("task_id")
    sp.add_argument("state", choices=["success", "failed"])
    sp.add_argument(
        "--map-index", type=int, help="one instance of a mapped task (default: every one)"
    )
    sp.set_defaults(func=_lazy("tether.cli.commands", "tasks_mark"))
    sp = tasks.add_parser("clear", help="run a task again (a running one is killed)")
    client_args(sp)
    sp.add_argument("dag_id")
    sp.add_argument("run_id", help=RUN_ID_HELP)
    sp.add_argument("task_id")
    sp.add_argument("--downstream", action="store_true", help="and every task downstream of it")
    sp.set_defaults(func=_lazy("tether.cli.commands", "tasks_clear"))

    assets = sub.add_parser("assets", help="assets and their events").add_subparsers(
        dest="assets", required=True
    )
    sp = assets.add_parser("list", help="list assets, the DAGs that use them, their last event")
    client_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.commands", "assets_list"))
    sp = assets.add_parser("events", help="list the newest asset events")
    client_args(sp)
    sp.add_argument("uri", nargs="?", help="only this asset's events")
    sp.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.commands", "assets_events"))
    sp = assets.add_parser(
        "emit", help="record an event of an asset; the DAGs waiting on it may start"
    )
    client_args(sp)
    sp.add_argument("uri")
    sp.add_argument("--extra", help="JSON object stored with the event")
    sp.set_defaults(func=_lazy("tether.cli.commands", "assets_emit"))
    workers = sub.add_parser("workers", help="edge workers, from the centre").add_subparsers(
        dest="workers", required=True
    )
    sp = workers.add_parser("list", help="list workers")
    client_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.commands", "workers_list"))
    token = workers.add_parser("token", help="enrolment tokens").add_subparsers(
        dest="token", required=True
    )
    sp = token.add_parser("create", help="a one-time token for a new worker")
    client_args(sp)
    sp.add_argument("--queues", required=True, help="comma-separated queues it may serve")
    sp.add_argument("--name", help="the worker's name (default: generated)")
    sp.add_argument("--expires", default="24h", help="token lifetime: 30m, 24h, 7d (default 24h)")
    sp.add_argument(
        "--replace",
        action="store_true",
        help="the name may be an existing worker's: spending the token gives it a new "
        "credential and voids the old one (re-enrolment after a revoke or a lost disk)",
    )
    sp.set_defaults(func=_lazy("tether.cli.commands", "workers_token_create"))
    sp = token.add_parser("list", help="enrolment tokens and their state (no secrets)")
    client_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.commands", "workers_token_list"))
    sp = token.add_parser("revoke", help="revoke an unspent enrolment token")
    client_args(sp)
    sp.add_argument("id", help="the token's id (tether workers token list)")
    sp.set_defaults(func=_lazy("tether.cli.commands", "workers_token_revoke"))
    for action, text in (
        ("revoke", "revoke a worker's credential: its next request gets 401"),
        ("shutdown", "ask a worker to drain and exit"),
        ("remove", "revoke a worker and forget it (its running tasks fail or retry)"),
    ):
        sp = workers.add_parser(action, help=text)
        client_args(sp)
        sp.add_argument("name")
        sp.set_defaults(func=_lazy("tether.cli.commands", f"workers_{action}"))
    sp = workers.add_parser(
        "update",
        help="ask a worker (or every live worker of a queue) to move to the hub's version",
        description="The worker drains, installs the hub's wheel into its own environment "
        "and exits 5 for its service manager to start the new version; a failed install "
        "leaves the old version running and shows why in `tether workers list`.",
    )
    client_args(sp)
    target = sp.add_mutually_exclusive_group(required=True)
    target.add_argument("name", nargs="?", help="the worker")
    target.add_argument("--queue", help="every live worker serving this queue")
    sp.set_defaults(func=_lazy("tether.cli.commands", "workers_update"))
    sp = workers.add_parser(
        "logs",
        help="a worker's own log (not its tasks'), as it shipped it to the hub",
        description="Print the newest lines of the worker's own log: what it writes to "
        "its stderr, secrets masked. With --follow, print new lines as they come until "
        "interrupted.",
    )
    client_args(sp)
    sp.add_argument("name")
    sp.add_argument(
        "--lines", "-n", type=int, default=200, help="how many of the newest lines (default 200)"
    )
    sp.add_argument("--follow", "-f", action="store_true", help="print new lines as they come")
    sp.set_defaults(func=_lazy("tether.cli.logs", "workers_logs"))
    sp = workers.add_parser("maintenance", help="put a worker in maintenance, or take it out")
    client_args(sp)
    sp.add_argument("name")
    sp.add_argument("mode", choices=["on", "off"])
    sp.add_argument("--comment", help="why; shown in the worker list")
    sp.set_defaults(func=_lazy("tether.cli.commands", "workers_maintenance"))

    sp = sub.add_parser(
        "audit",
        help="the audit log: who changed what, when, from where (newest first)",
        description="Entries of the hub's audit log, newest first: admin actions, "
        "enrolments, credential changes and secrets handed to tasks.",
    )
    client_args(sp)
    sp.add_argument("--since", help="only entries this recent: 30m, 12h, 1d, or an ISO time")
    sp.add_argument("--actor", help="only this actor: admin, worker:NAME, ...")
    sp.add_argument("--action", help="only actions starting with this: dag.trigger, worker., ...")
    sp.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    sp.add_argument("--before-id", type=int, help="only entries older than this id (paging)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.audit", "audit_list"))

    pools = sub.add_parser("pools", help="pools: slots shared by the tasks that name them")
    pool_actions = pools.add_subparsers(dest="pools", required=True)
    sp = pool_actions.add_parser("list", help="pools, their slots and use")
    client_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.pools", "pools_list"))
    sp = pool_actions.add_parser("set", help="create a pool or change its slots")
    client_args(sp)
    sp.add_argument("name")
    sp.add_argument("slots", type=int, help="number of slots; -1 for unlimited")
    sp.add_argument("--description")
    sp.set_defaults(func=_lazy("tether.cli.pools", "pools_set"))
    sp = pool_actions.add_parser("delete", help="delete a pool (its waiting tasks wait for it)")
    client_args(sp)
    sp.add_argument("name")
    sp.set_defaults(func=_lazy("tether.cli.pools", "pools_delete"))

    tokens = sub.add_parser(
        "tokens",
        help="named API tokens with a role (viewer, operator, admin)",
        description="Named API tokens for the REST API and the CLI, each with a role: "
        "viewer (reads), operator (also triggers, clears, marks, pauses, backfills, "
        "worker maintenance) or admin (everything). Managing them needs the admin role.",
    )
    token_actions = tokens.add_subparsers(dest="tokens", required=True)
    sp = token_actions.add_parser("create", help="a new token; printed once, never again")
    client_args(sp)
    sp.add_argument("name", help="1 to 100 letters, digits, '.', '_', '-', '@'")
    sp.add_argument("--role", required=True, help="viewer, operator or admin")
    sp.add_argument("--expires", help="lifetime: 12h, 30d, 8w, 1y (default: never expires)")
    sp.set_defaults(func=_lazy("tether.cli.tokens", "tokens_create"))
    sp = token_actions.add_parser("list", help="tokens, roles and states (never a token)")
    client_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_lazy("tether.cli.tokens", "tokens_list"))
    sp = token_actions.add_parser("revoke", help="revoke a token: its next request gets 401")
    client_args(sp)
    sp.add_argument("name")
    sp.set_defaults(func=_lazy("tether.cli.tokens", "tokens_revoke"))

    add_secrets_parsers(sub, client_args, _lazy)
    return p


def _path(value: str) -> object:
    from pathlib import Path

    return Path(value)


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """Import a command's module only when it runs (the worker install lacks hub deps)."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        try:
            fn: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
            return fn(args)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in HUB_MODULES:
                raise CliError(f"{HUB_EXTRA_HINT} ({exc.name} is missing)") from None
            raise

    return run


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from tether.cli.serve import setup_logging

    setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except CliError as exc:
        sys.stderr.write(f"tether: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
