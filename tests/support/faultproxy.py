"""A small aiohttp fault-injecting proxy in front of moto server (Toxiproxy is not installable here).

Rules: the first ``k`` requests per (method, path) answer an S3 error (503 SlowDown, 500 InternalError,
400 RequestTimeout); ``down`` answers 503 forever; ``fail_with`` answers one given S3 error to every request;
``truncate`` cuts GET bodies of matching keys after ``n`` bytes while announcing the full Content-Length, then
closes the connection.

Slow servers: ``latency`` delays every request before it is forwarded; ``stall`` sends a matching GET's headers
and its first bytes, then nothing more (until the proxy stops); ``drip`` sends a matching GET's body in small
chunks with a pause between them (slow, but making progress); ``pause()`` holds every request until
``resume()`` (a paused replica).

Listing races: ``list_page_size`` makes LIST answer at most that many entries per page (S3 may return fewer
than MaxKeys), and ``on_list_page(prefix, page)`` runs before a continuation page (page >= 2) is forwarded, so
a test can put and delete keys between pages. ``before_get(key)`` runs before a GET of an object (not a LIST)
is forwarded, so a test can expire the object between its listing and its read (the GET then gets S3's own
``404 NoSuchKey``).
"""
from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_ERRORS = [(503, "SlowDown", "Please reduce your request rate."),
           (500, "InternalError", "We encountered an internal error. Please try again."),
           (400, "RequestTimeout", "Your socket connection to the server was not read from or written to.")]


def _xml(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>fault</RequestId></Error>").encode()


@dataclass
class FaultProxy:
    upstream: str
    fail_first: int = 0
    down: bool = False
    truncate_suffix: str | None = None
    truncate_at: int = 10
    truncate_times: int = 1
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    injected: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    fail_with: tuple[int, str, str] | None = None      # (status, S3 code, message) for every request
    fail_with_extra: str = ""                          # more XML inside <Error> (e.g. S3's echoed AWSAccessKeyId)
    latency: float = 0.0
    stall_suffix: str | None = None
    stall_at: int = 10
    stalled: int = 0
    drip_suffix: str | None = None
    drip_chunk: int = 64
    drip_interval: float = 0.1
    dripped: int = 0
    list_page_size: int | None = None
    on_list_page: Callable[[str, int], Awaitable[None]] | None = None
    before_get: Callable[[str], Awaitable[None]] | None = None   # object key (path-style: after the bucket)
    held: int = 0
    # every request's (method, access key id from its SigV4 Authorization) and a hook run before forwarding
    credentials: Counter[tuple[str, str]] = field(default_factory=Counter)
    before_request: Callable[[web.Request], Awaitable[None]] | None = None
    _cycle: itertools.cycle = field(default_factory=lambda: itertools.cycle(_ERRORS))  # type: ignore[type-arg]
    _runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> FaultProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._stopping = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._pages: Counter[str] = Counter()
        return self

    async def stop(self) -> None:
        self._stopping.set()          # ends stalls and sleeps: handlers return at once
        self._running.set()
        await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pause(self) -> None:
        """Hold every new request (and those in flight before forwarding) until :meth:`resume`."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the proxy stops first; True if it is stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = (request.method, request.path_qs.split("&continuation-token")[0])
        self.seen[key] += 1
        self.methods[request.method] += 1
        auth = request.headers.get("Authorization", "")
        akid = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else ""
        self.credentials[(request.method, akid)] += 1
        if self.before_request is not None:
            await self.before_request(request)
        if not self._running.is_set():
            self.held += 1
            await self._running.wait()
        if self.latency and await self._sleep(self.latency):
            raise web.HTTPServiceUnavailable()
        if self.fail_with is not None:
            self.injected += 1
            status, code, msg = self.fail_with
            body = _xml(code, msg).replace(b"</Error>", self.fail_with_extra.encode() + b"</Error>")
            return web.Response(status=status, body=body, content_type="application/xml")
        if self.down or self.seen[key] <= self.fail_first:
            self.injected += 1
            status, code, msg = next(self._cycle)
            return web.Response(status=status, body=_xml(code, msg), content_type="application/xml")
        url = request.rel_url
        if request.method == "GET" and "list-type" in url.query:
            if self.list_page_size is not None:
                url = url.update_query({"max-keys": str(self.list_page_size)})
            prefix = url.query.get("prefix", "")
            if "continuation-token" not in url.query:
                self._pages[prefix] = 0
            self._pages[prefix] += 1
            if self.on_list_page is not None and self._pages[prefix] >= 2:
                await self.on_list_page(prefix, self._pages[prefix])
        elif request.method == "GET" and self.before_get is not None:
            await self.before_get(request.path.lstrip("/").split("/", 1)[-1])
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(request.method, self.upstream + str(url), data=body,
                                         headers=headers) as up:
            data = await up.read()
            out_headers = {k: v for k, v in up.headers.items()
                           if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
            if (self.truncate_suffix and request.method == "GET" and request.path.endswith(self.truncate_suffix)
                    and self.truncate_times > 0 and len(data) > self.truncate_at):
                self.truncate_times -= 1
                self.injected += 1
                resp = web.StreamResponse(status=up.status, headers=out_headers)
                resp.content_length = len(data)
                await resp.prepare(request)
                await resp.write(data[: self.truncate_at])
                await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.close()
                return resp
            if (self.stall_suffix and request.method == "GET" and request.path.endswith(self.stall_suffix)
                    and up.status == 200 and len(data) > self.stall_at):
                self.stalled += 1         # headers and a few bytes, then silence: no progress at all
                resp = web.StreamResponse(status=up.status, headers=out_headers)
                resp.content_length = len(data)
                await resp.prepare(request)
                await resp.write(data[: self.stall_at])
                await self._stopping.wait()
                if request.transport is not None:
                    request.transport.close()
                return resp
            if (self.drip_suffix and request.method == "GET" and request.path.endswith(self.drip_suffix)
                    and up.status == 200):
                self.dripped += 1         # slow but steady: every chunk is progress
                resp = web.StreamResponse(status=up.status, headers=out_headers)
                resp.content_length = len(data)
                await resp.prepare(request)
                for i in range(0, len(data), self.drip_chunk):
                    if i and await self._sleep(self.drip_interval):
                        break
                    await resp.write(data[i: i + self.drip_chunk])
                await resp.write_eof()
                return resp
            return web.Response(status=up.status, body=data, headers=out_headers)
