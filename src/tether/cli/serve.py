"""``tether hub`` and ``tether standalone``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from tether.cli.rest import CliError, hub_config, out

if TYPE_CHECKING:
    from tether.hub.config import HubConfig
    from tether.hub.state import Hub

#: Seconds ``standalone`` lets its local worker finish running tasks on exit.
WORKER_DRAIN_TIMEOUT = 60.0


#: Seconds the hub keeps an idle client connection open: longer than any
#: client's own idle timeout (httpx's is 5 s), so the client, not the hub,
#: closes it, and no request is sent on a connection the hub is closing.
KEEP_ALIVE_SECONDS = 75


def _examples_folder() -> Path | None:
    """examples/dags of the working directory or of the source tree, if present."""
    for candidate in (
        Path.cwd() / "examples" / "dags",
        Path(__file__).resolve().parents[3] / "examples" / "dags",
    ):
        if candidate.is_dir():
            return candidate
    return None


def _lock_home(home: Path) -> IO[str] | str:
    """Take ``HOME/hub.lock`` for this process (held until it exits), or say who holds it."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = (home / "hub.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        return f"{home} is in use by another hub process" + (f" (pid {holder})" if holder else "")
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _listen(host: str, port: int) -> socket.socket | str:
    """A socket listening on ``host:port`` (uvicorn serves on it), or why there is none.

    Bound and listening at once, before the hub touches anything: a second
    hub on the port is refused here, not after it has changed the store.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart is not refused
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return f"port {port} on {host} is in use (by another hub?)"
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return sock


def _claim(config: HubConfig) -> tuple[IO[str], socket.socket]:
    """The hub's home and port, for this process alone; CliError naming what is in use."""
    lock, sock = _lock_home(config.home), _listen(config.host, config.port)
    if isinstance(lock, str) or isinstance(sock, str):
        for held in (lock, sock):
            if not isinstance(held, str):
                held.close()
        raise CliError("; ".join(p for p in (lock, sock) if isinstance(p, str)))
    return lock, sock


def _serve(
    config: HubConfig,
    *,
    on_started: Callable[[Hub, str], None] | None = None,
    before_exit: Callable[[], None] | None = None,
) -> None:
    """Run the hub until SIGINT/SIGTERM; ``before_exit`` runs first (in a thread)."""
    import uvicorn

    from tether.homes import private_umask
    from tether.hub.app import build_hub, create_app
    from tether.hub.auth.console import ConsoleKeyError
    from tether.hub.auth.tokens import AdminTokenError
    from tether.hub.core.secret_keys import SecretKeyError

    private_umask()  # the store, bundles and logs the hub writes are its user's only
    # Before anything changes: a second hub (or standalone) on this home or port,
    # started by mistake, must not touch the first one's store or worker.
    home_lock, listener = _claim(config)
    try:
        hub = build_hub(config)
    except (SecretKeyError, ConsoleKeyError, AdminTokenError) as exc:
        raise CliError(str(exc)) from None
    scheme = "https" if config.tls_cert else "http"
    url = f"{scheme}://{config.host}:{config.port}"
    out(f"Tether hub on {url}  (store: {hub.store.dialect}, DAGs: {config.dags_folder})")
    if hub.tokens.admin_generated:
        # Printed once, when it is made; after that it is where the operator keeps it.
        out(f"  console:      {url}/ui/login#token={hub.tokens.admin}")
        out(f"  admin token:  {hub.tokens.admin}  (new, kept in {config.home / 'admin_token'})")
    else:
        source = (
            "TETHER_ADMIN_TOKEN"
            if os.environ.get("TETHER_ADMIN_TOKEN")
            else str(config.home / "admin_token")
        )
        out(f"  console:      {url}/ui/  (sign in with the admin token)")
        out(f"  admin token:  from {source}")
    out(
        "  workers:      tether workers token create --queues QUEUES, then "
        "tether worker --hub URL --enrol TOKEN"
    )

    class Server(uvicorn.Server):
        exiting = False

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the signal after its shutdown, which would end
            # the process before our own clean-up; take plain handlers instead.
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if before_exit is None or self.exiting:
                hub.wakeups.close()  # answer held-open claims now, not after their wait
                super().handle_exit(sig, frame)
                return
            self.exiting = True

            def finish() -> None:
                try:
                    before_exit()
                finally:
                    self.handle_exit(sig, None)

            threading.Thread(target=finish, name="before-exit", daemon=True).start()

    server = Server(
        uvicorn.Config(
            create_app(hub),
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
            # Clients close idle connections first (httpx after 5 s, uvicorn's own
            # default here): with both at 5 s a worker's request sent on a connection
            # the hub was closing failed as a ReadError, and was retried.
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            # The client address (which the failed-authentication throttle counts by)
            # is the socket's peer unless a proxy the operator named vouches for it.
            proxy_headers=bool(config.forwarded_allow_ips),
            forwarded_allow_ips=config.forwarded_allow_ips or None,
            ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
            ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        )
    )
    if on_started is not None:
        on_started(hub, url)
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
        home_lock.close()
    if not server.started:
        raise SystemExit(f"the hub could not listen on {config.host}:{config.port}")


def hub_command(args: argparse.Namespace) -> int:

    config = hub_config(
        home=args.home,
        dags_folder=args.dags,
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    if bool(config.tls_cert) != bool(config.tls_key):
        raise CliError("TLS needs both --tls-cert and --tls-key")
    _serve(config)
    return 0


def standalone_command(args: argparse.Namespace) -> int:

    dags = args.dags or (
        Path(os.environ["TETHER_DAGS_FOLDER"])
        if os.environ.get("TETHER_DAGS_FOLDER")
        else _examples_folder()
    )
    config = hub_config(home=args.home, dags_folder=dags, host=args.host, port=args.port)
    worker: subprocess.Popen[bytes] | None = None

    def start_worker(hub: Hub, url: str) -> None:
        nonlocal worker
        # The local worker dials this machine, whatever address the hub listens on.
        if config.host in ("0.0.0.0", "::", ""):
            url = f"http://127.0.0.1:{config.port}"
        # Enrol afresh at every start, so --queues may change between runs.
        (config.home / "worker" / "credential.json").unlink(missing_ok=True)
        from datetime import timedelta

        from tether.hub.core.credentials import create_enrolment_token

        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        with hub.store.transaction() as s:
            token, _, _ = create_enrolment_token(
                s, queues, "standalone-worker", timedelta(minutes=10), replace=True
            )
        # The token travels in the environment, not argv (argv is visible to `ps`);
        # the hub's own settings and secrets do not (the worker's TETHER_WORKER_* do).
        from tether.cli.worker import STANDALONE_PID_VARIABLE
        from tether.hub.config import child_environment

        # It dies with this process (PR_SET_PDEATHSIG follows the thread that
        # starts it: this one, the main thread, lives as long as the process).
        env = {
            **child_environment(keep=("TETHER_WORKER_",)),
            "TETHER_ENROL_TOKEN": token,
            STANDALONE_PID_VARIABLE: str(os.getpid()),
        }
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
                "--concurrency",
                str(args.concurrency),
            ],
            env=env,
        )
        out(f"  local worker: pid {worker.pid}, queues {args.queues}")

    def stop_worker() -> None:
        """Let the local worker drain and report while the hub still answers."""
        if worker is None or worker.poll() is not None:
            return
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(WORKER_DRAIN_TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.send_signal(signal.SIGTERM)  # a second signal kills its tasks
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    try:
        _serve(config, on_started=start_worker, before_exit=stop_worker)
    finally:
        stop_worker()
    return 0


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
