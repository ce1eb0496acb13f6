"""``pip install .`` with no extra gives the SDK and the worker only."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.integration.processes import REPO

pytestmark = pytest.mark.integration


def test_the_plain_install_has_no_hub_dependencies(tmp_path: Path) -> None:
    source = tmp_path / "src-copy"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "tests"
        ),
    )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert "tether" in names
    assert "httpx" in names
    assert "jinja2" in names  # task processes render templated fields
    for heavy in (
        "fastapi",
        "sqlalchemy",
        "uvicorn",
        "alembic",
        "starlette",
        "psycopg",
        "jsonschema",  # params are validated on the hub only
    ):
        assert heavy not in names, f"{heavy} came with the plain install"

    help_text = subprocess.run(
        [str(env_dir / "bin" / "tether"), "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "--queues" in help_text.stdout
    assert "--hub" in help_text.stdout

    # Hub commands explain what is missing instead of a traceback.
    hub = subprocess.run(
        [str(env_dir / "bin" / "tether"), "db", "migrate", "--home", str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert hub.returncode == 1
    assert "tether[hub]" in hub.stderr

    # The worker's modules import in this thin environment.
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import tether.worker.agent, tether.worker.runner, tether; "
            "import tether.sdk.templating, tether.sdk.params; "
            "import sys; print(sorted(m for m in sys.modules if m.startswith('tether.hub')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"
    assert sys.version_info >= (3, 11)
