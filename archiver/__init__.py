"""eventvault's archiver (installed as ``eventvault.archiver``): the consumer alone.

A consumer-group member (``runner``) that buffers records (``batching``), takes partitions over
from their committed progress (``adoption``), and encodes and uploads decided files
(``encoder``); ``cli`` is the ``eventvault archive`` command. The archive format, storage,
Kafka adapter and settings come from the core package, ``eventvault``.
"""
