"""Task-instance and run states, with Airflow's words."""

from __future__ import annotations

QUEUED = "queued"
RUNNING = "running"
SUCCESS = "success"
FAILED = "failed"
SKIPPED = "skipped"
UPSTREAM_FAILED = "upstream_failed"
UP_FOR_RETRY = "up_for_retry"
REMOVED = "removed"

#: A task instance in one of these states will not run again by itself.
TI_FINISHED = frozenset({SUCCESS, FAILED, SKIPPED, UPSTREAM_FAILED, REMOVED})
TI_FAILED = frozenset({FAILED, UPSTREAM_FAILED})

#: An attempt the hub gave up on (its worker was lost or replaced, or a person
#: ended its task): reports on it are refused.
ATTEMPT_LOST = "lost"

RUN_QUEUED = "queued"
RUN_RUNNING = "running"
RUN_SUCCESS = "success"
RUN_FAILED = "failed"
RUN_FINISHED = frozenset({RUN_SUCCESS, RUN_FAILED})
