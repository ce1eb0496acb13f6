"""``tether hub`` and ``tether standalone``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from tether.cli.rest import out


def _examples_folder() -> Path | None:
    """examples/dags of the working directory or of the source tree, if present."""
    for candidate in (
        Path.cwd() / "examples" / "dags",
        Path(__file__).resolve().parents[3] / "examples" / "dags",
    ):
        if candidate.is_dir():
            return candidate
    return None


def _serve(config: object, *, on_started: object = None) -> None:
    import uvicorn

    from tether.hub.app import build_hub, create_app
    from tether.hub.config import HubConfig

    assert isinstance(config, HubConfig)
    hub = build_hub(config)
    url = f"http://{config.host}:{config.port}"
    out(f"Tether hub on {url}  (store: {hub.store.dialect}, DAGs: {config.dags_folder})")
    out(f"  status page:  {url}/#token={hub.tokens.admin}")
    out(
        f"  admin token:  {hub.tokens.admin}"
        + (
            "  (new, kept in " + str(config.home / "admin_token") + ")"
            if hub.tokens.admin_generated
            else ""
        )
    )
    if "TETHER_WORKER_TOKEN" not in os.environ:
        out(f"  worker token: {hub.tokens.worker}  (kept in {config.home / 'worker_token'})")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(hub),
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    if callable(on_started):
        on_started(hub, url)
    server.run()
    if not server.started:
        raise SystemExit(f"the hub could not listen on {config.host}:{config.port}")


def hub_command(args: argparse.Namespace) -> int:
    from tether.hub.config import HubConfig

    config = HubConfig.load(home=args.home, dags_folder=args.dags, host=args.host, port=args.port)
    _serve(config)
    return 0


def standalone_command(args: argparse.Namespace) -> int:
    from tether.hub.config import HubConfig

    dags = args.dags or (
        Path(os.environ["TETHER_DAGS_FOLDER"])
        if os.environ.get("TETHER_DAGS_FOLDER")
        else _examples_folder()
    )
    config = HubConfig.load(home=args.home, dags_folder=dags, host=args.host, port=args.port)
    worker: subprocess.Popen[bytes] | None = None

    def start_worker(hub: object, url: str) -> None:
        nonlocal worker
        from tether.hub.state import Hub

        assert isinstance(hub, Hub)
        env = {**os.environ, "TETHER_WORKER_TOKEN": hub.tokens.worker}
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether",
                "worker",
                "--hub",
                url,
                "--queues",
                args.queues,
                "--home",
                str(config.home / "worker"),
                "--name",
                "standalone-worker",
                "--concurrency",
                str(args.concurrency),
            ],
            env=env,
        )
        out(f"  local worker: pid {worker.pid}, queues {args.queues}")

    try:
        _serve(config, on_started=start_worker)
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(30)
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return 0


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
