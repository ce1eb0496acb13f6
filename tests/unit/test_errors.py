"""The one table from domain errors to statuses (``hub/errors.py``)."""

from __future__ import annotations

import json

from sqlalchemy.exc import IntegrityError

from tether.hub.core import attempts, handout, queries
from tether.hub.errors import ERRORS, answer_for


def _read(exc: Exception) -> tuple[int, str, dict[str, str]]:
    response = answer_for(exc)
    return response.status_code, json.loads(response.body)["detail"], dict(response.headers)


def test_an_error_is_answered_with_its_status_and_its_own_reason() -> None:
    assert _read(queries.NotFound("no DAG 'x'"))[:2] == (404, "no DAG 'x'")
    assert _read(attempts.AttemptFenced("already ended as lost"))[:2] == (
        409,
        "already ended as lost",
    )


def test_a_header_goes_with_the_status_that_needs_it() -> None:
    status, reason, headers = _read(handout.TokenRefused("invalid attempt token"))
    assert (status, reason) == (401, "invalid attempt token")
    assert headers["www-authenticate"] == "Bearer"


def test_a_subclass_shares_its_bases_row() -> None:
    class Narrower(queries.NotFound):
        pass

    assert _read(Narrower("no run 'r'"))[:2] == (404, "no run 'r'")


def test_two_writers_at_once_get_409_without_the_databases_words() -> None:
    exc = IntegrityError("INSERT INTO connection ...", {}, Exception("UNIQUE constraint failed"))
    status, reason, _ = _read(exc)
    assert status == 409
    assert "INSERT" not in reason
    assert "UNIQUE" not in reason
    assert "try again" in reason


def test_only_client_errors_but_one_operators_error_are_in_the_table() -> None:
    """A 5xx from the table is the operator's to fix and says so (the secret key)."""
    statuses = {cls.__name__: row.status for cls, row in ERRORS.items()}
    assert {name for name, status in statuses.items() if status >= 500} == {"SecretKeyError"}
