"""``docs/rest-api.md``, the REST reference, written from the hub's OpenAPI document.

``python -m tether.hub.openapi_docs --write-docs`` rewrites the file from the
document the code makes (``hub/openapi.py``); without ``--write-docs`` it
prints it. ``tests/unit/test_openapi_docs.py`` makes it afresh and fails when
the file differs, so a route, a field or a role changed without the
reference fails the suite. The document is made from a throwaway hub (an
SQLite store in a temporary folder) and nothing of the hub's settings or
version reaches the text, so it is the same on every machine. The hub never
needs this module.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from tether.hub import openapi
from tether.hub.app import build_hub, create_app
from tether.hub.auth.tokens import Tokens
from tether.hub.config import HubConfig

DOCS = Path(__file__).resolve().parents[3] / "docs" / "rest-api.md"
HEADER = """\
# REST API reference

<!-- Generated from the hub's OpenAPI document by
     `python -m tether.hub.openapi_docs --write-docs`: do not edit by hand. -->

Every route of `/api/v1`, as the hub's OpenAPI document (`GET /openapi.json`)
describes it: parameters, body, answers and the role each needs. The worker
API has a document of its own (`GET /api/worker/v1/openapi.json`), and the
hub shows both at `/docs` ([api.md](api.md) tells how the API is used, with
examples). Every route but `GET /api/v1/health` needs
`Authorization: Bearer <API token>`; refusals are JSON, `{"detail": "reason"}`
(a list of issues for a 422 from validation), see [Errors](#errors).
"""


def document() -> dict[str, Any]:
    """The REST API's OpenAPI document, made from a throwaway hub's app."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "dags").mkdir()
        config = HubConfig(
            home=home / "home", dags_folder=home / "dags", database_url=f"sqlite:///{tmp}/db"
        )
        hub = build_hub(config, Tokens(admin="unused"))
        try:
            return openapi.rest_document(create_app(hub))
        finally:
            hub.store.dispose()


def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: dict[str, Any]) -> str:
    """A JSON schema as a short type: ``string``, ``integer | null``, ``[RunSummary]``."""
    if "$ref" in schema:
        name = _name(schema["$ref"])
        return f"[{name}](#{name.lower()})"
    if "const" in schema:
        return f"`{schema['const']!r}`".replace("'", '"')
    if "enum" in schema:
        return " \\| ".join(f'`"{v}"`' for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " \\| ".join(type_of(s) for s in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " \\| ".join(kind)
    if kind == "array":
        return f"list of {type_of(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {type_of(schema['additionalProperties'])}"
    if kind == "string" and schema.get("format") == "binary":
        return "bytes"
    return str(kind) if kind else "any JSON"


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _bounds(schema: dict[str, Any]) -> str:
    found = []
    for key, word in (
        ("minimum", ">="),
        ("maximum", "<="),
        ("exclusiveMinimum", ">"),
        ("minLength", "length >="),
        ("maxLength", "length <="),
        ("minItems", "items >="),
        ("maxItems", "items <="),
    ):
        for part in (schema, *schema.get("anyOf", [])):
            if key in part:
                found.append(f"{word} {part[key]}")
    for part in (schema, *schema.get("anyOf", [])):
        if "pattern" in part:
            found.append(f"matches `{part['pattern']}`")
    return "; ".join(found)


def fields_table(schema: dict[str, Any]) -> list[str]:
    """A model's fields as a markdown table."""
    required = set(schema.get("required", []))
    rows = ["| field | type | required | description |", "| --- | --- | --- | --- |"]
    for name, field in schema.get("properties", {}).items():
        about = "; ".join(p for p in (_cell(field.get("description")), _bounds(field)) if p)
        if "default" in field and name not in required:
            about = f"{about} (default `{field['default']!r}`)".strip()
        need = "yes" if name in required else ""
        rows.append(f"| `{name}` | {type_of(field)} | {need} | {about} |")
    return rows


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [f"**{op['summary']}.**", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | description |"]
        lines += ["| --- | --- | --- | --- | --- |"]
        for p in params:
            schema = p.get("schema", {})
            about = "; ".join(
                part for part in (_cell(p.get("description")), _bounds(schema)) if part
            )
            if "default" in schema:
                about = f"{about} (default `{schema['default']!r}`)".strip()
            need = "yes" if p.get("required") else ""
            lines.append(f"| `{p['name']}` | {p['in']} | {type_of(schema)} | {need} | {about} |")
        lines.append("")
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            lines += [f"Body ({media}): {type_of(content.get('schema', {}))}", ""]
    lines += ["| status | body | when |", "| --- | --- | --- |"]
    for code, answer in op["responses"].items():
        content = answer.get("content", {})
        bodies = ", ".join(
            f"{type_of(c.get('schema', {}))} ({media})"
            if media != "application/json"
            else type_of(c.get("schema", {}))
            for media, c in content.items()
        )
        lines.append(f"| {code} | {bodies or 'none'} | {_cell(answer.get('description'))} |")
    return [*lines, ""]


def render(doc: dict[str, Any]) -> str:
    """The reference, in markdown, from ``doc``."""
    lines = [HEADER]
    role_of = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            about = op.get("description", "")
            notes = [r for r, note in openapi.ROLE_NOTE.items() if note in about]
            role_of[(method, path)] = notes[0].value if notes else "public"
    lines += ["## Routes", "", "| route | role | what |", "| --- | --- | --- |"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            anchor = f"{method}-{path}".lower()
            anchor = "".join(c for c in anchor if c.isalnum() or c in "-_ ").replace(" ", "-")
            route = f"[`{method.upper()} {path}`](#{anchor})"
            lines.append(f"| {route} | {role_of[(method, path)]} | {_cell(op.get('summary'))} |")
    lines.append("")
    tags: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            tags.setdefault((op.get("tags") or ["api"])[0], []).append((method, path, op))
    titles = {"api": "DAGs, runs, workers, pools, assets, audit", "secrets": "Secrets"}
    for tag, operations in tags.items():
        lines += [f"## {titles.get(tag, tag.capitalize())}", ""]
        for method, path, op in operations:
            lines += _operation(method, path, op)
    lines.append(_ERRORS)
    schemas = doc["components"]["schemas"]
    lines += ["## Models", ""]
    for name, schema in schemas.items():
        lines += [f"### {name}", ""]
        if schema.get("description"):
            lines += [_cell(schema["description"]), ""]
        lines += [*fields_table(schema), ""]
    return "\n".join(lines).rstrip() + "\n"


_ERRORS = """## Errors

Every refusal is JSON: [ErrorAnswer](#erroranswer), `{"detail": "reason"}`,
or for a 422 [ValidationErrorAnswer](#validationerroranswer), whose `detail` is
a list of [ValidationIssue](#validationissue) when a body, path or query does
not fit (and a reason when the hub refuses a value itself). A 413 cut off
mid-body is the text `Content Too Large`. 401s also send
`WWW-Authenticate: Bearer`; 429 and 503 send `Retry-After`.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the REST reference from OpenAPI.")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite {DOCS}")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the file to write")
    args = parser.parse_args(argv)
    text = render(document())
    if args.write_docs:
        args.docs.write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
