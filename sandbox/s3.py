"""A real S3 endpoint for tests: moto's threaded server over HTTP, plus an optional stunnel TLS front.

pgBackRest only speaks TLS, and moto's own ``--ssl`` mode drops sockets without a close_notify, which
OpenSSL 3 rejects; so TLS is terminated by Debian's stunnel4 and forwarded to moto's HTTP port
(see shared FIELD-NOTES.md).
"""
from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class MotoEndpoint:
    """Context manager: moto S3 on ``url`` (http) and, after ``start_tls()`` or ``tls_port``, a TLS front.

    >>> with MotoEndpoint() as ep:                      # doctest: +SKIP
    ...     ep.client().create_bucket(Bucket="b")
    """

    def __init__(self) -> None:
        self.port = 0
        self._server: Any = None
        self._tls_port: int | None = None
        self._stunnel: subprocess.Popen[bytes] | None = None
        self._tls_dir: Path | None = None
        self._tls_lock = threading.Lock()   # restores run in threads: start one stunnel, not one per thread

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> MotoEndpoint:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        for _ in range(5):
            port = free_port()
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            try:
                server.start()
                wait_port(port)
            except Exception:  # port raced away: try another
                try:
                    server.stop()
                except Exception:
                    pass
                continue
            self._server, self.port = server, port
            return self
        raise RuntimeError("could not start moto server")

    def stop(self) -> None:
        if self._stunnel is not None:
            self._stunnel.terminate()
            try:
                self._stunnel.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._stunnel.kill()
                self._stunnel.wait()
            self._stunnel = None
            self._tls_port = None
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> MotoEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- endpoints -------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("MotoEndpoint is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_port(self) -> int:
        """Port of the TLS front (self-signed, SAN IP:127.0.0.1 and DNS:127.0.0.1 — pgBackRest matches names
        only), started on first use."""
        if self._tls_port is None:
            self.start_tls()
        assert self._tls_port is not None
        return self._tls_port

    @property
    def cert_path(self) -> Path:
        """The TLS front's certificate (self-signed for IP 127.0.0.1: also the CA bundle that trusts it)."""
        self.start_tls()
        assert self._tls_dir is not None
        return self._tls_dir / "cert.pem"

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    def start_tls(self) -> int:
        with self._tls_lock:
            return self._start_tls()

    def _start_tls(self) -> int:
        if self._tls_port is not None:
            return self._tls_port
        stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
        if stunnel is None:
            raise RuntimeError("stunnel4 is not installed (Debian package stunnel4)")
        d = Path(tempfile.mkdtemp(prefix="moto-tls-"))
        self._tls_dir = d
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1",
             "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
            check=True, capture_output=True,
        )
        last_err = ""
        for _ in range(5):
            port = free_port()
            conf = d / "stunnel.conf"
            conf.write_text(
                "foreground = yes\n"
                f"pid =\n"
                f"output = {d / 'stunnel.log'}\n"
                "debug = 4\n"
                "[s3]\n"
                f"accept = 127.0.0.1:{port}\n"
                f"connect = 127.0.0.1:{self.port}\n"
                f"cert = {d / 'cert.pem'}\n"
                f"key = {d / 'key.pem'}\n"
            )
            proc = subprocess.Popen([stunnel, str(conf)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_port(port, timeout=10)
            except TimeoutError:
                proc.kill()
                proc.wait()
                log = d / "stunnel.log"
                last_err = log.read_text() if log.exists() else ""
                continue
            if proc.poll() is not None:
                continue
            self._stunnel, self._tls_port = proc, port
            atexit.register(self.stop)  # stunnel runs in its own session: never orphan it
            return port
        raise RuntimeError(f"stunnel did not start: {last_err[-500:]}")

    # -- clients ---------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Credentials for tools that read AWS variables (barman-cloud, boto3, WAL-E)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": REGION}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def ensure_bucket(self, bucket: str) -> None:
        c = self.client()
        try:
            c.head_bucket(Bucket=bucket)
        except Exception:
            c.create_bucket(Bucket=bucket)


def list_all(client: Any, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(page.get("Contents", []))
    return out
