"""A real terminal for end-to-end tests of interactive commands: a tmux server on a private socket.

``await term.run("cf-undo list")`` types a command followed by an exit-code marker and waits for it;
``await term.wait_for("text")`` polls the pane (the caller's event loop keeps serving meanwhile).
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping


class Tmux:
    def __init__(self, env: Mapping[str, str], *, width: int = 180, height: int = 60) -> None:
        if shutil.which("tmux") is None:
            raise RuntimeError("tmux is not installed (make setup installs it)")
        self._dir = tempfile.mkdtemp(prefix="bc-tmux-")
        self.socket = os.path.join(self._dir, "socket")      # private, removed with the server
        self.session = "t"
        self._env = dict(env)
        self._size = (width, height)
        self._marks = 0

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def __enter__(self) -> Tmux:
        env_args = [a for k, v in self._env.items() for a in ("-e", f"{k}={v}")]
        self._tmux("-f", "/dev/null", "new-session", "-d", "-s", self.session, "-x", str(self._size[0]),
                   "-y", str(self._size[1]), *env_args, "bash --norc --noprofile")
        self._tmux("set-option", "-t", self.session, "history-limit", "5000")
        if "PATH" in self._env:     # the shell tmux starts may reset PATH: set it again, then start clean
            self.send(f"export PATH='{self._env['PATH']}'; clear")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)
        shutil.rmtree(self._dir, ignore_errors=True)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-S", "-5000", "-t", self.session)

    def send(self, text: str, *, enter: bool = True) -> None:
        self._tmux("send-keys", "-t", self.session, "-l", text)
        if enter:
            self._tmux("send-keys", "-t", self.session, "Enter")

    async def wait_for(self, pattern: str, within: float = 60.0, *, after: int = 0) -> str:
        """The screen once ``pattern`` (a regex) appears after character offset ``after``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while True:
            text = await asyncio.to_thread(self.screen)
            if re.search(pattern, text[after:]):
                return text
            if loop.time() > end:
                raise AssertionError(f"{pattern!r} did not appear within {within} s; screen:\n{text[-4000:]}")
            await asyncio.sleep(0.2)

    async def run(self, command: str, within: float = 90.0) -> tuple[int, str]:
        """Type ``command``, wait until it exits; (exit code, what it printed)."""
        self._marks += 1
        mark = f"__EXIT{self._marks}__"
        start = len(await asyncio.to_thread(self.screen))
        self.send(f"{command}; echo {mark}=$?")
        text = await self.wait_for(rf"{mark}=\d+", within, after=max(0, start - 200))
        m = list(re.finditer(rf"{mark}=(\d+)", text))[-1]
        out = text[:m.start()]
        cut = out.rfind(f"echo {mark}=$?")
        return int(m.group(1)), out[cut + len(f"echo {mark}=$?"):] if cut >= 0 else out


def path_with(bin_dir: str) -> str:
    return os.pathsep.join([bin_dir, os.environ.get("PATH", "/usr/bin:/bin")])
