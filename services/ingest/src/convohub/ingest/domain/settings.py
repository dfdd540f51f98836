"""The ingest side's settings of a channel (`channels[].settings` in convohub.yaml).

Unknown keys are allowed: the outbound side of the same channel keeps its own settings
(SMTP host, provider base URL) in the same mapping.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from convohub.ingest.domain.conversations import DEFAULT_HUMAN_KEYWORDS


class ChannelSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    public_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The URL the provider calls, up to the host (and path prefix), when a "
        "proxy stands between it and ingest; signatures are checked against it.",
    )
    allowed_origins: tuple[str, ...] = Field(
        default=(), description="Web chat: the site origins that may open sessions."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, le=50 * 1_048_576, description="Largest request body."
    )
    rate_per_second: float = Field(
        default=100.0, gt=0, description="Sustained requests a second per API key and channel."
    )
    rate_burst: int = Field(default=200, ge=1, description="Requests allowed in a burst.")
    default_region: str | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="ISO country for phone numbers written without a country code.",
    )
    human_request_keywords: tuple[str, ...] = Field(
        default=DEFAULT_HUMAN_KEYWORDS, description="Short texts that ask for a human agent."
    )
    signature_tolerance_seconds: int = Field(
        default=300, ge=1, description="Mailgun: how old a signed timestamp may be."
    )
    session_ttl_seconds: int = Field(
        default=86_400, ge=60, description="Web chat: how long a session token stays valid."
    )
