"""The worker's own log buffer: bounded while the hub is out of reach, masked, never
raising, and a failed shipment adds no line of its own."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator

import httpx
import pytest

from tether.worker.client import HubClient
from tether.worker.own_log import OwnLog, ship

CREDENTIAL = "tw_" + "c" * 40


@pytest.fixture
def buffer() -> Iterator[OwnLog]:
    handler = OwnLog(max_lines=100)
    handler.mask(CREDENTIAL)
    logger = logging.getLogger("tether.worker")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_the_buffer_keeps_the_newest_lines_while_the_hub_is_unreachable(buffer: OwnLog) -> None:
    log = logging.getLogger("tether.worker.agent")
    for i in range(250):
        log.info("line %d", i)

    async def main() -> list[bool]:
        client = HubClient(f"http://127.0.0.1:{_closed_port()}", CREDENTIAL)
        try:
            return [await ship(buffer, client) for _ in range(3)]
        finally:
            await client.aclose()

    assert asyncio.run(main()) == [False, False, False]
    # Three failed shipments: no line about them, none lost beyond the bound.
    assert len(buffer) == 100
    assert buffer.dropped == 150
    batch = buffer.take()
    assert batch is not None
    assert batch.dropped == 150
    assert [line.rsplit(" ", 1)[-1] for line in batch.lines] == [str(i) for i in range(150, 250)]


def test_a_hub_that_takes_the_lines_gets_them_masked_with_the_count_of_dropped(
    buffer: OwnLog,
) -> None:
    log = logging.getLogger("tether.worker")
    for i in range(120):
        log.info("line %d", i)
    log.info("credential %s in a line", CREDENTIAL)
    log.warning("two\nlines with \x1b[31m an escape")
    unformattable = {"msg": "%s %s", "args": ("too few",), "levelno": logging.INFO}
    buffer.handle(logging.makeLogRecord(unformattable))
    received: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        received.append(body)
        return httpx.Response(200, json={"kept": len(body["lines"])})

    async def main() -> bool:
        client = HubClient("http://hub", CREDENTIAL, transport=httpx.MockTransport(answer))
        client.session_id = "s" * 32
        try:
            return await ship(buffer, client)
        finally:
            await client.aclose()

    assert asyncio.run(main()) is True
    assert len(buffer) == 0
    ((body),) = received
    lines = body["lines"]
    assert isinstance(lines, list)
    assert len(lines) == 100
    assert body["dropped"] == 120 + 3 + 1 - 100  # the unformattable record counts too
    assert not any(CREDENTIAL in line for line in lines)
    assert any(line.endswith("credential *** in a line") for line in lines)
    assert lines[-2].endswith("two")
    assert lines[-1] == "lines with ?[31m an escape"
    assert " INFO tether.worker: " in lines[0]


def test_a_refused_batch_is_dropped_and_counted_not_sent_again(buffer: OwnLog) -> None:
    logging.getLogger("tether.worker").info("hello")

    async def main() -> bool:
        refuse = httpx.MockTransport(lambda r: httpx.Response(409, json={"detail": "superseded"}))
        client = HubClient("http://hub", CREDENTIAL, transport=refuse)
        try:
            return await ship(buffer, client)
        finally:
            await client.aclose()

    assert asyncio.run(main()) is False
    assert len(buffer) == 0
    assert buffer.dropped == 1


def test_what_a_failed_shipment_logs_is_not_shipped(buffer: OwnLog) -> None:
    logging.getLogger("tether.worker").info("before")

    def down(request: httpx.Request) -> httpx.Response:
        logging.getLogger("tether.worker.client").warning("the hub is down again")
        return httpx.Response(503)

    async def main() -> list[bool]:
        client = HubClient("http://hub", CREDENTIAL, transport=httpx.MockTransport(down))
        try:
            return [await ship(buffer, client) for _ in range(5)]
        finally:
            await client.aclose()

    assert asyncio.run(main()) == [False] * 5
    batch = buffer.take()
    assert batch is not None
    assert [line.rsplit(": ", 1)[-1] for line in batch.lines] == ["before"]
    assert batch.dropped == 0
