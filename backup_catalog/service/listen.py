"""Where ``serve`` may listen with the built-in credentials: loopback only.

``broker:broker`` and ``operator:operator`` make a laptop or the demo work out of the box; on any
other address (``0.0.0.0``, ``::``, a LAN or public address, a name that resolves to one) anyone who
can reach the port could read every space's plans and the operator reports, so ``serve`` refuses to
start until the passwords are set.
"""
from __future__ import annotations

import ipaddress
import socket

_SETTINGS = {"broker": "BROKER_PASSWORD (or BROKER_PASSWORD_FILE)",
             "operator": "OPERATOR_PASSWORD (or OPERATOR_PASSWORD_FILE)"}


def is_loopback(host: str) -> bool:
    """True when every address ``host`` stands for is a loopback address.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "127.8.9.10", "[::1]", "localhost")]
    [True, True, True, True, True]
    >>> [is_loopback(h) for h in ("0.0.0.0", "::", "", "192.168.1.20", "10.0.0.1", "fe80::1")]
    [False, False, False, False, False, False]
    """
    h = host.strip().strip("[]")
    if not h:
        return False                      # an empty host binds every interface
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(h, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False                      # cannot tell: not known to be safe
    addrs = {str(info[4][0]).split("%")[0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a).is_loopback for a in addrs)


def refusal(host: str, port: int, default_roles: list[str]) -> str | None:
    """Why ``serve`` must not start on ``host`` with these roles still on built-in passwords, or None.

    >>> refusal("127.0.0.1", 8080, ["broker", "operator"]) is None
    True
    >>> refusal("0.0.0.0", 8080, []) is None
    True
    >>> print(refusal("0.0.0.0", 8080, ["operator"]))
    refusing to serve on 0.0.0.0:8080 with the built-in operator credentials: anyone who can reach the port could read every space's plans and reports. Set OPERATOR_PASSWORD (or OPERATOR_PASSWORD_FILE), or serve on a loopback address (--host 127.0.0.1).
    """
    if not default_roles or is_loopback(host):
        return None
    roles = " and ".join(default_roles)
    settings = " and ".join(_SETTINGS[r] for r in default_roles)
    return (f"refusing to serve on {host or '*'}:{port} with the built-in {roles} credentials: anyone who can "
            f"reach the port could read every space's plans and reports. Set {settings}, or serve on a "
            f"loopback address (--host 127.0.0.1).")
