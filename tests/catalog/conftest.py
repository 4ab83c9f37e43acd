"""Load the catalog test plugin unless the root conftest already lists it in ``pytest_plugins``."""
from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("tests.pg"):
        config.pluginmanager.import_plugin("tests.pg")
