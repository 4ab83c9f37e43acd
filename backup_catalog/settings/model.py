"""The product's settings read from the environment (names as in DESIGN.md): every command and ``serve`` use
:class:`Settings`; import it as ``backup_catalog.settings.Settings``.

Credentials and the catalog DSN may also come from files, as container secrets are mounted:
``BROKER_PASSWORD_FILE=/run/secrets/broker-password`` (see :mod:`backup_catalog.settings.files`).

One model on pydantic-settings (``BaseSettings``): ``NAME`` in any case from the environment, and a source
of its own for ``NAME_FILE`` (:class:`FileSettingsSource`); keyword arguments win over both (tests, the demo).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from backup_catalog.settings.files import file_values

# the built-in credentials: fine on loopback (a laptop, the demo), refused by `serve` on any other address
DEFAULT_BROKER = ("broker", "broker")
DEFAULT_OPERATOR = ("operator", "operator")


class FileSettingsSource(PydanticBaseSettingsSource):
    """``NAME_FILE`` variables (:data:`backup_catalog.settings.files.FILE_SETTINGS`): the file's content is the value."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False      # unused: __call__ reads every file setting at once

    def __call__(self) -> dict[str, Any]:
        return file_values()


class Settings(BaseSettings):
    """Every setting. :raises pydantic.ValidationError: a value the field refuses (``loc`` is the field's
    name); :raises SettingsFileError: a ``NAME_FILE`` that cannot be used."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    catalog_dsn: SecretStr | None = Field(default=None, description="unset: embedded private cluster")
    s3_endpoint_url: str | None = None
    # what serve logs (issue 23): LOG_LEVEL, and LOG_FORMAT json | text | auto (text on a terminal, else JSON lines)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_default_region: str = "us-east-1"
    s3_verify_tls: bool = True
    s3_ca_bundle: str | None = Field(default=None, description="PEM file of the CA of a private S3 endpoint "
                                     "(TLS verification stays on; unset: the system trust store)")
    s3_max_attempts: int = 5
    s3_connect_timeout_seconds: float = 5.0
    s3_read_timeout_seconds: float = 20.0
    scan_deadline_seconds: float = 300.0
    scan_lease_ttl_seconds: float | None = None   # unset: scan_deadline_seconds + 60 (longer than any scan)
    scan_interval_seconds: int = 300
    full_scan_every: int = 12          # every Nth scheduled scan of an instance is a full reconcile
    scan_lookback_segments: int = 32   # StartAfter lookback for out-of-order async archivers
    # S3 event notifications through SQS (issue 22); unset: polling only, as before
    s3_events_queue_url: str | None = Field(default=None, description="SQS queue URL(s), comma-separated")
    s3_events_max_receives: int = Field(default=5, ge=1, le=1000)   # then the queue's DLQ (redrive policy)
    s3_events_receivers: int = Field(default=2, ge=1, le=32)        # receives in flight per queue
    s3_events_trust_sequencer: bool = True    # false: order per key is not taken from the events' sequencers
                                              # (stores whose sequencers are not ordered per key, e.g. MinIO)
    reconcile_interval_seconds: int = Field(default=86400, ge=1)    # the LIST reconcile, with events on
    # the events consumer's own credentials (deploy/iam/events-consumer.json); unset: AWS_*
    events_aws_access_key_id: SecretStr | None = None
    events_aws_secret_access_key: SecretStr | None = None

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _log_words(cls, v: Any, info: Any) -> Any:   # LOG_LEVEL=info and LOG_FORMAT=JSON are meant as written
        if not isinstance(v, str):
            return v
        return v.upper() if info.field_name == "log_level" else v.lower()

    def event_queue_urls(self) -> list[str]:
        return [u.strip() for u in (self.s3_events_queue_url or "").split(",") if u.strip()]

    broker_username: str = DEFAULT_BROKER[0]
    broker_password: SecretStr = SecretStr(DEFAULT_BROKER[1])
    operator_username: str = DEFAULT_OPERATOR[0]
    operator_password: SecretStr = SecretStr(DEFAULT_OPERATOR[1])
    cf_api_url: str | None = None
    cf_client_id: str | None = None
    cf_client_secret: SecretStr | None = None
    # end users (issue 19): UAA bearer tokens, decided by the Cloud Controller with the user's own token
    uaa_url: str | None = Field(default=None, description="the UAA that issues end users' bearer tokens; unset: "
                                "the CF_API_URL root document's links.uaa (as the cf CLI finds it)")
    user_access_cache_seconds: float = Field(default=60.0, ge=0, le=60, description="how long the Cloud "
                                             "Controller's answer for a (user, space) is reused (at most 60: a "
                                             "removed role stops working within a minute)")
    uaa_keys_refetch_seconds: float = Field(default=30.0, ge=0, description="a token signed by a key not in the "
                                            "cache refetches <uaa>/token_keys at most this often")
    cc_timeout_seconds: float = Field(default=10.0, gt=0, description="timeout of one request to UAA or the Cloud "
                                      "Controller when deciding for an end user (unreachable: 503, never an allow)")
    cf_discovery_bucket: str | None = None     # name sync: instances live under s3://bucket/root/<guid>/
    cf_discovery_root: str = ""
    cf_sync_interval_seconds: int = 300
    scan_cache_backups: int = Field(default=20_000, validation_alias=AliasChoices(
        "scan_cache_backups", "snapshot_cache_backups"), description="the scan cache's tier in each serve "
        "process (usecases.snapshots.ProcessScanCache), in backups held; SNAPSHOT_CACHE_BACKUPS, its former "
        "name, is still read")
    external_url: str | None = Field(default=None, description="where operators reach this service, e.g. "
                                     "https://backup-catalog.example (coverage links in /metrics and alerts); "
                                     "unset: the address Prometheus scraped")
    coverage_warning_rpo_seconds: int = 15 * 60
    coverage_critical_rpo_seconds: int = 60 * 60
    coverage_warning_backup_age_seconds: int = 26 * 3600
    coverage_critical_backup_age_seconds: int = 50 * 3600

    # restore drills (issue 11)
    drill_interval_seconds: int = 24 * 3600      # each live instance drilled about this often (jittered)
    drill_concurrency: int = 1                   # drills at a time per serve process
    drill_scratch_dir: str | None = None         # unset: a temp dir
    drill_scratch_budget_bytes: int = 20 * 2**30 # a drill that would not fit is skipped with a reason
    drill_timeout_seconds: float = 3600.0        # a drill that overruns is killed and recorded failed
    drill_check_query: str = "select count(*) from pg_class"
    drill_history_per_instance: int = 50
    drill_warning_age_seconds: int = 8 * 24 * 3600
    drill_enabled: bool | None = None            # scheduled drills in serve; unset: on when PostgreSQL server
                                                 # binaries are installed (pg_ctl found), off otherwise
    drill_tick_seconds: int = 60                 # how often serve looks for due drills
    drill_lease_ttl_seconds: float = 60.0        # drill lease, renewed every third of it while a drill runs
    drill_verify_checksums: bool = True          # pgBackRest: check the plan's segments against their sha1 names
    # changes (issue 20)
    changes_max_segments: int = Field(default=256, ge=1)   # WAL segments read per changes request at most
    changes_max_transactions: int = Field(default=1000, ge=1)  # transactions listed per changes answer at most
    changes_mass_rows: int = Field(default=1000, ge=0)     # deleting/updating more rows of a relation is destructive
    # undo period and purge (issue 13)
    deleted_retention_days: float = Field(default=30.0, ge=0, allow_inf_nan=False)  # a deleted instance stays clonable this long
    purge_grace_hours: float = Field(default=24.0, ge=0, allow_inf_nan=False)       # between "due" and deletion
    purge_aws_access_key_id: SecretStr | None = None      # the only credentials that ever delete
    purge_aws_secret_access_key: SecretStr | None = None
    purge_interval_seconds: int = Field(default=0, ge=0)   # 0: no scheduled purge runs in serve
    purge_batch_size: int = Field(default=1000, ge=1, le=1000)   # keys per DeleteObjects (S3 allows at most 1,000)
    # the WAL index (issue 20): each archived segment read once for its restore points and commit summary
    wal_index_enabled: bool = True               # serve runs the index job (where the scanner runs)
    wal_index_bytes_per_hour: int = Field(default=8 * 2**30, ge=0)   # decompressed WAL read per replica
    wal_index_interval_seconds: int = Field(default=60, ge=1)        # how often serve indexes what is new
    # executing a clone (issue 10): `restore`, drills
    restore_tools_path: str | None = None        # directories prepended to PATH for the tools (e.g. a venv bin)
    restore_work_dir: str | None = None          # private work dirs (tool config, socket, log); unset: in --pgdata
    restore_fetch_timeout_seconds: float = 4 * 3600.0
    restore_recovery_timeout_seconds: float = 4 * 3600.0
    restore_stop_timeout_seconds: float = 300.0
    restore_stall_seconds: float = 30.0           # a fetch with no progress this long stops (0: never)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # NAME and NAME_FILE together are refused by the file source, so their order does not matter
        return init_settings, env_settings, FileSettingsSource(settings_cls), dotenv_settings, file_secret_settings

    def default_credentials(self) -> list[str]:
        """The roles whose password is still the built-in one."""
        out = []
        if self.broker_password.get_secret_value() == DEFAULT_BROKER[1]:
            out.append("broker")
        if self.operator_password.get_secret_value() == DEFAULT_OPERATOR[1]:
            out.append("operator")
        return out


def load_settings() -> Settings:
    return Settings()
