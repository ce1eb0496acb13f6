"""Files and secrets on disk, with real hub and worker processes: owner-only
homes and files, the admin token printed only when it is made, and DAG code
that never sees the hub's secrets."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.processes import (
    ADMIN_TOKEN,
    REPO,
    Hub,
    Worker,
    die_with_pytest,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.integration

DAGS = {
    "leaky.py": """
        import os
        from pathlib import Path

        from tether import DAG, BashOperator


        def remember(context):
            Path(context["conf"]["out"]).write_text(" ".join(
                sorted(k for k in os.environ if k.startswith(("TETHER_", "PG")))
            ))


        with DAG("leaky", on_success_callback=remember):
            BashOperator(
                task_id="slow",
                bash_command=(
                    "touch made-by-the-task; stat -c 'mode=%a' made-by-the-task; "
                    "env | grep -E '^(TETHER_|PG)' | cut -d= -f1 | sort | sed 's/^/var: /'; "
                    "sleep 3"
                ),
            )
    """,
    "tells_its_environment.py": """
        import os

        raise RuntimeError(
            "env: " + ",".join(sorted(k for k in os.environ if k.startswith(("TETHER_", "PG"))))
        )
    """,
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    for name, source in DAGS.items():
        (folder / name).write_text(textwrap.dedent(source))
    return folder


def test_hub_and_worker_homes_and_their_files_are_owner_only(tmp_path: Path, dags: Path) -> None:
    home = tmp_path / "hub-home"
    old_bundle = home / "bundles" / ("0" * 64)
    old_bundle.mkdir(parents=True)
    (old_bundle / "dag.py").write_text("x")
    for path, mode in ((home, 0o755), (home / "bundles", 0o755), (old_bundle / "dag.py", 0o644)):
        os.chmod(path, mode)  # as an older release left them
    (home / "notes.txt").write_text("the operator's own file")
    os.chmod(home / "notes.txt", 0o644)
    hub = Hub(home, dags, f"sqlite:///{home / 'tether.db'}", PGPASSWORD="not-for-dag-code")
    worker_home = tmp_path / "worker-home"
    worker: Worker | None = None
    try:
        hub.api.wait_dags("leaky")
        worker = Worker(hub, worker_home, "default", "disk-w")
        worker.wait_registered()
        out = tmp_path / "callback.txt"
        run_id = hub.api.trigger("leaky", {"out": str(out)})

        def running_attempt() -> Path | None:
            attempts = list((worker_home / "attempts").glob("*/job.json"))
            return attempts[0].parent if attempts else None

        attempt = wait_for(running_attempt, 30, "the task to start")
        # While the task runs: the spool entry, job.json (it holds the conf) and the log.
        spooled = list((worker_home / "spool").glob("*.json"))
        logs = list((worker_home / "logs").rglob("*.log"))
        assert spooled
        assert logs
        for path in (worker_home, worker_home / "spool", worker_home / "logs", attempt):
            assert _mode(path) == 0o700, path
        for path in (worker_home / "credential.json", attempt / "job.json", *spooled, *logs):
            assert _mode(path) == 0o600, path
        run = hub.api.wait_run("leaky", run_id)
        assert run["state"] == "success"
        log = hub.api.log("leaky", run_id, "slow")
        # The task's own files keep the usual modes: it runs with the worker's first umask.
        assert f"mode={0o666 & ~_umask():o}" in log
        # Of Tether's variables a task sees its context, never the worker's settings.
        seen = {line.removeprefix("var: ") for line in log.splitlines() if line.startswith("var:")}
        assert seen == {
            "TETHER_DAG_ID",
            "TETHER_RUN_ID",
            "TETHER_TASK_ID",
            "TETHER_MAP_INDEX",
            "TETHER_TRY_NUMBER",
            "TETHER_ATTEMPT_ID",
        }
        # The DAG callback ran on the hub with none of the hub's settings or secrets.
        assert wait_for(out.exists, 30, "the DAG callback")
        assert out.read_text() == ""
        errors = {
            e["fileloc"]: e["message"] for e in hub.api.get("/import-errors")["import_errors"]
        }
        told = re.search(r"RuntimeError: env: (.*)$", errors["tells_its_environment.py"], re.M)
        assert told is not None
        assert told.group(1) == ""  # the parse child saw no TETHER_* and no PG* variable
    finally:
        if worker is not None:
            worker.stop()
        hub.stop()
    assert _mode(home) == 0o700
    assert _mode(home / "tether.db") == 0o600
    assert _mode(home / "bundles") == 0o700
    assert all(_mode(p) == 0o700 for p in (home / "bundles").iterdir())
    assert _mode(old_bundle / "dag.py") == 0o600
    assert _mode(home / "notes.txt") == 0o644  # not Tether's: left as it was


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_admin_token_is_printed_only_when_the_hub_makes_it(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    home = tmp_path / "home"
    first = Hub(home, dags, f"sqlite:///{home / 'tether.db'}", TETHER_ADMIN_TOKEN="")
    first.stop()
    made = re.search(r"admin token:\s+(\S+)\s+\(new, kept in", first.output())
    assert made is not None, first.output()
    token = made.group(1)
    assert (home / "admin_token").read_text().strip() == token
    assert _mode(home / "admin_token") == 0o600
    again = Hub(home, dags, f"sqlite:///{home / 'tether.db'}", TETHER_ADMIN_TOKEN="")
    again.stop()
    assert token not in again.output()
    assert f"admin token:  from {home / 'admin_token'}" in again.output()
    from_env = Hub(home, dags, f"sqlite:///{home / 'tether.db'}")
    from_env.stop()
    assert ADMIN_TOKEN not in from_env.output()
    assert "admin token:  from TETHER_ADMIN_TOKEN" in from_env.output()


@pytest.mark.parametrize("source", ["environment", "file"])
def test_a_short_admin_token_stops_the_start_before_the_store_is_touched(
    tmp_path: Path, source: str
) -> None:
    home, dags = tmp_path / "home", tmp_path / "dags"
    dags.mkdir()
    home.mkdir(mode=0o700)
    short = "s3cret-but-short"
    env = {k: v for k, v in os.environ.items() if k != "TETHER_ADMIN_TOKEN"}
    if source == "environment":
        env["TETHER_ADMIN_TOKEN"] = short
    else:
        (home / "admin_token").write_text(short + "\n")
    env["TETHER_DATABASE_URL"] = f"sqlite:///{home / 'tether.db'}"
    started = subprocess.run(
        [sys.executable, "-m", "tether", "hub", "--home", str(home), "--dags", str(dags)]
        + ["--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode != 0
    said = started.stdout + started.stderr
    assert f"has {len(short)} characters" in said
    assert "at least 32" in said
    assert short not in said
    assert not (home / "tether.db").exists()


@pytest.fixture
def standalone(tmp_path: Path, dags: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    log = tmp_path / "standalone.log"
    env = {
        **{k: v for k, v in os.environ.items() if k != "TETHER_DATABASE_URL"},
        "TETHER_ADMIN_TOKEN": ADMIN_TOKEN,
        "PGPASSWORD": "the-hubs-db-password",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether", "standalone", "--home", str(tmp_path / "home")]
            + ["--port", str(port), "--dags", str(dags)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_pytest,
        )
    try:
        yield proc, port, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_standalone_hands_its_worker_none_of_the_hubs_secrets(
    standalone: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    _, port, log = standalone
    pid = int(
        wait_for(
            lambda: re.search(r"local worker: pid (\d+)", log.read_text()), 30, "the local worker"
        ).group(1)
    )
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {item.split(b"=", 1)[0].decode() for item in environ if item}
    assert "TETHER_ADMIN_TOKEN" not in names
    assert "PGPASSWORD" not in names
    assert ADMIN_TOKEN.encode() not in b"\0".join(environ)
    assert ADMIN_TOKEN not in log.read_text()  # it came from the environment: not printed
