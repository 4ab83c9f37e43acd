"""Missing tools and binaries: a skip on a developer's machine, a failure under CI.

CI (the ``CI`` environment variable set, as `.ci/run` runs) must have every tool `make setup` installs,
so a test that cannot run there is a failure, never a silent skip.
"""
from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    """Stop the test because a tool or binary is absent (``reason`` names it and how to get it)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; under CI every tool must be installed (`make setup`)", pytrace=False)
    pytest.skip(reason)
