"""The package layout is the architecture: each layer imports only the layers
below it (docs/architecture.md, "Layers"). An import against the layering
fails here, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import tether

SRC = Path(tether.__file__).parent

#: Each layer (a module or package under ``tether``) and what it may import of
#: ``tether`` besides itself. A module belongs to the longest prefix listed.
_BELOW_THE_APIS = {
    "protocol",
    "hub.store",
    "hub.core",
    "hub.config",
    "hub.auth",
    "hub.state",
    "hub.wire",
    "hub.errors",
    "hub.dist",
}

MAY_IMPORT: dict[str, set[str]] = {
    # Shared by hub and worker; stdlib (and the SDK's own few dependencies) only.
    "protocol": set(),
    "homes": set(),
    "sdk": {"protocol"},
    # The worker never imports the hub: its install is thin.
    "worker": {"protocol", "homes", "sdk"},
    "cli": {"protocol", "homes", "sdk", "worker", "hub"},
    # The hub, bottom up.
    "hub.store": {"protocol"},
    "hub.config": {"protocol", "hub.store"},
    "hub.wakeups": set(),
    # The worker's wheel the hub serves: found, built or repacked, then checked.
    "hub.dist": {"protocol", "hub.config"},
    "hub.wire": {"protocol"},
    "hub.core": {"protocol", "sdk", "hub.store"},
    "hub.services": {
        "protocol",
        "homes",
        "sdk",
        "hub.store",
        "hub.core",
        "hub.config",
        "hub.wakeups",
    },
    "hub.auth": {"protocol", "hub.store", "hub.core", "hub.config", "hub.wire"},
    # The FastAPI dependencies: what a route gets from the hub's state.
    "hub.auth.deps": {"protocol", "hub.store", "hub.core", "hub.auth", "hub.state"},
    # The one table of domain errors and their HTTP statuses, for both APIs.
    "hub.errors": {"protocol", "hub.store", "hub.core"},
    # Prometheus metrics: the store's gauges, read at scrape time; the gate's principal.
    "hub.metrics": {"hub.store", "hub.core", "hub.auth"},
    "hub.state": {
        "hub.store",
        "hub.core",
        "hub.config",
        "hub.auth",
        "hub.wakeups",
        "hub.dist",
        "hub.metrics",
    },
    # The two APIs stand on the same layers, and never on each other; the REST
    # API also reads the SDK's types (a DAG's errors, a connection's URI).
    "hub.api": {"sdk", *_BELOW_THE_APIS},
    "hub.worker_api": _BELOW_THE_APIS,
    # The web console reads as the REST API does, on the same layers.
    "hub.ui": _BELOW_THE_APIS,
    # The two OpenAPI documents and /docs: read off the app's routes, so below them.
    "hub.openapi": {"protocol", "hub.auth", "hub.core", "hub.errors"},
    # docs/rest-api.md, written from the REST document of a throwaway hub.
    "hub.openapi_docs": {"protocol", "homes", "sdk", "hub"},
    # The process that wires it all together.
    "hub.app": {"protocol", "homes", "sdk", "hub"},
    "hub": {"protocol", "homes", "sdk"},
}


def _layer(module: str) -> str | None:
    """The layer of ``module`` (a dotted name below ``tether``), if it has one."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in MAY_IMPORT:
            return prefix
    return None


def _imports(path: Path) -> set[str]:
    """What ``path`` imports of ``tether``, as dotted names below it (for
    ``from tether.a import b``: both ``a`` and ``a.b``, since ``b`` may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n.removeprefix("tether.") for n in names if n.startswith("tether."))
    return found


def test_every_import_follows_the_layering() -> None:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        if module in {"__init__", "__main__"}:
            continue  # tether/__init__.py re-exports the SDK; __main__ runs the CLI
        layer = _layer(module)
        assert layer is not None, f"tether.{module} is in no layer: add it to MAY_IMPORT"
        allowed = MAY_IMPORT[layer]
        for target in sorted(_imports(path)):
            # Compared layer to layer: "hub" itself does not allow "hub.core".
            other = _layer(target)
            if other is None or other == layer:
                continue
            if not any(other == a or other.startswith(a + ".") for a in allowed):
                wrong.append(f"tether.{module} ({layer}) imports tether.{target} ({other})")
    assert wrong == []


def test_the_layer_table_names_what_exists() -> None:
    """A layer renamed or removed must leave the table too, or it checks nothing."""
    for layer in MAY_IMPORT:
        path = SRC.joinpath(*layer.split("."))
        assert path.is_dir() or path.with_suffix(".py").is_file(), layer
