"""Jinja templates in operator fields, rendered in the task process right before ``execute``.

Every operator names its templated attributes in ``template_fields``
(``BashOperator``: ``bash_command``, ``env``, ``cwd``; ``PythonOperator`` and
``@task``: ``op_args``, ``op_kwargs``). Each string in them, also inside
lists, tuples, sets and dict values, is a Jinja template rendered with the
task's context (``ds``, ``params``, ``run_id``, ``ti``, ...), as in Airflow.
The string defaults of the DAG's ``params`` are rendered first, so fields
see the rendered params.

Three choices:

- ``StrictUndefined`` (as Airflow): a name the context does not have is an
  error naming it, not an empty string that would run
  ``rm -rf /data/{{ oops }}``.
- Only the DAG file's own text is a template. Values that come from outside
  it (a run's ``conf``, params given when it is triggered, upstream return
  values, asset-event extras) are data: they reach the task verbatim, and
  a template that prints one prints it as it is (Jinja never renders its
  own output). So whoever may trigger runs on the hub cannot run code on an
  edge worker by putting ``{{ ... }}`` in a conf value.
- An immutable sandbox (:class:`TaskSandbox`): templates cannot reach
  attributes starting with ``_`` (``__class__``, ``__globals__``), cannot
  call a method that changes a list, dict or set (``.update``, ``.append``,
  ``.pop``), and cannot call methods of the task, the DAG or the run (only
  ``ti.xcom_pull``). A template reads its context; it never changes the
  task it renders for (its ``env``, its command, the context of the fields
  rendered after it).

Datetimes render as ISO 8601 (``2026-01-01T00:00:00+00:00``), like
Airflow's. Jinja's own syntax applies to every templated string: a literal
``{{``, ``{%`` or ``{#`` (bash's ``${#array[@]}``) needs ``{% raw %}``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tether.sdk.dag import DAG, DagDefinitionError
from tether.sdk.xcom import XComArg

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

    from tether.sdk.baseoperator import BaseOperator
    from tether.sdk.context import Context


class TemplateRenderError(Exception):
    """A templated field could not be rendered; the task fails with this message."""


def _finalize(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


_env: SandboxedEnvironment | None = None

#: Methods of Tether's own objects that a template may call (all read-only).
_CALLABLE_SDK_METHODS = frozenset({"TaskInstanceInfo.xcom_pull"})


def _make_sandbox() -> SandboxedEnvironment:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class TaskSandbox(ImmutableSandboxedEnvironment):
        """Jinja's immutable sandbox, and no calls into the task, DAG or run objects.

        ``ImmutableSandboxedEnvironment`` refuses the methods that change
        Python's built-in containers. The objects of the context that are
        Tether's own (``task``, ``dag``, ``ti``, ``dag_run``) have methods that
        change them too (``task.set_downstream``, ...), which no list in Jinja
        knows; they are refused here, but for the read-only ones in
        ``_CALLABLE_SDK_METHODS``.
        """

        def is_safe_callable(self, obj: Any) -> bool:
            owner = getattr(obj, "__self__", None)
            if owner is not None and type(owner).__module__.startswith("tether."):
                name = f"{type(owner).__name__}.{getattr(obj, '__name__', '')}"
                if name not in _CALLABLE_SDK_METHODS:
                    return False
            return bool(super().is_safe_callable(obj))

    from jinja2 import StrictUndefined

    return TaskSandbox(
        undefined=StrictUndefined,
        finalize=_finalize,
        # Rendering must not change a string beyond its template parts.
        keep_trailing_newline=True,
        autoescape=False,
    )


def environment() -> SandboxedEnvironment:
    """The one Jinja environment of this process.

    Jinja is imported on first use: importing it takes longer than starting a
    spawned task process, and tasks without templates never need it. (The
    worker's fork server imports it ahead, see ``worker/launcher.py``.)
    """
    global _env
    if _env is None:
        _env = _make_sandbox()
    return _env


def _is_template(text: str) -> bool:
    # Every Jinja delimiter starts with "{"; other strings render to themselves.
    return "{" in text


def _short(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _reason(exc: Exception) -> str:
    from jinja2 import TemplateError, TemplateSyntaxError
    from jinja2.exceptions import SecurityError

    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error on line {exc.lineno}: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"{exc.message} (a template may read the task's context, never change it)"
    if isinstance(exc, TemplateError):
        return exc.message or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """``value`` with every string in it rendered; XComArgs and other objects kept."""
    if isinstance(value, str):
        if not _is_template(value):
            return value
        try:
            return environment().from_string(value).render(context)
        except Exception as exc:
            raise TemplateRenderError(f"{_reason(exc)} in template {_short(value)}") from exc
    if isinstance(value, XComArg):
        return value
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    if isinstance(value, tuple):
        return tuple(render_value(v, context) for v in value)
    if isinstance(value, set | frozenset):
        return type(value)(render_value(v, context) for v in value)
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    return value


def _field(task: BaseOperator, name: str) -> Any:
    try:
        return getattr(task, name)
    except AttributeError:
        raise TemplateRenderError(
            f"task {task.task_id!r}: template field {name!r} is not an attribute of "
            f"{type(task).__name__}"
        ) from None


def render_template_fields(task: BaseOperator, context: Context) -> None:
    """Render each of ``task.template_fields`` in place, as Airflow does before ``execute``."""
    for name in task.template_fields:
        value = _field(task, name)
        try:
            rendered = render_value(value, context)
        except TemplateRenderError as exc:
            raise TemplateRenderError(
                f"task {task.task_id!r}: cannot render {name}: {exc}"
            ) from exc.__cause__
        setattr(task, name, rendered)
    # The literal values of expand() arguments are templates too, as in Airflow
    # (render_value leaves values that come from upstream tasks alone).
    if task.expand_input:
        mapped = []
        for arg, source in task.expand_input:
            try:
                mapped.append((arg, render_value(source, context)))
            except TemplateRenderError as exc:
                raise TemplateRenderError(
                    f"task {task.task_id!r}: cannot render expand({arg}=...): {exc}"
                ) from exc.__cause__
        task.expand_input = mapped


def render_params(
    params: Mapping[str, Any], context: Context, templates: Collection[str]
) -> dict[str, Any]:
    """``params`` with the string values of the names in ``templates`` rendered.

    ``templates`` names the params whose value is the DAG file's own default;
    a value given in the run's ``conf`` is data and stays as it is. The
    templates see the unrendered params.
    """
    rendered = {}
    for name, value in params.items():
        if name not in templates:
            rendered[name] = value
            continue
        try:
            rendered[name] = render_value(value, context)
        except TemplateRenderError as exc:
            raise TemplateRenderError(f"cannot render param {name!r}: {exc}") from exc.__cause__
    return rendered


def _syntax_errors(value: Any) -> list[str]:
    if isinstance(value, str):
        if not _is_template(value):
            return []
        from jinja2 import TemplateSyntaxError

        try:
            environment().parse(value)
        except TemplateSyntaxError as exc:
            return [f"{_reason(exc)} in template {_short(value)}"]
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return [e for v in value for e in _syntax_errors(v)]
    if isinstance(value, dict):
        return [e for v in value.values() for e in _syntax_errors(v)]
    return []


def check_templates(dag: DAG) -> None:
    """Raise DagDefinitionError for a template that is not valid Jinja.

    Looks at every task's template fields (which must exist), the literal
    values of its ``expand()`` arguments and the string defaults of the DAG's
    params. The dag processor calls this, so a broken
    template is an import error instead of a failed task. Undefined names can
    only be found at run time.
    """
    for name in dag.params:
        param = dag.params.get_param(name)
        errors = _syntax_errors(param.value) if param.has_value else []
        if errors:
            raise DagDefinitionError(f"DAG {dag.dag_id!r}: param {name!r}: {errors[0]}")
    for task in dag.tasks:
        for field in task.template_fields:
            try:
                value = _field(task, field)
            except TemplateRenderError as exc:
                raise DagDefinitionError(str(exc)) from None
            errors = _syntax_errors(value)
            if errors:
                raise DagDefinitionError(f"task {task.task_id!r}: {field}: {errors[0]}")
        for arg, source in task.expand_input:
            errors = _syntax_errors(source)
            if errors:
                raise DagDefinitionError(f"task {task.task_id!r}: expand({arg}=...): {errors[0]}")
