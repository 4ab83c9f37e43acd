"""A small aiohttp fault-injecting proxy in front of moto server (Toxiproxy is not installable here).

Rules: the first ``k`` requests per (method, path) answer an S3 error (503 SlowDown, 500 InternalError,
400 RequestTimeout); ``down`` answers 503 forever; ``truncate`` cuts GET bodies of matching keys after ``n``
bytes while announcing the full Content-Length, then closes the connection.
"""
from __future__ import annotations

import asyncio
import itertools
from collections import Counter
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
        return self

    async def stop(self) -> None:
        await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = (request.method, request.path_qs.split("&continuation-token")[0])
        self.seen[key] += 1
        self.methods[request.method] += 1
        if self.down or self.seen[key] <= self.fail_first:
            self.injected += 1
            status, code, msg = next(self._cycle)
            return web.Response(status=status, body=_xml(code, msg), content_type="application/xml")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(request.method, self.upstream + request.path_qs, data=body,
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
            return web.Response(status=up.status, body=data, headers=out_headers)
