"""``tether worker``: run an edge worker, and control it from its own machine."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from tether.cli.rest import CliError, out
from tether.protocol import InvalidQueueName

#: Set by ``tether standalone`` for its local worker: the pid it must die with.
STANDALONE_PID_VARIABLE = "TETHER_STANDALONE_PID"

log = logging.getLogger("tether.worker")


def worker_home(value: str | None) -> Path:
    return (
        Path(value or os.environ.get("TETHER_WORKER_HOME") or Path.home() / ".tether-worker")
        .expanduser()
        .resolve()
    )


def add_worker_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("worker", help="run an edge worker (it only dials out), or control it")
    sp.add_argument("--hub", help="hub URL (default: $TETHER_HUB_URL, or the one enrolled with)")
    sp.add_argument(
        "--enrol",
        metavar="TOKEN",
        help="enrolment token to exchange for this worker's credential "
        "(default: $TETHER_ENROL_TOKEN); needed once",
    )
    sp.add_argument(
        "--queues",
        default="",
        help="comma-separated queues to serve (default: all the credential allows)",
    )
    sp.add_argument("--concurrency", type=int, default=4, help="task slots (default 4)")
    sp.add_argument("--home", help="worker home (default: $TETHER_WORKER_HOME or ~/.tether-worker)")
    sp.add_argument(
        "--ca-file",
        help="CA bundle to trust for the hub's TLS certificate "
        "(default: httpx's certifi bundle, or SSL_CERT_FILE)",
    )
    sp.add_argument(
        "--proxy",
        help="proxy URL, credentials allowed in it (default: HTTPS_PROXY / HTTP_PROXY / NO_PROXY)",
    )
    sp.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow an http:// hub that is not on this machine (the credential and task data "
        "then cross the network unencrypted); without it only https:// or loopback",
    )
    sp.add_argument(
        "--drain-timeout",
        type=float,
        default=_env_float("TETHER_WORKER_DRAIN_TIMEOUT"),
        help="seconds a drain may take before running tasks are killed "
        "(default: $TETHER_WORKER_DRAIN_TIMEOUT, or no limit)",
    )
    sp.add_argument(
        "--kill-grace",
        type=float,
        default=1.5,
        help="seconds between SIGTERM and SIGKILL when a task is killed",
    )
    sp.add_argument(
        "--log-max-age",
        type=float,
        default=7.0,
        metavar="DAYS",
        help="delete local task logs older than this (default 7); logs not yet delivered "
        "to the hub are kept",
    )
    sp.add_argument(
        "--log-max-mb",
        type=float,
        default=1024.0,
        metavar="MB",
        help="delete the oldest delivered local task logs beyond this total (default 1024)",
    )
    sp.add_argument(
        "--bundle-cache-max-age",
        type=float,
        default=7.0,
        metavar="DAYS",
        help="delete cached DAG bundles unused for this long (default 7)",
    )
    sp.add_argument(
        "--bundle-cache-max-mb",
        type=float,
        default=1024.0,
        metavar="MB",
        help="delete the least recently used cached DAG bundles beyond this total "
        "(default 1024); a bundle a running task uses is kept",
    )
    sp.add_argument(
        "--task-start",
        choices=["fork", "spawn"],
        default=os.environ.get("TETHER_WORKER_TASK_START", "fork"),
        help="fork each task from a warm fork server (fast, the default) or spawn a new "
        "interpreter per task (default: $TETHER_WORKER_TASK_START or fork)",
    )
    sp.set_defaults(func=worker_command)
    actions = sp.add_subparsers(dest="action", metavar="ACTION")

    ap = actions.add_parser("maintenance", help="stop taking new tasks (running ones finish)")
    ap.add_argument("mode", choices=["on", "off"])
    ap.add_argument("--comment", help="why; shown to the centre")
    ap.add_argument("--wait", action="store_true", help="wait until no task runs")
    ap.add_argument("--home", dest="action_home")
    ap.set_defaults(func=maintenance_command)

    ap = actions.add_parser("status", help="print the running worker's state as JSON")
    ap.add_argument("--home", dest="action_home")
    ap.set_defaults(func=status_command)

    ap = actions.add_parser("stop", help="drain, then exit")
    ap.add_argument(
        "--timeout", type=float, help="kill the tasks still running after this many seconds"
    )
    ap.add_argument("--home", dest="action_home")
    ap.set_defaults(func=stop_command)

    ap = actions.add_parser("install-service", help="a systemd unit for this worker")
    ap.add_argument(
        "--print",
        action="store_true",
        required=True,
        help="print the unit (install it yourself; nothing is written)",
    )
    ap.add_argument("--home", dest="action_home")
    ap.add_argument("--user", default="tether", help="the user the service runs as")
    ap.set_defaults(func=install_service_command)


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def _home_of(args: argparse.Namespace) -> Path:
    return worker_home(getattr(args, "action_home", None) or args.home)


def worker_command(args: argparse.Namespace) -> int:
    from tether.homes import WORKER_ENTRIES, private_home, private_umask
    from tether.worker.agent import Worker, WorkerConfig, WorkerExit, lock_home
    from tether.worker.client import HubClient, HubError, check_hub_url
    from tether.worker.credential import Credential

    # A standalone's local worker dies with the standalone, however it ends
    # (its tasks then die with it); serve.py says whose pid to follow.
    standalone = os.environ.pop(STANDALONE_PID_VARIABLE, None)
    if standalone is not None and standalone.isdigit():
        from tether.sdk._process import die_with_parent

        die_with_parent(int(standalone))
    # The credential, the spool (which holds conf values) and the logs are this
    # user's only; tasks get back the umask the worker was started with.
    task_umask = private_umask()
    home = _home_of(args)
    private_home(home, WORKER_ENTRIES)
    try:  # first: a second process on this home must change nothing, not even enrol
        home_lock = lock_home(home)
    except WorkerExit as exc:
        sys.stderr.write(f"tether worker: {exc}\n")
        return exc.code
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    saved = Credential.load(home)
    token = args.enrol or os.environ.get("TETHER_ENROL_TOKEN")
    hub = args.hub or os.environ.get("TETHER_HUB_URL") or (saved.hub_url if saved else None)
    if not hub:
        raise CliError("give the hub's URL with --hub or TETHER_HUB_URL")
    try:
        check_hub_url(hub, insecure_http=args.insecure_http)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if saved is None or (token and args.enrol):
        if not token:
            raise CliError(
                f"this worker is not enrolled: no credential in {home}. Create a "
                "token on the hub (tether workers token create --queues ...) and "
                "pass it with --enrol"
            )

        async def enrol() -> Credential:
            client = HubClient(hub, ca_file=args.ca_file, proxy=args.proxy)
            try:
                answer = await client.enrol(token)
            finally:
                await client.aclose()
            return Credential(hub, answer.name, answer.credential, answer.queues)

        try:
            saved = asyncio.run(enrol())
        except HubError as exc:
            raise CliError(f"enrolment refused: {exc.reason}") from None
        path = saved.save(home)
        out(
            f"enrolled as worker {saved.name} for queues {','.join(saved.queues)}; "
            f"credential kept in {path}"
        )
    try:
        config = WorkerConfig(
            hub_url=hub,
            credential=saved.credential,
            home=home,
            name=saved.name,
            queues=queues,
            concurrency=args.concurrency,
            drain_timeout=args.drain_timeout,
            kill_grace=args.kill_grace,
            log_max_age=args.log_max_age * 86400,
            log_max_bytes=int(args.log_max_mb * 1024 * 1024),
            bundle_max_age=args.bundle_cache_max_age * 86400,
            bundle_max_bytes=int(args.bundle_cache_max_mb * 1024 * 1024),
            task_start=args.task_start,
            ca_file=args.ca_file,
            proxy=args.proxy,
            task_umask=task_umask,
        )
    except (InvalidQueueName, ValueError) as exc:
        raise CliError(str(exc)) from None
    worker = Worker(config, home_lock=home_lock)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log.info(
                    "%s: draining (running tasks finish; signal again to kill them)",
                    signal.Signals(signum).name,
                )
                worker.stop()
            else:
                log.warning("second signal: killing running tasks")
                worker.kill_all(f"the worker got {signal.Signals(signum).name} twice")

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        # ``kill -USR1 PID``: every thread's stack to stderr, from the signal itself,
        # so it answers even when the event loop is stuck (a worker that will not
        # stop); then, from the loop if it still runs, where each of its tasks waits.
        loop.add_signal_handler(signal.SIGUSR1, _print_tasks)
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)
        try:
            await worker.run()
        finally:
            faulthandler.unregister(signal.SIGUSR1)

    try:
        asyncio.run(main())
    except WorkerExit as exc:
        sys.stderr.write(f"tether worker: {exc}\n")
        return exc.code
    return 0


def _print_tasks() -> None:
    """Where each of the event loop's tasks waits, to stderr (``kill -USR1``)."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


def maintenance_command(args: argparse.Namespace) -> int:
    from tether.worker import control

    home = _home_of(args)
    on = args.mode == "on"
    control.update_control(home, maintenance=on, comment=args.comment if on else None)
    if control.running_pid(home) is None:
        out(f"maintenance {args.mode} recorded; no worker is running in {home}")
        return 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = control.read_status(home)
        if status.get("maintenance") == on:
            break
        time.sleep(0.2)
    else:
        raise CliError("the worker did not confirm the change within 10s")
    if on and args.wait:
        while control.read_status(home).get("running"):
            time.sleep(0.5)
    out(json.dumps(control.read_status(home), indent=2))
    return 0


def status_command(args: argparse.Namespace) -> int:
    from tether.worker import control

    home = _home_of(args)
    status = control.read_status(home)
    if control.running_pid(home) is None:
        status = {**status, "state": "stopped", "running": []}
    out(json.dumps(status, indent=2))
    return 0 if status else 1


def stop_command(args: argparse.Namespace) -> int:
    from tether.worker import control

    home = _home_of(args)
    pid = control.running_pid(home)
    if pid is None:
        out(f"no worker is running in {home}")
        return 0
    control.update_control(home, stop=True, timeout=args.timeout)
    out(f"worker {pid} is draining" + (f" (at most {args.timeout:g}s)" if args.timeout else ""))
    while control.running_pid(home) == pid:
        time.sleep(0.2)
    out("worker stopped")
    return 0


def install_service_command(args: argparse.Namespace) -> int:
    home = _home_of(args)
    exe = shlex.quote(sys.executable)
    out(f"""# /etc/systemd/system/tether-worker.service
# Enrol once first, as the service user:
#   sudo -u {args.user} {exe} -m tether worker --hub https://HUB --enrol TOKEN --home {home}
# then: systemctl daemon-reload && systemctl enable --now tether-worker
[Unit]
Description=Tether edge worker (dials out to its hub; opens no port)
Wants=network-online.target
After=network-online.target

[Service]
User={args.user}
ExecStart={exe} -m tether worker --home {home}
# Proxy and private CA, if the network needs them:
# Environment=HTTPS_PROXY=http://user:password@proxy.example:3128
# Environment=NO_PROXY=localhost,127.0.0.1
# ExecStart={exe} -m tether worker --home {home} --ca-file /etc/tether/hub-ca.pem
# SIGTERM drains: running tasks finish, bounded by the stop timeout below.
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=600
Restart=always
RestartSec=5
# Exit 4: a newer process of this worker took over; do not fight it.
# (Exit 5: it installed its hub's version; this restart starts that.)
RestartPreventExitStatus=4
NoNewPrivileges=yes
ProtectSystem=full
ReadWritePaths={home}

[Install]
WantedBy=multi-user.target""")
    return 0
