"""Ad-hoc SQL over all of history, and the event viewer.

``engine`` is DuckDB (the only module that imports it); ``sql`` the view and selection SQL;
``timeprune`` adds ``date``/``hour`` bounds implied by ``timestamp`` filters; ``selection`` the
one path from a selection to files, SQL and per-record event-time checks, which ``show`` and
replay share; ``show`` renders records for people; ``cli`` holds the ``query`` and ``show``
commands.
"""
