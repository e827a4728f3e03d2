"""eventvault's core: what the archiver, replay and the DAGs share.

The archive contract (``format``, ``layout``, ``eventtime``, ``progress``), ``storage`` (local
directory or S3), the Kafka adapter (``kafka``), ``settings``, ``errors``, ``times``,
observability (``observe``), and ``query`` (the DuckDB engine, SQL rewriting and time pruning,
the shared record selection, and the ``show`` viewer). The archiver (``eventvault.archiver``,
from the ``archiver/`` folder) and replay (``eventvault.replay``, from ``replay/``) stand on
it; ``cli`` is the one command-line entry, which only dispatches to their commands.
"""
