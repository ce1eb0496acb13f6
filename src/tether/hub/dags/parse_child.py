"""``python -m tether.hub.dags.parse_child BUNDLE_DIR RELPATH OUT_FILE``.

Imports one DAG file in its own process (its top-level code may crash or
hang) and writes ``{"dags": [...]}`` or ``{"error": "..."}`` to OUT_FILE.
Imports only the SDK.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from tether.sdk.loader import load_dag_file
from tether.sdk.serialize import serialize_dag
from tether.sdk.templating import check_templates

_OWN_DIR = str(Path(__file__).resolve().parents[2])  # the tether package


def main() -> int:
    bundle_dir, relpath, out_file = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    try:
        dags = load_dag_file(bundle_dir / relpath, bundle_dir)
        for dag in dags:
            check_templates(dag)
        result: dict[str, object] = {"dags": [serialize_dag(d) for d in dags]}
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
