"""The built-in operators: BashOperator, PythonOperator, EmptyOperator."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tether.sdk._process import die_with_parent
from tether.sdk.baseoperator import BaseOperator
from tether.sdk.context import Context, TaskCommandFailed, TetherSkipException
from tether.sdk.dag import DagDefinitionError


class EmptyOperator(BaseOperator):
    """Does nothing; useful to group dependencies."""

    def execute(self, context: Context) -> None:
        return None


class BashOperator(BaseOperator):
    """Runs a command with ``bash -c``; its last line of output is its return value.

    A non-zero exit fails the task, logging the (rendered) command and its
    status; the exit code ``skip_on_exit_code`` (99 by default, as in Airflow)
    skips it.
    """

    template_fields: Sequence[str] = ("bash_command", "env", "cwd")

    def __init__(
        self,
        *,
        bash_command: str,
        env: dict[str, str] | None = None,
        append_env: bool = False,
        cwd: str | None = None,
        skip_on_exit_code: int | None = 99,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(bash_command, str) or not bash_command.strip():
            raise DagDefinitionError(f"task {self.task_id!r}: bash_command must be a command")
        self.bash_command = bash_command
        self.env = env
        self.append_env = append_env
        self.cwd = cwd
        self.skip_on_exit_code = skip_on_exit_code

    def execute(self, context: Context) -> str | None:
        if self.env is None:
            env = dict(os.environ)
        elif self.append_env:
            env = {**os.environ, **self.env}
        else:
            env = dict(self.env)
        env.update(context.get("env_vars", {}))
        sys.stdout.flush()
        proc = subprocess.Popen(
            ["bash", "-c", self.bash_command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
            preexec_fn=die_with_parent,  # the command dies with the task process
        )
        assert proc.stdout is not None
        last = b""
        with proc.stdout:
            for line in proc.stdout:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
                if line.strip():
                    last = line
        code = proc.wait()
        if self.skip_on_exit_code is not None and code == self.skip_on_exit_code:
            raise TetherSkipException(f"bash command exited with code {code}")
        if code != 0:
            raise TaskCommandFailed(f"Command exited with status {code}: {self.bash_command}")
        return last.decode(errors="replace").rstrip("\n") if self.do_xcom_push else None


def call_with_context(
    func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], context: Context
) -> Any:
    """Call ``func``, adding the context keys it declares (by name or ``**kwargs``)."""
    params = inspect.signature(func).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {
        k: v
        for k, v in context.items()
        if k not in kwargs and (takes_all or (k in params and k not in list(params)[: len(args)]))
    }
    return func(*args, **kwargs, **extra)


class PythonOperator(BaseOperator):
    """Calls ``python_callable(*op_args, **op_kwargs)``; its return value goes downstream."""

    template_fields: Sequence[str] = ("op_args", "op_kwargs")

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Sequence[Any] | None = None,
        op_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(python_callable):
            raise DagDefinitionError(f"task {self.task_id!r}: python_callable must be callable")
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        from tether.sdk.xcom import find_xcom_args

        # A value of an upstream task passed as an argument makes it upstream.
        for arg in find_xcom_args([self.op_args, self.op_kwargs]):
            arg.operator.set_downstream(self)

    def set_expand_input(self, mapped: dict[str, Any]) -> None:
        """Map this task over ``mapped`` (see :mod:`tether.sdk.mapping`)."""
        from tether.sdk.mapping import check_expand
        from tether.sdk.xcom import XComArg

        self.expand_input = check_expand(self.task_id, mapped)
        for _, source in self.expand_input:
            if isinstance(source, XComArg):
                source.operator.set_downstream(self)

    def execute(self, context: Context) -> Any:
        from tether.sdk.xcom import resolve

        args = resolve(self.op_args, context)
        kwargs = resolve(self.op_kwargs, context)
        if self.expand_input:
            from tether.sdk.mapping import mapped_values

            kwargs.update(
                mapped_values(self.expand_input, context["ti"].map_index, context["inputs"])
            )
        result = call_with_context(self.python_callable, args, kwargs, context)
        return result if self.do_xcom_push else None


class BranchPythonOperator(PythonOperator):
    """Calls ``python_callable``, which returns the task id (or ids) to follow.

    The direct downstream tasks it does not name are skipped, and the skip
    spreads as trigger rules say (a join after a branch usually wants
    ``trigger_rule="none_failed_min_one_success"``). Returning None skips
    every direct downstream task.
    """

    is_branch = True

    def execute(self, context: Context) -> list[str]:
        chosen = super().execute(context) if self.do_xcom_push else None
        return branch_choice(self, chosen)


def branch_choice(task: BaseOperator, chosen: Any) -> list[str]:
    """The task ids a branch returned, checked against its direct downstream tasks."""
    if chosen is None:
        ids: list[str] = []
    elif isinstance(chosen, str):
        ids = [chosen]
    elif isinstance(chosen, list | tuple | set) and all(isinstance(c, str) for c in chosen):
        ids = sorted(set(chosen))
    else:
        raise TypeError(
            f"branch task {task.task_id!r} must return a task id, a list of task ids or None, "
            f"not {chosen!r}"
        )
    unknown = [c for c in ids if c not in task.downstream_task_ids]
    if unknown:
        raise ValueError(
            f"branch task {task.task_id!r} returned {', '.join(map(repr, unknown))}, which "
            f"is not directly downstream of it (downstream: "
            f"{', '.join(sorted(task.downstream_task_ids)) or 'none'})"
        )
    return ids
