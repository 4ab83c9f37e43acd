"""One module per archive layout, named by its :class:`recovery.model.Layout` value
(``scheduler/layouts/<value>.py``), each ending with ``LAYOUT``, its :class:`~scheduler.layouts.spec.LayoutSpec`:
classification, scan, fetch command, restore_command, purge prefixes, duplicate rule. Adding a layout is
one module plus a line in the enum (docs/internals.md "Adding a layout"). Shared pieces: common.py
(suffixes, decompression, key verdicts), basebackups.py (WAL-G and WAL-E), detect.py, spec.py.
"""
from __future__ import annotations

import importlib
from functools import cache

from recovery.model import Layout
from scheduler.layouts.spec import LayoutSpec


@cache
def spec_of(layout: Layout | str) -> LayoutSpec:
    """The layout's spec (its module's ``LAYOUT``). :raises ValueError: not a layout."""
    kind = Layout(layout)
    spec: LayoutSpec = importlib.import_module(f"scheduler.layouts.{kind.value}").LAYOUT
    return spec
