"""Paging of the fleet's coverage report (its constants only: the CLI parser reads them cheaply)."""
from __future__ import annotations

DEFAULT_LIMIT = 100                 # rows per page when none is asked for
MAX_LIMIT = 1000                    # at most this many rows per page
LAYOUTS = ("pgbackrest", "barman", "walg", "wale")
