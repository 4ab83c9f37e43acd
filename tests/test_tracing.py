"""Opt-in OpenTelemetry traces (issue 21): off by default with nothing of OpenTelemetry imported; on with
OTEL_EXPORTER_OTLP_ENDPOINT, a CLI command exports its trace over OTLP/HTTP (to a receiver of this test); and
one real drill's trace, captured with the SDK's InMemorySpanExporter, has the drill as its root with the
catalog queries and the S3 requests inside it (a scan's trace too, and Cloud Controller requests)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import asyncpg
import pytest

from catalog import tracing

PROBE = """
import sys
from backup_catalog.cli.main import main
rc = main(sys.argv[1:])
print("OTEL-MODULES", sorted(m for m in sys.modules if m.startswith("opentelemetry"))[:3], file=sys.stderr)
raise SystemExit(rc)
"""


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", PROBE, *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=120, check=False)


class Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, int]]] = []

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        Receiver.bodies.append((self.path, n))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    Receiver.bodies = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_off_by_default_nothing_is_loaded_and_on_a_cli_command_exports_its_trace(
        catalog_dsn: str, pool: asyncpg.Pool, otlp_receiver: str) -> None:
    args = ("plan", "--space", "sp-trace", "--clone-from", "nobody", "--latest", "--json")
    off = run_cli({"CATALOG_DSN": catalog_dsn}, *args)
    assert off.returncode == 2 and "unknown_service" in off.stdout, off.stdout + off.stderr
    assert "OTEL-MODULES []" in off.stderr, off.stderr            # no SDK, no exporter, not even the API
    on = run_cli({"CATALOG_DSN": catalog_dsn, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver}, *args)
    assert on.returncode == 2 and "unknown_service" in on.stdout, on.stdout + on.stderr
    assert "'opentelemetry" in on.stderr
    assert [p for p, n in Receiver.bodies if n > 0] == ["/v1/traces"], Receiver.bodies   # exported at exit


@pytest.fixture
def in_memory() -> Iterator[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)


def trace_of(spans: list[Any], root_name: str) -> tuple[Any, list[Any]]:
    roots = [s for s in spans if s.name == root_name and s.parent is None]
    assert len(roots) == 1, [s.name for s in spans]
    root = roots[0]
    return root, [s for s in spans if s.context.trace_id == root.context.trace_id and s is not root]


@pytest.mark.realtools
async def test_one_drill_trace_with_catalog_and_s3_spans(in_memory: Any, pool: asyncpg.Pool,
                                                         real_archives: Any, s3_endpoint: Any,
                                                         catalog_dsn: str) -> None:
    from backup_catalog.usecases import drill as uc
    from catalog.db import open_pool
    from scheduler.clients import s3_client
    from tests.support.fixtures import register_and_scan
    from tests.support.restore import restore_environ, restore_settings, scratch_dir

    root_dir = scratch_dir("trace-drill-")
    settings = restore_settings(s3_endpoint, catalog_dsn, drill_scratch_dir=str(root_dir), drill_timeout_seconds=240)
    saved = dict(os.environ)
    os.environ.update(restore_environ(s3_endpoint))           # pgBackRest reaches moto's TLS front
    traced_pool = await open_pool(catalog_dsn, min_size=1, max_size=4)   # connections made with tracing on
    try:
        async with s3_client(settings) as client:
            await register_and_scan(traced_pool, client, settings, real_archives["pgbackrest"], "trace-g1",
                                    space="sp-trace", name="orders")
        scan_root, scan_spans = trace_of(in_memory.get_finished_spans(), "scan")
        assert scan_root.attributes["instance.guid"] == "trace-g1"
        assert any(s.name == "S3 ListObjectsV2" and s.attributes["aws.s3.bucket"] == real_archives["pgbackrest"].bucket
                   for s in scan_spans)
        assert any(s.name.startswith("catalog ") for s in scan_spans)
        in_memory.clear()

        outcome = await uc.run_drill(traced_pool, settings, "trace-g1", holder="trace-test")
        assert outcome.state == "passed", outcome
    finally:
        await traced_pool.close()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(root_dir, ignore_errors=True)
    spans = in_memory.get_finished_spans()
    drill, inside = trace_of(spans, "drill")
    assert drill.attributes["instance.guid"] == "trace-g1" and drill.status.is_ok
    names = {s.name for s in inside}
    assert any(n.startswith("catalog ") for n in names), names
    assert {"catalog INSERT", "catalog UPDATE"} & names or any(
        "drills" in s.attributes.get("db.statement", "") for s in inside), names
    assert any(n.startswith("S3 ") for n in names), names          # the plan's segments checked against S3
    assert all(drill.start_time <= s.start_time and s.end_time <= drill.end_time for s in inside)
    assert {s.context.trace_id for s in spans} == {drill.context.trace_id}     # one trace for the drill


async def test_cloud_controller_requests_are_spans_of_the_operation(in_memory: Any) -> None:
    from backup_catalog.cloudfoundry.client import CloudController
    from tests.support.ccdouble import CloudControllerDouble

    async with CloudControllerDouble() as ccd:
        ccd.add("g-cc", "orders", "space-cc")
        async with CloudController(ccd.url, ccd.client_id, ccd.client_secret, timeout=5.0) as cc:
            with tracing.operation("scan", **{"instance.guid": "g-cc"}):
                assert (await cc.service_instance("g-cc")) is not None
            n = len(in_memory.get_finished_spans())
            await cc.service_instance("g-cc")          # outside an operation: no span
            assert len(in_memory.get_finished_spans()) == n
    _, inside = trace_of(in_memory.get_finished_spans(), "scan")
    names = [s.name for s in inside]
    assert "Cloud Controller GET /v3/service_instances/g-cc" in names, names
    assert all(s.attributes["peer.service"] == "Cloud Controller" for s in inside)
    assert {s.attributes["http.response.status_code"] for s in inside} == {200}
