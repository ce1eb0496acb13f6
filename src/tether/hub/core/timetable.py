"""When scheduled runs happen: cron strings, presets, ``@once`` and timedeltas.

A DAG scheduled on assets has no timetable: asset events start its runs
(see :mod:`tether.hub.core.assets`).

As in Airflow, a run covers a data interval ``[start, end)`` and is created
once ``end`` has passed; its logical date is ``start``.

Cron expressions are read in the DAG's time zone (UTC unless the DAG names
one), so ``0 2 * * *`` in Europe/Amsterdam is 02:00 there all year round.
Across a DST change a wall-clock schedule fires once per day: on the
autumn night that repeats 02:30, ``30 2 * * *`` runs at the first 02:30
only, and in spring a time that does not exist moves to the first valid
minute after it. Expressions that fire every hour keep firing every
(absolute) hour. Timedelta schedules are absolute. Everything returned is
UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from tether.sdk.dag import SCHEDULE_PRESETS


class InvalidSchedule(ValueError):
    """The DAG's schedule cannot be understood."""


def asset_uris(spec: dict[str, Any]) -> list[str]:
    """The asset URIs a serialized DAG is scheduled on; empty for any other schedule."""
    schedule = spec.get("schedule")
    if not isinstance(schedule, dict):
        return []
    uris = schedule.get("assets")
    if (
        set(schedule) != {"assets"}
        or not isinstance(uris, list)
        or not uris
        or not all(isinstance(u, str) and u for u in uris)
    ):
        raise InvalidSchedule(f"unsupported schedule {schedule!r}")
    return uris


@dataclass(frozen=True)
class Timetable:
    cron: str | None = None
    delta: timedelta | None = None
    once: bool = False
    start_date: datetime | None = None
    end_date: datetime | None = None
    catchup: bool = False
    tz: tzinfo = UTC

    @classmethod
    def from_serialized(cls, spec: dict[str, Any]) -> Timetable | None:
        """The timetable of a serialized DAG, or None when no clock starts its runs.

        None for a DAG run only by hand and for one scheduled on assets
        (``{"assets": [...]}``), whose runs asset events start.
        """
        schedule = spec.get("schedule")
        if isinstance(schedule, dict):
            asset_uris(spec)  # checks the form
            return None
        start = datetime.fromisoformat(spec["start_date"]) if spec.get("start_date") else None
        end = datetime.fromisoformat(spec["end_date"]) if spec.get("end_date") else None
        common: dict[str, Any] = {
            "start_date": start,
            "end_date": end,
            "catchup": bool(spec.get("catchup")),
            "tz": zone(spec.get("timezone")),
        }
        if schedule is None:
            return None
        if spec.get("schedule_is_timedelta"):
            seconds = float(schedule)
            if seconds <= 0:
                raise InvalidSchedule("a timedelta schedule must be positive")
            return cls(delta=timedelta(seconds=seconds), **common)
        if not isinstance(schedule, str):
            raise InvalidSchedule(f"unsupported schedule {schedule!r}")
        if schedule == "@once":
            return cls(once=True, **common)
        cron = SCHEDULE_PRESETS.get(schedule, schedule)
        if cron.startswith("@") or not croniter.is_valid(cron):
            raise InvalidSchedule(
                f"invalid schedule {schedule!r}: use a cron expression, a preset "
                f"({', '.join(['@once', *SCHEDULE_PRESETS])}) or a timedelta"
            )
        return cls(cron=cron, **common)

    def manual_interval(self, run_after: datetime) -> tuple[datetime, datetime]:
        """The data interval of a run triggered by hand at ``run_after`` (Airflow's
        ``infer_manual_data_interval``): the latest complete interval for cron, the
        ``timedelta`` before it, or just the moment for ``@once``."""
        if self.once:
            return run_after, run_after
        if self.delta is not None:
            return run_after - self.delta, run_after
        # As _latest_complete_start: a tick exactly at ``run_after`` ends an interval.
        end = self._cron_ticks(run_after + timedelta(microseconds=1), forward=False)
        return self._cron_ticks(end, forward=False), end

    def _next_tick(self, after: datetime, inclusive: bool = False) -> datetime:
        if self.delta is not None:
            base = self.start_date or after
            if after < base:
                return base
            steps = (after - base) // self.delta
            tick = base + steps * self.delta
            if tick < after or (tick == after and not inclusive):
                tick += self.delta
            return tick
        start = after - timedelta(microseconds=1) if inclusive else after
        return self._cron_ticks(start, forward=True)

    def _latest_complete_start(self, now: datetime, anchor: datetime) -> datetime | None:
        """Start of the newest interval that has ended by ``now``.

        ``anchor`` is a point on the grid of a timedelta schedule.
        """
        if self.delta is not None:
            base = self.start_date or anchor
            if now < base + self.delta:
                return None
            steps = (now - base) // self.delta
            return base + (steps - 1) * self.delta
        # From just past ``now``: a tick exactly at ``now`` ends an interval.
        end = self._cron_ticks(now + timedelta(microseconds=1), forward=False)
        return self._cron_ticks(end, forward=False)

    def _cron_ticks(self, origin: datetime, *, forward: bool) -> datetime:
        """The cron tick after (or before) ``origin``, in UTC."""
        assert self.cron is not None
        it = croniter(self.cron, origin.astimezone(self.tz))
        wall_clock = self.cron.split()[1] != "*"  # a fixed hour of the day
        while True:
            tick: datetime = it.get_next(datetime) if forward else it.get_prev(datetime)
            # The second pass through a repeated autumn hour: a wall-clock
            # schedule already fired at the first one.
            if not (wall_clock and tick.fold == 1 and _repeated(tick)):
                return tick.astimezone(UTC)

    def intervals_between(
        self, start: datetime, end: datetime, limit: int
    ) -> list[tuple[datetime, datetime]]:
        """The data intervals whose start (logical date) lies in ``[start, end]``, at
        most ``limit`` of them (for backfill; catchup and start_date do not apply)."""
        out: list[tuple[datetime, datetime]] = []
        tick = self._next_tick(start, inclusive=True)
        while tick <= end and len(out) < limit:
            following = self._next_tick(tick)
            out.append((tick, following))
            tick = following
        return out

    def next_interval(
        self, last_start: datetime | None, now: datetime, first_seen: datetime
    ) -> tuple[datetime, datetime] | None:
        """The data interval of the next run after the one starting ``last_start``.

        ``first_seen`` stands in for a missing start_date. None: no more runs.
        """
        base = self.start_date or first_seen
        if self.once:
            return None if last_start is not None else (base, base)
        if last_start is None:
            start = self._next_tick(base, inclusive=True)
        else:
            start = self._next_tick(last_start)
        if not self.catchup:
            latest = self._latest_complete_start(now, last_start or base)
            if latest is not None and latest > start:
                start = latest
        if self.end_date is not None and start > self.end_date:
            return None
        return start, self._next_tick(start)


def _repeated(moment: datetime) -> bool:
    """Whether ``moment``'s wall-clock time also happened an offset earlier (DST end)."""
    return moment.utcoffset() != moment.replace(fold=0).utcoffset()


def zone(name: str | None) -> tzinfo:
    """The time zone called ``name`` (IANA, e.g. ``Europe/Amsterdam``); UTC for None."""
    if not name or name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"unknown time zone {name!r}: use an IANA name") from None


def manual_data_interval(spec: dict[str, Any], run_after: datetime) -> tuple[datetime, datetime]:
    """The data interval of a manual run of the serialized DAG ``spec``.

    A DAG without a schedule gets ``[run_after, run_after]``, as in Airflow.
    """
    timetable = Timetable.from_serialized(spec)
    return (run_after, run_after) if timetable is None else timetable.manual_interval(run_after)
