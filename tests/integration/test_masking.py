"""Secrets a task registers with mask_secret never reach its log: not the
worker's local copy, not the hub's, whichever way the worker starts tasks."""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.integration.processes import Hub, Worker

pytestmark = pytest.mark.integration

SECRET = "pa55/w0rd+\u00e9~~~"  # URL-quoting and both base64 alphabets all change it
URI = f"postgres://app:{quote(SECRET, safe='')}@db.example:5432/prod"
MODES = ["fork", "spawn"]

DAG_FILE = f"""
    import base64, os, subprocess, sys
    from urllib.parse import quote

    from tether import DAG, mask_secret, task

    SECRET = {SECRET!r}
    URI = {URI!r}

    for mode in {MODES!r}:
        with DAG(f"masking_{{mode}}"):

            @task(queue=f"mask-{{mode}}")
            def leak() -> None:
                mask_secret(SECRET)  # as Tether does for a connection's password
                mask_secret(URI)  # and for its whole URI
                print("plain:", SECRET)
                print("quoted:", quote(SECRET, safe=""))
                print("base64:", base64.b64encode(SECRET.encode()).decode())
                print("uri:", URI)
                print("uri base64:", base64.b64encode(URI.encode()).decode())
                sys.stdout.flush()
                # A child process that writes to the inherited descriptors itself.
                subprocess.run(["bash", "-c", 'echo "bash: $0"', SECRET], check=True)
                os.write(1, SECRET[:4].encode())  # one secret in two writes
                os.write(2, SECRET[4:].encode() + b" (split)\\n")

            leak()
"""

#: What must never appear in a log.
FORBIDDEN = [
    SECRET,
    SECRET[4:],
    quote(SECRET, safe=""),
    base64.b64encode(SECRET.encode()).decode(),
    URI,
    base64.b64encode(URI.encode()).decode(),
]
#: The lines the task printed, as the log must show them.
MASKED_LINES = [
    "plain: ***",
    "quoted: ***",
    "base64: ***",
    "uri: ***",
    "uri base64: ***",
    "bash: ***",
    "*** (split)",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, dict[str, Worker]]]:
    """A hub and one worker per task-start mode, each serving its own queue."""
    root = tmp_path_factory.mktemp("masking")
    dags = root / "dags"
    dags.mkdir()
    (dags / "masking.py").write_text(textwrap.dedent(DAG_FILE))
    hub = Hub(root / "hub-home", dags, f"sqlite:///{root / 'hub.db'}")
    workers: dict[str, Worker] = {}
    try:
        for mode in MODES:
            workers[mode] = Worker(
                hub, root / mode, f"mask-{mode}", f"w-{mode}", extra=["--task-start", mode]
            )
        for worker in workers.values():
            worker.wait_registered()
        hub.api.wait_dags(*(f"masking_{mode}" for mode in MODES))
        yield hub, workers
    finally:
        for worker in workers.values():
            worker.stop()
        hub.stop()


@pytest.mark.parametrize("mode", MODES)
def test_a_masked_secret_and_its_encodings_show_as_stars_in_both_copies_of_the_log(
    site: tuple[Hub, dict[str, Worker]], mode: str
) -> None:
    hub, workers = site
    dag_id = f"masking_{mode}"
    run = hub.api.run_dag(dag_id)
    assert run["state"] == "success"
    [local_file] = (workers[mode].home / "logs").glob(f"dag_id={dag_id}/**/attempt=1.log")
    local = local_file.read_bytes().decode()
    remote = hub.api.run_log(run, "leak")
    assert remote == local
    lines = local.splitlines()
    for line in MASKED_LINES:
        assert line in lines, f"{line!r} not in the log:\n{local}"
    for value in FORBIDDEN:
        assert value not in local, f"{value!r} in the log:\n{local}"
