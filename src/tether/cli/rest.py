"""The CLI's client for the hub's REST API (any machine that reaches the hub)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_HUB_URL = "http://127.0.0.1:8080"


class CliError(Exception):
    """Printed to stderr; the command exits 1."""


class HubAway(CliError):
    """The hub did not answer, or answered that it cannot now (502, 503, 504):
    a command that waits anyway (``tasks logs --follow``) asks again."""


#: Statuses that say the hub (or a proxy before it) is away for now, not that
#: the request is wrong.
AWAY_STATUSES = frozenset({502, 503, 504})


def home_dir(value: str | None = None) -> Path:
    return Path(value or os.environ.get("TETHER_HOME") or Path.home() / ".tether").expanduser()


def admin_token(home: str | None = None) -> str:
    token = os.environ.get("TETHER_TOKEN")
    if token:
        return token
    path = home_dir(home) / "admin_token"
    try:
        return path.read_text().strip()
    except OSError:
        raise CliError(
            f"no API token: set TETHER_TOKEN (an API token of the hub, or its admin token); "
            f"{path} does not exist"
        ) from None


class Api:
    def __init__(self, hub_url: str | None, home: str | None = None) -> None:
        self.url = (hub_url or os.environ.get("TETHER_HUB_URL") or DEFAULT_HUB_URL).rstrip("/")
        self.client = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {admin_token(home)}"},
            timeout=30.0,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise HubAway(f"cannot reach the hub at {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                reason = response.json().get("detail", response.text)
            except ValueError:
                reason = response.text
            kind = HubAway if response.status_code in AWAY_STATUSES else CliError
            raise kind(f"hub answered {response.status_code}: {reason}")
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body).json()

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, json=body).json()


def api_path(*segments: str) -> str:
    """A REST path from names given on the command line, each percent-encoded."""
    return "".join("/" + quote(str(s), safe="") for s in segments)


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def hub_config(**kwargs: Any) -> Any:
    """``HubConfig.load(**kwargs)``; a setting that is not valid is a CliError naming it."""
    from tether.hub.config import HubConfig

    try:
        return HubConfig.load(**kwargs)
    except ValueError as exc:
        raise CliError(f"invalid setting: {exc}") from None
