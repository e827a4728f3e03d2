"""eventvault's replay (installed as ``eventvault.replay``): history back onto a topic.

``plan`` is what a replay is, ``partitioning`` where records go, ``checkpoint`` the progress
committed with each transaction, ``preflight`` what the target refuses; ``prepare``,
``source`` (the archive, through the core's selection and query engine), ``producer`` and
``report`` are the steps of ``runner``; ``cli`` is the ``eventvault replay`` command. It stands
on the core package, ``eventvault``, and never imports the archiver.
"""
