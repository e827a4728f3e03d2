"""eventvault_retention: delete whole event-time hours older than each topic's limit.

The DAG only wires tasks; each task calls a step of ``eventvault.maintenance.steps``, the same
steps ``eventvault retention`` runs (docs/ERASURE.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Param, dag, task

DOC = """
### Retention by event time for the eventvault archive

`retention.keep_days` names each topic's limit in days; topics without one are kept forever,
and so is the null partition (records without an event time). Every date/hour partition that
ended more than the limit ago is deleted with every version of its files and their subject
indexes, unless the archiver may still write into it (a recorded cut of that hour, a file
above the committed offset): such hours wait for a later run. Each deletion is verified and
written to the ledger (`eventvault query "select * from maintenance_ledger"`).

`dry_run` is on by default for runs started by hand: such a run lists what it would delete.
The daily scheduled run (04:00 UTC, apart from erasure's 01:00) applies the limits.
"""


@dag(dag_id="eventvault_retention", schedule="0 4 * * *",
     start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False, max_active_runs=1,
     doc_md=DOC, tags=["eventvault"],
     params={"dry_run": Param(True, type="boolean",
                              description="list what would be deleted, delete nothing")})
def eventvault_retention() -> None:
    """Start, plan (per topic), delete (per hour), finish."""

    @task
    def start(params: dict[str, Any] | None = None, dag_run: Any = None) -> dict[str, Any]:
        from eventvault.maintenance import steps  # noqa: PLC0415

        assert params is not None
        return steps.start_retention(steps.dry_run_of(params["dry_run"], dag_run.run_type))

    @task
    def topics(run: dict[str, Any]) -> list[str]:
        return list(run["topics"])

    @task
    def plan(topic: str, run: dict[str, Any]) -> dict[str, Any]:
        from eventvault.maintenance import steps  # noqa: PLC0415

        return steps.plan_topic(run, topic)

    @task
    def hours(run: dict[str, Any], plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from eventvault.maintenance import steps  # noqa: PLC0415

        return steps.ready_hours(run, list(plans))

    @task
    def delete(item: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
        from eventvault.maintenance import steps  # noqa: PLC0415

        return steps.delete_hour(run, item)

    @task(trigger_rule="all_done")
    def finish(run: dict[str, Any], plans: list[dict[str, Any]],
               outcomes: list[dict[str, Any]]) -> dict[str, Any]:
        from eventvault.maintenance import steps  # noqa: PLC0415

        return steps.finish_retention(run, list(plans), list(outcomes))

    run = start()
    plans = plan.partial(run=run).expand(topic=topics(run))
    deleted = delete.partial(run=run).expand(item=hours(run, plans))
    finish(run, plans, deleted)


eventvault_retention()
