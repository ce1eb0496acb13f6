"""The authoring SDK: what DAG files import.

Names and meanings follow Airflow's, so a DAG ports by changing its imports.
It depends on nothing heavy: the dag processor and the worker's task process
both import it.
"""

from tether.sdk.assets import Asset
from tether.sdk.baseoperator import BaseOperator, chain
from tether.sdk.connection import Connection
from tether.sdk.context import (
    TetherFailException,
    TetherSkipException,
    get_current_context,
)
from tether.sdk.dag import DAG, DagDefinitionError, dag
from tether.sdk.decorators import task
from tether.sdk.masking import mask_secret
from tether.sdk.operators import (
    BashOperator,
    BranchPythonOperator,
    EmptyOperator,
    PythonOperator,
)
from tether.sdk.params import Param
from tether.sdk.secrets import Variable, get_connection
from tether.sdk.xcom import XComArg

__all__ = [
    "DAG",
    "Asset",
    "BaseOperator",
    "BashOperator",
    "DagDefinitionError",
    "BranchPythonOperator",
    "Connection",
    "EmptyOperator",
    "Param",
    "PythonOperator",
    "TetherFailException",
    "TetherSkipException",
    "XComArg",
    "chain",
    "dag",
    "Variable",
    "get_connection",
    "get_current_context",
    "mask_secret",
    "task",
]
