"""The database URL parameters the hub reads itself (``store/db.py``)."""

from __future__ import annotations

import pytest

from tether.hub.store.db import connect_arguments

PG = "postgresql+psycopg://tether:s%40cret@pgbouncer:6432/tether"


@pytest.mark.parametrize(
    ("query", "threshold"),
    [
        ("prepare_threshold=none", None),
        ("prepare_threshold=NONE", None),
        ("prepare_threshold=0", 0),
    ],
)
def test_prepare_threshold_becomes_a_driver_argument(query: str, threshold: int | None) -> None:
    url, args = connect_arguments(f"{PG}?sslmode=require&{query}")
    assert args == {"prepare_threshold": threshold}
    # The rest of the URL, its password and other parameters, is left as it was.
    assert url == f"{PG}?sslmode=require"


def test_a_url_without_it_is_left_alone() -> None:
    assert connect_arguments(PG + "?sslmode=require") == (PG + "?sslmode=require", {})
    sqlite = "sqlite:////tmp/x/tether.db?prepare_threshold=none"
    assert connect_arguments(sqlite) == (sqlite, {})


def test_a_bad_prepare_threshold_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="prepare_threshold .* whole number or 'none', not 'soon'"):
        connect_arguments(PG + "?prepare_threshold=soon")
