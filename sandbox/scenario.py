"""The fork scenario every real tool runs: two backups on timeline 1, a PITR fork, a new timeline 2.

    commits 1-3 | B1 full | commits 4-6 | B2 | commits 7-9 | T_f | commits 10-11 | switch | 12
                                                    (10-12: TL1 after the fork, old primary keeps running)
    stop old primary; restore B2 to T_f with the tool; promote -> TL2; ALTER SYSTEM RESET ALL
    commits 13-15 (TL2) | B3 on TL2 | commits 16-17 (TL2) | stop

A restore of B2 to T_f must therefore show ids 1-9 (checked while building).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from recovery.timefmt import conf_time, iso_offset
from recovery.timeline import parse_history
from sandbox.pg import Cluster, ClusterError, Commit, make_postgres_dir, parse_ts


class ArchiveTool(Protocol):
    name: str

    def archive_command(self, cluster: Cluster) -> str: ...
    def setup(self, cluster: Cluster) -> None: ...
    def backup(self, cluster: Cluster, kind: str) -> str: ...
    def restore(self, cluster: Cluster, label: str, target_time: str) -> None: ...
    def info(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class ForkResult:
    commits: tuple[Commit, ...]
    backups: dict[str, str]          # role ("B1", "B2", "B3") -> label / backup id
    backup_kinds: dict[str, str]
    fork_time: str                   # T_f, UTC ISO with microseconds
    fork_target: str                 # T_f as given to the tool (YYYY-MM-DD HH:MM:SS.ffffff+00)
    history_text: str                # 00000002.history as written by PostgreSQL
    switch_lsn: str
    system_id: str
    server_version_num: int
    seg_size: int
    restored_ids: tuple[int, ...]
    last_segments: dict[str, str]    # "tl1", "tl2" -> last segment archived by that timeline
    tool_info: Any


def pg_target(ts: datetime) -> str:
    """pgBackRest needs ``YYYY-MM-DD HH:MM:SS.ffffff+00``; PostgreSQL accepts the same text."""
    return conf_time(ts)


def run_fork_scenario(tool: ArchiveTool, workdir: Path, kinds: tuple[str, str, str]) -> ForkResult:
    base = make_postgres_dir(f"{tool.name}-", str(workdir))
    cluster = Cluster(base)
    cluster.archive_command = tool.archive_command(cluster)
    commits: list[Commit] = []
    backups: dict[str, str] = {}
    try:
        cluster.initdb()
        cluster.start()
        cluster.create_ticks()
        tool.setup(cluster)
        system_id, version, seg_size = cluster.system_id(), cluster.server_version_num(), cluster.seg_size()

        commits += cluster.commits(range(1, 4), 1, "before B1")
        cluster.switch_wal_and_wait()
        backups["B1"] = tool.backup(cluster, kinds[0])
        commits += cluster.commits(range(4, 7), 1, "between B1 and B2")
        cluster.switch_wal_and_wait()
        backups["B2"] = tool.backup(cluster, kinds[1])
        commits += cluster.commits(range(7, 10), 1, "after B2, before fork")
        commits += cluster.commits(range(10, 12), 1, "TL1 after fork (old primary)")
        cluster.switch_wal_and_wait()  # so TL1 also has a whole segment past the fork
        commits += cluster.commits(range(12, 13), 1, "TL1 after fork (old primary)")
        t9, t10 = parse_ts(commits[8].commit_time), parse_ts(commits[9].commit_time)
        fork = t9 + (t10 - t9) / 2
        assert t9 < fork < t10, (t9, fork, t10)
        tl1_last = cluster.switch_wal_and_wait()
        cluster.stop()

        # restore B2 to T_f with the real tool into the same path (tool configs point there)
        old = base / "data.old"
        cluster.data.rename(old)
        cluster.data.mkdir(mode=0o700)
        shutil.chown(cluster.data, "postgres", "postgres")
        tool.restore(cluster, backups["B2"], pg_target(fork))
        cluster.start(wait_recovery_end=True, timeout=180)
        shutil.rmtree(old, ignore_errors=True)
        restored = tuple(i for i, _ in cluster.ticks())
        if restored != tuple(range(1, 10)):
            raise ClusterError(f"{tool.name}: restore of B2 to {fork} gave ids {restored}, expected 1..9")
        # drop the recovery settings the restore wrote, so backups taken on TL2 do not carry them
        cluster.sql("ALTER SYSTEM RESET ALL", "SELECT pg_reload_conf()")
        # promotion: wait for the end-of-recovery checkpoint so timeline_id shows 2
        deadline = time.monotonic() + 30
        while cluster.timeline() != 2 and time.monotonic() < deadline:
            cluster.sql("CHECKPOINT")
            time.sleep(0.2)
        if cluster.timeline() != 2:
            raise ClusterError(f"{tool.name}: restored cluster is on timeline {cluster.timeline()}, not 2")

        commits += cluster.commits(range(13, 16), 2, "TL2 before B3")
        cluster.switch_wal_and_wait()
        backups["B3"] = tool.backup(cluster, kinds[2])
        commits += cluster.commits(range(16, 18), 2, "TL2 after B3")
        tl2_last = cluster.switch_wal_and_wait()
        history = (cluster.data / "pg_wal" / "00000002.history").read_text()
        cluster.stop()
        info = tool.info()
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)

    switch = parse_history(history)
    return ForkResult(
        commits=tuple(commits), backups=backups, backup_kinds=dict(zip(("B1", "B2", "B3"), kinds)),
        fork_time=iso_offset(fork, micro=True), fork_target=pg_target(fork),
        history_text=history, switch_lsn=str(switch[-1].switchpoint),
        system_id=system_id, server_version_num=version, seg_size=seg_size, restored_ids=restored,
        last_segments={"tl1": tl1_last, "tl2": tl2_last}, tool_info=info,
    )


def fork_truth(r: ForkResult) -> dict[str, Any]:
    """The scenario part of truth.json (tool-specific fields are added by the tool module)."""
    return {
        "system_id": r.system_id,
        "pg_version": r.server_version_num // 10000,
        "server_version_num": r.server_version_num,
        "seg_size": r.seg_size,
        "commits": [c.as_json() for c in r.commits],
        "scenario_backups": r.backups,
        "scenario_backup_kinds": r.backup_kinds,
        "fork_time": r.fork_time,
        "fork_target": r.fork_target,
        "restored_ids_at_fork": list(r.restored_ids),
        "history_00000002": r.history_text,
        "switch_lsn": r.switch_lsn,
        "last_archived": r.last_segments,
        "commit_lsn_note": "commit_lsn = pg_current_wal_insert_lsn() right after the commit (>= commit record end)",
    }
