"""Opt-in OpenTelemetry traces (issue 21): one trace per scan, plan, restore, drill and purge, with a span per
S3 request, Cloud Controller / UAA request and catalog query inside it.

On only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set: then the SDK
exports over OTLP/HTTP with its own ``OTEL_*`` variables (service name, headers, sampler). Off, nothing of
OpenTelemetry is imported and every helper here is one ``None`` check. Tests install a provider of their own
(:func:`use_provider`, e.g. with the SDK's ``InMemorySpanExporter``).

Where the spans come from: :func:`operation` around each use case's unit of work (the root of its trace);
:func:`instrument_s3` registers botocore's before/after-call events on an S3 client; :func:`query_logger` is
an asyncpg query logger (called soon after each query, in the query's context: the span gets the query's
measured duration); :func:`aiohttp_trace_configs` for the HTTP clients. Lives in ``catalog`` (the lowest layer
with I/O) so that every adapter above can use it.
"""
from __future__ import annotations

import atexit
import functools
import inspect
import os
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

class _State:
    tracer: Any = None         # an opentelemetry Tracer while tracing is on
    provider: Any = None
    configured = False


_S = _State()
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on when an OTLP endpoint is configured (once per process). True when on."""
    if _S.configured:
        return _S.tracer is not None
    _S.configured = True
    env = os.environ if environ is None else environ
    if not any(env.get(v) for v in ENDPOINT_VARS):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME")
                                                        or "backup-catalog"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use_provider(provider)
    atexit.register(shutdown)          # a one-shot CLI command exports its trace before it exits
    return True


def use_provider(provider: Any) -> None:
    """Trace with ``provider`` (an SDK TracerProvider); None turns tracing off."""
    _S.configured = True
    _S.provider = provider
    _S.tracer = provider.get_tracer("backup-catalog") if provider is not None else None


def shutdown() -> None:
    if _S.provider is not None:
        _S.provider.shutdown()


def enabled() -> bool:
    if not _S.configured:
        configure()
    return _S.tracer is not None


@contextmanager
def operation(name: str, **attributes: Any) -> Iterator[Any]:
    """The span of one unit of work (scan, plan, restore, drill, purge of one instance): a new trace unless it
    runs inside another operation (a drill's plan). Yields the span, or None when tracing is off."""
    if not enabled():
        yield None
        return
    from opentelemetry.trace import Status, StatusCode
    with _S.tracer.start_as_current_span(name, attributes=_attrs(attributes), record_exception=True) as span:
        try:
            yield span
        except BaseException as e:
            span.set_status(Status(StatusCode.ERROR, f"{type(e).__name__}: {e}"[:200]))
            raise


def traced(name: str, attributes: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
           ) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Run a coroutine function as an :func:`operation`; ``attributes`` picks span attributes from its bound
    arguments (computed only while tracing is on)."""
    def deco(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if not enabled():
                return await fn(*args, **kwargs)
            attrs: Mapping[str, Any] = {}
            if attributes is not None:
                try:
                    attrs = attributes(sig.bind_partial(*args, **kwargs).arguments)
                except Exception:   # attributes are a courtesy: never fail the operation for them
                    attrs = {}
            with operation(name, **attrs):
                return await fn(*args, **kwargs)
        return wrapper
    return deco


def _attrs(a: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, bool, int, float)) else str(v) for k, v in a.items() if v is not None}


# -- S3 (botocore events) ----------------------------------------------------------------------------------

def instrument_s3(client: Any) -> None:
    """A span per request of this aiobotocore client (S3 or SQS): ``S3 ListObjectsV2``, with the bucket."""
    if not enabled():
        return
    service = client.meta.service_model.service_id.hyphenize()
    events = client.meta.events
    events.register(f"before-parameter-build.{service}", _api_params)
    events.register(f"before-call.{service}", _before_call)
    events.register(f"after-call.{service}", _after_call)
    events.register(f"after-call-error.{service}", _after_call_error)


def _in_operation() -> bool:
    """Request and query spans belong to an operation's trace: outside one (a health check) none is made."""
    if _S.tracer is None:
        return False
    from opentelemetry import trace
    return bool(trace.get_current_span().is_recording())


def _api_params(params: Any = None, context: Any = None, **_: Any) -> None:
    if context is not None and isinstance(params, dict):
        context["_bc_bucket"] = params.get("Bucket")
        context["_bc_queue"] = params.get("QueueUrl")


def _before_call(model: Any = None, context: Any = None, **_: Any) -> None:
    if context is None or model is None or not _in_operation():
        return
    from opentelemetry.trace import SpanKind
    service = model.service_model.service_id
    span = _S.tracer.start_span(f"{service} {model.name}", kind=SpanKind.CLIENT, attributes=_attrs({
        "rpc.system": "aws-api", "rpc.service": str(service), "rpc.method": model.name,
        "aws.s3.bucket": context.get("_bc_bucket"), "aws.sqs.queue_url": context.get("_bc_queue")}))
    context["_bc_span"] = span


def _after_call(http_response: Any = None, context: Any = None, **_: Any) -> None:
    span = context.pop("_bc_span", None) if context is not None else None
    if span is not None:
        status = getattr(http_response, "status_code", None)
        if status is not None:
            span.set_attribute("http.response.status_code", int(status))
        span.end()


def _after_call_error(exception: Any = None, context: Any = None, **_: Any) -> None:
    span = context.pop("_bc_span", None) if context is not None else None
    if span is not None:
        from opentelemetry.trace import Status, StatusCode
        span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
        span.end()


# -- the catalog (asyncpg query loggers) -------------------------------------------------------------------

def query_logger(record: Any) -> None:
    """asyncpg calls this (``loop.call_soon``, in the query's context) after each query: its span, timed by the
    duration asyncpg measured."""
    if not _in_operation():
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode
    end = time.time_ns()
    sql = " ".join(str(record.query).split())
    span = _S.tracer.start_span(f"catalog {sql.split(' ', 1)[0].upper()}", kind=SpanKind.CLIENT,
                              start_time=end - int(record.elapsed * 1e9),
                              attributes={"db.system": "postgresql", "db.statement": sql[:500]})
    if record.exception is not None:
        span.set_status(Status(StatusCode.ERROR, type(record.exception).__name__))
    span.end(end_time=end)


def instrument_connection(conn: Any) -> None:
    if enabled():
        conn.add_query_logger(query_logger)


# -- HTTP clients (aiohttp trace configs) ------------------------------------------------------------------

def aiohttp_trace_configs(peer: str) -> list[Any]:
    """``trace_configs`` for an aiohttp ClientSession: a span per request (``peer``: "Cloud Controller", "UAA")."""
    if not enabled():
        return []
    import aiohttp
    from opentelemetry.trace import SpanKind

    async def start(session: Any, ctx: Any, params: Any) -> None:
        if not _in_operation():
            return
        ctx.span = _S.tracer.start_span(f"{peer} {params.method} {params.url.path}", kind=SpanKind.CLIENT,
                                      attributes={"http.request.method": params.method, "server.address":
                                                  params.url.host or "", "peer.service": peer})

    async def end(session: Any, ctx: Any, params: Any) -> None:
        span = getattr(ctx, "span", None)
        if span is not None:
            span.set_attribute("http.response.status_code", params.response.status)
            span.end()

    async def failed(session: Any, ctx: Any, params: Any) -> None:
        span = getattr(ctx, "span", None)
        if span is not None:
            from opentelemetry.trace import Status, StatusCode
            span.set_status(Status(StatusCode.ERROR, type(params.exception).__name__))
            span.end()

    tc = aiohttp.TraceConfig()
    tc.on_request_start.append(start)
    tc.on_request_end.append(end)
    tc.on_request_exception.append(failed)
    return [tc]
