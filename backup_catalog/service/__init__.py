"""The running service's wiring, together: the aiohttp application and ``serve`` (:mod:`.app`, the
composition root of the HTTP API in :mod:`backup_catalog.api`), the periodic jobs in one scheduler (:mod:`.jobs`), and
where it may listen (:mod:`.listen`). Above the use cases and the API; only the CLI imports it."""
