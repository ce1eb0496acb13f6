"""The worker's hub client against answers a hub never gives: an HTML page from
a proxy or captive portal, JSON of the wrong shape. Each is a transport error,
retried with backoff like a dropped connection, never an exception that kills
the caller."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tether import __version__
from tether.protocol import PROTOCOL_VERSION, AttemptResult, Directives, PollRequest, WorkerFacts
from tether.worker.client import HubClient

PORTAL = "<html><body><h1>Please log in to continue</h1></body></html>"
ATTEMPT = "ab" * 16
JOB = {
    "attempt_id": ATTEMPT,
    "dag_id": "d",
    "task_id": "t",
    "run_id": "r",
    "try_number": 1,
    "queue": "default",
    "bundle_sha": "0" * 64,
    "fileloc": "d.py",
}
BUNDLE = b"not really a tarball, but its hash is right"
SHA = hashlib.sha256(BUNDLE).hexdigest()

Call = Callable[[HubClient], Awaitable[Any]]
FACTS = WorkerFacts(concurrency=1, free_slots=1, version=__version__, protocol=PROTOCOL_VERSION)
HELLO = {
    "name": "w",
    "session_id": "s1",
    "queues": ["default"],
    "heartbeat_interval": 10,
    "hub_version": __version__,
}

#: Per endpoint: the call, a good answer, what the caller gets from it, and
#: 200 answers a hub would never give (each is retried).
ENDPOINTS: dict[str, tuple[Call, httpx.Response, Callable[[Any], bool], list[httpx.Response]]] = {
    "enrol": (
        lambda c: c.enrol("tte_x.y"),
        httpx.Response(200, json={"name": "w", "credential": "ttw_x", "queues": ["default"]}),
        lambda got: got.credential == "ttw_x",
        [httpx.Response(200, json={"name": "w"}), httpx.Response(200, json=["w"])],
    ),
    "sessions": (
        lambda c: c.start_session(FACTS),
        httpx.Response(200, json=HELLO),
        lambda got: got.session_id == "s1",
        [
            httpx.Response(200, json={"session_id": "s1"}),
            httpx.Response(200, json={**HELLO, "session_id": 7}),
            httpx.Response(200, json={**HELLO, "heartbeat_interval": 0}),
            httpx.Response(200, json={**HELLO, "queues": ["a b"]}),
        ],
    ),
    "heartbeat": (
        lambda c: c.heartbeat(FACTS),
        httpx.Response(200, json={"directives": {"kill": []}}),
        lambda got: got.kill == [] and got.maintenance is None,
        [httpx.Response(200, json={}), httpx.Response(200, json={"directives": "none"})],
    ),
    "poll": (
        lambda c: c.poll(PollRequest(slots=1, wait=1)),
        httpx.Response(200, json={"jobs": [JOB], "directives": {}}),
        lambda got: [j.attempt_id for j in got[0]] == [ATTEMPT],
        [httpx.Response(200, json=[]), httpx.Response(200, json={"jobs": "many"})],
    ),
    "logs": (
        lambda c: c.upload_log(ATTEMPT, 0, b"hello"),
        httpx.Response(200, json={"size": 5}),
        lambda got: got == 5,
        [httpx.Response(200, json={"size": "5"}), httpx.Response(200, json={})],
    ),
    "finish": (
        lambda c: c.finish(ATTEMPT, AttemptResult(state="success")),
        httpx.Response(200, json={"state": "success"}),
        lambda got: got.state == "success",
        [httpx.Response(200, json="success")],
    ),
    "bundles": (
        lambda c: c.fetch_bundle(SHA),
        httpx.Response(200, content=BUNDLE),
        lambda got: got == BUNDLE,
        [httpx.Response(200, content=b"\x1f\x8b truncated")],
    ),
}


def _html() -> httpx.Response:
    return httpx.Response(200, text=PORTAL, headers={"Content-Type": "text/html"})


def _serve(answers: list[httpx.Response]) -> tuple[httpx.MockTransport, list[str]]:
    """A hub that gives ``answers`` in turn, the last one for ever."""
    seen: list[str] = []

    def hub(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return answers[min(len(seen), len(answers)) - 1]

    return httpx.MockTransport(hub), seen


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_an_html_page_or_a_body_of_the_wrong_shape_is_retried_until_the_hub_answers(
    endpoint: str,
) -> None:
    call, good, check, wrong = ENDPOINTS[endpoint]
    answers = [_html(), httpx.Response(200, text="{not json"), *wrong, _html(), good]
    transport, seen = _serve(answers)

    async def scenario() -> Any:
        client = HubClient("http://hub", "ttw_x", transport=transport, max_backoff=0.01)
        try:
            return await call(client)
        finally:
            await client.aclose()

    got = asyncio.run(scenario())
    assert check(got)
    assert len(seen) == len(answers)


def test_a_poll_that_keeps_getting_html_keeps_trying_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport, seen = _serve([_html()] * 4 + [httpx.Response(200, json={"jobs": [JOB]})])

    async def scenario() -> Any:
        client = HubClient("http://hub", "ttw_x", transport=transport, max_backoff=0.01)
        try:
            return await client.poll(PollRequest(slots=1, wait=1))
        finally:
            await client.aclose()

    with caplog.at_level("WARNING", logger="tether.worker"):
        jobs, directives = asyncio.run(scenario())
    assert [j.attempt_id for j in jobs] == [ATTEMPT]
    assert directives == Directives()
    retries = [r.getMessage() for r in caplog.records if "/poll" in r.getMessage()]
    assert len(retries) == 4
    assert all("not JSON" in m and "text/html" in m for m in retries)


def test_a_heartbeat_given_only_html_gives_up_as_unreachable_within_its_time() -> None:
    transport, seen = _serve([_html()])

    async def scenario() -> Any:
        client = HubClient("http://hub", "ttw_x", transport=transport, max_backoff=0.01)
        try:
            return await client.heartbeat(FACTS, retry_for=0.5)
        finally:
            await client.aclose()

    with pytest.raises(ConnectionError, match="hub unreachable: .*not JSON"):
        asyncio.run(scenario())
    assert len(seen) > 1


class Endless(httpx.AsyncByteStream):
    """A body that never ends (a hostile hub, a proxy gone wrong), counting what
    was read of it."""

    def __init__(self, piece: bytes = b"x" * 65536) -> None:
        self.piece, self.sent = piece, 0

    async def __aiter__(self) -> Any:
        while True:
            self.sent += len(self.piece)
            yield self.piece


@pytest.mark.parametrize("declared", [False, True])
def test_an_answer_past_its_bound_is_dropped_while_it_arrives_and_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, declared: bool
) -> None:
    import tether.worker.client as client_module

    monkeypatch.setattr(client_module, "MAX_ANSWER_BYTES", 1024 * 1024)
    endless = Endless()
    good = {"jobs": [JOB], "directives": {}}
    seen: list[int] = []

    def hub(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        if len(seen) > 1:
            return httpx.Response(200, json=good)
        if declared:  # says so up front: not a byte of it is read
            return httpx.Response(200, headers={"Content-Length": str(2**40)}, stream=endless)
        return httpx.Response(200, stream=endless)

    async def scenario() -> Any:
        client = HubClient(
            "http://hub", "ttw_x", transport=httpx.MockTransport(hub), max_backoff=0.01
        )
        try:
            return await client.poll(PollRequest(slots=1, wait=1))
        finally:
            await client.aclose()

    with caplog.at_level("WARNING", logger="tether.worker"):
        jobs, _ = asyncio.run(scenario())
    assert [j.attempt_id for j in jobs] == [ATTEMPT]
    assert endless.sent <= (0 if declared else 1024 * 1024 + 65536)
    (warning,) = [r.getMessage() for r in caplog.records if "/poll" in r.getMessage()]
    assert ("over 1048576" if declared else "larger than 1048576 bytes") in warning


def test_a_wheel_past_its_bound_is_dropped_while_it_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tether.worker.client as client_module
    from tether.protocol import DIST_PREFIX, DistFile, DistListing, wheel_name

    monkeypatch.setattr(client_module, "MAX_WHEEL_BYTES", 2 * 1024 * 1024)
    endless = Endless()
    wheel = b"PK a wheel of the right hash"
    name = wheel_name("9.9.9")
    sha = hashlib.sha256(wheel).hexdigest()
    listing = DistListing("9.9.9", [DistFile(name, DIST_PREFIX + name, len(wheel), sha)])
    transport, seen = _serve(
        [httpx.Response(200, stream=endless), httpx.Response(200, content=wheel)]
    )

    async def scenario() -> Any:
        client = HubClient("http://hub", "ttw_x", transport=transport, max_backoff=0.01)
        try:
            return await client.fetch_wheel(listing)
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == wheel
    assert len(seen) == 2
    assert 2 * 1024 * 1024 < endless.sent <= 2 * 1024 * 1024 + 65536
