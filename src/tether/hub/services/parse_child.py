"""``python -m tether.hub.services.parse_child BUNDLE_DIR RELPATH OUT_FILE``.

Imports one DAG file in its own process (its top-level code may crash or
hang) and writes ``{"dags": [...], "files": [...]}`` or ``{"error": "..."}``
to OUT_FILE. Imports only the SDK.

``files`` is what the DAG file needs of the folder: every file inside
BUNDLE_DIR that the import opened or imported, seen by an audit hook
(:pep:`578`): helper modules, packages' ``__init__``, a JSON config a
generator reads. The bundle a worker gets for the file's DAGs is those files
(and what ``DAG(include=[...])`` adds), never the rest of the folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from tether.hub.services.children import tie_to_hub

_OWN_DIR = str(Path(__file__).resolve().parents[2])  # the tether package


class FilesUsed:
    """Collects the files under ``root`` that this process opens (an audit hook).

    Audit hooks cannot be removed, so the collector only records while
    ``active``; it costs one string test per ``open`` event.
    """

    def __init__(self, root: Path) -> None:
        self.root = os.path.abspath(root) + os.sep
        self.found: set[str] = set()
        self.active = False

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or not self.active:
            return
        path = args[0]
        if isinstance(path, int):  # os.open of a descriptor-relative name: nothing to name
            return
        try:
            text = os.fsdecode(os.fspath(path))
        except TypeError:
            return
        self.add(os.path.abspath(text))

    def add(self, path: str) -> None:
        if not path.startswith(self.root):
            return
        if f"{os.sep}__pycache__{os.sep}" in path:  # a cached module stands for its source
            try:
                path = importlib.util.source_from_cache(path)
            except ValueError:
                return
        self.found.add(path[len(self.root) :].replace(os.sep, "/"))

    def add_modules(self) -> None:
        """Modules imported from the folder (a module read from a cache opened no source)."""
        for module in list(sys.modules.values()):
            filename = getattr(module, "__file__", None)
            if isinstance(filename, str):
                self.add(os.path.abspath(filename))


def main() -> int:
    tie_to_hub()  # before any DAG code: killed if the hub dies
    bundle_dir, relpath, out_file = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    sys.dont_write_bytecode = True  # the snapshot is packed again; write nothing into it
    used = FilesUsed(bundle_dir)
    sys.addaudithook(used.hook)
    from tether.sdk.loader import load_dag_file
    from tether.sdk.serialize import serialize_dag
    from tether.sdk.templating import check_templates

    try:
        used.active = True
        try:
            dags = load_dag_file(bundle_dir / relpath, bundle_dir)
        finally:
            used.active = False
        used.add_modules()
        for dag in dags:
            check_templates(dag)
        result: dict[str, object] = {
            "dags": [serialize_dag(d) for d in dags],
            "files": sorted(used.found | {relpath}),
        }
    except BaseException:
        exc_type, exc, tb = sys.exc_info()
        # Show the DAG file's frames, not ours or importlib's.
        frames = [
            f
            for f in traceback.extract_tb(tb)
            if not f.filename.startswith(_OWN_DIR) and "importlib" not in f.filename
        ]
        text = "".join(traceback.format_list(frames[-8:]))
        text += "".join(traceback.format_exception_only(exc_type, exc))
        result = {"error": text.replace(str(bundle_dir) + "/", "")}
    out_file.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
