"""``tether worker``: run an edge worker in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

from tether.cli.rest import CliError
from tether.protocol import InvalidQueueName

log = logging.getLogger("tether.worker")


def worker_command(args: argparse.Namespace) -> int:
    from tether.worker.agent import Worker, WorkerConfig
    from tether.worker.client import Unauthorized

    token = args.token or os.environ.get("TETHER_WORKER_TOKEN")
    if not token:
        raise CliError("a worker needs --token or TETHER_WORKER_TOKEN")
    hub = args.hub or os.environ.get("TETHER_HUB_URL") or "http://127.0.0.1:8080"
    home = (
        Path(args.home or os.environ.get("TETHER_WORKER_HOME") or Path.home() / ".tether-worker")
        .expanduser()
        .resolve()
    )
    try:
        config = WorkerConfig(
            hub_url=hub,
            token=token,
            queues=[q.strip() for q in args.queues.split(",") if q.strip()],
            home=home,
            name=args.name or socket.gethostname(),
            concurrency=args.concurrency,
        )
    except (InvalidQueueName, ValueError) as exc:
        raise CliError(str(exc)) from None
    worker = Worker(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        signals = 0
        killers: set[asyncio.Task[None]] = set()

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
                for runner in list(worker.running.values()):
                    killer = loop.create_task(runner.kill())
                    killers.add(killer)
                    killer.add_done_callback(killers.discard)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        await worker.run()

    try:
        asyncio.run(main())
    except Unauthorized as exc:
        raise CliError(f"the hub refused this worker's token: {exc.reason}") from None
    return 0
