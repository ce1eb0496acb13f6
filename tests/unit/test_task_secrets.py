"""The task side of need-to-know secrets, without a hub: declarations are
checked, site-local values are read, and what is secret is masked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tether.sdk import DAG, BashOperator, masking, secrets
from tether.sdk.context import running


@pytest.fixture
def masker() -> Iterator[None]:
    # The process's registry is global; values masked here stay masked, which no
    # other unit test minds (they register their own).
    try:
        yield
    finally:
        secrets.configure(None)


def _task(**kwargs: Any) -> Any:
    with DAG("t_secrets", connections=["db"], variables=["region"]):
        return BashOperator(task_id="t", bash_command="true", **kwargs)


def test_a_site_local_connection_is_read_and_its_secret_parts_masked(masker: None) -> None:
    secrets.configure(
        {
            "site": {
                "connections": {
                    "db": {
                        "conn_id": "db",
                        "conn_type": "postgres",
                        "host": "db.site",
                        "login": "etl",
                        "password": "site-password-1",
                        "extra": '{"sslmode": "require", "auth": {"api_key": "k-123456"}}',
                    }
                },
                "variables": {"region": "eu-west-1"},
            }
        }
    )
    task = _task()
    with running({"task": task}):
        conn = secrets.get_connection("db")
        assert conn.host == "db.site"
        assert secrets.Variable.get("region") == "eu-west-1"
        with pytest.raises(secrets.UndeclaredSecret, match=r"add connections=\['other'\]"):
            secrets.get_connection("other")
    text = f"{conn.password} {conn.extra_dejson} {conn.get_uri()} region=eu-west-1"
    redacted = masking.redact(text)
    assert "site-password-1" not in redacted
    assert "k-123456" not in redacted
    assert "require" in redacted  # not a secret key: left alone
    assert "eu-west-1" not in redacted  # a site-local value is kept on site for a reason


def test_outside_a_task_nothing_is_read(masker: None) -> None:
    with pytest.raises(secrets.UndeclaredSecret, match="only be read while a task runs"):
        secrets.get_connection("db")


def test_without_a_hub_to_ask_a_name_the_site_lacks_fails_with_the_reason(masker: None) -> None:
    task = _task()
    with running({"task": task}), pytest.raises(secrets.SecretUnavailable, match="no way to"):
        secrets.get_connection("db")
