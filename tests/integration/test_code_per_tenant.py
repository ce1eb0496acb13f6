"""Code per tenant, with a real hub and real workers: each DAG's bundle holds the
files its parse used (and what its ``include`` names), a worker can download
only the bundles of work it was handed, and a run keeps the code it started
with."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.integration.processes import Hub, RawWorker, running_hub, tether_cli, wait_for

pytestmark = pytest.mark.integration

#: In tenant A's DAG file only: it must never reach tenant B's worker.
A_MARKER = "only-in-tenant-a-7f3e"

FOLDER = {
    "common/__init__.py": "",
    "common/helpers.py": """
        def shout(text):
            return text.upper() + "!"
    """,
    "tenant_a.py": f"""
        # {A_MARKER}
        from common.helpers import shout

        from tether import DAG, PythonOperator

        with DAG("tenant_a_load"):
            PythonOperator(
                task_id="load", queue="tenant-a", python_callable=lambda: print(shout("a"))
            )
    """,
    "tenant_a_generator.py": """
        import json
        from pathlib import Path

        from tether import DAG, PythonOperator

        for name, text in json.loads((Path(__file__).parent / "tenant_a.json").read_text()).items():
            with DAG(f"tenant_a_gen_{name}"):
                PythonOperator(
                    task_id="say", queue="tenant-a", python_callable=print, op_args=[text]
                )
    """,
    "tenant_a.json": json.dumps({"north": f"north says hello {A_MARKER}", "south": "south"}),
    "tenant_b.py": """
        from pathlib import Path

        from common.helpers import shout

        from tether import DAG, PythonOperator


        def load():
            sql = (Path(__file__).parent / "sql" / "b_query.sql").read_text()
            print(shout("b"), "runs", sql.strip())


        with DAG("tenant_b_load", include=["sql/*.sql"]):
            PythonOperator(task_id="load", queue="tenant-b", python_callable=load)
    """,
    "sql/b_query.sql": "SELECT 42 AS b_answer",
    "unrelated_notes.txt": f"nobody opens this {A_MARKER}",
}

TENANT_B_FILES = {"common/__init__.py", "common/helpers.py", "sql/b_query.sql", "tenant_b.py"}


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _cached_files(worker_home: Path) -> dict[str, str]:
    """Every file in a worker's bundle cache, by path inside its bundle, with its text."""
    found = {}
    for path in (worker_home / "bundles").rglob("*"):
        if path.is_file():
            rel = path.relative_to(worker_home / "bundles").parts[1:]
            found["/".join(rel)] = path.read_text(errors="replace")
    return found


def _credential(worker_home: Path) -> str:
    return str(json.loads((worker_home / "credential.json").read_text())["credential"])


def _bundle_of(hub: Hub, dag_id: str) -> dict[str, object]:
    dag: dict[str, object] = hub.api.get(f"/dags/{dag_id}")
    return dag


def test_each_worker_receives_only_the_code_of_its_own_tenant(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    _write(dags, FOLDER)
    with running_hub(
        tmp_path,
        "sqlite",
        None,
        dags,
        workers=[("tenant-a", "site-a", 2), ("tenant-b", "site-b", 2)],
        wait_dags=["tenant_a_load", "tenant_a_gen_north", "tenant_b_load"],
    ) as (hub, (site_a, site_b)):
        b_run = hub.api.run_dag("tenant_b_load")
        assert b_run["state"] == "success", hub.api.run_log(b_run, "load")
        # The helper module and the SQL file named by include= both travelled.
        assert "B! runs SELECT 42 AS b_answer" in hub.api.run_log(b_run, "load")

        gen = hub.api.run_dag("tenant_a_gen_north")
        assert gen["state"] == "success", hub.api.run_log(gen, "say")
        assert f"north says hello {A_MARKER}" in hub.api.run_log(gen, "say")
        assert hub.api.run_dag("tenant_a_load")["state"] == "success"

        # Tenant B's worker holds exactly tenant B's files, and nothing of A's.
        cached = _cached_files(site_b.home)
        assert set(cached) == TENANT_B_FILES
        assert not any(A_MARKER in text for text in cached.values())

        # Each DAG's bundle lists what the parse used: the generator and its config.
        a_gen = _bundle_of(hub, "tenant_a_gen_north")
        assert {f["name"] for f in a_gen["files"]} == {  # type: ignore[attr-defined]
            "tenant_a_generator.py",
            "tenant_a.json",
        }
        b_dag = _bundle_of(hub, "tenant_b_load")
        assert {f["name"] for f in b_dag["files"]} == TENANT_B_FILES  # type: ignore[attr-defined]
        assert a_gen["bundle_sha"] != b_dag["bundle_sha"]

        # Tenant B's worker asking for tenant A's bundle is refused, and so is a
        # bundle that does not exist: the same answer, so nothing is learnt.
        a_sha = _bundle_of(hub, "tenant_a_load")["bundle_sha"]
        headers = {"Authorization": f"Bearer {_credential(site_b.home)}"}
        for sha in (a_sha, "0" * 64):
            answer = httpx.get(f"{hub.url}/api/worker/v1/bundles/{sha}", headers=headers)
            assert answer.status_code == 403, answer.text
            assert "not the code of any task this worker was handed" in answer.text
        refused = hub.api.get("/audit", params={"action": "bundle.refused"})["entries"]
        assert sorted(e["target"] for e in refused) == sorted(
            [f"bundle:{a_sha}", f"bundle:{'0' * 64}"]
        )
        assert {(e["actor"], e["address"]) for e in refused} == {("worker:site-b", "127.0.0.1")}
        # Tenant A's own worker gets it.
        own = httpx.get(
            f"{hub.url}/api/worker/v1/bundles/{a_sha}",
            headers={"Authorization": f"Bearer {_credential(site_a.home)}"},
        )
        assert own.status_code == 200
        assert own.content[:2] == b"\x1f\x8b"  # gzip

        shown = tether_cli("dags", "show", "tenant_b_load", hub=hub)
        assert shown.returncode == 0, shown.stderr
        assert str(b_dag["bundle_sha"]) in shown.stdout
        for name in TENANT_B_FILES:
            assert name in shown.stdout
        assert "tenant_a" not in shown.stdout


def test_an_include_that_names_nothing_is_an_import_error(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    _write(
        dags,
        {
            "typo.py": """
                from tether import DAG, BashOperator

                with DAG("typo", include=["sqll/*.sql"]):
                    BashOperator(task_id="t", bash_command="true")
            """,
            "escape.py": """
                from tether import DAG, BashOperator

                with DAG("escape", include=["../outside.txt"]):
                    BashOperator(task_id="t", bash_command="true")
            """,
        },
    )
    with running_hub(tmp_path, "sqlite", None, dags, workers=()) as (hub, _):

        def errors() -> dict[str, str] | None:
            found = {
                e["fileloc"]: e["message"] for e in hub.api.get("/import-errors")["import_errors"]
            }
            return found if len(found) == 2 else None

        found = wait_for(errors, 30, "both files to show as import errors")
        assert "include entry 'sqll/*.sql' matches no file" in found["typo.py"]
        assert "without '..'" in found["escape.py"]
        assert hub.api.dag_ids() == set()


def test_a_run_keeps_the_code_it_started_with(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    gate = tmp_path / "gate"
    version_file = """
        import os
        import time

        from tether import DAG, PythonOperator

        VERSION = "{version}"


        def wait():
            while not os.path.exists({gate!r}):
                time.sleep(0.05)


        with DAG("evolving"):
            first = PythonOperator(task_id="first", python_callable=wait)
            second = PythonOperator(
                task_id="second", python_callable=lambda: print("code version", VERSION)
            )
            first >> second
    """
    _write(dags, {"evolving.py": version_file.format(version="one", gate=str(gate))})
    with running_hub(tmp_path, "sqlite", None, dags, wait_dags=["evolving"]) as (hub, _):
        old_sha = _bundle_of(hub, "evolving")["bundle_sha"]
        first_run = hub.api.trigger("evolving")
        wait_for(
            lambda: (
                hub.api.tasks(hub.api.run("evolving", first_run))["first"]["state"] == "running"
            ),
            30,
            "the first task to run",
        )
        _write(dags, {"evolving.py": version_file.format(version="two", gate=str(gate))})
        wait_for(
            lambda: _bundle_of(hub, "evolving")["bundle_sha"] != old_sha,
            30,
            "the hub to parse the new code",
        )
        gate.touch()
        run = hub.api.wait_run("evolving", first_run)
        assert run["state"] == "success"
        assert "code version one" in hub.api.run_log(run, "second")

        second = hub.api.run_dag("evolving")
        assert second["state"] == "success"
        assert "code version two" in hub.api.run_log(second, "second")


def test_a_name_enrolled_again_for_another_tenant_does_not_inherit_its_code(
    tmp_path: Path,
) -> None:
    dags = tmp_path / "dags"
    _write(
        dags,
        {
            "tenant_a.py": FOLDER["tenant_a.py"],
            **{k: FOLDER[k] for k in FOLDER if k.startswith("common/")},
        },
    )
    with running_hub(tmp_path, "sqlite", None, dags, workers=(), wait_dags=["tenant_a_load"]) as (
        hub,
        _,
    ):
        raw = RawWorker(hub, "site-x", queues="tenant-a")
        try:
            hub.api.trigger("tenant_a_load")
            (job,) = raw.jobs()
            assert raw.http.get(f"/bundles/{job['bundle_sha']}").status_code == 200
            assert raw.finish(job["attempt_id"], {"state": "success"}).status_code == 200
        finally:
            raw.close()
        # The same name, enrolled again for tenant B: A's code is not B's to read.
        token = hub.api.enrolment_token("tenant-b", "site-x", replace=True)
        enrolled = httpx.post(f"{hub.url}/api/worker/v1/enrol", json={"token": token})
        assert enrolled.status_code == 200, enrolled.text
        again = httpx.get(
            f"{hub.url}/api/worker/v1/bundles/{job['bundle_sha']}",
            headers={"Authorization": f"Bearer {enrolled.json()['credential']}"},
        )
        assert again.status_code == 403
