"""Effects announced to other hub processes (``store/broadcast.py``): what a
payload carries, and what a hostile one on the channel does (nothing)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tether.hub.store.broadcast import MAX_PAYLOAD, BadPayload, Listener, decode, encode
from tether.hub.store.effects import Effects


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def notify(self, queues: Any) -> None:
        self.calls.append(("notify", sorted(queues)))

    def notify_worker(self, name: str) -> None:
        self.calls.append(("worker", name))

    def poke_scheduler(self) -> None:
        self.calls.append(("scheduler", None))

    def wake_everything(self) -> None:
        self.calls.append(("everything", None))


def listener(sink: Sink, sender: str = "me") -> Listener:
    return Listener(lambda: None, sender, sink)


def test_a_payload_carries_every_effect_to_the_other_hubs() -> None:
    fx = Effects(queues={"acme", "default"}, look_again=True, workers={"w1"}, scheduler=True)
    sender, back = decode(encode("hub-a", fx))
    assert sender == "hub-a"
    assert back == fx
    sink = Sink()
    listener(sink).handle(encode("hub-a", fx))
    assert sink.calls == [
        ("notify", ["acme", "default"]),
        ("worker", "w1"),
        ("scheduler", None),
    ]


def test_a_process_skips_what_it_announced_itself() -> None:
    sink = Sink()
    listener(sink, sender="hub-a").handle(encode("hub-a", Effects(queues={"q"})))
    assert sink.calls == []


def test_effects_too_large_for_one_notification_wake_everything() -> None:
    fx = Effects(queues={f"customer-{i:05d}" for i in range(2000)})
    payload = encode("hub-a", fx)
    assert len(payload.encode()) <= MAX_PAYLOAD
    assert decode(payload) == ("hub-a", None)
    sink = Sink()
    listener(sink).handle(payload)
    assert sink.calls == [("everything", None)]


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not json",
        "[]",
        '"text"',
        "{}",
        '{"from": 1}',
        '{"from": "x", "queues": "default"}',
        '{"from": "x", "queues": [1]}',
        '{"from": "x", "queues": [""]}',
        json.dumps({"from": "x", "queues": ["q" * 1001]}),
        '{"from": "x", "workers": {"w": 1}}',
        '{"from": "x", "scheduler": "yes"}',
        '{"from": "x", "look_again": 1}',
        '{"from": "x", "drop": "table"}',
        '{"from": "x", "everything": true, "extra": 1}',
    ],
)
def test_a_notification_no_hub_wrote_is_logged_and_fires_nothing(
    payload: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BadPayload):
        decode(payload)
    sink = Sink()
    hears = listener(sink)
    with caplog.at_level(logging.WARNING, logger="tether.hub.store"):
        hears.handle(payload)
    assert sink.calls == []
    assert hears.refused == 1
    assert "that no hub wrote" in caplog.text
