"""The embedded private PostgreSQL cluster used when ``CATALOG_DSN`` is unset.

Layout under ``base`` (default: :func:`default_base`)::

    base/data/        PGDATA (initdb, owned by the server's OS user)
    base/run/         unix socket directory (``listen_addresses = ''``: no TCP at all)
    base/server.log   server log
    base/.lock        flock held while ensuring/stopping (concurrent CLI calls are safe)

PostgreSQL refuses to run as root: when we are root, the cluster is initialised and run as the
``postgres`` OS user (``runuser -u postgres``) and therefore lives outside ``/root`` by default,
under ``/var/lib/backup-catalog/pg``. ``BACKUP_CATALOG_HOME`` overrides the location (``$HOME/pg``).
"""
from __future__ import annotations

import fcntl
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import platformdirs

from catalog.errors import CatalogUnavailable

DATABASE = "backup_catalog"
SUPERUSER = "postgres"
PORT = 5432                  # only names the socket file: the socket directory is private
ROOT_HOME = Path("/var/lib/backup-catalog")
_RUN_AS = "postgres"
_SOCKET_PATH_MAX = 107       # sizeof(sockaddr_un.sun_path) - 1 on Linux


class EmbeddedClusterError(CatalogUnavailable):
    """The private cluster cannot be created or started."""

    code = "embedded_cluster_error"


def default_base() -> Path:
    """Where the private cluster lives: ``$BACKUP_CATALOG_HOME/pg``, else the user data dir
    (``platformdirs``), or ``/var/lib/backup-catalog/pg`` when running as root."""
    home = os.environ.get("BACKUP_CATALOG_HOME")
    if home:
        return Path(home) / "pg"
    if os.geteuid() == 0:
        return ROOT_HOME / "pg"
    return Path(platformdirs.user_data_dir("backup-catalog")) / "pg"


def find_bindir() -> Path:
    """PostgreSQL server binaries: ``$BACKUP_CATALOG_PG_BINDIR``, the newest
    ``/usr/lib/postgresql/*/bin``, ``pg_config --bindir``, or ``initdb`` on PATH."""
    env = os.environ.get("BACKUP_CATALOG_PG_BINDIR")
    candidates: list[Path] = [Path(env)] if env else []
    debian = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    candidates += sorted(debian, key=lambda p: int(p.parent.name), reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.TimeoutExpired):
            pass
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    raise EmbeddedClusterError(
        "no PostgreSQL server binaries found (looked in $BACKUP_CATALOG_PG_BINDIR, /usr/lib/postgresql/*/bin, "
        "pg_config --bindir, PATH): install postgresql (e.g. `apt-get install postgresql-15`) or set CATALOG_DSN")


def dsn_for(base: Path) -> str:
    """The DSN of the private cluster under ``base`` (unix socket, trust auth for its owner only)."""
    host = quote(str((base / "run").resolve()), safe="")
    return f"postgresql://{SUPERUSER}@/{DATABASE}?host={host}&port={PORT}"


def ensure_cluster(base: Path | None = None) -> str:
    """Create (initdb) and start the private cluster if needed, create the database, return its DSN.

    Idempotent and safe to call concurrently (file lock).
    :raises EmbeddedClusterError: with the reason and the server log's tail.
    """
    base = (base or default_base()).absolute()
    _check_socket_path(base)
    _prepare_dir(base)
    with _locked(base):
        bindir = find_bindir()
        data = base / "data"
        if not (data / "PG_VERSION").is_file():
            _initdb(bindir, base)
        if not _running(bindir, data):
            _start(bindir, base)
        _ensure_database(bindir, base)
    return dsn_for(base)


def stop_cluster(base: Path | None = None) -> bool:
    """Stop the private cluster (fast shutdown). True if it was running."""
    base = (base or default_base()).absolute()
    data = base / "data"
    if not (data / "PG_VERSION").is_file():
        return False
    with _locked(base):
        bindir = find_bindir()
        if not _running(bindir, data):
            return False
        _run(bindir / "pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60", "-s",
             base=base, what="stopping the embedded catalog cluster")
        return True


def is_running(base: Path | None = None) -> bool:
    base = (base or default_base()).absolute()
    return (base / "data" / "PG_VERSION").is_file() and _running(find_bindir(), base / "data")


# -- helpers -----------------------------------------------------------------------------------

def _as_server_user() -> bool:
    return os.geteuid() == 0


def _server_ids() -> tuple[int, int]:
    if not _as_server_user():
        return os.geteuid(), os.getegid()
    try:
        pw = pwd.getpwnam(_RUN_AS)
    except KeyError:
        raise EmbeddedClusterError(
            f"running as root but there is no {_RUN_AS!r} OS user to run PostgreSQL as "
            "(PostgreSQL refuses root): install the postgresql package or set CATALOG_DSN") from None
    return pw.pw_uid, pw.pw_gid


def _check_socket_path(base: Path) -> None:
    sock = base / "run" / f".s.PGSQL.{PORT}"
    if len(str(sock)) > _SOCKET_PATH_MAX:
        raise EmbeddedClusterError(
            f"embedded catalog path {base} is too long for a unix socket ({len(str(sock))} > "
            f"{_SOCKET_PATH_MAX} bytes): set BACKUP_CATALOG_HOME to a shorter directory")


def _prepare_dir(base: Path) -> None:
    uid, gid = _server_ids()
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        (base / "run").mkdir(exist_ok=True, mode=0o700)
        if _as_server_user():
            for p in (base, base / "run"):
                if p.stat().st_uid != uid:
                    os.chown(p, uid, gid)
            # every ancestor must be enterable by the server user (/root is not: see module doc)
            for parent in base.parents:
                st = parent.stat()
                if not st.st_mode & 0o001 and not (st.st_uid == uid and st.st_mode & 0o100):
                    raise EmbeddedClusterError(
                        f"the PostgreSQL server runs as {_RUN_AS!r}, which cannot enter {parent} "
                        f"(mode {oct(st.st_mode & 0o777)}): put the embedded catalog elsewhere with "
                        f"BACKUP_CATALOG_HOME (default for root: {ROOT_HOME})")
    except OSError as exc:
        raise EmbeddedClusterError(f"cannot prepare the embedded catalog directory {base}: {exc}") from None


@contextmanager
def _locked(base: Path) -> Iterator[None]:
    try:
        fd = os.open(base / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise EmbeddedClusterError(f"cannot open lock file in {base}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # releases the flock


def _run(cmd: Path | str, *args: str, base: Path, what: str, ok: Sequence[int] = (0,),
         as_server: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [str(cmd), *args]
    if as_server and _as_server_user():
        argv = ["runuser", "-u", _RUN_AS, "--", *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=base, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EmbeddedClusterError(f"{what}: {exc}") from None
    if proc.returncode not in ok:
        detail = (proc.stderr or proc.stdout).strip()
        raise EmbeddedClusterError(f"{what} failed (exit {proc.returncode}): {detail}{_log_tail(base)}")
    return proc


def _log_tail(base: Path, lines: int = 15) -> str:
    try:
        text = (base / "server.log").read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n--- " + str(base / "server.log") + " (tail) ---\n" + "\n".join(text) if text else ""


def _initdb(bindir: Path, base: Path) -> None:
    data = base / "data"
    if data.exists() and any(data.iterdir()):
        raise EmbeddedClusterError(f"{data} exists but is not a PostgreSQL data directory: remove it or "
                                   "set BACKUP_CATALOG_HOME")
    _run(bindir / "initdb", "-D", str(data), "-U", SUPERUSER, "-E", "UTF8", "--locale=C",
         "--auth-local=trust", "--auth-host=reject", base=base, what="initdb of the embedded catalog")
    conf = (
        "\n# backup-catalog embedded cluster\n"
        "listen_addresses = ''\n"
        f"port = {PORT}\n"
        f"unix_socket_directories = '{_conf_quote(str(base / 'run'))}'\n"
        "unix_socket_permissions = 0700\n"
        "max_connections = 50\n"
        "shared_buffers = 128MB\n"   # PostgreSQL's default; a catalog of 10,000 year-long instances is ~2 GB
        "logging_collector = off\n"
    )
    # written by us (possibly root) into a file owned by the server user: append via the server user
    _run("sh", "-c", f"cat >> {_sh_quote(str(data / 'postgresql.conf'))} <<'EOF'\n{conf}EOF\n",
         base=base, what="configuring the embedded catalog")


def _running(bindir: Path, data: Path) -> bool:
    proc = _run(bindir / "pg_ctl", "status", "-D", str(data), base=data.parent,
                what="checking the embedded catalog", ok=(0, 3, 4))
    return proc.returncode == 0


def _start(bindir: Path, base: Path) -> None:
    _run(bindir / "pg_ctl", "start", "-D", str(base / "data"), "-l", str(base / "server.log"),
         "-w", "-t", "60", "-s", base=base, what="starting the embedded catalog cluster")


def _ensure_database(bindir: Path, base: Path) -> None:
    psql = [str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(base / "run"),
            "-p", str(PORT), "-U", SUPERUSER, "-d", "postgres", "-tA"]
    exists = _run(psql[0], *psql[1:], "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
                  base=base, what="querying the embedded catalog")
    if exists.stdout.strip() != "1":
        _run(psql[0], *psql[1:], "-c", f"CREATE DATABASE {DATABASE}", base=base,
             what="creating the catalog database")


def _conf_quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "''")


def _sh_quote(s: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./-]+", s):
        return s
    return "'" + s.replace("'", "'\"'\"'") + "'"
