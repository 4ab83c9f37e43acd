"""What the adapters read of the settings, as protocols (no I/O, no values): a secret, and where S3 is and how
to reach it. The product's Settings satisfy them; each adapter extends them with what only it reads
(``scheduler.clients.S3Settings``, ``executor.config.RestoreConfig``, ``catalog.connect.CatalogConfig``)."""
from __future__ import annotations

from typing import Protocol


class Secret(Protocol):
    def get_secret_value(self) -> str: ...


class S3Access(Protocol):
    """AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, S3_ENDPOINT_URL, S3_VERIFY_TLS, S3_CA_BUNDLE."""

    @property
    def s3_endpoint_url(self) -> str | None: ...
    @property
    def aws_access_key_id(self) -> Secret | None: ...
    @property
    def aws_secret_access_key(self) -> Secret | None: ...
    @property
    def aws_default_region(self) -> str: ...
    @property
    def s3_verify_tls(self) -> bool: ...
    @property
    def s3_ca_bundle(self) -> str | None: ...
