"""Site-local secrets: what a worker holds itself, and hands a task only for the
names it declares."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tether.protocol import Job
from tether.worker.site_secrets import FILE_NAME, SiteSecrets, SiteSecretsError


def _job(connections: list[str], variables: list[str]) -> Job:
    return Job(
        attempt_id="a" * 32,
        dag_id="d",
        task_id="t",
        run_id="r",
        try_number=1,
        queue="default",
        bundle_sha="b" * 64,
        fileloc="d.py",
        connections=connections,
        variables=variables,
    )


def test_a_task_is_handed_only_the_names_it_declares_environment_first(tmp_path: Path) -> None:
    (tmp_path / "connections.toml").write_text(
        textwrap.dedent(
            """
            [connections.customer_db]
            uri = "postgresql://file_user:file-pw@db.file/sales"

            [connections.sftp]
            conn_type = "sftp"
            host = "files.internal"
            login = "etl"
            password = "sftp-pw"
            port = 2222
            extra = {key_file = "/etc/etl/key"}

            [connections.undeclared]
            uri = "http://u:never-handed@x"

            [variables]
            region = "eu-west-1"
            limits = {max = 3}
            """
        )
    )
    env = {"TETHER_CONN_CUSTOMER_DB": "postgresql://env_user:env-pw@db.env:5432/sales"}
    site = SiteSecrets(tmp_path, env)
    given = site.for_job(_job(["customer_db", "sftp", "not_here"], ["region", "limits"]))
    assert set(given["connections"]) == {"customer_db", "sftp"}
    assert given["connections"]["customer_db"]["login"] == "env_user"  # the environment wins
    assert given["connections"]["customer_db"]["password"] == "env-pw"
    assert given["connections"]["sftp"]["port"] == 2222
    assert given["connections"]["sftp"]["extra"] == '{"key_file": "/etc/etl/key"}'
    assert given["variables"] == {"region": "eu-west-1", "limits": '{"max": 3}'}
    assert "never-handed" not in repr(given)
    assert site.names() == {
        "connections": ["customer_db", "sftp", "undeclared"],
        "variables": ["limits", "region"],
    }


def test_the_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "connections.toml"
    path.write_text('[variables]\nregion = "one"\n')
    site = SiteSecrets(tmp_path, {})
    assert site.for_job(_job([], ["region"]))["variables"] == {"region": "one"}
    path.write_text('[variables]\nregion = "two, longer"\n')
    assert site.for_job(_job([], ["region"]))["variables"] == {"region": "two, longer"}
    # A broken edit keeps the last good file (and says so in the worker's log).
    path.write_text("[variables\n")
    os.utime(path, ns=(1, 1))
    assert site.for_job(_job([], ["region"]))["variables"] == {"region": "two, longer"}


@pytest.mark.parametrize(
    ("text", "env", "reason"),
    [
        ("[variables\n", {}, "cannot be read"),
        ('[connections.db]\nuri = "not a uri"\n', {}, "[connections.db]"),
        ('[connections.db]\nuri = "http://h"\nhost = "x"\n', {}, "not both"),
        ('[connections.db]\nhots = "x"\n', {}, "unknown keys hots"),
        ('[connections.db]\nhost = "x"\nport = "22"\n', {}, "port must be a whole number"),
        ('[connections."../x"]\nuri = "http://h"\n', {}, "invalid connection name"),
        ('[secrets]\nx = "y"\n', {}, "unknown tables secrets"),
        ("", {"TETHER_CONN_BAD": "::nope"}, "TETHER_CONN_BAD"),
    ],
)
def test_what_cannot_be_read_is_refused_with_the_reason(
    tmp_path: Path, text: str, env: dict[str, str], reason: str
) -> None:
    (tmp_path / "connections.toml").write_text(text)
    with pytest.raises(SiteSecretsError) as caught:
        SiteSecrets(tmp_path, env)
    assert reason in str(caught.value)


GOOD = '[connections.db]\nuri = "postgres://u:site-pw-1@h/s"\n\n[variables]\nregion = "eu"\n'


@pytest.mark.parametrize(
    "text",
    [
        "connections = 5",
        'connections = "postgres://u:p@h/s"',
        'variables = "abc"',
        "variables = [1]",
        "[variables]\nwhen = 1979-05-27",  # TOML dates are not JSON
        "[variables]\nnested = {at = 07:32:00}",
        "[connections.db]\nextra = 5",
    ],
)
def test_a_file_of_the_wrong_shape_is_refused_with_the_reason(tmp_path: Path, text: str) -> None:
    (tmp_path / FILE_NAME).write_text(text)
    with pytest.raises(SiteSecretsError, match=FILE_NAME):
        SiteSecrets(tmp_path, {})


def test_a_file_broken_while_the_worker_runs_leaves_the_last_good_one(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    path.write_text(GOOD)
    site = SiteSecrets(tmp_path, {})
    path.write_text("variables = [1, 2, 3]  # and longer, so the size changes\n")
    job = Job.from_dict(
        {
            "attempt_id": "a" * 32,
            "dag_id": "d",
            "run_id": "r",
            "task_id": "t",
            "try_number": 1,
            "queue": "default",
            "bundle_sha": "0" * 64,
            "fileloc": "d.py",
            "connections": ["db"],
            "variables": ["region"],
        }
    )
    held = site.for_job(job)
    assert held["connections"]["db"]["password"] == "site-pw-1"
    assert held["variables"] == {"region": "eu"}
