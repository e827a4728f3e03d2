"""eventvault_erasure: erase data subjects from the archive, every object version included.

The DAG only wires tasks; each task calls a step of ``eventvault.maintenance.steps``, the same
steps ``eventvault erase`` runs (docs/ERASURE.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Param, dag, task

DOC = """
### Erase data subjects (GDPR Art. 17) from the eventvault archive

Give requests in the run's conf or params as
`{"requests": [{"request_id": "R-1", "subject": "cus_0012345"}], "dry_run": false}`.
Every run, including the daily scheduled one without requests, re-checks each open request
(late records, records still on the topic) until its deadline (`erasure.deadline_days`).

1. **register** stores new requests as keyed hashes (the subject ids stay in this run's conf);
2. **find** (one task per topic) asks each file's subject index, indexing files that have none,
   and keeps files the archiver may still write for a later run;
3. **erase** (one task per file) rewrites the file under the same name, deletes every other
   version of it and verifies that the subject is nowhere;
4. **finish** names the replays that delivered the records (Art. 19), writes the PII-free ledger
   (`eventvault query "select * from maintenance_ledger"`) and fails if anything did not verify.

`dry_run` is on by default for runs started by hand: such a run writes nothing and reports
what it would rewrite. The daily scheduled run (01:00 UTC) acts: it re-checks requests that a
real run registered. **finish** fails the run if a task failed or a file was left out.
Settings (Kafka, storage, `erasure.*`) come from `EVENTVAULT_*` variables or the TOML file named
by `EVENTVAULT_CONFIG`.
"""

REQUEST = {"type": "object", "required": ["request_id"],
           "properties": {"request_id": {"type": "string"}, "subject": {"type": "string"},
                          "subjects": {"type": "array", "items": {"type": "string"}}}}


@dag(dag_id="eventvault_erasure", schedule="0 1 * * *",
     start_date=datetime(2026, 1, 1, tzinfo=UTC),
     catchup=False, max_active_runs=1, doc_md=DOC, tags=["eventvault", "gdpr"],
     params={"requests": Param([], type="array", items=REQUEST,
                               description="erasure requests: request_id and subject(s)"),
             "dry_run": Param(True, type="boolean",
                              description="report what would be erased, write nothing")})
def eventvault_erasure() -> None:
    """Register, find (per topic), erase (per file), finish."""

    @task
    def register(params: dict[str, Any] | None = None,
                 dag_run: Any = None) -> dict[str, Any]:
        from eventvault.maintenance import steps  # noqa: PLC0415

        assert params is not None
        return steps.start_erasure(params["requests"],
                                   steps.dry_run_of(params["dry_run"], dag_run.run_type))

    @task
    def topics(run: dict[str, Any]) -> list[str]:
        return list(run["topics"])

    @task
    def find(topic: str, run: dict[str, Any]) -> dict[str, Any]:
        from eventvault.maintenance import steps  # noqa: PLC0415

        return steps.find(run, topic)

    @task
    def files(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from eventvault.maintenance import steps  # noqa: PLC0415

        return steps.ready_files(list(findings))

    @task
    def erase(batch: dict[str, Any], run: dict[str, Any],
              params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        from eventvault.maintenance import steps  # noqa: PLC0415

        assert params is not None
        raw_ids = [s for r in params["requests"] for s in r.get("subjects") or [r.get("subject")]
                   if s]
        return steps.erase_files(run, batch, raw_ids)

    @task(trigger_rule="all_done")
    def finish(run: dict[str, Any], findings: list[dict[str, Any]],
               outcomes: list[list[dict[str, Any]]]) -> dict[str, Any]:
        from eventvault.maintenance import steps  # noqa: PLC0415

        return steps.finish_erasure(run, list(findings), list(outcomes))

    run = register()
    found = find.partial(run=run).expand(topic=topics(run))
    erased = erase.partial(run=run).expand(batch=files(found))
    finish(run, found, erased)


eventvault_erasure()
