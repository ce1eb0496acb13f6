"""A worker's own connections.toml: any file that is not what it should be is
refused with the reason (SiteSecretsError), never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.protocol import Job
from tether.worker.site_secrets import FILE_NAME, SiteSecrets, SiteSecretsError

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
