"""Unit tests of the hub's timetable: when scheduled runs happen (Airflow semantics).

All datetimes are fixed and aware (UTC); the wall clock is never read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tether.hub.core.timetable import InvalidSchedule, Timetable, manual_data_interval


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def spec(schedule: Any, **extra: Any) -> dict[str, Any]:
    """A serialized DAG as far as the timetable reads it."""
    out: dict[str, Any] = {
        "schedule": schedule,
        "schedule_is_timedelta": False,
        "start_date": None,
        "end_date": None,
        "catchup": False,
    }
    for key in ("start_date", "end_date"):
        if isinstance(extra.get(key), datetime):
            extra[key] = extra[key].isoformat()
    out.update(extra)
    return out


def timetable(schedule: Any, **extra: Any) -> Timetable:
    table = Timetable.from_serialized(spec(schedule, **extra))
    assert table is not None
    return table


def delta_timetable(delta: timedelta, **extra: Any) -> Timetable:
    return timetable(delta.total_seconds(), schedule_is_timedelta=True, **extra)


FAR = at(2030, 1, 1)  # a "now" long after every interval in these tests


# --- from_serialized ----------------------------------------------------------------------


def test_no_schedule_means_no_timetable() -> None:
    assert Timetable.from_serialized(spec(None, start_date=at(2024, 1, 1))) is None


def test_cron_string_is_kept() -> None:
    table = timetable("*/15 6-18 * * 1-5")
    assert table.cron == "*/15 6-18 * * 1-5"
    assert table.delta is None
    assert table.once is False


@pytest.mark.parametrize(
    ("preset", "cron"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_presets_become_cron_expressions(preset: str, cron: str) -> None:
    assert timetable(preset).cron == cron


def test_once() -> None:
    table = timetable("@once")
    assert table.once is True
    assert table.cron is None
    assert table.delta is None


def test_timedelta_schedule() -> None:
    table = delta_timetable(timedelta(minutes=90))
    assert table.delta == timedelta(minutes=90)
    assert table.cron is None


def test_dates_and_catchup_are_read() -> None:
    table = timetable("@daily", start_date=at(2024, 1, 1), end_date=at(2024, 2, 1), catchup=True)
    assert table.start_date == at(2024, 1, 1)
    assert table.end_date == at(2024, 2, 1)
    assert table.catchup is True
    assert timetable("@daily").catchup is False


@pytest.mark.parametrize(
    "schedule", ["not a cron", "61 * * * *", "* * * *", "@fortnightly", "@", "", 3600]
)
def test_invalid_schedule_is_rejected(schedule: Any) -> None:
    with pytest.raises(InvalidSchedule):
        Timetable.from_serialized(spec(schedule))


@pytest.mark.parametrize("seconds", [0, -60])
def test_non_positive_timedelta_is_rejected(seconds: float) -> None:
    with pytest.raises(InvalidSchedule, match="positive"):
        Timetable.from_serialized(spec(seconds, schedule_is_timedelta=True))


# --- next_interval: cron ------------------------------------------------------------------


def test_first_interval_starts_at_start_date_when_it_is_a_tick() -> None:
    table = timetable("@daily", start_date=at(2024, 1, 1), catchup=True)
    assert table.next_interval(None, FAR, FAR) == (at(2024, 1, 1), at(2024, 1, 2))


def test_first_interval_starts_at_the_first_tick_after_start_date() -> None:
    table = timetable("@daily", start_date=at(2024, 1, 1, 10, 30), catchup=True)
    assert table.next_interval(None, FAR, FAR) == (at(2024, 1, 2), at(2024, 1, 3))
    quarter = timetable("*/15 * * * *", start_date=at(2024, 1, 1, 0, 7), catchup=True)
    assert quarter.next_interval(None, FAR, FAR) == (at(2024, 1, 1, 0, 15), at(2024, 1, 1, 0, 30))


def test_catchup_walks_consecutive_intervals_from_the_start_date() -> None:
    table = timetable("@hourly", start_date=at(2024, 1, 1), catchup=True)
    now = at(2024, 1, 2)
    seen = []
    last = None
    for _ in range(5):
        interval = table.next_interval(last, now, now)
        assert interval is not None
        seen.append(interval)
        last = interval[0]
    assert seen == [(at(2024, 1, 1, h), at(2024, 1, 1, h + 1)) for h in range(5)]


def test_intervals_follow_an_irregular_cron() -> None:
    # 09:00 and 17:00 on weekdays; 2024-01-05 is a Friday.
    table = timetable("0 9,17 * * 1-5", start_date=at(2024, 1, 5), catchup=True)
    first = table.next_interval(None, FAR, FAR)
    assert first == (at(2024, 1, 5, 9), at(2024, 1, 5, 17))
    second = table.next_interval(first[0], FAR, FAR)
    assert second == (at(2024, 1, 5, 17), at(2024, 1, 8, 9))
    third = table.next_interval(second[0], FAR, FAR)
    assert third == (at(2024, 1, 8, 9), at(2024, 1, 8, 17))


def test_without_catchup_the_first_run_is_the_latest_complete_interval() -> None:
    table = timetable("@daily", start_date=at(2024, 1, 1), catchup=False)
    now = at(2024, 1, 10, 12)
    assert table.next_interval(None, now, now) == (at(2024, 1, 9), at(2024, 1, 10))


def test_without_catchup_missed_intervals_are_skipped() -> None:
    table = timetable("@daily", start_date=at(2024, 1, 1), catchup=False)
    now = at(2024, 1, 10, 12)
    assert table.next_interval(at(2024, 1, 2), now, now) == (at(2024, 1, 9), at(2024, 1, 10))


def test_without_catchup_an_up_to_date_dag_gets_the_following_interval() -> None:
    table = timetable("@daily", start_date=at(2024, 1, 1), catchup=False)
    now = at(2024, 1, 10, 12)
    # The run for [Jan 9, Jan 10) exists; the next one covers the day in progress.
    assert table.next_interval(at(2024, 1, 9), now, now) == (at(2024, 1, 10), at(2024, 1, 11))


def test_without_catchup_a_future_start_date_is_respected() -> None:
    table = timetable("@daily", start_date=at(2024, 3, 1), catchup=False)
    now = at(2024, 1, 10, 12)
    assert table.next_interval(None, now, now) == (at(2024, 3, 1), at(2024, 3, 2))


def test_with_catchup_missed_intervals_are_not_skipped() -> None:
    table = timetable("@daily", start_date=at(2024, 1, 1), catchup=True)
    now = at(2024, 1, 10, 12)
    assert table.next_interval(at(2024, 1, 2), now, now) == (at(2024, 1, 3), at(2024, 1, 4))


def test_missing_start_date_falls_back_to_first_seen() -> None:
    table = timetable("@daily", catchup=True)
    first_seen = at(2024, 4, 1, 8)
    assert table.next_interval(None, first_seen, first_seen) == (at(2024, 4, 2), at(2024, 4, 3))


def test_end_date_stops_runs() -> None:
    table = timetable("@daily", start_date=at(2024, 1, 1), end_date=at(2024, 1, 3), catchup=True)
    starts = []
    last = None
    while (interval := table.next_interval(last, FAR, FAR)) is not None:
        starts.append(interval[0])
        last = interval[0]
        assert len(starts) < 10
    # As in Airflow, an interval may start on end_date but not after it.
    assert starts == [at(2024, 1, 1), at(2024, 1, 2), at(2024, 1, 3)]


def test_end_date_before_the_first_tick_means_no_run() -> None:
    table = timetable(
        "@daily", start_date=at(2024, 1, 1, 1), end_date=at(2024, 1, 1, 23), catchup=True
    )
    assert table.next_interval(None, FAR, FAR) is None


# --- next_interval: @once -------------------------------------------------------------------


def test_once_gives_exactly_one_interval_at_the_start_date() -> None:
    table = timetable("@once", start_date=at(2024, 1, 1, 6), catchup=True)
    first = table.next_interval(None, FAR, at(2025, 1, 1))
    assert first == (at(2024, 1, 1, 6), at(2024, 1, 1, 6))
    assert table.next_interval(first[0], FAR, at(2025, 1, 1)) is None


def test_once_without_start_date_uses_first_seen() -> None:
    table = timetable("@once")
    seen = at(2024, 7, 1, 12, 34)
    assert table.next_interval(None, FAR, seen) == (seen, seen)
    assert table.next_interval(seen, FAR, seen) is None


# --- next_interval: timedelta ---------------------------------------------------------------


def test_timedelta_first_interval_starts_at_start_date() -> None:
    table = delta_timetable(timedelta(hours=1), start_date=at(2024, 1, 1, 0, 30), catchup=True)
    assert table.next_interval(None, FAR, FAR) == (at(2024, 1, 1, 0, 30), at(2024, 1, 1, 1, 30))


def test_timedelta_catchup_walks_consecutive_intervals() -> None:
    table = delta_timetable(timedelta(minutes=45), start_date=at(2024, 1, 1), catchup=True)
    last = None
    seen = []
    for _ in range(4):
        interval = table.next_interval(last, FAR, FAR)
        assert interval is not None
        seen.append(interval)
        last = interval[0]
    step = timedelta(minutes=45)
    assert seen == [(at(2024, 1, 1) + i * step, at(2024, 1, 1) + (i + 1) * step) for i in range(4)]


@pytest.mark.parametrize(
    ("now", "expected_start"),
    [
        (at(2024, 1, 1, 5, 30), at(2024, 1, 1, 4, 30)),  # exactly at the end of an interval
        (at(2024, 1, 1, 5, 45), at(2024, 1, 1, 4, 30)),  # in the middle of the next one
        (at(2024, 1, 1, 6, 29), at(2024, 1, 1, 4, 30)),
    ],
)
def test_timedelta_without_catchup_jumps_to_the_latest_complete_interval(
    now: datetime, expected_start: datetime
) -> None:
    table = delta_timetable(timedelta(hours=1), start_date=at(2024, 1, 1, 0, 30), catchup=False)
    expected = (expected_start, expected_start + timedelta(hours=1))
    assert table.next_interval(None, now, now) == expected
    assert table.next_interval(at(2024, 1, 1, 0, 30), now, now) == expected


def test_timedelta_without_catchup_before_any_interval_is_complete() -> None:
    table = delta_timetable(timedelta(hours=1), start_date=at(2024, 1, 1), catchup=False)
    now = at(2024, 1, 1, 0, 20)
    assert table.next_interval(None, now, now) == (at(2024, 1, 1), at(2024, 1, 1, 1))


def test_timedelta_end_date_stops_runs() -> None:
    table = delta_timetable(
        timedelta(hours=12), start_date=at(2024, 1, 1), end_date=at(2024, 1, 2), catchup=True
    )
    assert table.next_interval(at(2024, 1, 1, 12), FAR, FAR) == (at(2024, 1, 2), at(2024, 1, 2, 12))
    assert table.next_interval(at(2024, 1, 2), FAR, FAR) is None


# --- boundaries (found by review) ---------------------------------------------------------


def test_without_catchup_now_exactly_on_a_tick_takes_the_interval_it_closes() -> None:
    table = timetable("@daily", start_date=at(2024, 1, 1))
    assert table.next_interval(None, at(2024, 1, 10), at(2024, 1, 10)) == (
        at(2024, 1, 9),
        at(2024, 1, 10),
    )


def test_without_catchup_a_timedelta_without_start_date_skips_missed_intervals() -> None:
    table = delta_timetable(timedelta(hours=1))
    assert table.next_interval(at(2024, 1, 1), at(2024, 1, 1, 10), at(2024, 1, 1)) == (
        at(2024, 1, 1, 9),
        at(2024, 1, 1, 10),
    )


# --- time zones and DST ----------------------------------------------------------------------

AMS = "Europe/Amsterdam"


def walk(
    table: Timetable, first_start: datetime | None, count: int
) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    last = first_start
    for _ in range(count):
        interval = table.next_interval(last, FAR, FAR)
        assert interval is not None
        out.append(interval)
        last = interval[0]
    return out


def test_cron_is_read_in_the_dags_zone_and_returned_in_utc() -> None:
    table = timetable("0 6 * * *", start_date=at(2026, 1, 10), timezone=AMS, catchup=True)
    # 06:00 in Amsterdam in winter is 05:00 UTC.
    assert table.next_interval(None, FAR, FAR) == (at(2026, 1, 10, 5), at(2026, 1, 11, 5))


def test_daily_intervals_shrink_and_grow_across_dst() -> None:
    table = timetable("@daily", start_date=at(2026, 3, 27), timezone=AMS, catchup=True)
    starts = [s for s, _ in walk(table, None, 4)]
    # Local midnights: +01:00 before 29 March, +02:00 after.
    assert starts == [
        at(2026, 3, 27, 23),
        at(2026, 3, 28, 23),
        at(2026, 3, 29, 22),
        at(2026, 3, 30, 22),
    ]
    # From local midnight of 24 October (22:00 UTC the day before).
    autumn = timetable("@daily", start_date=at(2026, 10, 23, 22), timezone=AMS, catchup=True)
    lengths = [(e - s) for s, e in walk(autumn, None, 3)]
    assert lengths == [timedelta(hours=24), timedelta(hours=25), timedelta(hours=24)]


def test_a_wall_clock_time_repeated_in_autumn_runs_once() -> None:
    table = timetable("30 2 * * *", start_date=at(2026, 10, 23), timezone=AMS, catchup=True)
    starts = [s for s, _ in walk(table, None, 4)]
    # 02:30 happens twice on 25 October (CEST, then CET): one run, at the first.
    assert starts == [
        at(2026, 10, 23, 0, 30),
        at(2026, 10, 24, 0, 30),
        at(2026, 10, 25, 0, 30),
        at(2026, 10, 26, 1, 30),
    ]


def test_a_wall_clock_time_missing_in_spring_moves_after_the_gap() -> None:
    table = timetable("30 2 * * *", start_date=at(2026, 3, 28), timezone=AMS, catchup=True)
    starts = [s for s, _ in walk(table, None, 3)]
    # 02:30 does not exist on 29 March; the run comes at 03:00 CEST (01:00 UTC).
    assert starts == [at(2026, 3, 28, 1, 30), at(2026, 3, 29, 1, 0), at(2026, 3, 30, 0, 30)]


def test_hourly_keeps_every_absolute_hour_across_dst() -> None:
    table = timetable("@hourly", start_date=at(2026, 10, 24, 23), timezone=AMS, catchup=True)
    intervals = walk(table, None, 5)
    assert [s for s, _ in intervals] == [
        at(2026, 10, 24, 23) + timedelta(hours=h) for h in range(5)
    ]
    assert all(e - s == timedelta(hours=1) for s, e in intervals)


def test_without_catchup_the_latest_interval_is_found_in_the_zone() -> None:
    table = timetable("@daily", start_date=at(2026, 1, 1), timezone=AMS)
    now = at(2026, 7, 10, 12)
    assert table.next_interval(None, now, now) == (at(2026, 7, 8, 22), at(2026, 7, 9, 22))


def test_unknown_time_zone_is_rejected() -> None:
    with pytest.raises(InvalidSchedule, match="unknown time zone 'Mars/Olympus'"):
        Timetable.from_serialized(spec("@daily", timezone="Mars/Olympus"))


# --- manual runs (Airflow's infer_manual_data_interval) ------------------------------------


def test_a_manual_run_of_a_cron_dag_covers_the_latest_complete_interval() -> None:
    daily = spec("@daily")
    assert manual_data_interval(daily, at(2026, 3, 25, 1, 30)) == (at(2026, 3, 24), at(2026, 3, 25))
    # Triggered exactly on a tick: the interval that tick ends.
    assert manual_data_interval(daily, at(2026, 3, 25)) == (at(2026, 3, 24), at(2026, 3, 25))
    hourly = spec("0 * * * *")
    assert manual_data_interval(hourly, at(2026, 3, 25, 7, 59)) == (
        at(2026, 3, 25, 6),
        at(2026, 3, 25, 7),
    )


def test_a_manual_run_of_a_timedelta_dag_covers_the_delta_before_it() -> None:
    six_hours = spec(6 * 3600.0, schedule_is_timedelta=True, start_date=at(2026, 1, 1))
    assert manual_data_interval(six_hours, at(2026, 3, 25, 7, 30)) == (
        at(2026, 3, 25, 1, 30),
        at(2026, 3, 25, 7, 30),
    )


@pytest.mark.parametrize("schedule", [None, "@once"])
def test_a_manual_run_without_a_recurring_schedule_covers_its_own_moment(schedule: Any) -> None:
    when = at(2026, 3, 25, 7, 30)
    assert manual_data_interval(spec(schedule), when) == (when, when)


def test_a_manual_run_of_a_cron_dag_follows_the_dags_time_zone() -> None:
    # 02:00 in Amsterdam is 01:00 UTC in March (before DST starts on the 29th).
    nightly = spec("0 2 * * *", timezone=AMS)
    assert manual_data_interval(nightly, at(2026, 3, 25, 1, 30)) == (
        at(2026, 3, 24, 1),
        at(2026, 3, 25, 1),
    )
