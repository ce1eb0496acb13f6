"""Strict wire values: what the worker makes sendable, the hub takes, and a job
can carry on, for every depth and kind of value."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from tether.hub.worker_api.routes import FinishIn
from tether.protocol import (
    ENVELOPE_DEPTH,
    MAX_JSON_DEPTH,
    WireError,
    check_wire_value,
    loads_strict,
    sendable_result,
    sendable_text,
)


def _deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1])
def test_what_the_worker_sends_the_hub_takes_and_a_job_carries(levels: int) -> None:
    output = _deep(levels)
    result = sendable_result("success", output)
    taken = levels <= MAX_JSON_DEPTH
    if taken:
        FinishIn(state="success", output=output)
    else:
        with pytest.raises(pydantic.ValidationError, match="nested more than 64 levels deep"):
            FinishIn(state="success", output=output)
    # The worker and the hub agree on every value...
    assert (result.state == "success") is taken
    if taken:
        # ...and what the hub takes fits in a job (a mapped task's list of outputs
        # inside inputs), which the claim checks with the envelope's room.
        job = {"inputs": {"up": [output]}, "conf": {}}
        check_wire_value(job, "the job", MAX_JSON_DEPTH + ENVELOPE_DEPTH)
        loads_strict('{"state": "success", "output": ' + "[" * levels + "1" + "]" * levels + "}")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "nan is not a JSON number"),
        (float("inf"), "inf is not a JSON number"),
        (2**63, "does not fit in 64 bits"),
        ("a\x00b", "cannot contain NUL"),
        ("caf\udce9", "is not valid Unicode"),
        ({"k": {"\udce9": 1}}, "is not valid Unicode"),
        (object(), "a object is not JSON"),
    ],
)
def test_values_no_store_keeps_are_refused_naming_where(value: Any, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        check_wire_value({"rows": [1, value]})
    result = sendable_result("success", {"rows": [1, value]})
    assert result.state == "failed"
    assert result.output is None
    assert "cannot be sent to the hub" in (result.error or "") or "not JSON" in (result.error or "")


def test_tuples_travel_as_lists_and_errors_are_made_sendable() -> None:
    assert sendable_result("success", (1, ("a", 2.5))).output == [1, ["a", 2.5]]
    # A return value travels as JSON would write it: number keys become strings...
    assert sendable_result("success", {1: "x"}).output == {"1": "x"}
    # ...while a message that still holds one is refused.
    with pytest.raises(WireError, match="object keys must be strings"):
        check_wire_value({1: "x"})
    text = sendable_text("bad\x00name caf\udce9.csv")
    assert text == "bad\\x00name caf\\udce9.csv"
    assert sendable_result("failed", error="x" * 10_000).error is not None
    assert len(sendable_result("failed", error="x" * 10_000).error or "") == 8000
    assert sendable_result("exploded").state == "failed"
