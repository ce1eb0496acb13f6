"""``tether tokens`` end to end, against a real hub process: a viewer's token,
made with the CLI, lists DAGs, is refused a trigger with a message that names
the role needed, and is refused altogether once revoked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hubtools import write_dag
from tests.integration.processes import running_hub, tether_cli

pytestmark = pytest.mark.integration


def test_a_viewer_token_made_with_the_cli_reads_is_refused_a_trigger_and_can_be_revoked(
    tmp_path: Path,
) -> None:
    dags = tmp_path / "dags"
    write_dag(
        dags,
        "hello.py",
        """
        from tether import DAG, BashOperator
        with DAG("hello"):
            BashOperator(task_id="hi", bash_command="echo hi")
    """,
    )
    with running_hub(tmp_path, "sqlite", None, dags, workers=(), wait_dags=("hello",)) as (
        hub,
        _,
    ):
        made = tether_cli(
            "tokens", "create", "ci-reader", "--role", "viewer", "--expires", "30d", hub=hub
        )
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert token.startswith("tth_")
        assert len(token) == 47
        assert "shown only once" in made.stderr
        assert "viewer" in made.stderr

        listed = tether_cli("dags", "list", hub=hub, token=token)
        assert listed.returncode == 0, listed.stderr
        assert "hello" in listed.stdout

        trigger = tether_cli("dags", "trigger", "hello", hub=hub, token=token)
        assert trigger.returncode != 0
        assert "403" in trigger.stderr
        assert "needs the operator role" in trigger.stderr
        assert "'ci-reader' has the viewer role" in trigger.stderr
        # A bad value comes back with the hub's reason (the rest: test_roles.py).
        refused = tether_cli(
            "tokens", "create", "bad", "--role", "viewer", "--expires=-1d", hub=hub
        )
        assert refused.returncode != 0
        assert "422" in refused.stderr
        assert "invalid expiry '-1d'" in refused.stderr

        table = tether_cli("tokens", "list", hub=hub)
        assert table.returncode == 0, table.stderr
        row = next(line for line in table.stdout.splitlines() if line.startswith("ci-reader"))
        assert row.split()[1:3] == ["viewer", "active"]
        assert token not in table.stdout

        revoked = tether_cli("tokens", "revoke", "ci-reader", hub=hub)
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked" in revoked.stdout

        after = tether_cli("dags", "list", hub=hub, token=token)
        assert after.returncode != 0
        assert "401" in after.stderr
        assert "token revoked" in after.stderr
