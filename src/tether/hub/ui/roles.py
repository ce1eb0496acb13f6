"""Which role each console action needs: the role of the REST route it stands for
(``api/routes.py``, ``auth/deps.py``), so the console lets no one do what the
API would refuse them.

Pages show an action's button only to a user whose role has it (``can`` in
the templates), and the action's routes refuse everyone else with 403
(``ui/actions.py``), a forged POST included.
"""

from __future__ import annotations

from tether.hub.auth.principal import Principal
from tether.hub.core.api_tokens import Role

#: Each action and the role it needs; the REST route it stands for in the comment.
ACTIONS: dict[str, Role] = {
    "dag.pause": Role.OPERATOR,  # PATCH /dags/{dag_id}
    "dag.trigger": Role.OPERATOR,  # POST /dags/{dag_id}/runs
    "dag.backfill": Role.OPERATOR,  # POST /dags/{dag_id}/backfills
    "task.clear": Role.OPERATOR,  # POST /dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear
    "task.mark": Role.OPERATOR,  # PATCH /dags/{dag_id}/runs/{run_id}/tasks/{task_id}
    "run.clear": Role.OPERATOR,  # POST /dags/{dag_id}/runs/{run_id}/clear
    "run.mark": Role.OPERATOR,  # PATCH /dags/{dag_id}/runs/{run_id}
    "worker.maintenance": Role.OPERATOR,  # POST /workers/{name}/maintenance
    "worker.shutdown": Role.ADMIN,  # POST /workers/{name}/shutdown
    "worker.update": Role.ADMIN,  # POST /workers/{name}/update
    "worker.revoke": Role.ADMIN,  # POST /workers/{name}/revoke
    "worker.remove": Role.ADMIN,  # DELETE /workers/{name}
    "enrolment_token.create": Role.ADMIN,  # POST /workers/enrolment-tokens
}


def can(user: Principal | None, action: str) -> bool:
    """Whether ``user`` may do ``action`` (a key of :data:`ACTIONS`)."""
    return user is not None and user.may(ACTIONS[action])
