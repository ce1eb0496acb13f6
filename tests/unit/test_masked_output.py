"""masked_output in a real process whose stdout and stderr are a log file, as a
task process's are: what reaches the file, from the process and its children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.processes import wait_for

SECRET = "hunter2-\u00e9l\u00e8ve/+="

PRELUDE = """
    import os, subprocess, sys, time
    from pathlib import Path
    from tether import mask_secret
    from tether.worker.masked_output import masked_output
    SECRET, HERE = sys.argv[1], Path(sys.argv[2])
"""


@contextlib.contextmanager
def _process(tmp_path: Path, body: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Run ``body`` with its fds 1 and 2 on ``tmp_path/log``; killed if still running."""
    script = tmp_path / "task.py"
    script.write_text(textwrap.dedent(PRELUDE) + textwrap.dedent(body))
    log = tmp_path / "log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), SECRET, str(tmp_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # as the worker starts a task
        )
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_everything_the_process_and_its_children_write_is_masked_also_when_it_raises(
    tmp_path: Path,
) -> None:
    body = """
        import traceback

        @masked_output()
        def main():
            print("before the mask:", "visible")
            mask_secret(SECRET)
            print("print:", SECRET)
            print("stderr:", SECRET, file=sys.stderr)
            os.write(1, SECRET[:5].encode())  # one secret, two writes, two descriptors
            os.write(2, SECRET[5:].encode() + b" <- split\\n")
            subprocess.run(["sh", "-c", 'echo "child: $0"', SECRET], check=True)
            os.write(1, b"junk: \\xff\\xfe\\x00 " + SECRET.encode() + b" \\x80\\n")
            sys.stdout.write("unfinished line: " + SECRET)
            raise RuntimeError("the task failed")

        try:
            main()
        except RuntimeError:
            sys.exit(3)
    """
    with _process(tmp_path, body) as (proc, log):
        assert proc.wait(timeout=60) == 3
        data = log.read_bytes()
    assert SECRET.encode() not in data
    assert SECRET[5:].encode() not in data
    lines = data.split(b"\n")
    assert lines == [
        b"before the mask: visible",
        b"print: ***",
        b"stderr: ***",
        b"*** <- split",
        b"child: ***",
        b"junk: \xff\xfe\x00 *** \x80",
        b"unfinished line: ***",
    ]


def test_a_partial_line_reaches_the_log_while_the_process_waits(tmp_path: Path) -> None:
    body = """
        @masked_output()
        def main():
            mask_secret("a-secret-far-longer-than-what-is-printed-here")
            sys.stdout.write("waiting for the go")
            sys.stdout.flush()
            go = HERE / "go"
            while not go.exists():  # the test creates it once it saw the line
                time.sleep(0.05)
            print(" and going")

        main()
    """
    with _process(tmp_path, body) as (proc, log):
        wait_for(lambda: b"waiting for the go" in log.read_bytes(), 30, "the partial line")
        (tmp_path / "go").touch()
        assert proc.wait(timeout=60) == 0
        assert log.read_bytes() == b"waiting for the go and going\n"


@pytest.fixture
def leftover(tmp_path: Path) -> Iterator[Path]:
    """Where the test's process leaves the pid of a child that outlives it; killed after."""
    pid_file = tmp_path / "leftover.pid"
    yield pid_file
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_child_that_outlives_the_block_does_not_keep_the_process_from_ending(
    tmp_path: Path, leftover: Path
) -> None:
    body = """
        @masked_output()
        def main():
            mask_secret(SECRET)
            child = subprocess.Popen(["sleep", "600"])  # holds the pipe, never ends by itself
            (HERE / "leftover.pid").write_text(str(child.pid))
            print("done with", SECRET)

        main()
    """
    with _process(tmp_path, body) as (proc, log):
        assert proc.wait(timeout=60) == 0
        assert log.read_bytes() == b"done with ***\n"
    assert leftover.exists()
