"""The hub's two OpenAPI documents, and ``/docs``, the page that shows them.

The REST API is described at ``/openapi.json``, the worker API at
``/api/worker/v1/openapi.json``: two audiences, two documents, each built
from the app's own routes (split by path), so neither can list a route the
other has. To what FastAPI generates each adds what it cannot know:

- **who may call**: a bearer security scheme per credential the gate checks
  (``auth/gate.py``), on every operation that needs one. On the REST API the
  role comes off the route's own :class:`~tether.hub.auth.deps.RoleCheck`,
  the one that enforces it, and is stated in the operation's description;
- **the refusals every route of a kind shares**, with the body the hub writes
  (``errors.ErrorAnswer``): 401, 403 and 429 where a credential is needed,
  413 where a body is read, 409 where a write may meet another, 503 where the
  store is read, and the hub's 422 shape in place of FastAPI's.

``/docs`` is Swagger UI 5 (from the ``fastapi-offline`` package's static
files) with every asset served by the hub under ``/docs/static/``, so it works
with no internet, under a CSP that allows nothing from elsewhere. The page
and both documents are public, as ``/openapi.json`` always was: they show
the shape of the API, which the source shows too, and nothing of the hub's
state; calls made from the page need a token (Authorize) like any other, and
the gate checks them as any other.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, HTTPException, status
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic.json_schema import models_json_schema

from tether import __version__
from tether.hub.auth.deps import (
    API_TOKEN,
    ATTEMPT_TOKEN,
    WORKER_CREDENTIAL,
    WORKER_SESSION,
    role_needed,
)
from tether.hub.auth.gate import REST_PREFIX, WORKER_OPENAPI_PATH, in_dist_area, needs
from tether.hub.core.api_tokens import Role
from tether.hub.errors import WHEN, ErrorAnswer, ValidationErrorAnswer
from tether.protocol import SESSION_HEADER, WORKER_API_PREFIX

REST_DOCUMENT = "/openapi.json"
WORKER_DOCUMENT = WORKER_OPENAPI_PATH
DOCS = "/docs"
WORKER_DOCS = "/docs/worker"
DOCS_STATIC = "/docs/static/"

REST_TITLE = "Tether REST API"
REST_ABOUT = (
    "People, scripts and the `tether` CLI: DAGs, runs, task logs, workers, "
    "queues, pools, assets, connections, variables, tokens and the audit log. Every route "
    "but `/api/v1/health` needs an API token; its description names the role it needs "
    "(`viewer` < `operator` < `admin`). See docs/api.md and docs/rest-api.md."
)
WORKER_TITLE = "Tether worker API"
WORKER_ABOUT = (
    "What edge workers call: enrolment, sessions, heartbeats, the poll, "
    "bundles, log chunks, results, secrets, and the worker's wheel. The messages are "
    "`tether.protocol`'s; the bounds are the hub's. See docs/api.md and docs/workers.md."
)

REST_SCHEMES: dict[str, Any] = {
    API_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token: the built-in admin token, or a named one (`tth_...`) "
        "with a role (`tether tokens create NAME --role viewer`).",
    }
}
WORKER_SCHEMES: dict[str, Any] = {
    WORKER_CREDENTIAL: {
        "type": "http",
        "scheme": "bearer",
        "description": "The worker's own credential (`ttw_...`), from `POST /enrol`.",
    },
    WORKER_SESSION: {
        "type": "apiKey",
        "in": "header",
        "name": SESSION_HEADER,
        "description": "The session id `POST /sessions` gave this worker process.",
    },
    ATTEMPT_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "The token of a running attempt (`secrets_token` of its job): only "
        "for the connections and variables its task declares, while it runs.",
    },
}

ROLE_NOTE = {
    Role.VIEWER: "**Role:** any API token (`viewer`, `operator` or `admin`).",
    Role.OPERATOR: "**Role:** `operator` (or `admin`); a viewer's token gets 403.",
    Role.ADMIN: "**Role:** `admin`; a viewer's or an operator's token gets 403.",
}
_READS = frozenset({"get", "head"})
#: What FastAPI calls every 422; the hub's also come from its own refusals.
_FASTAPI_422 = "Validation Error"

#: What ``/docs`` is made of: the name each file is served as, and where it lives.
_VENDOR = Path(fastapi_offline.__file__).parent / "static"
_OURS = Path(__file__).parent / "docs_static"
ASSETS: dict[str, Path] = {
    "swagger-ui-bundle.js": _VENDOR / "swagger-ui-bundle.js",
    "swagger-ui.css": _VENDOR / "swagger-ui.css",
    "favicon.png": _VENDOR / "favicon.png",
    "docs.js": _OURS / "docs.js",
    "docs.css": _OURS / "docs.css",
}
#: Only the hub's own files. Swagger UI's stylesheet draws its icons as ``data:``
#: images; no script, style or connection goes anywhere but the hub.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; "
    "object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _contexts(app: FastAPI, worker: bool) -> list[RouteContext]:
    """The routes of one API among ``app``'s, as their effective (prefixed) contexts."""
    prefix = WORKER_API_PREFIX + "/" if worker else REST_PREFIX
    return [
        context
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute) and (context.path or "").startswith(prefix)
    ]


def _error_schemas() -> dict[str, Any]:
    """The schemas of the error bodies, as components (their nested models too)."""
    _, top = models_json_schema(
        [(ErrorAnswer, "serialization"), (ValidationErrorAnswer, "serialization")],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    return schemas


def _refusal(status_code: int, description: str | None = None) -> dict[str, Any]:
    """A refusal as the hub writes it: JSON, whatever the route's own answers are."""
    model = ValidationErrorAnswer if status_code == 422 else ErrorAnswer
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    }
    if status_code == 413:  # cut off mid-body, before any route: Starlette's plain text
        content["text/plain"] = {"schema": {"type": "string", "const": "Content Too Large"}}
    return {"description": description or WHEN[status_code], "content": content}


def _add(operation: dict[str, Any], *statuses: int) -> None:
    for code in statuses:
        operation["responses"].setdefault(str(code), _refusal(code))


def _finish(document: dict[str, Any], schemes: dict[str, Any]) -> dict[str, Any]:
    """Security schemes and error schemas into the components; responses sorted;
    FastAPI's own 422 schemas dropped once nothing refers to them."""
    components = document.setdefault("components", {})
    components["securitySchemes"] = schemes
    schemas = components.setdefault("schemas", {})
    schemas.update(_error_schemas())
    for item in document["paths"].values():
        for operation in item.values():
            answers = operation["responses"]
            for code, answer in answers.items():
                if code[0] in "45":  # a route that answers text still refuses in JSON
                    said = answer.get("description")
                    answers[code] = _refusal(int(code), None if said == _FASTAPI_422 else said)
            operation["responses"] = dict(sorted(answers.items()))
    text = json.dumps(document["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{unused}"' not in text:
            schemas.pop(unused, None)
    components["schemas"] = dict(sorted(schemas.items()))
    return document


def _describe(operation: dict[str, Any], note: str) -> None:
    before = operation.get("description")
    operation["description"] = f"{before}\n\n{note}" if before else note


def _common(operation: dict[str, Any], method: str, store: bool = True) -> None:
    """The refusals any route of this method may give: 413 for a body, 422 in the
    hub's shape, 409 for a write that meets another, 503 for a lost store."""
    if "requestBody" in operation:
        _add(operation, 413)
    if method not in _READS and store:
        _add(operation, 409)
    if store:
        _add(operation, 503)


#: The security requirement of each kind of principal the gate asks for.
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "api": [{API_TOKEN: []}],
    "worker": [{WORKER_CREDENTIAL: []}],
    "attempt": [{ATTEMPT_TOKEN: []}],
}
_PUBLIC_WHEEL = (
    "**Public** unless the hub runs with `TETHER_PUBLIC_DIST=0`: then any API token or "
    "worker credential, as a bearer token or as the password of HTTP Basic auth."
)


def rest_document(app: FastAPI) -> dict[str, Any]:
    """The REST API's OpenAPI document."""
    contexts = _contexts(app, worker=False)
    document = get_openapi(
        title=REST_TITLE, version=__version__, description=REST_ABOUT, routes=contexts
    )
    roles: dict[tuple[str, str | None], Role | None] = {}
    for context in contexts:
        route = context.original_route
        assert isinstance(route, APIRoute)
        for method in route.methods or ():
            roles[(method.lower(), context.path_format)] = role_needed(route.dependant)
    for path, item in document["paths"].items():
        need = needs(path)
        for method, operation in item.items():
            if need is None:  # /health: public, and it reads no store
                continue
            operation["security"] = _SECURITY[need]
            role = roles[(method, path)]
            if role is not None:  # (a route the gate guards that checks no role has no note)
                _describe(operation, ROLE_NOTE[role])
            _add(operation, 401, 403, 429)
            _common(operation, method)
    return _finish(document, REST_SCHEMES)


def worker_document(app: FastAPI) -> dict[str, Any]:
    """The worker API's OpenAPI document (with the wheel it serves for pip).

    Who may call each path is the gate's rule for it (``gate.needs``); a route
    bound to the calling process's session declares so itself (``SESSION_BOUND``).
    """
    contexts = _contexts(app, worker=True)
    document = get_openapi(
        title=WORKER_TITLE, version=__version__, description=WORKER_ABOUT, routes=contexts
    )
    for path, item in document["paths"].items():
        wheel = in_dist_area(path)
        need = None if wheel else needs(path)
        for method, operation in item.items():
            if need is not None:
                operation.setdefault("security", _SECURITY[need])
                _add(operation, 401, 429)
            elif wheel:
                _describe(operation, _PUBLIC_WHEEL)
            else:
                _add(operation, 429)  # /enrol: refused before its token is looked up
            _common(operation, method, store=not wheel)
    return _finish(document, WORKER_SCHEMES)


class Documents:
    """Both documents of one app, made on first use (its routes are fixed by then)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._rest: dict[str, Any] | None = None
        self._worker: dict[str, Any] | None = None

    def rest(self) -> dict[str, Any]:
        if self._rest is None:
            self._rest = rest_document(self.app)
        return self._rest

    def worker(self) -> dict[str, Any]:
        if self._worker is None:
            self._worker = worker_document(self.app)
        return self._worker


def _page(title: str, spec: str, here: str) -> str:
    """The docs page: no inline script or style; ``docs.js`` reads the spec's URL
    from the element it fills."""
    links = " | ".join(
        f'<a href="{href}"{" aria-current=page" if href == here else ""}>{name}</a>'
        for href, name in ((DOCS, "REST API"), (WORKER_DOCS, "Worker API"))
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" href="{DOCS_STATIC}favicon.png">
<link rel="stylesheet" href="{DOCS_STATIC}swagger-ui.css">
<link rel="stylesheet" href="{DOCS_STATIC}docs.css">
</head>
<body>
<nav class="tether-docs">Tether hub: {links} | <a href="/ui/">console</a></nav>
<div id="swagger-ui" data-spec="{spec}"></div>
<script src="{DOCS_STATIC}swagger-ui-bundle.js"></script>
<script src="{DOCS_STATIC}docs.js"></script>
</body>
</html>
"""


def install(app: FastAPI) -> Documents:
    """Serve both documents and ``/docs`` on ``app`` (made with ``openapi_url=None``
    and ``docs_url=None``); ``app.openapi()`` is then the REST document."""
    documents = Documents(app)
    app.openapi = documents.rest  # type: ignore[method-assign]

    @app.get(REST_DOCUMENT, include_in_schema=False)
    async def rest_openapi() -> JSONResponse:
        return JSONResponse(documents.rest())

    @app.get(WORKER_DOCUMENT, include_in_schema=False)
    async def worker_openapi() -> JSONResponse:
        return JSONResponse(documents.worker())

    @app.get(DOCS, include_in_schema=False)
    async def rest_docs() -> HTMLResponse:
        page = _page(REST_TITLE, REST_DOCUMENT, DOCS)
        return HTMLResponse(page, headers=HEADERS)

    @app.get(WORKER_DOCS, include_in_schema=False)
    async def worker_docs() -> HTMLResponse:
        page = _page(WORKER_TITLE, WORKER_DOCUMENT, WORKER_DOCS)
        return HTMLResponse(page, headers=HEADERS)

    @app.get(DOCS_STATIC + "{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        path = ASSETS.get(name)
        if path is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        return FileResponse(path, headers=copy.copy(HEADERS))

    return documents
