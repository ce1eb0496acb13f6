"""The one table from domain errors to HTTP statuses, for both of the hub's APIs.

Store and service functions raise what went wrong in their own words
(``NotFound``, ``AttemptFenced``, ``SecretExists``); no route catches an
error only to turn it into a status. :func:`install` registers one handler
per row on the app, which answers ``{"detail": reason}`` as FastAPI's own
``HTTPException`` does, so clients see the same shape whatever raised it.
A route still catches an error when it must do something first (audit a
refusal, forget a revoked credential) and then raises it again.

Starlette finds a handler by the raised class's MRO, so a subclass shares
its base's row unless it has its own.

:class:`ErrorAnswer` and :class:`ValidationErrorAnswer` are those bodies as
the OpenAPI documents describe them, and :func:`responses` the entries a
route lists for the statuses it may answer (``hub/openapi.py`` adds the ones
every route of a kind shares: 401, 403, 413, 422, 429, 503).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from tether.hub.core import (
    api_tokens,
    attempts,
    audit,
    backfill,
    control,
    credentials,
    handout,
    limits,
    queries,
    sessions,
)
from tether.hub.core import vault as secrets
from tether.hub.core.params import InvalidParams
from tether.hub.core.runs import ReservedRunId, RunExists
from tether.hub.core.secret_keys import SecretKeyError

log = logging.getLogger("tether.hub")


@dataclass(frozen=True)
class Answer:
    """How one kind of error is answered."""

    status: int
    #: The reason when the error's own text is not for clients; else ``str(exc)``.
    reason: str | None = None
    headers: dict[str, str] | None = None


ERRORS: dict[type[Exception], Answer] = {
    # Not there: the thing named does not exist (or is not this caller's to see).
    queries.NotFound: Answer(status.HTTP_404_NOT_FOUND),
    credentials.TokenNotFound: Answer(status.HTTP_404_NOT_FOUND),
    api_tokens.ApiTokenNotFound: Answer(status.HTTP_404_NOT_FOUND),
    attempts.AttemptNotFound: Answer(status.HTTP_404_NOT_FOUND),
    handout.NoSuchSecret: Answer(status.HTTP_404_NOT_FOUND),
    # The request is well formed but cannot be done as asked.
    queries.BadRequest: Answer(status.HTTP_400_BAD_REQUEST),
    InvalidParams: Answer(status.HTTP_400_BAD_REQUEST),
    backfill.BackfillError: Answer(status.HTTP_400_BAD_REQUEST),
    audit.InvalidFilter: Answer(status.HTTP_422_UNPROCESSABLE_CONTENT),
    ReservedRunId: Answer(status.HTTP_422_UNPROCESSABLE_CONTENT),
    api_tokens.InvalidApiToken: Answer(status.HTTP_422_UNPROCESSABLE_CONTENT),
    secrets.InvalidSecret: Answer(status.HTTP_422_UNPROCESSABLE_CONTENT),
    attempts.InvalidReport: Answer(status.HTTP_422_UNPROCESSABLE_CONTENT),
    # Who is asking.
    credentials.InvalidCredential: Answer(status.HTTP_401_UNAUTHORIZED),
    handout.TokenRefused: Answer(
        status.HTTP_401_UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"}
    ),
    attempts.NotYourAttempt: Answer(status.HTTP_403_FORBIDDEN),
    handout.NotForThisTask: Answer(status.HTTP_403_FORBIDDEN),
    sessions.QueueRefused: Answer(status.HTTP_403_FORBIDDEN),
    sessions.IncompatibleVersion: Answer(status.HTTP_426_UPGRADE_REQUIRED),
    # The state of things says no: it exists already, was spent, or moved on.
    RunExists: Answer(status.HTTP_409_CONFLICT),
    credentials.WorkerExists: Answer(status.HTTP_409_CONFLICT),
    api_tokens.ApiTokenExists: Answer(status.HTTP_409_CONFLICT),
    credentials.EnrolmentRefused: Answer(status.HTTP_409_CONFLICT),
    control.TokenSpent: Answer(status.HTTP_409_CONFLICT),
    limits.PoolError: Answer(status.HTTP_409_CONFLICT),
    secrets.SecretExists: Answer(status.HTTP_409_CONFLICT),
    secrets.RotationInProgress: Answer(status.HTTP_409_CONFLICT),
    sessions.Superseded: Answer(status.HTTP_409_CONFLICT),
    attempts.AttemptFenced: Answer(status.HTTP_409_CONFLICT),
    # Two requests wrote the same row at once; the other one won. The text of
    # the database's error names tables and values, so it is not passed on.
    IntegrityError: Answer(
        status.HTTP_409_CONFLICT, "another request wrote the same record at that moment; try again"
    ),
    # The hub's keys do not open what it stored: the operator's to fix, said plainly.
    SecretKeyError: Answer(status.HTTP_500_INTERNAL_SERVER_ERROR),
}


class ErrorAnswer(BaseModel):
    """Every refusal: the hub's error table, ``HTTPException``, the auth gate, an outage."""

    detail: str = Field(description="the reason, in words")


class ValidationIssue(BaseModel):
    """One thing wrong with a request, as FastAPI (pydantic) reports it."""

    type: str
    loc: list[str | int] = Field(description="where: `body`, `query`, `path`, then the field")
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorAnswer(BaseModel):
    """422: a list of issues for a body, path or query that does not fit, or a
    reason for a value the hub refuses itself (a token name, a secret)."""

    detail: str | list[ValidationIssue]


#: What each status means, as the documents say it; the worker API's own
#: meanings of 403, 409 and 426 are in docs/api.md.
WHEN: dict[int, str] = {
    400: "the request is well formed but cannot be done as asked",
    401: "no credential, or one that is wrong, expired or revoked (`WWW-Authenticate: Bearer`)",
    403: "the credential may not do this (the reason names the role or the rule)",
    404: "what the request names does not exist",
    409: "the state of things says no: it exists already, was spent, or moved on",
    413: "the body is over this route's limit (`Content Too Large`)",
    422: "a body, path or query that does not fit, or a value the hub refuses",
    426: "the worker's version or protocol is one this hub no longer takes",
    429: "too many failed authentications from this address (`Retry-After`)",
    503: "the hub's database cannot be reached just now; ask again (`Retry-After`)",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of ``statuses``, each with its body's model."""
    return {
        status: {
            "model": ValidationErrorAnswer if status == 422 else ErrorAnswer,
            "description": WHEN[status],
        }
        for status in statuses
    }


def describe(exc: Exception) -> tuple[int, str] | None:
    """The status and reason the table gives ``exc`` (its class or its nearest
    listed base), or None if it has no row: how the web console answers the
    same errors with a page."""
    row = next((ERRORS[cls] for cls in type(exc).__mro__ if cls in ERRORS), None)
    if row is None:
        return None
    if isinstance(exc, IntegrityError):
        log.warning("a concurrent write was refused by the database: %s", exc.orig)
    return row.status, row.reason if row.reason is not None else str(exc)


def answer_for(exc: Exception) -> JSONResponse:
    """The answer to ``exc`` by the table."""
    described = describe(exc)
    assert described is not None, exc
    status_code, reason = described
    row = next(ERRORS[cls] for cls in type(exc).__mro__ if cls in ERRORS)
    return JSONResponse({"detail": reason}, status_code, headers=row.headers)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    return answer_for(exc)


def install(app: FastAPI) -> None:
    """Answer every error in :data:`ERRORS` by the table, on every route of ``app``."""
    for cls in ERRORS:
        app.add_exception_handler(cls, _handle)
