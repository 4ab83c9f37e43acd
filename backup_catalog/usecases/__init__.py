"""The use cases, one module each, called by both composition roots (the CLI and ``serve``'s HTTP handlers).

Layering (checked by import-linter, see pyproject): use cases sit above the catalog, the scanner
(``scheduler``) and the pure core (``recovery``), and below ``api``/the CLI: they never import ``api``.
"""
