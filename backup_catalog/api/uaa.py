"""Verifying UAA bearer tokens locally (PyJWT): the keys of ``<uaa>/token_keys`` cached by ``kid``.

Only RS256 is accepted (``alg: none`` and every HMAC or other algorithm are refused before any key is
looked at); ``iss`` must be ``<uaa>/oauth/token``, the audience ``cloud_controller``, ``exp``/``nbf`` hold
within :data:`LEEWAY_SECONDS`. A token signed by a key not in the cache refetches the keys, at most once
per ``UAA_KEYS_REFETCH_SECONDS`` (a flood of made-up ``kid`` values costs the UAA one request per interval).
The UAA is ``UAA_URL`` or the Cloud Controller root document's ``links.uaa`` (as the cf CLI finds it).
Which check failed is said (:class:`~backup_catalog.usecases.access.InvalidToken`); no key material is.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt

from backup_catalog.usecases.access import (
    AUDIENCE,
    AccessUnavailable,
    InvalidToken,
    UserClaims,
    check_claims,
    may_refetch_keys,
)

ALGORITHM = "RS256"
LEEWAY_SECONDS = 30.0   # clock skew tolerated on exp/nbf (the contract allows at most 60 s)
KEYS_MAX_AGE_SECONDS = 3600.0   # the key set is refetched when older (a key UAA withdrew stops verifying)

# PyJWT's failure -> (check, what to say); the most specific class first
_CHECKS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "exp", "the token has expired"),
    (jwt.ImmatureSignatureError, "nbf", "the token is not valid yet"),
    (jwt.InvalidIssuerError, "iss", "the token was issued by another issuer than this platform's UAA"),
    (jwt.InvalidAudienceError, "aud", "the token is not meant for the Cloud Controller (audience)"),
    (jwt.InvalidSignatureError, "signature", "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "alg", "only RS256-signed tokens are accepted"),
    (jwt.MissingRequiredClaimError, "claims", "the token lacks a required claim"),
    (jwt.InvalidIssuedAtError, "iat", "the token's issue time is in the future"),
    (jwt.DecodeError, "malformed", "the token is not a well-formed JWT"),
    (jwt.InvalidTokenError, "malformed", "the token is not acceptable"),
)


def _failure(exc: Exception) -> InvalidToken:
    for cls, check, text in _CHECKS:
        if isinstance(exc, cls):
            if check == "claims" and isinstance(exc, jwt.MissingRequiredClaimError):
                return InvalidToken(check, f"the token lacks the {exc.claim!r} claim")
            return InvalidToken(check, text)
    return InvalidToken("malformed", "the token is not acceptable")


class TokenVerifier:
    """Verifies bearer tokens against the UAA's published keys; one per application."""

    def __init__(self, http: Callable[[], aiohttp.ClientSession], *, uaa_url: str | None, cf_api_url: str | None,
                 refetch_seconds: float = 30.0, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._http = http
        self._uaa = uaa_url.rstrip("/") if uaa_url else None
        self._cf_api = cf_api_url.rstrip("/") if cf_api_url else None
        self._refetch = refetch_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None     # the last attempt (the refetch limit counts attempts)
        self._keys_at: float | None = None        # the last successful fetch
        self._lock = asyncio.Lock()
        self.key_fetches = 0

    async def verify(self, token: str) -> UserClaims:
        """The user a valid token names. :raises InvalidToken: a check failed.
        :raises AccessUnavailable: the UAA (or the CC naming it) cannot be asked."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("malformed", "the token is not a well-formed JWT") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("alg", "only RS256-signed tokens are accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("kid", "the token names no signing key (kid)")
        key = await self._key(kid)
        uaa = await self.uaa_url()
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=f"{uaa}/oauth/token",
                                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iss", "aud"]})
        except jwt.InvalidTokenError as e:
            raise _failure(e) from None
        return check_claims(claims)

    async def uaa_url(self) -> str:
        if self._uaa is None:
            self._uaa = await self._discover()
        return self._uaa

    # -- adapters --------------------------------------------------------------------------------
    async def _key(self, kid: str) -> Any:
        if kid in self._keys and not self._stale():
            return self._keys[kid]
        if kid in self._keys:     # stale: refresh, but a UAA that cannot answer now does not lock users out
            async with self._lock:
                if self._stale():
                    try:
                        await self._fetch_keys()
                    except AccessUnavailable:
                        pass     # keep verifying with the keys fetched last; retried after the refetch interval
        async with self._lock:
            if kid not in self._keys and may_refetch_keys(self._clock(), self._fetched_at, self._refetch):
                await self._fetch_keys()
        if kid not in self._keys:
            raise InvalidToken("kid", "the token is signed by a key this platform's UAA does not publish")
        return self._keys[kid]

    def _stale(self) -> bool:
        """The key set is older than its max age, and a fetch may be tried (the last attempt is not recent)."""
        return (self._keys_at is not None and self._clock() - self._keys_at >= KEYS_MAX_AGE_SECONDS
                and may_refetch_keys(self._clock(), self._fetched_at, self._refetch))

    async def _fetch_keys(self) -> None:
        uaa = await self.uaa_url()
        self._fetched_at = self._clock()
        doc = await self._get_json(f"{uaa}/token_keys")
        keys: dict[str, Any] = {}
        for jwk in doc.get("keys", []) if isinstance(doc, dict) else []:
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not jwk.get("kid"):
                continue
            try:
                keys[str(jwk["kid"])] = jwt.PyJWK(jwk, algorithm=ALGORITHM).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue     # a key we cannot use is as good as absent
        self.key_fetches += 1
        self._keys = keys    # rotation: keys the UAA no longer publishes stop verifying
        self._keys_at = self._clock()

    async def _discover(self) -> str:
        if self._cf_api is None:
            raise AccessUnavailable("bearer tokens need UAA_URL or CF_API_URL to be set")
        doc = await self._get_json(f"{self._cf_api}/")
        href = ((doc.get("links") or {}).get("uaa") or {}).get("href") if isinstance(doc, dict) else None
        if not href:
            raise AccessUnavailable("the Cloud Controller's root document links no UAA")
        return str(href).rstrip("/")

    async def _get_json(self, url: str) -> Any:
        try:
            async with self._http().get(url, timeout=self._timeout, headers={"Accept": "application/json"}) as r:
                if r.status != 200:
                    raise AccessUnavailable(f"GET {url} answered {r.status}")
                return await r.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            raise AccessUnavailable(f"GET {url} failed ({type(e).__name__})") from None
