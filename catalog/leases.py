"""Leases with fencing tokens and the scheduled-run log (multi-replica exclusivity).

No session advisory locks: a lease is a row; its ``token`` grows by one at every change of holder
(the row is never deleted, release only expires it), so a stale holder's writes can be fenced.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from catalog.db import Db


async def try_acquire_lease(db: Db, key: str, holder: str, ttl_s: float) -> int | None:
    """Take or renew lease ``key`` for ``ttl_s`` seconds. Returns the fencing token, or None when
    another holder's lease is unexpired. Renewal by the current holder keeps its token."""
    return (await try_acquire_leases(db, (key,), holder, ttl_s)).get(key)


async def try_acquire_leases(db: Db, keys: Sequence[str], holder: str, ttl_s: float) -> dict[str, int]:
    """:func:`try_acquire_lease` for many keys in one statement (taken in key order, as every caller of this
    does, so that two replicas never wait on each other crosswise): the keys taken or renewed, with their
    fencing tokens. A key another holder's unexpired lease holds is left out."""
    if not keys:
        return {}
    rows = await db.fetch(
        """INSERT INTO scan_leases AS l (key, holder, token, acquired_at, expires_at)
           SELECT k, $2, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => $3)
           FROM unnest($1::text[]) WITH ORDINALITY AS u(k, n) ORDER BY n
           ON CONFLICT (key) DO UPDATE SET
               token = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp()
                            THEN l.token ELSE l.token + 1 END,
               acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp()
                                  THEN l.acquired_at ELSE EXCLUDED.acquired_at END,
               holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
           WHERE l.expires_at <= clock_timestamp() OR l.holder = EXCLUDED.holder
           RETURNING key, token""", sorted(set(keys)), holder, float(ttl_s))
    return {r["key"]: int(r["token"]) for r in rows}


async def release_leases(db: Db, holder: str, tokens: Mapping[str, int]) -> int:
    """:func:`release_lease` for many (key, token); how many were still ours."""
    if not tokens:
        return 0
    keys = sorted(tokens)
    status = await db.execute(
        """UPDATE scan_leases l SET expires_at = clock_timestamp()
           FROM unnest($1::text[], $2::bigint[]) AS u(key, token)
           WHERE l.key = u.key AND l.holder = $3 AND l.token = u.token AND l.expires_at > clock_timestamp()""",
        keys, [tokens[k] for k in keys], holder)
    return int(status.split()[-1])


async def renew_leases(db: Db, holder: str, tokens: Mapping[str, int], ttl_s: float) -> set[str]:
    """Extend by ``ttl_s`` the leases still held with these tokens (an expired one is not taken again: a
    write under it is fenced); the keys extended."""
    if not tokens:
        return set()
    keys = sorted(tokens)
    rows = await db.fetch(
        """UPDATE scan_leases l SET expires_at = clock_timestamp() + make_interval(secs => $4)
           FROM unnest($1::text[], $2::bigint[]) AS u(key, token)
           WHERE l.key = u.key AND l.holder = $3 AND l.token = u.token AND l.expires_at > clock_timestamp()
           RETURNING l.key""", keys, [tokens[k] for k in keys], holder, float(ttl_s))
    return {r["key"] for r in rows}


async def check_leases(db: Db, tokens: Mapping[str, int]) -> set[str]:
    """:func:`check_lease` for many (key, token): the keys still held with their token, share-locked until
    the transaction ends."""
    if not tokens:
        return set()
    keys = sorted(tokens)
    rows = await db.fetch(
        """SELECT l.key FROM scan_leases l JOIN unnest($1::text[], $2::bigint[]) AS u(key, token)
             ON l.key = u.key AND l.token = u.token
           WHERE l.expires_at > clock_timestamp() ORDER BY l.key FOR SHARE OF l""",
        keys, [tokens[k] for k in keys])
    return {r["key"] for r in rows}


async def lease_holder(db: Db, key: str) -> tuple[str, datetime] | None:
    """Who holds (or last held) lease ``key``, and until when; None when it was never taken."""
    row = await db.fetchrow("SELECT holder, expires_at FROM scan_leases WHERE key = $1", key)
    return (str(row["holder"]), row["expires_at"]) if row is not None else None


async def release_lease(db: Db, key: str, holder: str, token: int) -> bool:
    """Expire our lease now (keeps the row so tokens stay monotonic). False if no longer ours."""
    return await release_leases(db, holder, {key: token}) == 1


async def release_holder(db: Db, key: str, holder: str) -> bool:
    """Expire lease ``key`` if ``holder`` holds it, whatever its token: for holders whose name is unique
    to one run (a drill's holder carries a nonce), where a renewal cancelled mid-way may have changed the
    token without the holder learning it."""
    status = await db.execute(
        """UPDATE scan_leases SET expires_at = clock_timestamp()
           WHERE key = $1 AND holder = $2 AND expires_at > clock_timestamp()""", key, holder)
    return status.endswith(" 1")


async def check_lease(db: Db, key: str, token: int | None) -> bool:
    """True while lease ``key`` is unexpired with ``token``; inside a transaction the row is
    share-locked, so a takeover waits until that transaction ends (fencing)."""
    if token is None:
        return False
    return key in await check_leases(db, {key: token})


async def record_run(db: Db, job: str, scheduled_for: datetime, instance: str | None, holder: str,
                     outcome: str) -> bool:
    """Log that ``holder`` runs slot (job, scheduled_for, instance). False if that slot is already
    logged (another replica ran it): the caller must skip."""
    row = await db.fetchval(
        """INSERT INTO scan_runs (job, scheduled_for, instance_guid, holder, outcome)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT ON CONSTRAINT scan_runs_once DO NOTHING RETURNING id""",
        job, scheduled_for, instance or "", holder, outcome)
    return row is not None


async def finish_run(db: Db, job: str, scheduled_for: datetime, instance: str | None, outcome: str) -> bool:
    """Set the outcome and finish time of a logged run. False if there is no such run."""
    status = await db.execute(
        """UPDATE scan_runs SET outcome = $4, finished_at = clock_timestamp()
           WHERE job = $1 AND scheduled_for = $2 AND instance_guid = $3""",
        job, scheduled_for, instance or "", outcome)
    return status.endswith(" 1")
