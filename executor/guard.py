"""A tool's guard: the process between the executor and a tool it runs, so that the tool and every process
the tool starts (pgBackRest's ``restore:local`` workers, barman-cloud's pool) die with the executor, even
when the executor is killed with SIGKILL (issue 24).

    python guard.py EXPECTED_PARENT_PID [--user NAME] -- ARGV...

The guard asks Linux to send it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), runs ``ARGV`` in its
own process group (the guard's: the executor starts the guard in a new session), dropped to ``--user`` when
given, and waits. On SIGTERM/SIGINT/SIGHUP — the executor stopping the tool, or the executor gone — it
kills the whole group with SIGKILL, itself included. Otherwise it exits as the tool exited.

Run by path with ``python -I`` and importing only the standard library: starting it costs ~20 ms.
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Any:
    """libc's prctl, resolved once (never in a forked child: no dlopen there); None when not Linux."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def set_pdeathsig(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when the thread that forked it ends (False: not Linux)."""
    f = _prctl()
    return f is not None and int(f(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0


def pdeathsig_preexec(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` giving the child ``sig`` when its parent dies. Everything is resolved here, before the
    fork: the child (of a process with threads) imports nothing and loads no library."""
    f = _prctl()
    number = int(sig)

    def pre() -> None:
        if f is not None:
            f(PR_SET_PDEATHSIG, number, 0, 0, 0)
    return pre


def _kill_group(signum: int, _frame: object) -> None:
    os.killpg(0, signal.SIGKILL)


def _drop_to(user: str) -> None:
    import pwd
    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 3:
        print("usage: guard.py PARENT_PID [--user NAME] -- ARGV...", file=sys.stderr)
        return 2
    sep = argv.index("--")
    head, cmd = argv[:sep], argv[sep + 1:]
    parent = int(head[0])
    user = head[head.index("--user") + 1] if "--user" in head else None
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _kill_group)
    set_pdeathsig(signal.SIGTERM)
    if os.getppid() != parent:      # the executor died before the request above took effect
        os.killpg(0, signal.SIGKILL)
    pid = os.fork()
    if pid == 0:
        try:
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(s, signal.SIG_DFL)
            if user is not None and os.geteuid() == 0:
                _drop_to(user)
            set_pdeathsig(signal.SIGKILL)     # the guard gone: the tool too (its workers: the group kill)
            os.execvp(cmd[0], cmd)
        except OSError as e:
            print(f"guard: cannot run {cmd[0]}: {e}", file=sys.stderr)
        os._exit(127)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
