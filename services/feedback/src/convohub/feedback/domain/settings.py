"""The feedback section of `convohub.yaml`: per tenant (`tenants[].feedback`) and service-wide
(top-level `feedback`). Validated at start by `tenant_sections` / `service_section`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from convohub.contracts.events.common import Channel, Priority
from convohub.contracts.events.feedback import SurveyKind

Language = Literal["en", "zh"]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SurveyTexts(_Section):
    """What the customer reads, in one language. `{link}` is replaced by the web link."""

    csat: str = Field(description="The CSAT question (1-5) sent in the channel.")
    nps: str = Field(description="The NPS question (0-10) sent in the channel.")
    both: str = Field(description="The question when CSAT and NPS are asked together.")


DEFAULT_TEXTS: dict[str, SurveyTexts] = {
    "en": SurveyTexts(
        csat="How satisfied are you with our service? Reply with a number from 1 (very "
        "unsatisfied) to 5 (very satisfied), and add a comment if you like.",
        nps="How likely are you to recommend us to a friend? Reply with a number from 0 (not "
        "at all) to 10 (extremely likely).",
        both="How satisfied are you with our service (1-5), and how likely are you to "
        "recommend us (0-10)? Reply with both numbers, e.g. '5 9'.",
    ),
    "zh": SurveyTexts(
        csat="您对本次服务满意吗？请回复 1（非常不满意）到 5（非常满意）的数字，"
        "也欢迎留下您的意见。",
        nps="您有多大可能向朋友推荐我们？请回复 0（完全不可能）到 10（非常可能）的数字。",
        both="您对本次服务的满意度（1-5）以及向朋友推荐我们的可能性（0-10）是多少？"
        "请回复两个数字，例如“5 9”。",
    ),
}


class FollowUpSettings(_Section):
    """When poor feedback asks for a person to contact the customer."""

    enabled: bool = True
    csat_at_most: int = Field(default=2, ge=1, le=5, description="CSAT at or below: follow up.")
    nps_at_most: int = Field(default=6, ge=0, le=10, description="NPS detractors: 0 to this.")
    sentiment_at_most: float = Field(
        default=-0.6, ge=-1, le=1, description="Sentiment score at or below: follow up."
    )
    priority: Priority = Priority.P2
    resurvey_delay_seconds: float = Field(
        default=86400, ge=0, description="Delay of the re-survey after a follow-up is closed."
    )


class MetricsSettings(_Section):
    """Parameters of the service metrics."""

    service_level_seconds: int = Field(
        default=20, ge=1, description="Answer-time threshold of the service level."
    )
    fcr_window_days: float = Field(
        default=7,
        gt=0,
        description="First-contact resolution: no reopen, transfer or repeat "
        "contact within this many days.",
    )
    repeat_contact_window_days: float = Field(
        default=7,
        gt=0,
        description="A new conversation of the same customer within this many "
        "days of the previous one's start is a repeat contact.",
    )


class TenantFeedback(_Section):
    """One tenant's `feedback:` section."""

    surveys_enabled: bool = True
    kinds: tuple[SurveyKind, ...] = Field(default=(SurveyKind.CSAT,), min_length=1)
    delay_seconds: float = Field(default=300, ge=0, description="After resolution.")
    expiry_hours: float = Field(default=72, gt=0, description="Answers accepted this long.")
    channel_message: tuple[Channel, ...] = Field(
        default=(Channel.WEB_CHAT, Channel.WHATSAPP, Channel.SMS, Channel.SOCIAL, Channel.API),
        description="Channel kinds surveyed with a message in the conversation's channel.",
    )
    web_link: tuple[Channel, ...] = Field(
        default=(Channel.EMAIL, Channel.VOICE),
        description="Channel kinds surveyed with a signed web link; others get no survey.",
    )
    default_language: Language = "en"
    texts: dict[Language, SurveyTexts] = Field(default_factory=dict)
    public_base_url: str = Field(
        default="http://localhost:8000", description="Where the web links point."
    )
    follow_up: FollowUpSettings = FollowUpSettings()
    metrics: MetricsSettings = MetricsSettings()

    @model_validator(mode="after")
    def _channel_rules_do_not_overlap(self) -> TenantFeedback:
        both = set(self.channel_message) & set(self.web_link)
        if both:
            names = ", ".join(sorted(both))
            raise ValueError(f"channel kinds in both channel_message and web_link: {names}")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError("kinds lists a survey kind twice")
        return self

    def texts_for(self, language: str) -> SurveyTexts:
        chosen: Language = "zh" if language.startswith("zh") else "en"
        return self.texts.get(chosen) or DEFAULT_TEXTS[chosen]


class ServiceFeedback(_Section):
    """The top-level, service-wide `feedback:` section."""

    poll_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often due surveys are sent and old ones expired."
    )
    link_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key of survey links; when absent one is generated and kept in the "
        "service's database.",
    )
