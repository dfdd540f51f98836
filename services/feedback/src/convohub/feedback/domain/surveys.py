"""Survey decisions: whether and how to survey a resolved conversation, what to ask, how a
web link is signed, and when poor feedback asks for a follow-up."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from convohub.contracts.events.feedback import FollowUpTrigger, SurveyDelivery, SurveyKind
from convohub.feedback.domain.settings import TenantFeedback


@dataclass(frozen=True)
class SurveyPlan:
    """A survey to send at `due_at`."""

    kinds: tuple[SurveyKind, ...]
    delivery: SurveyDelivery
    language: str
    text: str | None
    due_at: datetime
    expires_at: datetime


def plan_survey(
    settings: TenantFeedback,
    *,
    channel: str | None,
    language: str | None,
    now: datetime,
    delay_seconds: float | None = None,
) -> SurveyPlan | None:
    """The survey for a conversation on `channel` resolved at `now`, or None when this
    tenant does not survey that channel kind."""
    if not settings.surveys_enabled or channel is None:
        return None
    if channel in settings.channel_message:
        delivery = SurveyDelivery.CHANNEL_MESSAGE
    elif channel in settings.web_link:
        delivery = SurveyDelivery.WEB_LINK
    else:
        return None
    chosen = language or settings.default_language
    texts = settings.texts_for(chosen)
    kinds = tuple(settings.kinds)
    if set(kinds) == {SurveyKind.CSAT, SurveyKind.NPS}:
        question = texts.both
    elif kinds == (SurveyKind.NPS,):
        question = texts.nps
    else:
        question = texts.csat
    due = now + timedelta(
        seconds=settings.delay_seconds if delay_seconds is None else delay_seconds
    )
    return SurveyPlan(
        kinds=kinds,
        delivery=delivery,
        language="zh-CN" if chosen.startswith("zh") else "en",
        text=question if delivery is SurveyDelivery.CHANNEL_MESSAGE else None,
        due_at=due,
        expires_at=due + timedelta(hours=settings.expiry_hours),
    )


def link_token(secret: bytes, tenant_id: str, survey_id: str) -> str:
    """The HMAC-SHA256 token that signs a survey's web link."""
    digest = hmac.new(secret, f"{tenant_id}\n{survey_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_is_valid(secret: bytes, tenant_id: str, survey_id: str, token: str) -> bool:
    """Whether `token` signs this survey (constant-time comparison)."""
    return hmac.compare_digest(link_token(secret, tenant_id, survey_id).encode(), token.encode())


@dataclass(frozen=True)
class FollowUpDecision:
    trigger: FollowUpTrigger
    score: float


def follow_up_for_answer(
    settings: TenantFeedback, *, csat: int | None, nps: int | None, sentiment: float | None
) -> FollowUpDecision | None:
    """Whether an answer (and its comment's sentiment) asks for a follow-up, and why; the
    strongest reason first: a low CSAT, then an NPS detractor, then negative sentiment."""
    rules = settings.follow_up
    if not rules.enabled:
        return None
    if csat is not None and csat <= rules.csat_at_most:
        return FollowUpDecision(FollowUpTrigger.LOW_CSAT, csat)
    if nps is not None and nps <= rules.nps_at_most:
        return FollowUpDecision(FollowUpTrigger.NPS_DETRACTOR, nps)
    if sentiment is not None and sentiment <= rules.sentiment_at_most:
        return FollowUpDecision(FollowUpTrigger.NEGATIVE_SENTIMENT, sentiment)
    return None
