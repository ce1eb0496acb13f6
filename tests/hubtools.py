"""An in-process hub for API and store tests: a real store and real DAG
parsing, requests through httpx's ASGI transport (no sockets)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tether.hub.app import build_hub, create_app
from tether.hub.auth.tokens import Tokens
from tether.hub.config import HubConfig
from tether.hub.dags.processor import DagProcessor
from tether.hub.state import Hub

ADMIN = "admin-token-for-tests"


def write_dag(folder: Path, name: str, source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(source))


def make_hub(tmp: Path, database_url: str, dags: Path) -> Hub:
    config = HubConfig(
        home=tmp / "home", dags_folder=dags, database_url=database_url, dag_file_timeout=5
    )
    return build_hub(config, Tokens(admin=ADMIN))


def parse(hub: Hub) -> None:
    DagProcessor(
        hub.store, hub.config.dags_folder, hub.config.home, hub.config.dag_file_timeout
    ).process_once()


__all__ = ["ADMIN", "create_app", "make_hub", "parse", "write_dag"]
