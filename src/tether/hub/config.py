"""Hub settings: command-line flags over ``TETHER_*`` environment variables over defaults."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from tether.hub.store.db import default_url
from tether.protocol import DEFAULT_MAX_JOB_BYTES, DEFAULT_MAX_TASK_OUTPUT_BYTES

#: The smallest body limit that still takes every request a worker or a client sends.
MIN_BODY_LIMIT = 64 * 1024


def default_home() -> Path:
    return Path(os.environ.get("TETHER_HOME") or Path.home() / ".tether").expanduser()


@dataclass
class HubConfig:
    home: Path
    dags_folder: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    #: PostgreSQL itself, when ``database_url`` goes through a transaction-mode
    #: pooler (PgBouncer): the hub's LISTEN connection and its leader locks
    #: need a session of their own. None: ``database_url``.
    database_direct_url: str | None = None
    #: Seconds a DAG file may take to import before it becomes an import error.
    dag_file_timeout: float = 30.0
    #: Seconds between scans of the DAGs folder for changed files.
    dag_scan_interval: float = 2.0
    #: Safety-net sweep of the scheduler, in seconds (it is event-driven otherwise).
    scheduler_sweep_interval: float = 5.0
    #: Seconds between a worker's heartbeats (told to each worker when it connects).
    worker_heartbeat_interval: float = 10.0
    #: A worker silent for this long is lost; its attempts fail or retry.
    worker_lost_timeout: float = 300.0
    #: Oldest worker release the hub accepts (same protocol version required too).
    min_worker_version: str = "0.1.0"
    #: Most task instances running at once across the hub; 0 is unlimited
    #: (workers' slots, pools and max_active_tasks still apply).
    parallelism: int = 0
    #: Serve HTTPS with this certificate chain and key (PEM files).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Largest request body, in bytes; a larger one gets 413 before it is read.
    max_body_bytes: int = 1024 * 1024
    #: Largest log chunk a worker may send in one request (streamed to the store).
    max_log_chunk_bytes: int = 4 * 1024 * 1024
    #: Largest return value of a task, as JSON; a larger one fails the task.
    max_task_output_bytes: int = DEFAULT_MAX_TASK_OUTPUT_BYTES
    #: Most log bytes the hub keeps of one try; the rest is dropped, with a note.
    max_task_log_bytes: int = 100 * 1024 * 1024
    #: Lines of each worker's own log the hub keeps (the newest), and lines a
    #: minute one worker may send (as many in a burst); more gets 429.
    worker_log_keep_lines: int = 5000
    worker_log_lines_per_minute: int = 1200
    #: Most input data (upstream return values) one job carries; more fails the task.
    max_job_bytes: int = DEFAULT_MAX_JOB_BYTES
    #: Failed authentications one client address may make per minute before 429.
    auth_failures_per_minute: int = 30
    #: Proxies whose X-Forwarded-For names the client (comma-separated addresses
    #: or networks); empty: the socket's peer is the client, whatever it claims.
    forwarded_allow_ips: str = ""
    #: Seconds a web console session lasts after its login.
    console_session_lifetime: float = 12 * 3600.0
    #: Serve the worker's wheel and the simple index to anyone (a machine being
    #: set up has no credential yet); off: a worker credential or any API token.
    public_dist: bool = True
    #: Serve ``/metrics`` to anyone (a Prometheus inside the network); off: any
    #: API token, as a bearer token.
    public_metrics: bool = False
    #: The wheel to serve to workers; None: built or repacked (``hub/dist.py``).
    worker_wheel: Path | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_log_chunk_bytes",
            "max_task_output_bytes",
            "max_task_log_bytes",
            "max_job_bytes",
            "worker_log_keep_lines",
            "worker_log_lines_per_minute",
            "auth_failures_per_minute",
            "console_session_lifetime",
        ):
            # ``not >=``: NaN compares false both ways, and must be refused too.
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not math.isfinite(self.console_session_lifetime):
            # A session's end is a whole Unix time: int(now + inf) fails every login.
            raise ValueError(
                f"console_session_lifetime must be a number of seconds, not "
                f"{self.console_session_lifetime}"
            )
        for name in ("max_body_bytes", "max_log_chunk_bytes"):
            if getattr(self, name) < MIN_BODY_LIMIT:
                raise ValueError(
                    f"{name} must be at least {MIN_BODY_LIMIT} bytes, not {getattr(self, name)}"
                )

    @classmethod
    def load(
        cls,
        *,
        home: Path | None = None,
        dags_folder: Path | None = None,
        host: str | None = None,
        port: int | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> HubConfig:
        the_home = (home or default_home()).expanduser().resolve()
        env_dags = os.environ.get("TETHER_DAGS_FOLDER")
        dags = dags_folder or (Path(env_dags) if env_dags else the_home / "dags")
        return cls(
            home=the_home,
            dags_folder=dags.expanduser().resolve(),
            database_url=os.environ.get("TETHER_DATABASE_URL") or default_url(the_home),
            database_direct_url=os.environ.get("TETHER_DATABASE_DIRECT_URL") or None,
            host=host or os.environ.get("TETHER_HOST", "127.0.0.1"),
            port=port if port is not None else int(os.environ.get("TETHER_PORT", "8080")),
            dag_file_timeout=float(os.environ.get("TETHER_DAG_FILE_TIMEOUT", "30")),
            dag_scan_interval=float(os.environ.get("TETHER_DAG_SCAN_INTERVAL", "2")),
            scheduler_sweep_interval=float(os.environ.get("TETHER_SCHEDULER_SWEEP", "5")),
            worker_heartbeat_interval=float(os.environ.get("TETHER_WORKER_HEARTBEAT", "10")),
            worker_lost_timeout=float(os.environ.get("TETHER_WORKER_LOST_TIMEOUT", "300")),
            parallelism=int(os.environ.get("TETHER_PARALLELISM", "0")),
            min_worker_version=os.environ.get("TETHER_MIN_WORKER_VERSION", "0.1.0"),
            tls_cert=tls_cert or _path(os.environ.get("TETHER_TLS_CERT")),
            tls_key=tls_key or _path(os.environ.get("TETHER_TLS_KEY")),
            max_body_bytes=_int("TETHER_MAX_BODY_BYTES", cls.max_body_bytes),
            max_log_chunk_bytes=_int("TETHER_MAX_LOG_CHUNK_BYTES", cls.max_log_chunk_bytes),
            max_task_output_bytes=_int("TETHER_MAX_TASK_OUTPUT_BYTES", cls.max_task_output_bytes),
            max_task_log_bytes=_int("TETHER_MAX_TASK_LOG_BYTES", cls.max_task_log_bytes),
            max_job_bytes=_int("TETHER_MAX_JOB_BYTES", cls.max_job_bytes),
            worker_log_keep_lines=_int("TETHER_WORKER_LOG_KEEP_LINES", cls.worker_log_keep_lines),
            worker_log_lines_per_minute=_int(
                "TETHER_WORKER_LOG_LINES_PER_MINUTE", cls.worker_log_lines_per_minute
            ),
            auth_failures_per_minute=_int(
                "TETHER_AUTH_FAILURES_PER_MINUTE", cls.auth_failures_per_minute
            ),
            forwarded_allow_ips=os.environ.get("TETHER_FORWARDED_ALLOW_IPS", "").strip(),
            console_session_lifetime=float(
                os.environ.get("TETHER_CONSOLE_SESSION_LIFETIME", cls.console_session_lifetime)
            ),
            public_dist=_bool("TETHER_PUBLIC_DIST", cls.public_dist),
            public_metrics=_bool("TETHER_PUBLIC_METRICS", cls.public_metrics),
            worker_wheel=_path(os.environ.get("TETHER_WORKER_WHEEL")),
        )


def child_environment(keep: tuple[str, ...] = ()) -> dict[str, str]:
    """The hub's environment without its own settings and secrets, for processes
    that run DAG code (the parse and callback children) or a local worker.

    Drops every ``TETHER_*`` variable (the admin token, the database URL and
    any key among them) but those starting with a prefix in ``keep``, and
    libpq's ``PG*`` (a PostgreSQL password): what a DAG file's top-level
    code or callback can read must not let it act as the hub.
    """
    return {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("PG") or (k.startswith("TETHER_") and not k.startswith(keep)))
    }


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1 or 0 (true or false), not {value!r}")


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None
