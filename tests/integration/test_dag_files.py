"""DAG files as people edit them, with a real hub: a DAG keeps the file it came
from, a broken file keeps its DAGs' last good version, and a file that hangs
holds up no other; only files that changed are parsed again."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.integration.processes import running_hub, tether_cli, wait_for

pytestmark = pytest.mark.integration


def _write(folder: Path, name: str, source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(source))


def _errors(hub) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {e["fileloc"]: e["message"] for e in hub.api.get("/import-errors")["import_errors"]}


SHARED = """
    from tether import DAG, BashOperator

    with DAG("shared"):
        BashOperator(task_id="{task}", bash_command="echo from {task}")
"""


def test_a_dag_keeps_the_file_it_came_from(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    _write(dags, "zeta.py", SHARED.format(task="original"))
    with running_hub(tmp_path, "sqlite", None, dags, workers=(), wait_dags=["shared"]) as (
        hub,
        _,
    ):
        # A newcomer that sorts first defines the same id: it is the import error.
        _write(dags, "alpha.py", SHARED.format(task="newcomer"))
        found = wait_for(lambda: _errors(hub).get("alpha.py"), 30, "alpha.py to be refused")
        assert "DAG id 'shared' is already defined in zeta.py" in found
        assert "zeta.py" not in _errors(hub)
        dag = hub.api.get("/dags/shared")
        assert dag["fileloc"] == "zeta.py"
        assert dag["task_ids"] == ["original"]
        # Once the original lets the id go, the newcomer has it.
        (dags / "zeta.py").unlink()
        wait_for(
            lambda: hub.api.get("/dags/shared")["fileloc"] == "alpha.py", 30, "alpha.py to take it"
        )
        assert _errors(hub) == {}


def test_a_broken_file_keeps_its_dags_last_good_version(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    _write(
        dags,
        "steady.py",
        """
        from tether import DAG, BashOperator

        with DAG("steady"):
            BashOperator(task_id="say", bash_command="echo version one")
        """,
    )
    with running_hub(tmp_path, "sqlite", None, dags, wait_dags=["steady"]) as (hub, _):
        (dags / "steady.py").write_text("from tether import DAG\nwith DAG('steady':\n")
        message = wait_for(lambda: _errors(hub).get("steady.py"), 30, "the syntax error")
        assert "SyntaxError" in message
        dag = hub.api.get("/dags/steady")  # still there, shown as broken
        assert "SyntaxError" in dag["import_error"]
        assert "steady" in hub.api.dag_ids()
        run = hub.api.run_dag("steady")  # and it runs its last good version
        assert run["state"] == "success"
        assert "version one" in hub.api.run_log(run, "say")
        listed = tether_cli("dags", "list", hub=hub)
        assert "steady" in listed.stdout
        assert "BROKEN" in listed.stdout
        shown = tether_cli("dags", "show", "steady", hub=hub)
        assert "BROKEN" in shown.stdout
        assert "SyntaxError" in shown.stdout
        # Fixed again: no longer broken.
        _write(
            dags,
            "steady.py",
            """
            from tether import DAG, BashOperator

            with DAG("steady"):
                BashOperator(task_id="say", bash_command="echo version two")
            """,
        )
        wait_for(lambda: hub.api.get("/dags/steady")["import_error"] is None, 30, "the fix")
        assert "version two" in hub.api.run_log(hub.api.run_dag("steady"), "say")


def test_a_file_that_hangs_holds_up_no_other_and_unchanged_files_are_not_parsed_again(
    tmp_path: Path,
) -> None:
    dags = tmp_path / "dags"
    gate, imports = tmp_path / "gate", tmp_path / "imports.txt"
    _write(
        dags,
        "slow.py",
        f"""
        import time
        from pathlib import Path

        from tether import DAG, BashOperator

        with open({str(imports)!r}, "a") as f:
            f.write("slow imported\\n")
        while not Path({str(gate)!r}).exists():
            time.sleep(0.05)

        with DAG("slow"):
            BashOperator(task_id="t", bash_command="true")
        """,
    )
    quick = """
        from tether import DAG, BashOperator

        with DAG("quick"):
            BashOperator(task_id="t", bash_command="echo {text}")
    """
    _write(dags, "quick.py", quick.format(text="one"))
    with running_hub(tmp_path, "sqlite", None, dags, workers=(), TETHER_DAG_FILE_TIMEOUT="120") as (
        hub,
        _,
    ):
        # quick appears while slow.py is still importing (it waits for the gate).
        hub.api.wait_dags("quick")
        # Its parse child may begin after quick's is done, on a busy machine.
        wait_for(lambda: imports.exists(), 30, "slow.py's import to begin")
        assert imports.read_text() == "slow imported\n"
        assert "slow" not in hub.api.dag_ids()
        gate.touch()
        hub.api.wait_dags("slow")
        # Only the file that changed is imported again.
        before = hub.api.get("/dags/quick")["bundle_sha"]
        _write(dags, "quick.py", quick.format(text="two"))
        wait_for(
            lambda: hub.api.get("/dags/quick")["bundle_sha"] != before,
            30,
            "quick.py to be parsed again",
        )
        assert imports.read_text() == "slow imported\n"
