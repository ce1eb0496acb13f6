"""The worker's own credential, kept in its home with mode 0600."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "credential.json"


@dataclass
class Credential:
    hub_url: str
    name: str
    credential: str
    queues: list[str]

    @classmethod
    def load(cls, home: Path) -> Credential | None:
        path = home / FILE_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(**{k: data[k] for k in ("hub_url", "name", "credential", "queues")})

    def save(self, home: Path) -> Path:
        """Write atomically, readable by the worker's user only."""
        home.mkdir(parents=True, exist_ok=True)
        path = home / FILE_NAME
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)
        os.chmod(tmp, 0o600)
        tmp.replace(path)
        return path
