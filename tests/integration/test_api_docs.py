"""The API, described: the hub's two OpenAPI documents and ``/docs``.

Every route of the app (walked from the app, not from a document) has its
answer's model, its refusals' bodies and, unless it is one of the few public
ones named here, the bearer scheme and the role it needs; the worker API has
a document of its own that the REST one does not overlap; and ``/docs``,
fetched from a running hub with every asset it names, points nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from tests.hubtools import create_app, make_hub
from tests.integration.processes import Hub, running_hub
from tests.integration.test_roles import ROLE_NEEDED
from tether import protocol
from tether.hub import openapi
from tether.hub.errors import ErrorAnswer, ValidationErrorAnswer
from tether.hub.worker_api import routes as worker_routes
from tether.protocol import DIST_PREFIX, Message

#: The operations anyone may call: no security scheme, and none is expected.
PUBLIC = {
    ("GET", "/api/v1/health"),
    ("POST", "/api/worker/v1/enrol"),
    ("GET", DIST_PREFIX),
    ("GET", DIST_PREFIX + "{filename}"),
}
#: Routes whose 200 is not a JSON model, and the media type it is instead.
NOT_JSON = {
    ("GET", "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs"): "text/plain",
    ("GET", "/api/worker/v1/bundles/{sha}"): "application/gzip",
    ("GET", DIST_PREFIX + "{filename}"): "application/octet-stream",
}
#: Routes under the API prefixes kept out of the documents: HEAD twins of GETs,
#: and the worker API's document itself.
UNDOCUMENTED = {
    ("HEAD", DIST_PREFIX),
    ("HEAD", DIST_PREFIX + "{filename}"),
    ("GET", openapi.WORKER_DOCUMENT),
}
ERROR_MODELS = {ErrorAnswer.__name__, ValidationErrorAnswer.__name__}
ROLE_WORDS = {"viewer": "any API token", "operator": "`operator`", "admin": "`admin`"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    tmp = tmp_path_factory.mktemp("api-docs")
    hub = make_hub(tmp, f"sqlite:///{tmp / 'hub.db'}", tmp / "dags")
    yield create_app(hub)
    hub.store.dispose()


def _routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    """Every (method, path, route) of the two APIs, as the app has them."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path_format or ""
        if isinstance(route, APIRoute) and path.startswith("/api/"):
            found += [(m, path, route) for m in sorted(route.methods)]
    return found


def _ref(schema: dict[str, Any]) -> str:
    return str(schema.get("$ref", "")).rsplit("/", 1)[-1]


def _problems(method: str, path: str, route: APIRoute, document: dict[str, Any]) -> list[str]:
    """What the document lacks for one operation."""
    where = f"{method} {path}"
    operation = document["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return [f"{where}: not in its document"]
    problems = []
    schemas = document["components"]["schemas"]
    schemes = document["components"].get("securitySchemes", {})
    answers = operation["responses"]
    ok = [code for code in answers if code.startswith("2")]
    if not ok:
        problems.append(f"{where}: no 2xx answer")
    for code in ok:
        content = answers[code].get("content")
        if code == "204":
            continue
        expected = NOT_JSON.get((method, path), "application/json")
        if not content or expected not in content or not content[expected].get("schema"):
            problems.append(f"{where}: {code} has no {expected} schema")
            continue
        schema = content[expected]["schema"]
        if expected == "application/json" and not schema.get("oneOf"):
            name = _ref(schema)
            if name not in schemas:
                problems.append(f"{where}: {code} names no model: {schema}")
    if path.startswith("/api/v1/") and (method, path) not in NOT_JSON:
        model = route.response_model
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            problems.append(f"{where}: no response_model")
    for code, answer in answers.items():
        body = answer.get("content", {}).get("application/json", {}).get("schema", {})
        if code[0] in "45" and _ref(body) not in ERROR_MODELS:
            problems.append(f"{where}: {code} has no error model")
    security = operation.get("security")
    if (method, path) in PUBLIC:
        if security:
            problems.append(f"{where}: public, but says it needs {security}")
        return problems
    if not security:
        return [*problems, f"{where}: no security scheme"]
    for requirement in security:
        for name in requirement:
            scheme = schemes.get(name, {})
            if scheme.get("type") == "http" and scheme.get("scheme") != "bearer":
                problems.append(f"{where}: {name} is not a bearer scheme")
            if not scheme:
                problems.append(f"{where}: no scheme {name}")
    if not any(schemes[n].get("scheme") == "bearer" for r in security for n in r):
        problems.append(f"{where}: no bearer credential")
    for code in ("401", "429"):
        if code not in answers:
            problems.append(f"{where}: no {code}")
    if path.startswith("/api/v1/"):
        role = ROLE_NEEDED[(method, path)]
        assert role is not None
        if f"**Role:** {ROLE_WORDS[role]}" not in operation.get("description", ""):
            problems.append(f"{where}: its description does not name the role {role}")
        if "403" not in answers:
            problems.append(f"{where}: no 403")
    return problems


def test_every_route_has_its_answers_and_its_security(app: FastAPI) -> None:
    rest, worker = openapi.rest_document(app), openapi.worker_document(app)
    routes = _routes(app)
    assert len(routes) > 50
    problems = []
    for method, path, route in routes:
        if (method, path) in UNDOCUMENTED:
            continue
        document = worker if path.startswith("/api/worker/") else rest
        problems += _problems(method, path, route, document)
    assert problems == []
    for document in (rest, worker):
        for scheme in document["components"]["securitySchemes"].values():
            assert scheme["type"] in ("http", "apiKey"), scheme


def test_the_worker_api_has_a_document_of_its_own(app: FastAPI) -> None:
    """Its routes and only them; its bodies are the hub's models of the protocol's
    messages (checked field by field in tests/unit/test_protocol.py) and its answers
    the messages themselves."""
    rest, worker = openapi.rest_document(app), openapi.worker_document(app)
    documented = {
        (m.upper(), p) for doc in (worker,) for p, item in doc["paths"].items() for m in item
    }
    routes = {(m, p) for m, p, _ in _routes(app)} - UNDOCUMENTED
    assert documented == {(m, p) for m, p in routes if p.startswith("/api/worker/")}
    assert not [p for p in rest["paths"] if not p.startswith("/api/v1/")]
    assert {(m.upper(), p) for p, item in rest["paths"].items() for m in item} == {
        (m, p) for m, p in routes if p.startswith("/api/v1/")
    }
    assert app.openapi() == rest

    bodies = {
        _ref(op["requestBody"]["content"]["application/json"]["schema"])
        for item in worker["paths"].values()
        for op in item.values()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    }
    paired = (
        worker_routes.EnrolIn,
        worker_routes.FactsIn,
        worker_routes.PollIn,
        worker_routes.WorkerLogIn,
    )
    assert bodies == {m.__name__ for m in (*paired, worker_routes.FinishIn)}
    messages = {
        name
        for name in worker["components"]["schemas"]
        if isinstance(kind := getattr(protocol, name, None), type) and issubclass(kind, Message)
    }
    assert {"EnrolReply", "SessionReply", "HeartbeatReply", "PollReply", "LogAck"} <= messages
    assert {"FinishReply", "DistListing", "WorkerLogAck"} <= messages
    rest_models = set(rest["components"]["schemas"])
    assert not rest_models & (messages | bodies), "worker models leaked into the REST document"


# -- /docs from a running hub -----------------------------------------------------------


class _Refs(HTMLParser):
    """Every URL a page names (src, href), and whether it has inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for key in ("src", "href", "data-spec", "action"):
            if named.get(key):
                self.urls.append(str(named[key]))
        if "style" in named or tag == "style" or any(k.startswith("on") for k in named):
            self.inline.append(tag)
        self._in = tag if tag == "script" and "src" not in named else None

    def handle_data(self, data: str) -> None:
        if self._in == "script" and data.strip():
            self.inline.append("script")


CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("api-docs-served")
    (root / "dags").mkdir()
    with running_hub(root, "sqlite", None, root / "dags", workers=()) as (hub, _):
        yield hub


def _on_the_hub(hub: Hub, base: str, url: str) -> str | None:
    """``url`` (as named on ``base``) made absolute; None if it is somewhere else."""
    absolute = urljoin(base, url)
    parts, ours = urlsplit(absolute), urlsplit(hub.url)
    return absolute if (parts.scheme, parts.netloc) == (ours.scheme, ours.netloc) else None


def test_docs_and_every_asset_they_name_come_from_the_hub(served: Hub) -> None:
    """No token needed; each page, and each file it or its stylesheets name,
    is the hub's own, under a CSP that allows no other source."""
    elsewhere, fetched, problems = [], set(), []
    with httpx.Client(timeout=30, follow_redirects=True) as http:  # anonymous
        pages = [served.url + "/docs", served.url + "/docs/worker"]
        queue = list(pages)
        while queue:
            url = queue.pop()
            if url in fetched:
                continue
            fetched.add(url)
            answer = http.get(url)
            if answer.status_code != 200:
                problems.append(f"{url}: {answer.status_code}")
                continue
            csp = answer.headers.get("content-security-policy", "")
            kind = answer.headers["content-type"]
            if kind.startswith("text/html") and url in pages:  # (not the console's)
                assert "script-src 'self';" in csp, csp
                assert "connect-src 'self';" in csp, csp
                assert not re.search(r"https?:|\*|'unsafe-", csp), csp
                refs = _Refs()
                refs.feed(answer.text)
                assert refs.inline == [], f"{url}: inline {refs.inline}"
                named = refs.urls
            elif kind.startswith("text/css"):
                named = [u for u in CSS_URL.findall(answer.text) if not u.startswith("data:")]
            else:
                named = []
            for ref in named:
                if urlsplit(ref).scheme in ("data",):
                    continue
                absolute = _on_the_hub(served, url, ref)
                if absolute is None:
                    elsewhere.append(f"{url} names {ref}")
                else:
                    queue.append(absolute)
    assert elsewhere == []
    assert problems == []
    names = {urlsplit(u).path for u in fetched}
    # The pages, Swagger UI's files and ours, both documents, the way to the console.
    assert {
        "/docs",
        "/docs/worker",
        "/docs/static/swagger-ui-bundle.js",
        "/docs/static/swagger-ui.css",
        "/docs/static/docs.js",
        "/openapi.json",
        "/api/worker/v1/openapi.json",
    } <= names, names


def test_docs_serve_only_their_own_files(served: Hub) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as http:
        for name in ("nope.js", "..%2Fopenapi.py", "%2E%2E%2Fapp.py", "redoc.standalone.js"):
            answer = http.get(f"/docs/static/{name}")
            assert answer.status_code == 404, (name, answer.text)
        script = http.get("/docs/static/docs.js")
        assert script.headers["content-type"].startswith(("text/javascript", "application/js"))
        assert "validatorUrl: null" in script.text  # no badge from validator.swagger.io
        # The worker API's document is public (as the REST one is); nothing else there is.
        assert http.get("/api/worker/v1/openapi.json").status_code == 200
        assert http.get("/api/worker/v1/openapi.jsonx").status_code == 401


def test_the_docs_name_every_asset_that_exists() -> None:
    """The files /docs serves are all there (a package update that moved them fails here)."""
    for name, path in openapi.ASSETS.items():
        assert Path(path).is_file(), name
