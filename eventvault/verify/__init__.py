"""``eventvault verify``: compare an archive with its topics and its group's progress.

:mod:`eventvault.verify.compare` is the pure comparison (offset intervals, duplicates, gaps,
file names, hours, committed progress); :mod:`eventvault.verify.scan` reads file footers and
offset columns from storage; :mod:`eventvault.verify.cli` asks Kafka and prints the report.
"""
