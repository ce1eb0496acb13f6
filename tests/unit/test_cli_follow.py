"""``tether tasks logs --follow`` against a hub that goes away for a moment,
faked with httpx's MockTransport: the follower asks again from where it was,
prints every byte once, and gives up only after its limit or on a real error."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tether.cli import logs
from tether.cli.rest import Api, CliError
from tether.protocol import LOG_SIZE_HEADER, TRY_NUMBER_HEADER, TRY_STATE_HEADER

PATH = "/dags/d/runs/r/tasks/t/logs"


def _answer(data: bytes, size: int, state: str) -> httpx.Response:
    headers = {LOG_SIZE_HEADER: str(size), TRY_NUMBER_HEADER: "1", TRY_STATE_HEADER: state}
    return httpx.Response(200, content=data, headers=headers)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[Api, list[str]]]]:
    """An Api whose hub answers with ``script``, one step per request (an exception
    is raised as the transport's); and the ``offset`` of each request."""
    monkeypatch.setenv("TETHER_TOKEN", "t")
    monkeypatch.setattr(logs, "POLL_INTERVAL", 0)
    apis: list[Api] = []

    def make(*script: httpx.Response | Exception) -> tuple[Api, list[str]]:
        steps, offsets = list(script), []

        def handle(request: httpx.Request) -> httpx.Response:
            offsets.append(request.url.params["offset"])
            step = steps.pop(0)
            if isinstance(step, Exception):
                raise step
            return step

        api = Api("http://hub")
        api.client = httpx.Client(
            transport=httpx.MockTransport(handle), base_url="http://hub/api/v1"
        )
        apis.append(api)
        return api, offsets

    yield make
    for api in apis:
        api.client.close()


def test_a_follower_rides_out_a_hub_away_and_prints_each_byte_once(
    hub: Callable[..., tuple[Api, list[str]]], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    api, offsets = hub(
        _answer(b"one\n", 4, "running"),
        httpx.ConnectError("connection refused"),
        httpx.Response(503, text="restarting"),
        _answer(b"two\n", 8, "running"),
        _answer(b"", 8, "running"),
        _answer(b"three\n", 14, "failed"),
    )
    assert logs._follow(api, PATH, {"try_number": 1}, logs.Patience()) == 1
    out, err = capsysbinary.readouterr()
    assert out == b"one\ntwo\nthree\n"
    assert offsets == ["0", "4", "4", "4", "8", "8"]
    assert err.count(b"trying again") == 1
    assert b"the hub answers again" in err
    assert err.endswith(b"try 1 ended: failed\n")


def test_a_follower_exits_0_when_the_try_succeeded(
    hub: Callable[..., tuple[Api, list[str]]], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    api, _ = hub(_answer(b"done\n", 5, "success"))
    assert logs._follow(api, PATH, {"try_number": 1}, logs.Patience()) == 0
    assert capsysbinary.readouterr().out == b"done\n"


def test_a_follower_gives_up_on_a_real_error_or_a_hub_away_too_long(
    hub: Callable[..., tuple[Api, list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, _ = hub(httpx.Response(500, json={"detail": "boom"}))
    with pytest.raises(CliError, match="hub answered 500: boom"):
        logs._follow(api, PATH, {"try_number": 1}, logs.Patience())

    monkeypatch.setattr(logs, "AWAY_LIMIT", -1.0)
    api, offsets = hub(httpx.ConnectError("refused"), httpx.ConnectError("refused"))
    with pytest.raises(CliError, match="giving up"):
        logs._follow(api, PATH, {"try_number": 1}, logs.Patience())
    assert len(offsets) == 2


def test_a_hub_without_the_log_headers_is_refused_not_followed_forever(
    hub: Callable[..., tuple[Api, list[str]]],
) -> None:
    api, _ = hub(httpx.Response(200, content=b"whole log again"))
    with pytest.raises(CliError, match="too old"):
        logs._follow(api, PATH, {"try_number": 1}, logs.Patience())
