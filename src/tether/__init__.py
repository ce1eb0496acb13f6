"""Tether: a workflow orchestrator whose edge workers dial out to a central hub."""

from tether.sdk import (
    DAG,
    Asset,
    BaseOperator,
    BashOperator,
    BranchPythonOperator,
    DagDefinitionError,
    EmptyOperator,
    Param,
    PythonOperator,
    TetherFailException,
    TetherSkipException,
    XComArg,
    chain,
    dag,
    get_current_context,
    mask_secret,
    task,
)

__version__ = "0.1.0"

__all__ = [
    "DAG",
    "Asset",
    "BaseOperator",
    "BashOperator",
    "DagDefinitionError",
    "BranchPythonOperator",
    "EmptyOperator",
    "Param",
    "PythonOperator",
    "TetherFailException",
    "TetherSkipException",
    "XComArg",
    "__version__",
    "chain",
    "dag",
    "get_current_context",
    "mask_secret",
    "task",
]
