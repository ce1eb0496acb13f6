"""docs/rest-api.md is the REST reference the code's OpenAPI document makes
(``python -m tether.hub.openapi_docs --write-docs``), and says what it must."""

from __future__ import annotations

from typing import Any

import pytest

from tether.hub import openapi_docs


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_docs.document()


def test_the_rest_reference_is_up_to_date(document: dict[str, Any]) -> None:
    assert openapi_docs.DOCS.read_text() == openapi_docs.render(document), (
        "docs/rest-api.md is out of date: python -m tether.hub.openapi_docs --write-docs"
    )


def test_the_reference_names_every_route_its_role_and_its_models(
    document: dict[str, Any],
) -> None:
    text = openapi_docs.render(document)
    for path, item in document["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in text
    assert "| [`GET /api/v1/health`](#get-apiv1health) | public |" in text
    assert "| [`POST /api/v1/dags/{dag_id}/runs`](#post-apiv1dagsdag_idruns) | operator |" in text
    assert "| [`POST /api/v1/tokens`](#post-apiv1tokens) | admin |" in text
    for model in document["components"]["schemas"]:
        assert f"\n### {model}\n" in text
    assert "/api/worker/v1/poll" not in text  # the worker API has its own document


def test_a_change_to_the_document_changes_the_reference(document: dict[str, Any]) -> None:
    """The comparison is not vacuous: a field, a route or a role that changes shows."""
    text = openapi_docs.render(document)
    changed = {**document, "paths": dict(document["paths"])}
    del changed["paths"]["/api/v1/queues"]
    assert openapi_docs.render(changed) != text
    schemas = dict(document["components"]["schemas"])
    health = schemas["Health"]
    schemas["Health"] = {**health, "properties": {**health["properties"], "uptime": {}}}
    assert openapi_docs.render({**document, "components": {"schemas": schemas}}) != text
