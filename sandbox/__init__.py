"""The sandbox: real PostgreSQL archives for tests, `make demo`, `make bench` and restore drills.

- :mod:`sandbox.s3` — a local S3 endpoint (moto's server, with a stunnel TLS front for pgBackRest);
- :mod:`sandbox.pg` — throw-away PostgreSQL clusters run as the ``postgres`` OS user;
- :mod:`sandbox.tool_pgbackrest`, :mod:`sandbox.tool_barman`, :mod:`sandbox.tool_wale`,
  :mod:`sandbox.tool_walg` — tool configurations and the archive builders;
- :mod:`sandbox.cache` — the archives built once into ``<repo>/.cache/realarchives/v<N>/``;
- :mod:`sandbox.archives` — the cached archives uploaded into an endpoint (:class:`RealArchive`).

Nothing here is imported by the catalog service itself; the executor's and the demo's callers use it
to get archives written by the real tools.
"""
