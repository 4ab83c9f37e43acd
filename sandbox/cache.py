"""On-disk cache of the real archives: ``<repo>/.cache/realarchives/v<N>/``.

    v<N>/manifest.json                 version, build time, seconds, per-tool object counts
    v<N>/truth.json                    {tool: ground truth}
    v<N>/<tool>/objects.json           [{"key", "size", "last_modified"}] as uploaded during the build
    v<N>/<tool>/objects/<key>          each object's bytes

Built once under an exclusive ``flock`` (parallel sessions wait, then reuse); built into a temp dir and
renamed, so a half-built cache is never visible. Later sessions only upload the objects into a fresh moto
bucket; their LastModified is then the upload time (the originals are in objects.json).
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recovery.timefmt import iso, iso_offset
from sandbox.s3 import MotoEndpoint, list_all

VERSION = 2  # bump when the recipe (scenario, tools, layout of the cache) changes
REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ROOT = REPO_ROOT / ".cache" / "realarchives"
TOOLS = ("pgbackrest", "barman", "wale", "walg")


@dataclass(frozen=True, slots=True)
class CachedObject:
    key: str
    size: int
    last_modified: str


def cache_dir(root: Path = CACHE_ROOT, version: int = VERSION) -> Path:
    return root / f"v{version}"


def is_complete(d: Path) -> bool:
    return (d / "manifest.json").is_file() and (d / "truth.json").is_file()


def load_truth(d: Path) -> dict[str, dict[str, Any]]:
    return dict(json.loads((d / "truth.json").read_text()))


def load_objects(d: Path, tool: str) -> list[CachedObject]:
    return [CachedObject(**o) for o in json.loads((d / tool / "objects.json").read_text())]


def object_path(d: Path, tool: str, key: str) -> Path:
    if key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"unsafe object key {key!r}")
    return d / tool / "objects" / key


def dump_bucket(ep: MotoEndpoint, bucket: str, d: Path, tool: str) -> list[CachedObject]:
    """Copy every object of ``bucket`` into ``d/<tool>/objects/`` and write objects.json."""
    client = ep.client()
    listed = list_all(client, bucket)

    def fetch(o: dict[str, Any]) -> CachedObject:
        body = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        p = object_path(d, tool, o["Key"])
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
        return CachedObject(o["Key"], len(body), iso_offset(o["LastModified"]))

    with ThreadPoolExecutor(8) as pool:
        objs = list(pool.map(fetch, listed))
    (d / tool).mkdir(parents=True, exist_ok=True)
    rows = [{"key": o.key, "size": o.size, "last_modified": o.last_modified} for o in objs]
    (d / tool / "objects.json").write_text(json.dumps(rows, indent=0))
    return objs


def upload_objects(ep: MotoEndpoint, bucket: str, d: Path, tool: str,
                   objects: Iterable[CachedObject] | None = None) -> int:
    """Create ``bucket`` if needed and upload the cached objects of ``tool`` (keys unchanged)."""
    ep.ensure_bucket(bucket)
    client = ep.client()
    objs = list(objects if objects is not None else load_objects(d, tool))

    def put(o: CachedObject) -> None:
        client.put_object(Bucket=bucket, Key=o.key, Body=object_path(d, tool, o.key).read_bytes())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, objs))
    return len(objs)


def ensure_tools() -> None:
    venv = REPO_ROOT / ".tools" / "venv" / "bin"
    if not (venv / "barman-cloud-backup").exists() or not (venv / "wal-e").exists():
        subprocess.run([str(REPO_ROOT / "scripts" / "setup-tools.sh")], check=True)


def ensure_cache(root: Path = CACHE_ROOT, version: int = VERSION) -> Path:
    """Return the complete cache dir, building it first (once, under a lock) if absent."""
    d = cache_dir(root, version)
    if is_complete(d):
        return d
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"v{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(d):
            return d
        ensure_tools()
        tmp = Path(tempfile.mkdtemp(prefix=f"v{version}.build-", dir=root))
        try:
            build_into(tmp)
            if d.exists():
                shutil.rmtree(d)
            os.rename(tmp, d)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def build_into(d: Path) -> None:
    """Run every tool's scenario against a private moto and dump the buckets into ``d``."""
    from sandbox.tool_barman import build_barman
    from sandbox.tool_pgbackrest import build_pgbackrest
    from sandbox.tool_wale import build_wale
    from sandbox.tool_walg import build_walg

    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="realarchives-build-"))
    shutil.chown(work, "postgres", "postgres")
    work.chmod(0o755)
    truth: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    try:
        with MotoEndpoint() as ep:
            def timed(tool: str, fn: Callable[[], dict[str, Any]]) -> None:
                t = time.monotonic()
                truth[tool] = fn()
                timings[tool] = round(time.monotonic() - t, 1)

            timed("pgbackrest", functools.partial(build_pgbackrest, ep, work))
            timed("barman", functools.partial(build_barman, ep, work))
            timed("wale", functools.partial(build_wale, ep, work))
            timed("walg", functools.partial(build_walg, ep, truth["barman"]))  # reuses barman's real WAL
            counts = {tool: len(dump_bucket(ep, truth[tool]["bucket"], d, tool)) for tool in TOOLS}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (d / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    manifest = {"version": VERSION, "built_at": iso(datetime.now(timezone.utc).replace(microsecond=0)),
                "seconds": round(time.monotonic() - t0, 1), "tool_seconds": timings, "object_counts": counts}
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1))
