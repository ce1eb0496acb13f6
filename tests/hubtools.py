"""An in-process hub for API and store tests: a real store and real DAG
parsing, requests through httpx's ASGI transport (no sockets)."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path

from tether.hub.app import build_hub, create_app
from tether.hub.auth.tokens import Tokens
from tether.hub.config import HubConfig
from tether.hub.services.dag_processor import DagProcessor
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


class Told:
    """An effect sink that records what committed transactions told
    (``tether.hub.store.effects``), so a test can check whom a change wakes."""

    def __init__(self) -> None:
        #: The queues of each notify, in order: one per transaction that woke anyone.
        self.notifies: list[set[str]] = []
        self.workers: set[str] = set()
        self.scheduler_pokes = 0

    @property
    def queues(self) -> set[str]:
        return set().union(*self.notifies)

    def notify(self, queues: Iterable[str]) -> None:
        self.notifies.append(set(queues))

    def notify_worker(self, name: str) -> None:
        self.workers.add(name)

    def poke_scheduler(self) -> None:
        self.scheduler_pokes += 1


@contextlib.contextmanager
def told(hub: Hub) -> Iterator[Told]:
    """While inside, what ``hub``'s transactions tell after their commits is recorded."""
    before, hub.store.effects = hub.store.effects, Told()
    try:
        assert isinstance(hub.store.effects, Told)
        yield hub.store.effects
    finally:
        hub.store.effects = before


def parse(hub: Hub) -> None:
    DagProcessor(
        hub.store, hub.config.dags_folder, hub.config.home, hub.config.dag_file_timeout
    ).process_once()


__all__ = ["ADMIN", "Told", "create_app", "make_hub", "parse", "told", "write_dag"]
