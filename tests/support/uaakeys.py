"""The UAA side of the Cloud Controller double: RSA signing keys, ``/token_keys`` documents, access tokens.

Tokens are shaped as UAA issues them to the cf CLI (password grant, client ``cf``): RS256 with a ``kid``
header, ``iss`` = ``<uaa>/oauth/token``, ``aud`` listing ``cloud_controller``, ``scope`` a list, ``user_id``,
``user_name``, ``cid``/``client_id``, ``exp``/``iat``. Every check can be broken on purpose
(:meth:`UaaKeys.token` overrides), for the 401 tests.
"""
from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CF_SCOPES = ("openid", "uaa.user", "cloud_controller.read", "cloud_controller.write", "password.write",
             "routing.router_groups.read", "network.write", "doppler.firehose", "scim.read")
CF_AUDIENCE = ("cloud_controller", "password", "cf", "uaa", "openid", "doppler", "routing.router_groups", "network")


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey

    def jwk(self) -> dict[str, Any]:
        pub = self.private.public_key()
        nums = pub.public_numbers()
        pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return {"kty": "RSA", "e": _b64(nums.e), "use": "sig", "kid": self.kid, "alg": "RS256", "value": pem,
                "n": _b64(nums.n)}


def new_key(kid: str) -> SigningKey:
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))


@dataclass
class UaaKeys:
    """The keys UAA publishes and signs with; the newest one signs."""

    issuer: str = ""
    published: list[SigningKey] = field(default_factory=lambda: [new_key("key-1")])

    @property
    def current(self) -> SigningKey:
        return self.published[-1]

    def rotate(self, *, keep_old: bool = True) -> SigningKey:
        """A new signing key (UAA's key rotation); the old ones stay published unless ``keep_old`` is False."""
        key = new_key(f"key-{len(self.published) + 1}-{secrets.token_hex(2)}")
        self.published = ([*self.published] if keep_old else []) + [key]
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk() for k in self.published]}

    def token(self, user_id: str, user_name: str, *, scopes: tuple[str, ...] = CF_SCOPES, lifetime: float = 600,
              now: float | None = None, **override: Any) -> str:
        """An access token for a user. ``override``: claim values (None removes the claim), and the special
        ``_key`` (a SigningKey to sign with), ``_kid`` (the header's kid), ``_alg`` ("none" for an unsigned one)."""
        now = time.time() if now is None else now
        key: SigningKey = override.pop("_key", None) or self.current
        kid = override.pop("_kid", key.kid)
        alg = override.pop("_alg", "RS256")
        claims: dict[str, Any] = {
            "jti": secrets.token_hex(16), "sub": user_id, "scope": list(scopes), "client_id": "cf", "cid": "cf",
            "azp": "cf", "grant_type": "password", "user_id": user_id, "origin": "uaa", "user_name": user_name,
            "email": f"{user_name}@example.com", "auth_time": int(now), "rev_sig": secrets.token_hex(4),
            "iat": int(now), "exp": int(now + lifetime), "iss": self.issuer, "zid": "uaa", "aud": list(CF_AUDIENCE)}
        for k, v in override.items():
            if v is None:
                claims.pop(k, None)
            else:
                claims[k] = v
        if alg == "none":
            return jwt.encode(claims, None, algorithm="none", headers={"kid": kid})   # type: ignore[arg-type]
        if alg != "RS256":   # e.g. HS256 with the public key as the secret (the classic confusion attack)
            return jwt.encode(claims, secrets.token_bytes(32), algorithm=alg, headers={"kid": kid})
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": kid})

    def decode(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this UAA signed and that has not expired (what the CC checks), else None."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = next((k for k in self.published if k.kid == kid), None)
            if key is None:
                return None
            claims: dict[str, Any] = jwt.decode(token, key.private.public_key(), algorithms=["RS256"],
                                                audience="cloud_controller", issuer=self.issuer)
            return claims
        except jwt.InvalidTokenError:
            return None
