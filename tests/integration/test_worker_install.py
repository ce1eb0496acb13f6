"""``pip install .`` with no extra gives the SDK and the worker only, and a
fresh virtualenv installs the worker from a hub with pip alone."""

from __future__ import annotations

import ensurepip
import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path, PurePosixPath

import httpx
import pytest

from tests.integration.processes import (
    PROXY_VARIABLES,
    REPO,
    Console,
    Hub,
    Worker,
    tether_cli,
    wait_for,
)
from tether import __version__
from tether.hub.dist import repack

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


def _link_worker_dependencies(into: Path) -> list[str]:
    """Link the distributions the plain install needs (tether's requirements
    without extras, recursively) from this environment into ``into``, so a
    fresh venv has them without a registry, and without this environment's
    own tether (an editable install) in sight of its pip."""
    into.mkdir()
    todo = [r for r in importlib.metadata.requires("tether") or [] if "extra ==" not in r]
    seen: set[str] = set()
    while todo:
        name = re.split(r"[^A-Za-z0-9._-]", todo.pop().strip(), maxsplit=1)[0].lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another Python, under a marker
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
        for top in {PurePosixPath(f).parts[0] for f in dist.files or ()}:
            if top in ("..", "__pycache__") or (into / top).exists():
                continue
            (into / top).symlink_to(Path(str(dist.locate_file(top))))
    return sorted(seen)


def test_a_fresh_venv_installs_the_worker_from_the_hub_alone(tmp_path: Path) -> None:
    """pip with the hub as its only index: no registry, no configuration of this machine's."""
    dags = tmp_path / "dags"
    dags.mkdir()
    hub = Hub(tmp_path / "hub", dags, f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        listed = httpx.get(f"{hub.url}/api/worker/v1/dist/", timeout=120).json()
        assert listed["version"] == __version__
        env_dir = tmp_path / "venv"
        python = env_dir / "bin" / "python"
        pip = _fresh_venv(env_dir)
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        linked = _link_worker_dependencies(tmp_path / "deps")
        assert {"httpx", "jinja2"} <= set(linked)
        (Path(site) / "worker-deps.pth").write_text(f"{tmp_path / 'deps'}\n")
        # Nothing of this machine's pip set-up (its indexes, find-links, caches).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1"}
        env = {k: v for k, v in env.items() if k.lower() not in PROXY_VARIABLES}
        pip += ["install", "--disable-pip-version-check", "--no-compile"]

        from_index = subprocess.run(
            [*pip, "--index-url", f"{hub.url}/simple", "tether"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert from_index.returncode == 0, from_index.stdout + from_index.stderr
        probe = [
            str(python),
            "-c",
            "import tether, importlib.metadata as m; "
            "print(tether.__version__, m.version('tether'), tether.__file__)",
        ]
        version, installed, where = subprocess.run(
            probe, capture_output=True, text=True, check=True, timeout=60
        ).stdout.split()
        assert version == installed == listed["version"]
        assert Path(where).is_relative_to(env_dir)  # the venv's own copy, not the checkout's

        # The direct URL works too (the same file, installed again).
        wheel_url = f"{hub.url}{listed['files'][0]['url']}"
        direct = subprocess.run(
            [*pip, "--force-reinstall", "--no-deps", wheel_url],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert direct.returncode == 0, direct.stdout + direct.stderr

        help_text = subprocess.run(
            [str(env_dir / "bin" / "tether"), "worker", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert help_text.returncode == 0, help_text.stderr
        assert "--hub" in help_text.stdout

        # What pip installed packs back into the very wheel the hub served (how
        # a hub installed from a wheel serves its workers).
        served = httpx.get(wheel_url, timeout=60).content
        info = Path(site) / f"tether-{__version__}.dist-info"
        repacked = repack(importlib.metadata.Distribution.at(info))
        assert _files(repacked) == _files(served)
    finally:
        hub.stop()


def _fresh_venv(env_dir: Path) -> list[str]:
    """A venv without packages, and how to run pip in it: from the pip wheel
    Python bundles, which pip supports and which saves installing pip (the
    slowest part of a venv); with a pip installed into the venv where Python
    comes without it."""
    python = env_dir / "bin" / "python"
    bundled = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    venv.create(env_dir, with_pip=not bundled)
    return [str(python), f"{bundled[-1]}/pip"] if bundled else [str(python), "-m", "pip"]


def _files(wheel: bytes) -> dict[str, bytes]:
    """A wheel's members, its RECORD as a set of lines (their order is free)."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    record = f"tether-{__version__}.dist-info/RECORD"
    members[record] = b"\n".join(sorted(members[record].splitlines()))
    return members


UPDATE_DAG = """
from tether import DAG, BashOperator

with DAG("during_update"):
    # Runs until the test lets it end: the update must wait for it.
    BashOperator(task_id="slow", bash_command="while [ ! -e {go} ]; do sleep 0.1; done; echo slept")
"""
OLD_VERSION = "0.0.9"


def _old_wheel(tmp_path: Path) -> Path:
    """A wheel of this source with an older version, built by its backend."""
    source = tmp_path / "old-source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.pyc", ".*_cache", "tests", "docs", "bench"
        ),
    )
    for name in ("pyproject.toml", "src/tether/__init__.py"):
        path = source / name
        text = path.read_text()
        assert f'version = "{__version__}"' in text or f'__version__ = "{__version__}"' in text
        path.write_text(text.replace(f'"{__version__}"', f'"{OLD_VERSION}"', 1))
    out = tmp_path / "old-wheel"
    out.mkdir()
    script = "import sys, hatchling.build as b; print(b.build_wheel(sys.argv[1]))"
    built = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    return out / built.stdout.strip().splitlines()[-1]


def _venv_with_pip(env_dir: Path, deps: Path) -> Path:
    """A venv whose ``python -m pip`` works (the worker updates itself with it)
    and that sees the worker's dependencies; its Python."""
    bundled = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    venv.create(env_dir, with_pip=not bundled)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # pip runs from its wheel on sys.path, as ensurepip itself runs it.
    lines = [str(deps), *([str(bundled[-1])] if bundled else [])]
    (Path(site) / "worker-deps.pth").write_text("\n".join(lines) + "\n")
    return python


def test_a_worker_updates_itself_to_the_hubs_version_and_a_failed_update_changes_nothing(
    tmp_path: Path,
) -> None:
    """A worker installed at an older version: a failing install leaves it
    serving, with the reason shown; a working one waits for the running task,
    installs the hub's wheel and exits 5, and the next start is the new version."""
    dags = tmp_path / "dags"
    dags.mkdir()
    go = tmp_path / "go"
    (dags / "during_update.py").write_text(UPDATE_DAG.format(go=go))
    old = _old_wheel(tmp_path)
    _link_worker_dependencies(tmp_path / "deps")
    python = _venv_with_pip(tmp_path / "venv", tmp_path / "deps")
    # pip reads only this file: first one that makes every install fail.
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text("[install]\nconstraint = /nonexistent/constraints.txt\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": str(pip_conf), "PIP_NO_CACHE_DIR": "1", "PIP_NO_INDEX": "1"}
    pip_conf.write_text("")
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-compile", str(old)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    pip_conf.write_text("[install]\nconstraint = /nonexistent/constraints.txt\n")

    def venv_version() -> str:
        probe = (
            "import tether, importlib.metadata as m; print(tether.__version__, m.version('tether'))"
        )
        versions = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, check=True, timeout=60
        ).stdout.split()
        assert versions[0] == versions[1], versions
        return versions[0]

    assert venv_version() == OLD_VERSION
    hub = Hub(
        tmp_path / "hub",
        dags,
        f"sqlite:///{tmp_path / 'hub.db'}",
        TETHER_MIN_WORKER_VERSION="0.0.1",
    )
    workers: list[Worker] = []
    try:
        hub.api.wait_dags("during_update")

        def start() -> Worker:
            worker = Worker(
                hub, tmp_path / "w-home", "default", "w-old", python=str(python), env=env
            )
            workers.append(worker)
            worker.wait_registered()
            return worker

        worker = start()
        assert hub.api.worker("w-old")["version"] == OLD_VERSION

        # 1. pip fails: the old version goes on serving, and says why.
        asked = tether_cli("workers", "update", "w-old", hub=hub)
        assert asked.returncode == 0, asked.stderr
        assert f"worker w-old asked to update to {__version__}" in asked.stdout
        shown = wait_for(
            lambda: (w := hub.api.worker("w-old"))["update_error"] and w,
            30,
            "the failed update to be reported",
        )
        assert "pip install failed" in shown["update_error"]
        assert "constraints.txt" in shown["update_error"]
        assert (shown["version"], shown["update_requested"]) == (OLD_VERSION, False)
        listed = tether_cli("workers", "list", hub=hub)
        assert "update failed: pip install failed" in listed.stdout
        assert worker.popen.poll() is None
        assert venv_version() == OLD_VERSION
        wait_for(lambda: hub.api.worker("w-old")["state"] == "idle", 30, "the worker to serve")
        assert "update failed; this worker goes on with tether 0.0.9" in worker.output()

        # 2. pip works: the running task ends first, then the install, then exit 5.
        pip_conf.write_text("")
        run_id = hub.api.trigger("during_update")

        def task_state() -> str:
            state: str = hub.api.run("during_update", run_id)["tasks"][0]["state"]
            return state

        wait_for(lambda: task_state() == "running", 60, "the task to start")
        # This time from the console: its Update button, its confirmation, its form.
        console = Console(hub)
        try:
            assert 'href="/ui/workers/w-old/update"' in console.get("/ui/workers").text
            asked_page = console.get("/ui/workers/w-old/update")
            assert "Update worker w-old to the hub&#39;s version?" in asked_page.text
            assert console.confirm(asked_page).status_code == 303
        finally:
            console.close()
        assert hub.api.worker("w-old")["update_requested"] is True
        wait_for(lambda: hub.api.worker("w-old")["state"] == "draining", 30, "the drain")
        assert task_state() == "running"
        assert venv_version() == OLD_VERSION  # nothing installed under a running task
        go.touch()
        code = wait_for(lambda: worker.popen.poll(), 120, "the worker to exit after its update")
        assert code == 5, worker.output()
        run = hub.api.run("during_update", run_id)
        assert run["state"] == "success", run
        assert run["tasks"][0]["try_number"] == 1  # ran once, to its end
        assert "slept" in hub.api.run_log(run, "slow")
        assert venv_version() == __version__
        assert f"installed tether {__version__}; exiting 5" in worker.output()

        # 3. Started again (as its service manager would), it is the hub's version.
        start()
        shown = hub.api.worker("w-old")
        assert shown["version"] == __version__
        assert (shown["update_requested"], shown["update_error"]) == (False, None)
        again = tether_cli("workers", "update", "w-old", hub=hub)
        assert f"already runs {__version__}: nothing to do" in again.stdout
        # At the hub's version, the console offers no update.
        console = Console(hub)
        try:
            assert "/ui/workers/w-old/update" not in console.get("/ui/workers").text
        finally:
            console.close()
    finally:
        for started in workers:
            started.stop()
        hub.stop()
