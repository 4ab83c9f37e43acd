"""Executing a clone: a plan document in, a promoted and verified PostgreSQL data directory out.

``execute_plan`` (in :mod:`executor.run`, the adapter) fetches with the layout's real tool, writes the plan's
settings, recovers as the ``postgres`` user on a private socket and verifies replay against the plan;
the pure parts (command lines, settings text, log verdicts) are in :mod:`executor.logic`.
"""
from executor.outcome import ProgressEvent, RestoreError, RestoreResult
from executor.run import execute_plan

__all__ = ["ProgressEvent", "RestoreError", "RestoreResult", "execute_plan"]
