"""Connections and their URIs, in Airflow's format: read, written and read back."""

from __future__ import annotations

import json

import pytest

from tether.sdk.connection import Connection

HARD_PASSWORDS = [
    "p@ss:w/rd",
    "100%?#&=+ ;",
    "ünïcødé-пароль-密码-🔑",
    "%41%2F",  # looks percent-encoded; must come back as typed
    "",
    "a" * 500,
]


def test_a_uri_is_read_as_airflow_reads_it() -> None:
    conn = Connection.from_uri(
        "wh", "postgresql://ann:s%40cr%3At@db.example.com:5432/sales?sslmode=require&app=x"
    )
    assert conn.conn_type == "postgres"
    assert (conn.login, conn.password, conn.host, conn.port, conn.schema) == (
        "ann",
        "s@cr:t",
        "db.example.com",
        5432,
        "sales",
    )
    assert conn.extra_dejson == {"sslmode": "require", "app": "x"}
    assert Connection.from_uri("g", "google-cloud-platform://").conn_type == "google_cloud_platform"


def test_the_extra_parameter_holds_json_and_a_host_may_carry_its_protocol() -> None:
    extra = {"retries": 3, "nested": {"a": [1, 2]}}
    conn = Connection.from_uri(
        "api", "http://https://api.example.com/v1?__extra__=" + json.dumps(extra)
    )
    assert conn.host == "https://api.example.com"
    assert conn.schema == "v1"
    assert conn.extra_dejson == extra
    again = Connection.from_uri("api", conn.get_uri())
    assert again == conn


@pytest.mark.parametrize("password", HARD_PASSWORDS)
def test_every_field_survives_a_round_trip_through_the_uri(password: str) -> None:
    conn = Connection(
        conn_id="c",
        conn_type="my_db",
        host="höst-1.example.com",
        login="us@er:näme/",
        password=password,
        schema="sch/ema?#",
        port=6543,
        extra=json.dumps({"key": "va&l=ue", "token": password}),
    )
    uri = conn.get_uri()
    assert uri.startswith("my-db://")
    assert Connection.from_uri("c", uri) == conn
    assert Connection.from_dict(json.loads(json.dumps(conn.to_dict()))) == conn


@pytest.mark.parametrize(
    "conn",
    [
        Connection("c", "http"),
        Connection("c", "http", host="h"),
        Connection("c", "http", port=80),
        Connection("c", "http", login="only"),
        Connection("c", "http", password="only"),
        Connection("c", "http", host="::1", port=5432),
        Connection("c", "http", extra=json.dumps({"n": 1, "list": [1]})),
        Connection("c", "http", extra=json.dumps({"__extra__": "x"})),
    ],
)
def test_sparse_connections_survive_a_round_trip(conn: Connection) -> None:
    assert Connection.from_uri("c", conn.get_uri()) == conn


def test_an_ipv6_host_in_brackets_is_read() -> None:
    conn = Connection.from_uri("c", "postgres://u:p@[::1]:5433/db")
    assert (conn.host, conn.port) == ("::1", 5433)


def test_the_password_is_never_in_the_repr() -> None:
    conn = Connection.from_uri(
        "c", "postgres://u:hunter2@h/db?__extra__=%7B%22k%22%3A%22s3cr3t%22%7D"
    )
    assert "hunter2" not in repr(conn)
    assert "s3cr3t" not in repr(conn)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("no-scheme-here", "starts with its type"),
        ("://host", "starts with its type"),
        ("9db://host", "must start with a letter"),
        ("postgres://u:hunter2@host:99999/db", "port"),
        ("postgres://u:hunter2@host:abc/db", "port"),
        ("postgres://u:hunt#er2@host/db", "'#'"),
        ("postgres://u:p@[::1/db", "never closes"),
        ("postgres://u:p%FFhunter2@host/db", "not UTF-8"),
        ("postgres://host/db?__extra__=not-json-hunter2", "not valid JSON"),
        ("postgres://host/db?__extra__=%5B1%5D", "must be a JSON object"),
        ("postgres://u:hunter2@host/d\tb", "control characters"),
        ("postgres://u:hunter2@host/d\x00b", "control characters"),
        ("postgres://u:hunter2://x@host/db", "percent-encode"),
    ],
)
def test_a_bad_uri_is_refused_with_a_reason_that_never_quotes_it(uri: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        Connection.from_uri("c", uri)
    message = str(caught.value)
    assert reason in message
    assert "hunter2" not in message
    assert uri not in message


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ([], "must be a JSON object"),
        ({"conn_id": "c"}, "needs conn_type"),
        ({"conn_id": "c", "conn_type": "x", "colour": "red"}, "unknown connection fields: colour"),
        ({"conn_id": "c", "conn_type": "x", "port": "80"}, "port"),
        ({"conn_id": "c", "conn_type": "x", "port": True}, "port"),
        ({"conn_id": "c", "conn_type": "x", "host": 5}, "host must be text"),
        ({"conn_id": "c", "conn_type": "x", "extra": "{"}, "not valid JSON"),
    ],
)
def test_from_dict_refuses_what_to_dict_never_makes(data: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Connection.from_dict(data)
