"""What executing a plan reads of the settings: the S3 access of the fetch tools (AWS_*, S3_*) and the
RESTORE_* limits and paths. The product's Settings provide it; the executor never imports them."""
from __future__ import annotations

from typing import Protocol

from recovery.config import S3Access


class RestoreConfig(S3Access, Protocol):
    @property
    def restore_tools_path(self) -> str | None: ...
    @property
    def restore_work_dir(self) -> str | None: ...
    @property
    def restore_fetch_timeout_seconds(self) -> float: ...
    @property
    def restore_recovery_timeout_seconds(self) -> float: ...
    @property
    def restore_stop_timeout_seconds(self) -> float: ...
    @property
    def restore_stall_seconds(self) -> float: ...
    @property
    def s3_connect_timeout_seconds(self) -> float: ...
