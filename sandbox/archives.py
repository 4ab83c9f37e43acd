"""The real archives of the cache uploaded into an S3 endpoint: :class:`RealArchive` per tool.

``load_real_archives(endpoint)`` uploads every tool's cached archive into its own bucket;
``fresh_bucket``/``fresh_archive`` copy one archive into a new unique bucket (for destructive work).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.cache import TOOLS, ensure_cache, load_objects, load_truth, upload_objects
from sandbox.s3 import MotoEndpoint

_bucket_seq = itertools.count(1)


@dataclass(frozen=True, slots=True)
class RealArchive:
    """One tool's archive as uploaded into the session's moto."""

    tool: str
    bucket: str
    prefix: str
    stanza: str | None        # pgBackRest stanza / barman-cloud server name; None for WAL-E/WAL-G
    truth: dict[str, Any]     # parsed truth.json entry
    cache_dir: Path

    @property
    def synthetic(self) -> bool:
        return bool(self.truth.get("synthetic"))

    @property
    def commits(self) -> list[dict[str, Any]]:
        return list(self.truth["commits"])

    @property
    def keys(self) -> list[str]:
        return [o.key for o in load_objects(self.cache_dir, self.tool)]


@dataclass(frozen=True, slots=True)
class RealArchives:
    endpoint: MotoEndpoint
    cache_dir: Path
    archives: dict[str, RealArchive]

    def __getitem__(self, tool: str) -> RealArchive:
        return self.archives[tool]

    def __iter__(self) -> Iterator[RealArchive]:
        return iter(self.archives.values())


def _archive(d: Path, truth: dict[str, Any], tool: str, bucket: str) -> RealArchive:
    t = truth[tool]
    return RealArchive(tool, bucket, t["prefix"], t.get("stanza"), t, d)


def load_real_archives(endpoint: MotoEndpoint, cache_root: Path | None = None) -> RealArchives:
    d = ensure_cache() if cache_root is None else ensure_cache(cache_root)
    truth = load_truth(d)
    archives = {}
    for tool in TOOLS:
        upload_objects(endpoint, truth[tool]["bucket"], d, tool)
        archives[tool] = _archive(d, truth, tool, truth[tool]["bucket"])
    return RealArchives(endpoint, d, archives)


def fresh_bucket(s3_endpoint: MotoEndpoint, tool: str) -> tuple[str, str]:
    """Upload ``tool``'s cached archive into a new, unique bucket; returns (bucket, prefix)."""
    d = ensure_cache()
    truth = load_truth(d)
    bucket = f"fresh-{tool}-{next(_bucket_seq)}-{s3_endpoint.port}"
    upload_objects(s3_endpoint, bucket, d, tool)
    return bucket, str(truth[tool]["prefix"])


def fresh_archive(s3_endpoint: MotoEndpoint, tool: str) -> RealArchive:
    """Like :func:`fresh_bucket`, returning the full :class:`RealArchive` (truth's bucket is the original)."""
    bucket, _ = fresh_bucket(s3_endpoint, tool)
    d = ensure_cache()
    return _archive(d, load_truth(d), tool, bucket)
