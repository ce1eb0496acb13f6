"""Unit tests of assets in the SDK: ``Asset``, ``outlets=``, ``schedule=[...]``, their
serialized form, and how the hub's timetable and dag processor read it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tether import DAG, Asset, BashOperator, DagDefinitionError, EmptyOperator, dag, task
from tether.hub.core.timetable import InvalidSchedule, Timetable, asset_uris
from tether.hub.services.dag_processor import _schedule_key
from tether.sdk.serialize import serialize_dag

LEDGER = Asset("tether://ledger")
FX = Asset("s3://lake/fx_rates/", {"owner": "treasury"}, name="fx rates")


# --- Asset ------------------------------------------------------------------------------------


def test_assets_are_equal_and_hash_alike_by_uri_only() -> None:
    same = Asset("s3://lake/fx_rates/", {"other": True}, name="another name")
    assert same == FX
    assert hash(same) == hash(FX)
    assert {FX, same, LEDGER} == {FX, LEDGER}
    assert LEDGER != FX
    assert LEDGER != "tether://ledger"


def test_asset_defaults_and_fields() -> None:
    assert LEDGER.name == "tether://ledger"
    assert LEDGER.extra == {}
    assert FX.name == "fx rates"
    assert FX.to_dict() == {
        "uri": "s3://lake/fx_rates/",
        "name": "fx rates",
        "extra": {"owner": "treasury"},
    }
    assert repr(LEDGER) == "Asset('tether://ledger')"
    assert repr(FX) == "Asset('s3://lake/fx_rates/', name='fx rates')"


def test_an_asset_cannot_be_changed_and_keeps_its_own_copy_of_extra() -> None:
    extra = {"k": 1}
    asset = Asset("tether://x", extra)
    extra["k"] = 2
    assert asset.extra == {"k": 1}
    with pytest.raises(AttributeError):
        asset.uri = "tether://y"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "must not be empty"),
        ("tether://has space", "without spaces"),
        (" tether://x", "without spaces"),
        ("tether://tab\there", "without spaces"),
        ("tether://new\nline", "without spaces"),
        ("tether://é", "printable ASCII"),
        ("x" * 1501, "limit is 1500"),
        (None, "must be a string"),
        (42, "must be a string"),
    ],
)
def test_invalid_asset_uris_are_rejected(uri: Any, reason: str) -> None:
    with pytest.raises(DagDefinitionError, match=reason):
        Asset(uri)


def test_the_longest_uri_is_accepted() -> None:
    assert Asset("x" * 1500).uri == "x" * 1500


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"extra": ["not", "a", "dict"]}, "extra must be a dict"),
        ({"extra": {"when": object()}}, "extra must be JSON"),
        ({"name": ""}, "name must be a non-empty string"),
        ({"name": "n" * 1501}, "name must be a non-empty string"),
    ],
)
def test_invalid_asset_extra_or_name_is_rejected(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(DagDefinitionError, match=reason):
        Asset("tether://x", **kwargs)


# --- outlets ----------------------------------------------------------------------------------


def test_operators_take_outlets_as_a_list_or_one_asset_without_repeats() -> None:
    with DAG("d"):
        listed = EmptyOperator(task_id="a", outlets=[LEDGER, FX, LEDGER])
        single = BashOperator(task_id="b", bash_command="true", outlets=FX)
        none = EmptyOperator(task_id="c")
    assert listed.outlets == [LEDGER, FX]
    assert single.outlets == [FX]
    assert none.outlets == []


def test_task_decorator_takes_outlets() -> None:
    @task(outlets=[LEDGER])
    def load() -> None:
        return None

    with DAG("d") as d:
        load()
        load.override(task_id="other", outlets=[FX])()
    assert d.get_task("load").outlets == [LEDGER]
    assert d.get_task("other").outlets == [FX]


def test_default_args_can_give_every_task_outlets() -> None:
    with DAG("d", default_args={"outlets": [LEDGER]}):
        inherited = EmptyOperator(task_id="a")
        own = EmptyOperator(task_id="b", outlets=[FX])
    assert inherited.outlets == [LEDGER]
    assert own.outlets == [FX]


@pytest.mark.parametrize("outlets", ["tether://ledger", [LEDGER, "tether://fx"], 3, {"a": 1}])
def test_outlets_that_are_not_assets_are_rejected(outlets: Any) -> None:
    with DAG("d"), pytest.raises(DagDefinitionError, match="outlets"):
        EmptyOperator(task_id="a", outlets=outlets)


# --- schedule=[assets] ------------------------------------------------------------------------


def test_a_dag_scheduled_on_assets_keeps_them_in_order_without_repeats() -> None:
    assert DAG("d", schedule=[LEDGER, FX, LEDGER]).schedule == [LEDGER, FX]
    assert DAG("t", schedule=(FX,)).schedule == [FX]
    assert DAG("one", schedule=LEDGER).schedule == [LEDGER]


def test_dag_decorator_takes_an_asset_schedule() -> None:
    @dag(schedule=[LEDGER])
    def consumer() -> None:
        EmptyOperator(task_id="a")

    assert consumer().schedule == [LEDGER]


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ([], "names no asset"),
        ([LEDGER, "@daily"], "list of Assets"),
        ({LEDGER}, "list of Assets"),
    ],
)
def test_bad_asset_schedules_are_rejected(schedule: Any, reason: str) -> None:
    with pytest.raises(DagDefinitionError, match=reason):
        DAG("d", schedule=schedule)


def test_cron_and_timedelta_schedules_still_work() -> None:
    assert DAG("c", schedule="@daily").schedule == "@daily"
    assert DAG("t", schedule=timedelta(hours=1)).schedule == timedelta(hours=1)


# --- serialized form --------------------------------------------------------------------------


def _serialized_consumer() -> dict[str, Any]:
    with DAG("consumer", schedule=[LEDGER, FX]) as d:
        first = EmptyOperator(task_id="first", outlets=[Asset("tether://marts")])
        first >> EmptyOperator(task_id="second")
    return serialize_dag(d)


def test_serialize_an_asset_schedule_and_outlets() -> None:
    out = _serialized_consumer()
    assert out["schedule"] == {"assets": ["tether://ledger", "s3://lake/fx_rates/"]}
    assert out["schedule_is_timedelta"] is False
    tasks = {t["task_id"]: t for t in out["tasks"]}
    assert tasks["first"]["outlets"] == ["tether://marts"]
    assert tasks["second"]["outlets"] == []
    # Every asset the DAG names, once, with its name and extra, sorted by URI.
    assert out["assets"] == [
        {"uri": "s3://lake/fx_rates/", "name": "fx rates", "extra": {"owner": "treasury"}},
        {"uri": "tether://ledger", "name": "tether://ledger", "extra": {}},
        {"uri": "tether://marts", "name": "tether://marts", "extra": {}},
    ]


def test_an_asset_schedule_has_no_timetable() -> None:
    spec = _serialized_consumer()
    assert Timetable.from_serialized(spec) is None
    assert asset_uris(spec) == ["tether://ledger", "s3://lake/fx_rates/"]
    with DAG("cron", schedule="@daily") as d:
        EmptyOperator(task_id="a")
    cron = serialize_dag(d)
    assert asset_uris(cron) == []
    assert Timetable.from_serialized(cron) is not None


@pytest.mark.parametrize(
    "schedule", [{"assets": []}, {"assets": "tether://x"}, {"datasets": ["x"]}, {"assets": [1]}]
)
def test_a_malformed_asset_schedule_is_an_invalid_schedule(schedule: Any) -> None:
    with pytest.raises(InvalidSchedule):
        Timetable.from_serialized({"schedule": schedule})


def test_the_schedule_key_fits_its_column_whatever_the_asset_list() -> None:
    many = [Asset(f"s3://a-rather-long-bucket-name/with/a/deep/path/{i}") for i in range(20)]
    with DAG("d", schedule=many) as d:
        EmptyOperator(task_id="a")
    key = _schedule_key(serialize_dag(d))
    assert key is not None
    assert key.startswith("sha256:")
    assert len(key) <= 200
    with DAG("d2", schedule=many[:19]) as d2:
        EmptyOperator(task_id="a")
    assert _schedule_key(serialize_dag(d2)) != key
    with DAG("short", schedule="@daily") as short:
        EmptyOperator(task_id="a")
    assert _schedule_key(serialize_dag(short)) == '["@daily", null, false, "UTC"]'
