"""Unit tests of DAG params: the SDK's ``Param`` and the hub's JSON-schema validation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tether import DAG, DagDefinitionError, Param
from tether.hub.core.params import InvalidParams, check_defaults, effective, resolve
from tether.sdk.serialize import serialize_dag


def serialized(params: dict[str, Any], schedule: str | None = None) -> dict[str, Any]:
    with DAG("p", params=params, schedule=schedule) as d:
        pass
    return serialize_dag(d)


# --- SDK ------------------------------------------------------------------------------------


def test_plain_values_are_params_with_that_default_and_no_schema() -> None:
    with DAG("p", params={"label": "x", "n": Param(5, type="integer", minimum=1)}) as d:
        pass
    assert dict(d.params) == {"label": "x", "n": 5}
    assert d.params.get_param("label").schema == {}
    assert d.params.get_param("n").schema == {"type": "integer", "minimum": 1}
    assert serialize_dag(d)["params"] == {
        "label": {"schema": {}, "description": None, "default": "x"},
        "n": {"schema": {"type": "integer", "minimum": 1}, "description": None, "default": 5},
    }


def test_a_param_without_default_is_required_and_has_no_value() -> None:
    with DAG("p", params={"who": Param(type="string", description="whom to greet")}) as d:
        pass
    assert "who" in d.params
    assert not d.params.get_param("who").has_value
    with pytest.raises(KeyError, match="has no default"):
        d.params["who"]
    assert serialize_dag(d)["params"] == {
        "who": {"schema": {"type": "string"}, "description": "whom to greet"}
    }


def test_defaults_travel_as_json() -> None:
    # A tuple arrives as a list: what the hub validates is what the task gets.
    assert Param((1, 2), type="array").value == [1, 2]


@pytest.mark.parametrize("value", [datetime(2026, 1, 1, tzinfo=UTC), {1, 2}, float("nan")])
def test_a_default_that_is_not_json_is_a_definition_error_naming_dag_and_param(
    value: Any,
) -> None:
    with pytest.raises(DagDefinitionError, match="DAG 'p': param 'when': .*must be JSON"):
        DAG("p", params={"when": value})


def test_param_names_must_be_strings() -> None:
    with pytest.raises(DagDefinitionError, match="param names"):
        DAG("p", params={1: "x"})


# --- hub: parse time ------------------------------------------------------------------------


def test_valid_defaults_pass() -> None:
    check_defaults(
        serialized(
            {
                "n": Param(5, type="integer", minimum=1),
                "mode": Param("fast", enum=["fast", "slow"]),
                "day": Param("2026-01-31", type="string", format="date"),
                "free": {"any": ["thing"]},
            },
            schedule="@daily",
        )
    )


@pytest.mark.parametrize(
    ("param", "reason"),
    [
        (Param(0, type="integer", minimum=1), "param 'x': 0 is less than the minimum of 1"),
        (Param("5", type="integer"), "param 'x': '5' is not of type 'integer'"),
        (Param("medium", enum=["fast", "slow"]), "'medium' is not one of ['fast', 'slow']"),
        (Param("2026-02-30", type="string", format="date"), "is not a 'date'"),
        (Param([1, "2"], type="array", items={"type": "integer"}), "(at $[1])"),
        (Param(1, type="integr"), "param 'x' has an invalid schema"),
        (Param("a", pattern="("), "param 'x' has an invalid schema: '(' is not a 'regex'"),
        (Param(1, **{"$ref": "#/nowhere"}), "param 'x' has a schema that cannot be used"),
    ],
)
def test_a_default_that_breaks_its_schema_is_refused_with_the_reason(
    param: Param, reason: str
) -> None:
    with pytest.raises(InvalidParams) as caught:
        check_defaults(serialized({"x": param}))
    assert str(caught.value).startswith("DAG 'p': ")
    assert reason in str(caught.value)


def test_the_schema_of_a_required_param_is_checked_too() -> None:
    with pytest.raises(InvalidParams, match="param 'who' has an invalid schema"):
        check_defaults(serialized({"who": Param(type="text")}))


def test_a_schema_that_cannot_be_used_is_a_reason_on_trigger_not_a_crash() -> None:
    spec = serialized({"who": Param(**{"$ref": "#/nowhere"})})
    with pytest.raises(InvalidParams, match="param 'who' has a schema that cannot be used"):
        resolve(spec, {"who": "x"})


def test_a_scheduled_dag_needs_a_default_for_every_param() -> None:
    check_defaults(serialized({"who": Param(type="string")}))  # manual only: fine
    with pytest.raises(InvalidParams, match="'who' has no default"):
        check_defaults(serialized({"who": Param(type="string")}, schedule="@daily"))


# --- hub: trigger time ----------------------------------------------------------------------

SPEC = {
    "n": Param(5, type="integer", minimum=1),
    "label": "x",
    "who": Param(type="string", enum=["ann", "bob"]),
}


def test_conf_overrides_defaults_and_keys_that_name_no_param_stay_out() -> None:
    spec = serialized(SPEC)
    conf = {"who": "ann", "n": 7, "extra": [1]}
    assert resolve(spec, conf) == {"n": 7, "label": "x", "who": "ann"}
    assert effective(spec, conf) == resolve(spec, conf)
    # A plain value has no schema: any JSON overrides it.
    assert resolve(spec, {"who": "bob", "label": {"a": 1}})["label"] == {"a": 1}


@pytest.mark.parametrize(
    ("conf", "reason"),
    [
        ({}, "param 'who' is required: it has no default and conf does not set it"),
        ({"who": "eve"}, "param 'who': 'eve' is not one of ['ann', 'bob']"),
        ({"who": "ann", "n": 0}, "param 'n': 0 is less than the minimum of 1"),
        ({"who": "ann", "n": "7"}, "param 'n': '7' is not of type 'integer'"),
        ({"who": "ann", "n": None}, "param 'n': None is not of type 'integer'"),
    ],
)
def test_invalid_values_are_refused_with_the_param_and_the_reason(
    conf: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidParams) as caught:
        resolve(serialized(SPEC), conf)
    assert str(caught.value) == f"invalid params: {reason}"


def test_every_wrong_param_is_named() -> None:
    with pytest.raises(InvalidParams) as caught:
        resolve(serialized(SPEC), {"n": -1})
    assert "param 'n'" in str(caught.value)
    assert "param 'who'" in str(caught.value)


def test_runs_stored_before_params_had_schemas_still_get_their_defaults() -> None:
    old = {"dag_id": "p", "params": {"a": 1, "b": {"nested": True}}}
    assert effective(old, {"a": 2}) == {"a": 2, "b": {"nested": True}}
