"""Signing in and out of the console, and the session every other console route needs.

The login form takes an API token; :func:`tether.hub.auth.console.principal_for`
says whom it stands for. A good one gets a signed session cookie
(``auth/console.py``: HttpOnly, SameSite=Strict, Path=/ui, Secure over TLS,
``TETHER_CONSOLE_SESSION_LIFETIME``) for a session the store keeps, which
signing out ends; a wrong one is shown "invalid token"
and counts against its address's failure budget, the gate's
(``Principals.throttle``), so the form is no faster a way to guess tokens
than the API. Every POST carries a CSRF field: the login form's matches a
signed cookie of its own (double submit), every later form the session's
secret. A console page reached without a good session redirects to the
login page, which sends the browser back after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.responses import RedirectResponse, Response

from tether.hub.auth import console
from tether.hub.auth.console import ConsolePrincipal, ConsoleSession
from tether.hub.state import Hub, get_hub
from tether.hub.ui.render import page

LOGIN = "/ui/login"
HOME = "/ui/dags"
#: How long the login form's CSRF cookie lasts: time enough to type a token.
LOGIN_FORM_SECONDS = 3600
#: A console form is a few fields; a larger body is not one.
MAX_FORM_BYTES = 16 * 1024

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class SignedIn:
    """The principal of a request with a good session, and the session."""

    principal: ConsolePrincipal
    session: ConsoleSession


class SignInFirst(Exception):
    """A console page asked for without a good session: the answer is the login page."""

    def __init__(self, after: str) -> None:
        super().__init__(after)
        self.after = after


def _safe_next(value: str | None) -> str:
    """Where to go after login: a console path, never another site (``//evil``)."""
    if (
        value
        and value.startswith("/ui/")
        and "//" not in value
        and "\\" not in value
        and len(value) <= 2000
        and value.isprintable()
    ):
        return value
    return HOME


async def _signed_in(request: Request) -> SignedIn | None:
    hub: Hub = request.app.state.hub
    session = await console.read_session(hub, request.cookies.get(console.SESSION_COOKIE))
    if session is None:
        return None
    principal = await console.principal_for(hub, session.token_hash)
    return None if principal is None else SignedIn(principal, session)


async def require_page_session(request: Request) -> SignedIn:
    """The session of a console page; without one the browser goes to the login page."""
    signed = await _signed_in(request)
    if signed is None:
        after = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInFirst(after)
    return signed


async def require_stream_session(request: Request) -> SignedIn:
    """The session of a console endpoint a script calls (the log stream): 401 without one."""
    signed = await _signed_in(request)
    if signed is None:
        raise HTTPException(401, "sign in to the console first")
    return signed


PageSession = Annotated[SignedIn, Depends(require_page_session)]
StreamSession = Annotated[SignedIn, Depends(require_stream_session)]


async def sign_in_first(request: Request, exc: Exception) -> Response:
    """The answer to :class:`SignInFirst`: the login page, then back; a bad or
    expired cookie the request carried is cleared."""
    assert isinstance(exc, SignInFirst)
    target = LOGIN if exc.after == HOME else f"{LOGIN}?next={quote(exc.after, safe='/')}"
    answer = RedirectResponse(target, status_code=303)
    if console.SESSION_COOKIE in request.cookies:
        answer.delete_cookie(console.SESSION_COOKIE, path=console.COOKIE_PATH)
    return answer


async def read_form(
    request: Request, max_bytes: int = MAX_FORM_BYTES, max_fields: int = 20
) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each); 4xx for anything else.
    An empty body is an empty form, whatever its type."""
    body = b""
    async for piece in request.stream():
        body += piece
        if len(body) > max_bytes:
            raise HTTPException(413, f"this console form is at most {max_bytes} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "a console form is sent as application/x-www-form-urlencoded")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the form is not valid urlencoded UTF-8") from None
    return {name: values[0] for name, values in fields.items()}


def _login_page(
    hub: Hub, request: Request, *, after: str, error: str | None = None, status: int = 200
) -> Response:
    """The login form, with a new CSRF value and the signed cookie it must match."""
    value, cookie = console.new_login_csrf(hub.console_key)
    answer = page("login.html", status, csrf=value, after=after, error=error, user=None)
    answer.set_cookie(
        console.LOGIN_COOKIE,
        cookie,
        max_age=LOGIN_FORM_SECONDS,
        path=LOGIN,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return answer


def _refused(reason: str) -> Response:
    return page("error.html", 403, title="Refused", message=reason, user=None)


@router.get("/ui", response_model=None)
@router.get("/ui/", response_model=None)
async def console_home() -> Response:
    return RedirectResponse(HOME, status_code=303)


@router.get(LOGIN, response_model=None)
async def login_form(request: Request, hub: Annotated[Hub, Depends(get_hub)]) -> Response:
    after = _safe_next(request.query_params.get("next"))
    if await _signed_in(request) is not None:
        return RedirectResponse(after, status_code=303)
    return _login_page(hub, request, after=after)


@router.post(LOGIN, response_model=None)
async def login(request: Request, hub: Annotated[Hub, Depends(get_hub)]) -> Response:
    form = await read_form(request)
    if not console.login_csrf_ok(
        hub.console_key, request.cookies.get(console.LOGIN_COOKIE), form.get("csrf")
    ):
        return _refused(
            "The login form's CSRF check failed (the form was too old, or sent from "
            "elsewhere). Open the login page again."
        )
    after = _safe_next(form.get("next"))
    address = request.client.host if request.client else "unknown"
    throttle = hub.principals.throttle
    token = form.get("token", "").strip()
    principal = await console.principal_for(hub, console.token_hash(token)) if token else None
    if principal is None:
        # As at the gate: a good token passes whatever its neighbours did; a wrong
        # one from an address over its budget is told to wait.
        blocked = throttle.retry_after(address)
        if blocked is not None:
            seconds = max(1, math.ceil(blocked))
            reason = f"Too many failed sign-ins from this address; retry in {seconds} s."
            answer = _login_page(hub, request, after=after, error=reason, status=429)
            answer.headers["Retry-After"] = str(seconds)
            return answer
        throttle.failed(address)
        return _login_page(hub, request, after=after, error="invalid token", status=401)
    cookie, _ = await console.open_session(
        hub, console.token_hash(token), hub.config.console_session_lifetime
    )
    answer = RedirectResponse(after, status_code=303)
    answer.set_cookie(
        console.SESSION_COOKIE,
        cookie,
        max_age=int(hub.config.console_session_lifetime),
        path=console.COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    answer.delete_cookie(console.LOGIN_COOKIE, path=LOGIN)
    return answer


@router.post("/ui/logout", response_model=None)
async def logout(request: Request, signed: PageSession) -> Response:
    form = await read_form(request)
    if not console.csrf_ok(signed.session, form.get("csrf")):
        return _refused("The form's CSRF check failed. Reload the page and try again.")
    await console.end_session(request.app.state.hub, signed.session)
    answer = RedirectResponse(LOGIN, status_code=303)
    answer.delete_cookie(console.SESSION_COOKIE, path=console.COOKIE_PATH)
    return answer
