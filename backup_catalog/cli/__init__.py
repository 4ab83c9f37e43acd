"""The ``backup-catalog`` command line: the top layer, above the service wiring and the use cases.

``main`` parses and dispatches (:mod:`backup_catalog.cli.main`, grammar in :mod:`~backup_catalog.cli.parser`);
one module per command group (``instances``, ``backups`` for scan/backups/plan, ``restore``, ``drill``,
``purge``, ``report``, ``db``, ``serve``, ``demo``), each a thin face of its use cases; every table a person
reads is printed by :mod:`~backup_catalog.cli.render`. Nothing here is imported by the layers below.
"""
