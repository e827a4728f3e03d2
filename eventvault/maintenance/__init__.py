"""The maintenance half of eventvault: PII erasure and retention (docs/ERASURE.md).

Pure parts: ``subjects`` (where an id is, its keyed hash, redaction), ``erasure`` (a file's
rows without a subject, and verification), ``guard`` (which files the archiver has finished),
``retention`` planning, and the ``index`` and ledger formats. ``erase`` and ``retention`` run
the jobs over storage and Kafka; ``cli`` holds the ``erase`` and ``retention`` commands, which
the Airflow DAGs in dags/ run step by step.
"""
