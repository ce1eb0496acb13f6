"""The suite's own process fixtures: what a test starts is stopped, even when its
set-up fails, and dies with the pytest process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration import processes
from tests.integration.processes import Hub, wait_for

pytestmark = pytest.mark.integration


def test_a_hub_that_never_answers_is_stopped_by_its_own_constructor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Hub] = []

    def never(self: Hub) -> bool:
        seen.append(self)
        return False

    monkeypatch.setattr(Hub, "_healthy", never)
    monkeypatch.setattr(processes, "SLACK", 0.05)  # 30 s becomes 1.5 s
    with pytest.raises(AssertionError, match="to answer"):
        Hub(tmp_path / "home", tmp_path / "dags", f"sqlite:///{tmp_path / 'db'}")
    assert seen
    assert seen[0].popen.poll() is not None  # stopped, not left running


def test_what_the_suite_starts_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import subprocess, sys, time
                sys.path.insert(0, {str(processes.REPO)!r})
                from tests.integration.processes import die_with_pytest
                child = subprocess.Popen(["sleep", "600"], preexec_fn=die_with_pytest)
                open({str(pid_file)!r}, "w").write(str(child.pid))
                time.sleep(600)
            """),
        ]
    )
    try:
        pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, "the pid"))
        starter.send_signal(signal.SIGKILL)  # no finally, no atexit: only the kernel is left
        starter.wait()

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # A zombie counts as gone: it runs nothing (its parent, pid 1, reaps it).
            return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"

        wait_for(gone, 30, "the grandchild to die with its parent")
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        if pid_file.exists():  # the grandchild, should it have outlived its parent
            left = int(pid_file.read_text())
            try:
                if Path(f"/proc/{left}/cmdline").read_bytes() == b"sleep\x00600\x00":
                    os.kill(left, signal.SIGKILL)
            except (OSError, ValueError):
                pass
