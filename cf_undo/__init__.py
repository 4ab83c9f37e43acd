"""cf-undo: the application developer's own undo, with their Cloud Foundry login (issue 19).

A client of the backup catalog's HTTP API and of the Cloud Controller; it talks HTTP only and imports
nothing of the server (an import-linter contract keeps it so), so it installs and starts light.
See docs/cf-undo.md.
"""
