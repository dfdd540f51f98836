"""Process settings from the environment: the one place in ConvoHub that reads `os.environ`.

Every variable carries the `CONVOHUB_` prefix (`CONVOHUB_MODE`, `CONVOHUB_DATA_DIR`, ...).
Three settings also accept the names the wider ecosystem uses, so a deployment that already
exports them needs nothing extra: `KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL` and the
OpenTelemetry standard `OTEL_EXPORTER_OTLP_ENDPOINT` (the prefixed name wins when both are
set). Nothing else in the code base reads the environment: the `${VAR}` references in
`convohub.yaml` are resolved against `RuntimeSettings.environment()`, passed in explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from pydantic import AliasChoices, Field, PrivateAttr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from convohub.runtime.config import HubConfig, load_config

ENV_PREFIX = "CONVOHUB_"

Mode = Literal["embedded", "distributed"]
LogFormat = Literal["json", "console"]
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class SettingsError(ValueError):
    """The settings do not fit together (for example a mode without what it needs)."""


def _env(name: str, *plain_names: str) -> AliasChoices:
    """Accept `CONVOHUB_<NAME>` first, then the plain names other tools already use."""
    return AliasChoices(f"{ENV_PREFIX}{name.upper()}", *plain_names)


class RuntimeSettings(BaseSettings):
    """What a ConvoHub process needs to know before it starts.

    Build it once at start-up (`RuntimeSettings()` reads the environment) and pass it down;
    keyword arguments override the environment, which is how tests configure it.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        validate_by_name=True,  # keyword arguments by field name work despite the aliases
        validate_by_alias=True,
        extra="ignore",
        frozen=True,
    )

    mode: Mode = Field(
        default="embedded",
        description="embedded: one process, SQLite under data_dir; "
        "distributed: Kafka and PostgreSQL.",
    )
    data_dir: Path = Field(
        default=Path(".convohub"),
        description="Where the embedded mode keeps its SQLite files.",
    )
    config: Path | None = Field(
        default=None,
        description="Path of the declarative convohub.yaml (CONVOHUB_CONFIG or --config).",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=_env("kafka_bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated host:port list of Kafka brokers (distributed mode).",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=_env("database_url", "DATABASE_URL"),
        description="SQLAlchemy URL of the projection database (distributed mode), "
        "e.g. postgresql+asyncpg://user:password@host/db.",
        repr=False,  # it usually carries a password
    )
    service_name: str = Field(
        default="convohub",
        min_length=1,
        description="Names this process in logs, traces and metrics.",
    )
    log_level: str = Field(default="INFO", description="One of " + ", ".join(LOG_LEVELS) + ".")
    log_format: LogFormat = Field(
        default="json", description="json for machines, console for humans."
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=_env("otel_exporter_otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="Base URL of an OTLP/HTTP collector (e.g. http://collector:4318); "
        "no exporter and no network when unset.",
    )
    idle_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="How often an idle embedded consumer and every outbox relay look for "
        "records written by other processes. Writes within the process wake them at once, so "
        "this trades cross-process latency against CPU spent polling an idle hub.",
    )
    max_batch: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most records a consumer applies in one transaction. Larger batches "
        "drain lag faster (fewer commits per event) at the cost of longer transactions and "
        "more work redone when a batch fails.",
    )
    metrics_interval_seconds: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="How often the gauges of /metrics (consumer lag, outbox backlog, "
        "dead-letter queue, queue lengths, SLA clocks) are refreshed; match the scrape "
        "interval.",
    )
    http_host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds.")
    http_port: int = Field(default=8000, ge=0, le=65535, description="Port of the HTTP server.")
    access_log: bool | None = Field(
        default=None,
        description="Log a line per HTTP request. Unset: on for `convohub serve`, off for "
        "`convohub up` (its console and simulator would fill the terminal; the request "
        "histogram on /metrics counts them either way).",
    )

    _environment: Mapping[str, str] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object, /) -> None:
        # One snapshot, taken with the settings, so config interpolation sees the same world.
        self._environment = MappingProxyType(dict(os.environ))

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_log_level(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().upper()
            if value not in LOG_LEVELS:
                raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
        return value

    def environment(self) -> Mapping[str, str]:
        """The process environment as it was when these settings were read (read-only).

        This is what `${VAR}` references in convohub.yaml are resolved against.
        """
        return self._environment

    def check_mode_requirements(self) -> None:
        """Raise `SettingsError` naming every setting the chosen mode needs but lacks.

        The distributed mode needs a Kafka bootstrap list and a database URL; the embedded
        mode needs nothing beyond its defaults.
        """
        if self.mode != "distributed":
            return
        missing = []
        if not self.kafka_bootstrap_servers:
            missing.append("CONVOHUB_KAFKA_BOOTSTRAP_SERVERS (or KAFKA_BOOTSTRAP_SERVERS)")
        if not self.database_url:
            missing.append("CONVOHUB_DATABASE_URL (or DATABASE_URL)")
        if missing:
            raise SettingsError(
                "the distributed mode needs " + " and ".join(missing) + " to be set"
            )

    def load_hub_config(self) -> HubConfig | None:
        """The declarative config named by `config`, interpolated with `environment()`.

        None when no config file is configured; raises `ConfigError` when it is invalid.
        """
        if self.config is None:
            return None
        return load_config(self.config, self.environment())
