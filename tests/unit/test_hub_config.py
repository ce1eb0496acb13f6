"""The hub's settings refuse values it could not work with, at start, with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.hub.config import HubConfig


@pytest.mark.parametrize("lifetime", ["inf", "nan", "-inf", "0"])
def test_a_console_session_lifetime_that_is_no_number_of_seconds_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lifetime: str
) -> None:
    """``float()`` reads "inf" and "nan"; a session cannot end at either (every
    login would fail with a 500)."""
    monkeypatch.setenv("TETHER_CONSOLE_SESSION_LIFETIME", lifetime)
    with pytest.raises(ValueError, match="console_session_lifetime must be"):
        HubConfig.load(home=tmp_path)
    monkeypatch.setenv("TETHER_CONSOLE_SESSION_LIFETIME", "600")
    assert HubConfig.load(home=tmp_path).console_session_lifetime == 600.0


def test_public_metrics_is_off_unless_asked_and_a_bad_value_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_PUBLIC_METRICS", raising=False)
    assert HubConfig.load(home=tmp_path).public_metrics is False
    monkeypatch.setenv("TETHER_PUBLIC_METRICS", "1")
    assert HubConfig.load(home=tmp_path).public_metrics is True
    monkeypatch.setenv("TETHER_PUBLIC_METRICS", "maybe")
    with pytest.raises(ValueError, match="TETHER_PUBLIC_METRICS must be 1 or 0"):
        HubConfig.load(home=tmp_path)
