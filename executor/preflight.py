"""Checking the S3 endpoint before any tool runs (issue 23 item 3), the adapter around
:mod:`executor.failfast`: a TCP connect, then — when the tool will speak TLS — a handshake verifying the
certificate as the tool would. Seconds instead of a tool's minutes of retries, and the message names the
product's setting to change.
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping

from executor import failfast
from scheduler.layouts.spec import S3Access

_NOT_TLS = ("wrong version number", "record layer failure", "packet length too long", "http request",
            "unexpected eof", "record_layer_failure", "wrong_version_number")


def _context(ep: failfast.Endpoint) -> ssl.SSLContext:
    if not ep.verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ep.ca_file) if ep.ca_file else ssl.create_default_context()


async def probe(ep: failfast.Endpoint, wait: float) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with the endpoint, or None. Kinds as :func:`failfast.probe_problem`."""
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port), wait)
    except (OSError, TimeoutError) as e:
        return "unreachable", (str(e) or type(e).__name__) if not isinstance(e, TimeoutError) \
            else f"no answer within {wait:g} s"
    w.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await w.wait_closed()
    if not ep.tls:
        return None
    try:
        ctx = _context(ep)
    except (OSError, ssl.SSLError) as e:
        return "untrusted", f"the CA file {ep.ca_file} cannot be read: {e}"
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port, ssl=ctx,
                                                              server_hostname=ep.host if ep.verify else None),
                                      wait)
    except ssl.SSLCertVerificationError as e:
        detail = e.verify_message or str(e)
        return ("hostname" if e.verify_code == 62 or "mismatch" in detail.lower() else "untrusted"), detail
    except ssl.SSLError as e:
        text = str(e).lower()
        return ("not_tls" if any(k in text for k in _NOT_TLS) else "tls"), (e.reason or str(e))
    except TimeoutError:
        return "not_tls", f"no TLS handshake within {wait:g} s"
    except (ConnectionResetError, asyncio.IncompleteReadError) as e:
        return "not_tls", f"the connection was closed during the TLS handshake ({type(e).__name__})"
    except OSError as e:
        return "unreachable", str(e)
    w.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(w.wait_closed(), 2)
    return None


async def check(layout: str, s3: S3Access, caller: Mapping[str, str], wait: float) -> str | None:
    """The first problem, in the product's words, or None when the tool may run."""
    why = failfast.before_probe(layout, s3, caller)
    if why is not None:
        return why
    ep = failfast.endpoint_of(layout, s3, caller)
    if ep is None:
        return None
    found = await probe(ep, wait)
    return failfast.probe_problem(ep, found[0], found[1], layout=layout) if found else None
