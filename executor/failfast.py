"""Failing fast in the product's words (issue 23 item 3), the pure part: which S3 endpoint a layout's tool will
talk to and how (pgBackRest: always TLS, ``PGBACKREST_*`` variables win), what is wrong with that before any
tool runs, what a probe's result means, and what a tool's known error lines mean — each message naming the
product's setting to change and how.

:mod:`executor.run` probes the endpoint (a TCP connect, a TLS handshake when the tool will use TLS) and
raises ``bad_input`` with these messages.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from scheduler.layouts.spec import S3Access

CREDENTIALS = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID_FILE/AWS_SECRET_ACCESS_KEY_FILE)"
# other ways boto-based tools find credentials by themselves (profiles, roles, containers)
_AMBIENT = ("AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_SHARED_CREDENTIALS_FILE")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the tool will connect: host, port, TLS or not, verifying the certificate or not, with which CA."""

    host: str
    port: int
    tls: bool
    verify: bool
    ca_file: str | None
    named_by: str          # the settings that name it, for messages


def _true(v: str | None) -> bool | None:
    if v is None:
        return None
    return v.strip().lower() not in ("n", "no", "false", "0", "off")


def endpoint_of(layout: str, s3: S3Access, caller: Mapping[str, str]) -> Endpoint | None:
    """The endpoint the layout's tool talks to (None: AWS's own, nothing to check here).

    >>> endpoint_of("pgbackrest", S3Access("http://127.0.0.1:9000"), {"PGBACKREST_REPO1_STORAGE_PORT": "9443",
    ...             "PGBACKREST_REPO1_STORAGE_VERIFY_TLS": "n"})
    Endpoint(host='127.0.0.1', port=9443, tls=True, verify=False, ca_file=None, named_by='S3_ENDPOINT_URL, PGBACKREST_REPO1_STORAGE_PORT')
    >>> endpoint_of("barman", S3Access("http://127.0.0.1:9000"), {}).tls
    False
    """
    if not s3.endpoint_url:
        return None
    u = urlsplit(s3.endpoint_url)
    host = u.hostname or ""
    named = ["S3_ENDPOINT_URL"]
    if layout == "pgbackrest":
        port = u.port or 443
        if caller.get("PGBACKREST_REPO1_S3_ENDPOINT"):
            host = caller["PGBACKREST_REPO1_S3_ENDPOINT"]
            named.append("PGBACKREST_REPO1_S3_ENDPOINT")
        if caller.get("PGBACKREST_REPO1_STORAGE_PORT", "").isdigit():
            port = int(caller["PGBACKREST_REPO1_STORAGE_PORT"])
            named.append("PGBACKREST_REPO1_STORAGE_PORT")
        verify = _true(caller.get("PGBACKREST_REPO1_STORAGE_VERIFY_TLS"))
        ca = caller.get("PGBACKREST_REPO1_STORAGE_CA_FILE") or s3.ca_bundle
        return Endpoint(host, port, True, s3.verify_tls if verify is None else verify, ca, ", ".join(named))
    tls = u.scheme == "https"
    return Endpoint(host, u.port or (443 if tls else 80), tls, s3.verify_tls, s3.ca_bundle, "S3_ENDPOINT_URL")


def before_probe(layout: str, s3: S3Access, caller: Mapping[str, str]) -> str | None:
    """What is wrong before anything is asked of the endpoint, or None.

    >>> print(before_probe("pgbackrest", S3Access("http://s3.local:9000", "k", "s"), {}))
    S3_ENDPOINT_URL is plain HTTP (http://s3.local:9000), and pgBackRest speaks only HTTPS to S3: set S3_ENDPOINT_URL to the endpoint's https:// address, or name a TLS front before it with PGBACKREST_REPO1_STORAGE_PORT (and PGBACKREST_REPO1_S3_ENDPOINT)
    >>> before_probe("pgbackrest", S3Access("https://s3.local", None, None), {}).split(":")[0]
    'no S3 credentials'
    >>> before_probe("barman", S3Access(None, None, None), {}) is None     # AWS itself: a role may serve
    True
    """
    if layout == "pgbackrest":
        has_key = (s3.access_key and s3.secret_key) or caller.get("PGBACKREST_REPO1_S3_KEY") or \
            caller.get("PGBACKREST_REPO1_S3_KEY_TYPE", "").lower() in ("auto", "web-id")
        if not has_key:
            return (f"no S3 credentials: pgBackRest needs a key for the repository; set {CREDENTIALS} "
                    "(or PGBACKREST_REPO1_S3_KEY_TYPE=auto on an instance with an IAM role)")
        if s3.endpoint_url and urlsplit(s3.endpoint_url).scheme == "http" \
                and not caller.get("PGBACKREST_REPO1_STORAGE_PORT"):
            return (f"S3_ENDPOINT_URL is plain HTTP ({s3.endpoint_url}), and pgBackRest speaks only HTTPS to S3: "
                    "set S3_ENDPOINT_URL to the endpoint's https:// address, or name a TLS front before it with "
                    "PGBACKREST_REPO1_STORAGE_PORT (and PGBACKREST_REPO1_S3_ENDPOINT)")
        return None
    if s3.endpoint_url and not (s3.access_key and s3.secret_key) and not caller.get("AWS_ACCESS_KEY_ID") \
            and not any(caller.get(k) for k in _AMBIENT):
        return f"no S3 credentials for {s3.endpoint_url}: set {CREDENTIALS}"
    return None


def probe_problem(ep: Endpoint, kind: str, detail: str, *, layout: str) -> str:
    """A probe's failure in the product's words. ``kind``: unreachable | not_tls | hostname | untrusted | tls.

    >>> ep = Endpoint("localhost", 9443, True, True, "/ca.pem", "S3_ENDPOINT_URL")
    >>> probe_problem(ep, "hostname", "IP address mismatch", layout="pgbackrest")  # doctest: +ELLIPSIS
    "the TLS certificate of localhost:9443 does not name the host 'localhost' (IP address mismatch): set S3_ENDPOINT_URL to a host name the certificate names, ..."
    """
    where = f"{ep.host}:{ep.port}"
    if kind == "unreachable":
        return f"cannot reach the S3 endpoint {where} ({detail}): check {ep.named_by}"
    if kind == "not_tls":
        tool = "pgBackRest speaks only HTTPS to S3" if layout == "pgbackrest" else "the endpoint is named https://"
        return (f"the S3 endpoint {where} answers plain HTTP, not TLS ({detail}); {tool}: set {ep.named_by} to the "
                "endpoint's TLS port" + (" (PGBACKREST_REPO1_STORAGE_PORT names a TLS front)"
                                         if layout == "pgbackrest" else ", or S3_ENDPOINT_URL to http://"))
    if kind == "hostname":
        which = "PGBACKREST_REPO1_S3_ENDPOINT" if "PGBACKREST_REPO1_S3_ENDPOINT" in ep.named_by else "S3_ENDPOINT_URL"
        return (f"the TLS certificate of {where} does not name the host {ep.host!r} ({detail}): set {which} to a "
                "host name the certificate names, or S3_VERIFY_TLS=false (tests only)")
    if kind == "untrusted":
        return (f"the TLS certificate of {where} is not signed by a trusted CA ({detail}): set S3_CA_BUNDLE to the "
                "PEM file of the endpoint's CA, or S3_VERIFY_TLS=false (tests only)")
    return f"TLS with the S3 endpoint {where} failed ({detail}): check {ep.named_by}, S3_CA_BUNDLE and S3_VERIFY_TLS"


# -- the tools' own words ------------------------------------------------------------------------------------

_KNOWN: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"requires option: repo1-s3-key(-secret)?\b"),
     f"no S3 credentials: set {CREDENTIALS}"),
    (re.compile(r"InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|\b403\b"),
     "the S3 endpoint refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    (re.compile(r"NoSuchBucket"), "the bucket does not exist at this endpoint: check S3_ENDPOINT_URL and the "
                                  "instance's bucket"),
    (re.compile(r"certificate verify failed|self[- ]signed certificate|unable to get local issuer"),
     "the endpoint's TLS certificate is not trusted: set S3_CA_BUNDLE to its CA's PEM file, or "
     "S3_VERIFY_TLS=false (tests only)"),
    (re.compile(r"wrong version number|unexpected eof while reading|packet length too long"),
     "TLS failed with the S3 endpoint (plain HTTP answered where TLS was expected?): pgBackRest speaks only "
     "HTTPS: name the endpoint's TLS port (S3_ENDPOINT_URL https://…, or PGBACKREST_REPO1_STORAGE_PORT)"),
    (re.compile(r"is or was the repo encrypted"),
     "pgBackRest could not read the repository's info files: check S3_ENDPOINT_URL (reachable, TLS), the "
     "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and that the bucket and prefix hold this stanza"),
    (re.compile(r"Could not connect to the endpoint URL|Connection refused|\[HostConnectError\]|unable to connect"),
     "the S3 endpoint cannot be reached: check S3_ENDPOINT_URL"),
)


def translate(output: str) -> str | None:
    """What a tool's output means in the product's settings (the first known line), or None.

    >>> translate("ERROR: [031]: restore command requires option: repo1-s3-key")
    'no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID_FILE/AWS_SECRET_ACCESS_KEY_FILE)'
    >>> translate("all fine") is None
    True
    """
    for rx, meaning in _KNOWN:
        if rx.search(output):
            return meaning
    return None
