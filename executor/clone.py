"""Pure parts of a clone's life outside recovery (issues 23 and 24): the marker a restore in progress leaves in
its data directory, and the settings that make a verified clone start with plain ``pg_ctl start``.

The marker (``RESTORE_INCOMPLETE``) is written before anything is fetched and removed only once the clone is
verified and ready: a restore killed at any moment (SIGKILL) leaves a directory that says what it is — not a
database — which ``restore --force-clean`` into the same path removes (after stopping a server it names).
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

MARKER = "RESTORE_INCOMPLETE"
FETCH_DIR = ".restore-fetch"     # the tool fetches here; moved into the data directory when complete
_MARK_HEAD = ("THIS DIRECTORY IS NOT A DATABASE: a backup-catalog restore into it did not finish.\n"
              "Delete it, or run `backup-catalog restore --force-clean --pgdata THIS_DIRECTORY ...` again.\n"
              "The restore's facts (key: value):\n")


def marker_text(facts: Mapping[str, object]) -> str:
    """The marker's text: a human header, then ``key: value`` lines (``None`` values left out).

    >>> print(marker_text({"restore_pid": 7, "backup": "B1", "server_pid": None}), end="")  # doctest: +ELLIPSIS
    THIS DIRECTORY IS NOT A DATABASE: ...
    restore_pid: 7
    backup: B1
    """
    return _MARK_HEAD + "".join(f"{k}: {v}\n" for k, v in facts.items() if v is not None)


def parse_marker(text: str) -> dict[str, str]:
    """The ``key: value`` facts of a marker (the header ignored).

    >>> parse_marker(marker_text({"server_pid": 12, "work": "/tmp/w"}))
    {'server_pid': '12', 'work': '/tmp/w'}
    """
    out: dict[str, str] = {}
    for line in text.splitlines()[3:]:
        k, sep, v = line.partition(": ")
        if sep and k.strip() and " " not in k.strip():
            out[k.strip()] = v.strip()
    return out


# -- a clone ready to start ------------------------------------------------------------------------------

# written by the restore for recovery, or carried from the source and meaningless (or harmful) in a clone
RECOVERY_ONLY = ("restore_command", "recovery_target", "recovery_end_command", "archive_cleanup_command",
                 "primary_conninfo", "primary_slot_name", "recovery_min_apply_delay", "promote_trigger_file")
# the source's own: where it listened, how it archived, its durability shortcuts
SOURCE_ONLY = ("port", "unix_socket_directories", "archive_mode", "archive_command", "archive_library",
               "fsync", "full_page_writes", "synchronous_commit")
READY_HEAD = "# backup-catalog restore: this clone's own settings (it never archives into its source)"
RESTORE_HEAD = "# backup-catalog restore: this clone never archives into its source;"   # logic.CLONE_HEADER


def _key(line: str) -> str:
    s = line.strip()
    if not s or s.startswith("#") or "=" not in s:
        return ""
    return s.split("=", 1)[0].strip().lower()


def _drop(text: str, keys: Sequence[str], why: str) -> str:
    out = []
    for line in text.splitlines():
        k = _key(line)
        if k and k.startswith(tuple(keys)):
            out.append(f"# ({why}) {line}")
        else:
            out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def ready_auto_conf(auto_conf: str, *, port: int, socket_dir: str) -> str:
    """``postgresql.auto.conf`` of a verified clone: what the restore wrote for recovery (everything from its
    header on: ``archive_mode``, ``restore_command``, ``recovery_target_*``) removed, the source's own lines
    before it kept with the source-only ones commented out, then the clone's own block.

    >>> print(ready_auto_conf("fsync = off\\n# (backup-catalog restore) restore_command = 'old'\\n"
    ...                       + RESTORE_HEAD + "\\narchive_mode = 'off'\\nrestore_command = 'x'\\n"
    ...                       "recovery_target_time = 't'\\n", port=5433, socket_dir="/tmp"), end="")
    # (source setting, not the clone's) fsync = off
    # (backup-catalog restore) restore_command = 'old'
    <BLANKLINE>
    # backup-catalog restore: this clone's own settings (it never archives into its source)
    archive_mode = 'off'
    archive_command = ''
    fsync = 'on'
    full_page_writes = 'on'
    port = 5433
    unix_socket_directories = '/tmp'
    """
    lines = auto_conf.splitlines()
    for head in (RESTORE_HEAD, READY_HEAD):
        if head in lines:
            lines = lines[:lines.index(head)]
    source = "\n".join(lines).strip("\n")
    body = _drop(source, SOURCE_ONLY + RECOVERY_ONLY, "source setting, not the clone's") if source else ""
    block = [READY_HEAD, "archive_mode = 'off'", "archive_command = ''", "fsync = 'on'", "full_page_writes = 'on'",
             f"port = {int(port)}", f"unix_socket_directories = '{socket_dir}'"]
    return body + ("\n" if body else "") + "\n".join(block) + "\n"


def ready_postgresql_conf(conf: str) -> str:
    """``postgresql.conf`` of a clone: the source-only settings commented out (auto.conf sets the clone's).

    >>> ready_postgresql_conf("port = 5999\\nshared_buffers = 1MB\\n")
    "# (source setting, not the clone's) port = 5999\\nshared_buffers = 1MB\\n"
    """
    return _drop(conf, SOURCE_ONLY + RECOVERY_ONLY, "source setting, not the clone's")


def start_command(pg_ctl: str, pgdata: str, *, logfile: str, as_root: bool) -> list[str]:
    """The one command that starts the clone (as ``postgres`` when the restore ran as root).

    >>> start_command("/b/pg_ctl", "/d", logfile="/d/log/start.log", as_root=True)
    ['runuser', '-u', 'postgres', '--', '/b/pg_ctl', '-D', '/d', '-l', '/d/log/start.log', '-w', 'start']
    """
    argv = [pg_ctl, "-D", pgdata, "-l", logfile, "-w", "start"]
    return ["runuser", "-u", "postgres", "--", *argv] if as_root else argv


def shell_line(argv: Sequence[str]) -> str:
    """
    >>> shell_line(["pg_ctl", "-D", "/my data", "start"])
    "pg_ctl -D '/my data' start"
    """
    return " ".join(shlex.quote(a) for a in argv)
