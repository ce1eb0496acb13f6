"""Trigger rules: what a waiting task becomes given its upstream states (Airflow semantics)."""

from __future__ import annotations

from collections import Counter

import pytest

from tether.hub.core import states as S
from tether.hub.core.runs import _decide
from tether.sdk.baseoperator import TRIGGER_RULES

OK = S.SUCCESS
FAIL = S.FAILED
SKIP = S.SKIPPED
UPF = S.UPSTREAM_FAILED
WAITING = None  # an upstream task instance that has not been scheduled yet
RUN = S.RUNNING
QUEUED = S.QUEUED
RETRY = S.UP_FOR_RETRY

# (rule, upstream states, decision); decision None means "keep waiting".
CASES: list[tuple[str, list[str | None], str | None]] = [
    # all_success: every upstream succeeded; a failure or skip propagates at once.
    ("all_success", [OK, OK, OK], S.QUEUED),
    ("all_success", [OK, OK, WAITING], None),
    ("all_success", [OK, RUN], None),
    ("all_success", [OK, RETRY], None),
    ("all_success", [OK, QUEUED], None),
    ("all_success", [FAIL, WAITING], S.UPSTREAM_FAILED),
    ("all_success", [UPF, OK], S.UPSTREAM_FAILED),
    ("all_success", [SKIP, OK], S.SKIPPED),
    ("all_success", [SKIP, RUN], S.SKIPPED),
    ("all_success", [SKIP, FAIL], S.UPSTREAM_FAILED),
    # all_failed: every upstream failed (or upstream_failed); any success or skip skips.
    ("all_failed", [FAIL, FAIL], S.QUEUED),
    ("all_failed", [FAIL, UPF], S.QUEUED),
    ("all_failed", [FAIL, WAITING], None),
    ("all_failed", [FAIL, RETRY], None),
    ("all_failed", [FAIL, OK], S.SKIPPED),
    ("all_failed", [OK, RUN], S.SKIPPED),
    ("all_failed", [FAIL, SKIP], S.SKIPPED),
    # all_done: every upstream finished, whatever the outcome.
    ("all_done", [OK, FAIL, SKIP, UPF], S.QUEUED),
    ("all_done", [FAIL], S.QUEUED),
    ("all_done", [OK, WAITING], None),
    ("all_done", [FAIL, RUN], None),
    ("all_done", [RETRY], None),
    # one_success: fires as soon as one upstream succeeded.
    ("one_success", [OK, WAITING, RUN], S.QUEUED),
    ("one_success", [FAIL, OK], S.QUEUED),
    ("one_success", [WAITING, WAITING], None),
    ("one_success", [FAIL, RUN], None),
    ("one_success", [SKIP, SKIP], S.SKIPPED),
    ("one_success", [FAIL, SKIP], S.UPSTREAM_FAILED),
    ("one_success", [FAIL, UPF], S.UPSTREAM_FAILED),
    # one_failed: fires as soon as one upstream failed.
    ("one_failed", [FAIL, WAITING], S.QUEUED),
    ("one_failed", [UPF, RUN], S.QUEUED),
    ("one_failed", [OK, FAIL], S.QUEUED),
    ("one_failed", [OK, WAITING], None),
    ("one_failed", [OK, RETRY], None),
    ("one_failed", [OK, SKIP], S.SKIPPED),
    ("one_failed", [OK, OK], S.SKIPPED),
    # none_failed: all finished, none failed; skips are fine.
    ("none_failed", [OK, SKIP], S.QUEUED),
    ("none_failed", [SKIP, SKIP], S.QUEUED),
    ("none_failed", [OK, OK], S.QUEUED),
    ("none_failed", [OK, WAITING], None),
    ("none_failed", [SKIP, RUN], None),
    ("none_failed", [FAIL, WAITING], S.UPSTREAM_FAILED),
    ("none_failed", [UPF, OK], S.UPSTREAM_FAILED),
    # none_failed_min_one_success: as none_failed, but at least one success.
    ("none_failed_min_one_success", [OK, SKIP], S.QUEUED),
    ("none_failed_min_one_success", [OK, OK], S.QUEUED),
    ("none_failed_min_one_success", [SKIP, SKIP], S.SKIPPED),
    ("none_failed_min_one_success", [SKIP, WAITING], None),
    ("none_failed_min_one_success", [OK, RUN], None),
    ("none_failed_min_one_success", [FAIL, OK], S.UPSTREAM_FAILED),
    ("none_failed_min_one_success", [UPF, WAITING], S.UPSTREAM_FAILED),
    # none_skipped: all finished, none skipped; failures are fine.
    ("none_skipped", [OK, FAIL], S.QUEUED),
    ("none_skipped", [OK, UPF], S.QUEUED),
    ("none_skipped", [OK, OK], S.QUEUED),
    ("none_skipped", [OK, WAITING], None),
    ("none_skipped", [FAIL, RETRY], None),
    ("none_skipped", [SKIP, WAITING], S.SKIPPED),
    ("none_skipped", [OK, SKIP], S.SKIPPED),
    # always: runs at once, whatever the upstream tasks do.
    ("always", [WAITING, RUN], S.QUEUED),
    ("always", [FAIL, SKIP, UPF], S.QUEUED),
    ("always", [OK], S.QUEUED),
]


@pytest.mark.parametrize(
    ("rule", "upstream", "expected"),
    CASES,
    ids=[f"{rule}-{'+'.join(str(s) for s in up)}" for rule, up, _ in CASES],
)
def test_decide(rule: str, upstream: list[str | None], expected: str | None) -> None:
    assert _decide(rule, Counter(upstream), len(upstream)) == expected


def test_every_rule_is_covered() -> None:
    assert {rule for rule, _, _ in CASES} == TRIGGER_RULES


@pytest.mark.parametrize("rule", sorted(TRIGGER_RULES))
def test_task_without_upstream_is_queued(rule: str) -> None:
    assert _decide(rule, Counter(), 0) == S.QUEUED


@pytest.mark.parametrize("rule", sorted(TRIGGER_RULES))
def test_single_unfinished_upstream_waits_unless_always(rule: str) -> None:
    expected = S.QUEUED if rule == "always" else None
    assert _decide(rule, Counter([S.RUNNING]), 1) == expected


def test_unknown_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown trigger rule"):
        _decide("some_success", Counter([S.SUCCESS]), 1)
