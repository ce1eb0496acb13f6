"""Import a DAG file and collect the DAGs it defines.

Used in a child process by the hub's dag processor and by the worker's task
runner, always on a file inside an unpacked bundle.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from tether.sdk.dag import DAG, DagDefinitionError, collecting


def module_name_for(path: Path) -> str:
    """A module name that cannot clash with an installed package."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return f"tether_dagfile_{digest}_{path.stem}"


def load_dag_file(path: Path, bundle_root: Path) -> list[DAG]:
    """Import ``path`` and return its DAGs, each validated.

    The bundle root goes first on ``sys.path`` so that DAG files can import
    helper modules that sit beside them, as in Airflow's DAGs folder.
    """
    root = str(bundle_root)
    if root not in sys.path:
        sys.path.insert(0, root)
    name = module_name_for(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with collecting() as dags:
        spec.loader.exec_module(module)
    fileloc = path.relative_to(bundle_root).as_posix()
    seen: dict[str, DAG] = {}
    for dag in dags:
        if dag.dag_id in seen and seen[dag.dag_id] is not dag:
            raise DagDefinitionError(f"DAG id {dag.dag_id!r} is defined twice in {fileloc}")
        dag.fileloc = fileloc
        dag.validate()
        seen[dag.dag_id] = dag
    return list(seen.values())
