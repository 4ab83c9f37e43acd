"""Paging of the fleet's coverage report (its constants only: the CLI parser reads them cheaply)."""
from __future__ import annotations

from recovery.model import Layout

DEFAULT_LIMIT = 100                 # rows per page when none is asked for
MAX_LIMIT = 1000                    # at most this many rows per page
LAYOUTS = tuple(m.value for m in Layout)   # the enum is the only list of layouts
