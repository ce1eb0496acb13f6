"""``tether dags|runs|tasks|assets|workers ...``: thin clients of the hub's REST API;
``tether db ...``: the hub's database, directly."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tether.cli.rest import Api, CliError, api_path, hub_config, out
from tether.cli.run_ids import resolve_run_id

FINISHED_RUN_STATES = ("success", "failed")
#: Task states whose latest try's error ``runs show`` prints.
ERROR_STATES = ("failed", "up_for_retry")
#: Longest error excerpt ``runs show`` prints (the whole is in --json and the log).
MAX_ERROR_EXCERPT = 200
log = logging.getLogger("tether.cli")


def dags_list(args: argparse.Namespace) -> int:
    dags = Api(args.hub).get("/dags")["dags"]
    if args.json:
        out(json.dumps(dags, indent=2))
        return 0
    out(f"{'dag_id':40} {'schedule':16} {'paused':6} queues")
    for d in dags:
        broken = "  BROKEN: its file fails to import (see dags errors)" if d["import_error"] else ""
        out(
            f"{d['dag_id']:40} {_schedule_text(d['schedule']):16} {str(d['is_paused']):6} "
            f"{','.join(d['queues'])}{broken}"
        )
    return 0


def dags_show(args: argparse.Namespace) -> int:
    dag = Api(args.hub).get(api_path("dags", args.dag_id))
    if args.json:
        out(json.dumps(dag, indent=2))
        return 0
    out(f"dag_id:   {dag['dag_id']}")
    out(f"file:     {dag['fileloc']}")
    out(f"schedule: {_schedule_text(dag['schedule'])}")
    out(f"paused:   {dag['is_paused']}")
    out(f"queues:   {','.join(dag['queues'])}")
    out(f"bundle:   {dag['bundle_sha']}")
    if dag["import_error"]:
        out("BROKEN:   its file fails to import; runs use the last version that parsed:")
        out("  " + dag["import_error"].rstrip().replace("\n", "\n  "))
    out("tasks:")
    for task in dag["tasks"]:
        declared = [*task.get("connections", []), *task.get("variables", [])]
        uses = f"  uses {','.join(declared)}" if declared else ""
        out(f"  {task['task_id']:38} queue={task['queue']}{uses}")
    if dag["files"] is None:
        out("files:    (not recorded for this bundle; made by an older hub)")
    else:
        out(f"files:    {len(dag['files'])} (what a worker receives for this DAG)")
        for f in dag["files"]:
            out(f"  {f['size']:>10}  {f['name']}")
    return 0


def _schedule_text(schedule: object) -> str:
    if isinstance(schedule, dict):
        return "assets:" + ",".join(schedule.get("assets", []))
    return "-" if schedule is None else str(schedule)


def dags_errors(args: argparse.Namespace) -> int:
    errors = Api(args.hub).get("/import-errors")["import_errors"]
    if args.json:
        out(json.dumps(errors, indent=2))
        return 0
    if not errors:
        out("no import errors")
    for e in errors:
        out(f"== {e['fileloc']} ({e['timestamp']})\n{e['message'].rstrip()}\n")
    return 0


def dags_trigger(args: argparse.Namespace) -> int:
    conf = _json_object(args.conf, "--conf")
    body: dict[str, Any] = {"conf": conf}
    if args.run_id is not None:
        body["run_id"] = args.run_id
    if args.logical_date is not None:
        body["logical_date"] = args.logical_date  # the hub checks it (and says why not)
    api = Api(args.hub)
    run_id = api.post(api_path("dags", args.dag_id, "runs"), body)["run_id"]
    out(f"triggered {args.dag_id} run {run_id}")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    delay = 0.1
    while True:
        run = api.get(api_path("dags", args.dag_id, "runs", run_id))
        if run["state"] in FINISHED_RUN_STATES:
            break
        if deadline is not None and time.monotonic() > deadline:
            out(f"run {run_id} still {run['state']} after {args.timeout}s")
            return 2
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    _print_tasks(run)
    out(f"run {run_id}: {run['state']}")
    return 0 if run["state"] == "success" else 1


def _print_tasks(run: dict[str, Any]) -> None:
    """Each task's state, try and worker; under a failed task or one waiting to
    retry, why its latest try ended and when the next one is due."""
    for t in run["tasks"]:
        name = t["task_id"] if t.get("map_index", -1) < 0 else f"{t['task_id']}[{t['map_index']}]"
        out(f"  {name:40} {t['state'] or 'none':16} try {t['try_number']} on {t['worker'] or '-'}")
        if t["state"] not in ERROR_STATES:
            continue
        if t.get("error"):
            out(f"      error: {_excerpt(t['error'])}")
        if t.get("next_retry_at"):
            out(f"      next try at {t['next_retry_at']}{_from_now(t['next_retry_at'])}")


def _excerpt(error: str) -> str:
    """The first line of an error that says something, cut to a length a terminal shows."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return "(empty)"
    first = lines[0]
    if len(first) > MAX_ERROR_EXCERPT:
        return first[:MAX_ERROR_EXCERPT] + " ..."
    return first + (" ..." if len(lines) > 1 else "")


def _from_now(iso: str) -> str:
    from datetime import UTC, datetime

    try:
        seconds = (datetime.fromisoformat(iso) - datetime.now(UTC)).total_seconds()
    except (ValueError, TypeError):
        return ""
    return f" (in {seconds:.0f} s)" if seconds >= 0 else " (due now)"


def dags_pause(args: argparse.Namespace) -> int:
    Api(args.hub).patch(api_path("dags", args.dag_id), {"is_paused": True})
    out(f"DAG {args.dag_id} paused")
    return 0


def dags_unpause(args: argparse.Namespace) -> int:
    Api(args.hub).patch(api_path("dags", args.dag_id), {"is_paused": False})
    out(f"DAG {args.dag_id} unpaused")
    return 0


def dags_runs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit, "offset": args.offset}
    if args.state:
        params["state"] = args.state
    if args.run_type:
        params["run_type"] = args.run_type
    page = Api(args.hub).get(api_path("dags", args.dag_id, "runs"), params=params)
    if args.json:
        out(json.dumps(page, indent=2))
        return 0
    out(f"{'run_id':48} {'state':8} {'type':9} {'logical_date':32} {'started_at':32} ended_at")
    for r in page["dag_runs"]:
        out(
            f"{r['run_id']:48} {r['state']:8} {r['run_type']:9} {r['logical_date'] or '-':32} "
            f"{r['started_at'] or '-':32} {r['ended_at'] or '-'}"
        )
    shown = len(page["dag_runs"])
    out(f"{shown} of {page['total_entries']} run(s)" + (" (--offset for more)" if shown else ""))
    return 0


def runs_show(args: argparse.Namespace) -> int:
    api = Api(args.hub)
    run_id = resolve_run_id(api, args.dag_id, args.run_id)
    run = api.get(api_path("dags", args.dag_id, "runs", run_id))
    if args.json:
        out(json.dumps(run, indent=2))
        return 0
    out(
        f"run {run['run_id']} of {run['dag_id']}: {run['state']} ({run['run_type']}, "
        f"started {run['started_at'] or '-'}, ended {run['ended_at'] or '-'})"
    )
    _print_tasks(run)
    return 0


def runs_mark(args: argparse.Namespace) -> int:
    api = Api(args.hub)
    run_id = resolve_run_id(api, args.dag_id, args.run_id)
    api.patch(api_path("dags", args.dag_id, "runs", run_id), {"state": args.state})
    out(f"run {run_id} of {args.dag_id} marked {args.state}")
    return 0


def runs_clear(args: argparse.Namespace) -> int:
    api = Api(args.hub)
    run_id = resolve_run_id(api, args.dag_id, args.run_id)
    answer = api.post(
        api_path("dags", args.dag_id, "runs", run_id, "clear"), {"only_failed": args.only_failed}
    )
    _print_cleared(answer["cleared"], run_id)
    return 0


def tasks_mark(args: argparse.Namespace) -> int:
    api = Api(args.hub)
    run_id = resolve_run_id(api, args.dag_id, args.run_id)
    path = api_path("dags", args.dag_id, "runs", run_id, "tasks", args.task_id)
    body: dict[str, object] = {"state": args.state}
    if args.map_index is not None:
        body["map_index"] = args.map_index
    indexes = api.patch(path, body)["map_indexes"]
    which = "" if indexes == [-1] else f" (map index {', '.join(map(str, indexes))})"
    out(f"task {args.task_id}{which} of run {run_id} marked {args.state}")
    return 0


def tasks_clear(args: argparse.Namespace) -> int:
    api = Api(args.hub)
    run_id = resolve_run_id(api, args.dag_id, args.run_id)
    path = api_path("dags", args.dag_id, "runs", run_id, "tasks", args.task_id, "clear")
    answer = api.post(path, {"downstream": args.downstream})
    _print_cleared(answer["cleared"], run_id)
    return 0


def _print_cleared(task_ids: list[str], run_id: str) -> None:
    if task_ids:
        out(f"cleared {len(task_ids)} task(s) of run {run_id}: {', '.join(task_ids)}")
    else:
        out(f"nothing to clear in run {run_id}")


def _json_object(text: str | None, flag: str) -> dict[str, object]:
    try:
        value = json.loads(text) if text else {}
    except ValueError as exc:
        raise CliError(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"{flag} must be a JSON object")
    return value


def assets_list(args: argparse.Namespace) -> int:
    assets = Api(args.hub).get("/assets")["assets"]
    if args.json:
        out(json.dumps(assets, indent=2))
        return 0
    out(f"{'uri':40} {'last event':33} {'consumers':30} producers")
    for a in assets:
        last = a["last_event"]["timestamp"] if a["last_event"] else "-"
        producers = ",".join(f"{p['dag_id']}.{p['task_id']}" for p in a["producers"])
        out(f"{a['uri']:40} {last:33} {','.join(a['consumers']) or '-':30} {producers or '-'}")
    return 0


def assets_events(args: argparse.Namespace) -> int:
    params: dict[str, object] = {"limit": args.limit}
    if args.uri:
        params["uri"] = args.uri
    events = Api(args.hub).get("/assets/events", params=params)["asset_events"]
    if args.json:
        out(json.dumps(events, indent=2))
        return 0
    for e in events:
        source = (
            f"{e['source_dag_id']}.{e['source_task_id']} run {e['source_run_id']}"
            if e["source_dag_id"]
            else "posted"
        )
        extra = json.dumps(e["extra"]) if e["extra"] else ""
        out(f"{e['timestamp']}  {e['uri']}  {source}  {extra}".rstrip())
    return 0


def assets_emit(args: argparse.Namespace) -> int:
    extra = _json_object(args.extra, "--extra")
    answer = Api(args.hub).post("/assets/events", {"uri": args.uri, "extra": extra})
    out(f"recorded event {answer['event']['id']} of {args.uri}")
    for run in answer["triggered_runs"]:
        out(f"  started {run['dag_id']} run {run['run_id']}")
    return 0


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise CliError(f"invalid duration {text!r}: use e.g. 90s, 30m, 24h, 7d") from None


def workers_list(args: argparse.Namespace) -> int:
    workers = Api(args.hub).get("/workers")["workers"]
    if args.json:
        out(json.dumps(workers, indent=2))
        return 0
    out(f"{'name':28} {'state':12} {'slots':7} {'queues':30} last heartbeat / comment")
    for w in workers:
        comment = w.get("maintenance_comment") or ""
        if w.get("update_error"):
            comment = f"update failed: {w['update_error'][:200]} {comment}".rstrip()
        elif w.get("update_requested"):
            comment = f"update requested {comment}".rstrip()
        slots = f"{w['free_slots']}/{w['concurrency']}"
        out(
            f"{w['name']:28} {w['state']:12} {slots:7} {','.join(w['queues']):30} "
            f"{w['last_heartbeat'] or '-'} {comment}"
        )
    return 0


def workers_token_create(args: argparse.Namespace) -> int:
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    body: dict[str, object] = {
        "queues": queues,
        "expires_in": _duration(args.expires),
        "replace": args.replace,
    }
    if args.name:
        body["name"] = args.name
    answer = Api(args.hub).post("/workers/enrolment-tokens", body)
    out(answer["token"])
    sys.stderr.write(
        f"one-time enrolment token {answer['id']} for worker {answer['name']} (queues "
        f"{','.join(answer['queues'])}), valid until {answer['expires_at']}"
        + ("; it replaces the worker's credential when spent" if answer["replace"] else "")
        + "\n"
    )
    return 0


def workers_token_list(args: argparse.Namespace) -> int:
    tokens = Api(args.hub).get("/workers/enrolment-tokens")["tokens"]
    if args.json:
        out(json.dumps(tokens, indent=2))
        return 0
    out(f"{'id':16} {'state':8} {'worker':28} {'queues':24} {'expires_at':33} replace")
    for t in tokens:
        out(
            f"{t['id']:16} {t['state']:8} {t['name']:28} {','.join(t['queues']):24} "
            f"{t['expires_at']:33} {'yes' if t['replace'] else 'no'}"
        )
    return 0


def workers_token_revoke(args: argparse.Namespace) -> int:
    answer = Api(args.hub).post(api_path("workers", "enrolment-tokens", args.id, "revoke"), {})
    out(f"enrolment token {answer['id']}: {answer['state']}")
    return 0


def workers_revoke(args: argparse.Namespace) -> int:
    Api(args.hub).post(f"/workers/{args.name}/revoke", {})
    out(f"worker {args.name} revoked")
    return 0


def workers_shutdown(args: argparse.Namespace) -> int:
    Api(args.hub).post(f"/workers/{args.name}/shutdown", {})
    out(f"worker {args.name} asked to shut down")
    return 0


def workers_update(args: argparse.Namespace) -> int:
    api = Api(args.hub)
    if args.queue:
        answer = api.post("/workers/update", {"queue": args.queue})
        for name in answer["requested"]:
            out(f"worker {name} asked to update to {answer['to']}")
        for name in answer["current"]:
            out(f"worker {name} already runs {answer['to']}: nothing to do")
        if not answer["requested"] and not answer["current"]:
            out(f"no live worker serves queue {args.queue}")
        return 0
    answer = api.post(api_path("workers", args.name, "update"), {})
    if answer["update"] == "requested":
        out(f"worker {args.name} asked to update to {answer['to']}")
    else:
        out(f"worker {args.name} already runs {answer['to']}: nothing to do")
    return 0


def workers_remove(args: argparse.Namespace) -> int:
    Api(args.hub).request("DELETE", f"/workers/{args.name}")
    out(f"worker {args.name} removed")
    return 0


def workers_maintenance(args: argparse.Namespace) -> int:
    Api(args.hub).post(
        f"/workers/{args.name}/maintenance", {"on": args.mode == "on", "comment": args.comment}
    )
    out(f"worker {args.name}: maintenance {args.mode}")
    return 0


def db_migrate(args: argparse.Namespace) -> int:
    from tether.homes import private_umask
    from tether.hub.store.db import migrate

    private_umask()  # a store created here is its user's only
    config = hub_config(home=args.home)
    migrate(config.database_url)
    out(f"database at {_safe_url(config.database_url)} is up to date")
    return 0


def db_clean(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from sqlalchemy.exc import SQLAlchemyError

    from tether.hub.core.runs import utcnow
    from tether.hub.services import cleanup
    from tether.hub.store.db import Store

    age = _duration(args.older_than)
    if age <= 0:
        raise CliError("--older-than must be more than 0")
    audit_age = _duration(args.audit_older_than)
    if audit_age <= 0:
        raise CliError("--audit-older-than must be more than 0")
    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1")
    try:
        cutoff = utcnow() - timedelta(seconds=age)
        audit_cutoff = utcnow() - timedelta(seconds=audit_age)
    except (OverflowError, ValueError):  # inf, nan
        raise CliError("--older-than and --audit-older-than must be under 10000 years") from None
    config = hub_config(home=args.home)
    url = config.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise CliError(f"no database at {url}")
    store = Store(url)
    try:
        out(f"database {_safe_url(url)}: runs that finished before {cutoff.isoformat()}")
        with store.transaction() as s:
            before = cleanup.count_rows(s)
            old = cleanup.count_old(s, cutoff)
            audit_total, audit_old = cleanup.count_audit(s, audit_cutoff)
        out(f"before: {_counts(before)}")
        audit_line = f"{audit_total} in all, {audit_old} written before {audit_cutoff.isoformat()}"
        if args.dry_run:
            out(f"would delete: {_counts(old)}")
            out(f"audit entries: {audit_line} (would delete those)")
            out("dry run: nothing deleted")
            return 0
        out(f"to delete: {_counts(old)}")
        out(f"audit entries: {audit_line} (to delete)")

        def progress(done: cleanup.Result) -> None:
            log.info("batch %d: %d run(s) deleted so far", done.batches, done.runs)

        result = cleanup.clean(store, cutoff, args.batch_size, progress, audit_cutoff=audit_cutoff)
        out(
            f"deleted {result.runs} run(s) in {result.batches} batch(es), "
            f"{result.bundles} unused bundle(s)"
        )
        out(f"deleted {result.audit_entries} audit entry(ies)")
        with store.transaction() as s:
            out(f"after: {_counts(cleanup.count_rows(s))}")
    except cleanup.CleanupRefused as exc:
        raise CliError(str(exc)) from None
    except SQLAlchemyError as exc:
        raise CliError(f"database error: {exc}") from None
    finally:
        store.dispose()
    return 0


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{table}={n}" for table, n in counts.items())


def _safe_url(url: str) -> str:
    """The URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
