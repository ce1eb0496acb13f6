"""The hub's API tokens (issue 2 scope: one admin token, one shared worker token).

Each comes from its environment variable or is generated on first start and
kept in the hub's home with mode 0600. Per-worker enrolment replaces the
shared worker token later.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path


def _load_or_create(path: Path, env_value: str | None) -> tuple[str, bool]:
    """The token from the environment, the file, or a new one; and whether it is new."""
    if env_value:
        return env_value, False
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


@dataclass
class Tokens:
    admin: str
    worker: str
    admin_generated: bool = False
    worker_generated: bool = False

    @classmethod
    def load(cls, home: Path) -> Tokens:
        admin, admin_new = _load_or_create(
            home / "admin_token", os.environ.get("TETHER_ADMIN_TOKEN")
        )
        worker, worker_new = _load_or_create(
            home / "worker_token", os.environ.get("TETHER_WORKER_TOKEN")
        )
        if hmac.compare_digest(admin, worker):
            raise ValueError("the worker token must differ from the admin token")
        return cls(admin, worker, admin_new, worker_new)

    def is_admin(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.admin.encode())

    def is_worker(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.worker.encode())
