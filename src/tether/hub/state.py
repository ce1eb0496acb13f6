"""What the hub's request handlers share: settings, store, tokens, wake-ups, principals."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from tether.hub.auth.gate import Principals
from tether.hub.auth.tokens import Tokens
from tether.hub.config import HubConfig
from tether.hub.core.secret_keys import SecretKeys
from tether.hub.store.db import Store
from tether.hub.wakeups import Wakeups


@dataclass
class Hub:
    config: HubConfig
    store: Store
    tokens: Tokens
    wakeups: Wakeups
    principals: Principals
    #: Encrypts connections and variables at rest (``hub/core/vault.py``).
    secret_keys: SecretKeys


async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub
