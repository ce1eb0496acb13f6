"""Strict JSON for every request body the hub reads.

Python's ``json`` accepts ``NaN``, ``Infinity``, ``1e999999`` (as inf), lone
surrogates and nesting deep enough to exhaust the stack; stored, such a value
breaks a later request (a poll that cannot encode its reply) or the other
store (PostgreSQL refuses NaN and NUL). Every route of the hub's two APIs
uses :class:`StrictJSONRoute`, so a body is parsed with
:func:`tether.protocol.loads_strict` and refused with 422 and the reason
before any route or store code sees it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from tether.protocol import WireError, check_wire_value, loads_strict


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = loads_strict(body)
            except WireError as exc:
                # FastAPI answers a JSONDecodeError with 422 "json_invalid",
                # the message in ctx.error; the document is not echoed.
                raise json.JSONDecodeError(str(exc), "", 0) from None
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose JSON body goes through :func:`loads_strict`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


def wire_value(what: str) -> Callable[[Any, Any], Any]:
    """A pydantic field validator: the field's value is at most MAX_JSON_DEPTH deep
    (the body around it may be a little deeper, see ``protocol.ENVELOPE_DEPTH``).

    ``loads_strict`` has checked the rest already; a value must also fit where
    it will be carried later (a job holds return values a few levels down).
    """

    def check(cls: Any, value: Any) -> Any:
        try:
            check_wire_value(value, what)
        except WireError as exc:
            raise ValueError(str(exc)) from None
        return value

    return classmethod(check)  # type: ignore[return-value]
