"""Run ids as a person types them: ``latest``, or the start of one.

Generated run ids are long (``manual__2026-11-22T03:07:34.228032+00:00``);
every command that takes a RUN_ID takes ``latest`` (the DAG's newest run) or
any start of an id that only one of the DAG's runs has. The hub does the
matching (``run_id_prefix`` on ``GET /dags/{dag_id}/runs``), so no command
downloads a DAG's run list to find one run.
"""

from __future__ import annotations

from tether.cli.rest import Api, CliError, HubAway, api_path

LATEST = "latest"
#: How many candidates an ambiguous prefix lists.
MAX_CANDIDATES = 10


def resolve_run_id(api: Api, dag_id: str, given: str) -> str:
    """The full id of the run of ``dag_id`` that ``given`` names.

    ``latest`` always means the newest run, even for a DAG that has a run of
    that name. A full id wins over the longer ids that start with it.
    """
    runs = api_path("dags", dag_id, "runs")
    if given == LATEST:
        page = api.get(runs, params={"limit": 1})
        if not page["dag_runs"]:
            raise CliError(f"DAG {dag_id} has no runs yet")
        newest: str = page["dag_runs"][0]["run_id"]
        return newest
    page = api.get(runs, params={"run_id_prefix": given, "limit": MAX_CANDIDATES})
    ids: list[str] = [r["run_id"] for r in page["dag_runs"]]
    total: int = page["total_entries"]
    if given in ids:
        return given
    if total == 1:
        return ids[0]
    if total == 0:
        raise CliError(f"no run of DAG {dag_id} starts with {given!r}")
    if total > len(ids) and _exists(api, dag_id, given):
        return given  # older than the newest runs that share its start
    listed = "".join(f"\n  {run_id}" for run_id in ids)
    more = f"\n  ... and {total - len(ids)} more" if total > len(ids) else ""
    raise CliError(
        f"{total} runs of DAG {dag_id} start with {given!r}; give more of the id:{listed}{more}"
    )


def _exists(api: Api, dag_id: str, run_id: str) -> bool:
    try:
        api.get(api_path("dags", dag_id, "runs", run_id))
    except HubAway:
        raise
    except CliError:
        return False
    return True
