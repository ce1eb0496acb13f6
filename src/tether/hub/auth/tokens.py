"""The hub's admin API token.

It comes from TETHER_ADMIN_TOKEN or is generated on first start and kept in
the hub's home with mode 0600. Workers never use it: each holds its own
credential (see :mod:`tether.hub.core.credentials`). It opens everything, so
one shorter than :data:`MIN_ADMIN_TOKEN_CHARS` stops the hub's start
(:class:`AdminTokenError`) rather than guard it weakly.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

#: The shortest admin token the hub accepts (a generated one is 43 characters).
MIN_ADMIN_TOKEN_CHARS = 32


class AdminTokenError(ValueError):
    """The admin token given (or kept in the home) is too short to guard the hub."""


def _load_or_create(path: Path, env_value: str | None) -> tuple[str, bool]:
    """The token from the environment, the file, or a new one; and whether it is new."""
    if env_value:
        return _long_enough(env_value, "TETHER_ADMIN_TOKEN"), False
    if path.exists():
        return _long_enough(path.read_text().strip(), str(path)), False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def _long_enough(token: str, source: str) -> str:
    if len(token) < MIN_ADMIN_TOKEN_CHARS:
        raise AdminTokenError(
            f"the admin token in {source} has {len(token)} characters; it opens everything, "
            f"so it must have at least {MIN_ADMIN_TOKEN_CHARS}: make one with: "
            "openssl rand -hex 32"
        )
    return token


@dataclass
class Tokens:
    admin: str
    admin_generated: bool = False

    @classmethod
    def load(cls, home: Path) -> Tokens:
        admin, admin_new = _load_or_create(
            home / "admin_token", os.environ.get("TETHER_ADMIN_TOKEN")
        )
        return cls(admin, admin_new)

    def is_admin(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.admin.encode())
