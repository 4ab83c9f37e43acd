"""The archive side: everything that reads (and, for the purge only, deletes) the archives in S3.

The design card calls it the scheduler; what it holds is the scanner and its S3 adapter:

- ``layouts/``: one reader per archive layout (pgBackRest, barman-cloud, WAL-G, WAL-E) and detection;
- ``scan``, ``walscan``, ``edges``: one instance's scan (metadata, WAL runs, exact window ends);
- ``runner``: scan one instance and store the result (the unit of work of the scan use case);
- ``storage``: the read-only S3 adapter; ``clients``: S3 clients from the settings; ``deleter``: the only
  code that deletes (DeleteObjects, for the purge).

What runs the scans on a timer is the service's (:mod:`backup_catalog.service.jobs`); the rules for who
scans when are the scan use case's (:mod:`backup_catalog.usecases.scan`). Nothing here imports those.
"""
