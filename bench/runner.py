"""How ``make bench`` runs (bench/run.py holds what it measures): its phases (``Phases``: wall and CPU time
each, one after the other or side by side), its child jobs (``Jobs``: ``python -m bench.job``, a fresh process
each or one shared) and the ``serve`` process it times."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sandbox.s3 import free_port, wait_port

SERVE_INTERVAL = 86400      # serve's scan interval: it must not scan the bench's instances while timed


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Phases:
    """Wall seconds per phase, logged as each ends and kept in the results (``phase_s``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), _cpu()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            # this process and its reaped children (not PostgreSQL's; of every phase running at the time)
            log(f"phase {name}: {self.seconds[name]:.1f}s (CPU {_cpu() - c0:.1f}s, load {os.getloadavg()[0]:.1f})")

    def run(self, plan: list[tuple[str, Callable[[], None], tuple[str, ...]]], together: bool = False) -> None:
        """Run the phases of ``plan`` (name, function, the phases it needs) in its order, or ``together``: each
        in a thread of its own as soon as the phases it needs have ended (they wait on child processes,
        PostgreSQL and wrk more than on this interpreter). A phase whose needs failed does not run; the first
        failure is raised once every phase has ended."""
        if not together:
            for name, fn, _ in plan:
                with self(name):
                    fn()
            return
        done = {name: threading.Event() for name, _, _ in plan}
        failed: set[str] = set()
        errors: list[BaseException] = []

        def one(name: str, fn: Callable[[], None], needs: tuple[str, ...]) -> None:
            try:
                for n in needs:
                    if n in done:
                        done[n].wait()
                if failed.intersection(needs):
                    failed.add(name)
                    return
                with self(name):
                    fn()
            except BaseException as e:    # raised below, once the other phases have ended
                log(f"phase {name} failed: {type(e).__name__}: {e}")
                failed.add(name)
                errors.append(e)
            finally:
                done[name].set()
        threads = [threading.Thread(target=one, args=p, name=f"phase-{p[0]}") for p in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())


class Jobs:
    """``python -m bench.job ARGS`` with the child's own rusage (wait4): CPU and peak RSS, a fresh process per
    job. ``shared`` (the smoke): one ``bench.job serve`` process answers job after job (one at a time, for
    every phase); the same job code without an interpreter start per job (each costs 1-1.5 s of CPU), figures
    from the child's own report (its peak RSS is that of every job so far)."""

    def __init__(self) -> None:
        self.shared = False
        self._lock = threading.Lock()
        self._worker: tuple[subprocess.Popen[str], Any] | None = None

    def __call__(self, env: dict[str, str], *args: str, fresh: bool = False) -> dict[str, Any]:
        if self.shared and not fresh:
            with self._lock:
                return self._shared(env, args)
        return self._fresh(env, args)

    def _fresh(self, env: dict[str, str], args: tuple[str, ...]) -> dict[str, Any]:
        with tempfile.TemporaryFile("w+") as errf:
            proc = subprocess.Popen([sys.executable, "-m", "bench.job", *args], stdout=subprocess.PIPE,
                                    stderr=errf, env=env, text=True)
            assert proc.stdout is not None
            out = proc.stdout.read()
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            errf.seek(0)
            err = errf.read()
        if proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"bench.job {' '.join(args)} failed (exit {proc.returncode}): {err[-1500:]}")
        res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        # the child's own peak (VmHWM, reported by bench.job): wait4's ru_maxrss starts at this parent's peak,
        # because Linux carries the high-water RSS of the address space a child exec'd from (vfork) into it
        res["child_maxrss_mb"] = res.get("peak_rss_mb", ru.ru_maxrss / 1024)
        res["child_wait4_maxrss_mb"] = ru.ru_maxrss / 1024
        res["child_cpu_s"] = ru.ru_utime + ru.ru_stime
        return res

    def _shared(self, env: dict[str, str], args: tuple[str, ...]) -> dict[str, Any]:
        if self._worker is None or self._worker[0].poll() is not None:
            self.close()
            errf = tempfile.TemporaryFile("w+")
            self._worker = (subprocess.Popen([sys.executable, "-m", "bench.job", "serve"], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=errf, env=env, text=True), errf)
        proc, errf = self._worker
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(list(args)) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        res: dict[str, Any] = json.loads(line) if line.strip() else {"error": f"exit {proc.wait()}"}
        if "error" in res:
            errf.seek(0)
            raise RuntimeError(f"bench.job {' '.join(args)} failed: {res['error']}\n{res.get('traceback', '')}"
                               f"{errf.read()[-1500:]}")
        res["child_maxrss_mb"] = res["peak_rss_mb"]
        res["child_cpu_s"] = res["cpu_s"]
        return res

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        proc, errf = worker
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        errf.close()


class Server:
    """``backup-catalog serve`` as a child process."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.log = open(log_path, "w")
        env = {**env, "SCAN_INTERVAL_SECONDS": str(SERVE_INTERVAL)}
        exe = str(Path(sys.executable).with_name("backup-catalog"))
        self.proc = subprocess.Popen([exe, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--workers", str(workers)], env=env,
                                     stdout=self.log, stderr=self.log, text=True)
        try:
            wait_port(self.port, timeout=60)
        except TimeoutError:
            self.stop()
            raise

    def pids(self) -> list[int]:
        """The serve process and its worker processes."""
        out = [self.proc.pid]
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                        out.append(int(d.name))
                except (OSError, ValueError, IndexError):
                    continue
        return out

    def cpu_ticks(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(f[11]) + int(f[12])
        return total

    def wait_idle(self, quiet_s: float = 2.0, timeout: float = 120) -> None:
        deadline, last, since = time.monotonic() + timeout, self.cpu_ticks(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.cpu_ticks()
            if now - last > 5:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
