"""Survey planning, link tokens and follow-up decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from convohub.contracts.events.feedback import FollowUpTrigger, SurveyDelivery, SurveyKind
from convohub.feedback.domain.settings import FollowUpSettings, TenantFeedback
from convohub.feedback.domain.surveys import (
    follow_up_for_answer,
    link_token,
    plan_survey,
    token_is_valid,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_channel_rules_decide_the_delivery() -> None:
    settings = TenantFeedback(kinds=(SurveyKind.CSAT, SurveyKind.NPS), delay_seconds=60)
    chat = plan_survey(settings, channel="whatsapp", language="zh-CN", now=NOW)
    assert chat is not None
    assert chat.delivery is SurveyDelivery.CHANNEL_MESSAGE
    assert chat.text is not None
    assert "0-10" in chat.text
    assert "满意" in chat.text
    assert (chat.due_at, chat.expires_at) == (
        NOW + timedelta(seconds=60),
        NOW + timedelta(hours=72, seconds=60),
    )
    mail = plan_survey(settings, channel="email", language=None, now=NOW)
    assert mail is not None
    assert (mail.delivery, mail.text, mail.language) == (SurveyDelivery.WEB_LINK, None, "en")
    narrow = TenantFeedback(channel_message=("web_chat",), web_link=())
    assert plan_survey(narrow, channel="sms", language=None, now=NOW) is None
    assert (
        plan_survey(TenantFeedback(surveys_enabled=False), channel="sms", language=None, now=NOW)
        is None
    )


def test_link_tokens_sign_tenant_and_survey() -> None:
    token = link_token(b"k" * 32, "acme", "svy-1")
    assert token_is_valid(b"k" * 32, "acme", "svy-1", token)
    assert not token_is_valid(b"k" * 32, "globex", "svy-1", token)
    assert not token_is_valid(b"k" * 32, "acme", "svy-2", token)
    assert not token_is_valid(b"x" * 32, "acme", "svy-1", token)


def test_follow_up_thresholds() -> None:
    settings = TenantFeedback()
    decide = follow_up_for_answer
    assert decide(settings, csat=2, nps=None, sentiment=None).trigger is FollowUpTrigger.LOW_CSAT  # type: ignore[union-attr]
    assert decide(settings, csat=3, nps=None, sentiment=None) is None
    assert (
        decide(settings, csat=None, nps=6, sentiment=None).trigger is FollowUpTrigger.NPS_DETRACTOR
    )  # type: ignore[union-attr]
    assert decide(settings, csat=None, nps=7, sentiment=None) is None
    strongly_negative = decide(settings, csat=4, nps=9, sentiment=-0.8)
    assert strongly_negative is not None
    assert (strongly_negative.trigger, strongly_negative.score) == (
        FollowUpTrigger.NEGATIVE_SENTIMENT,
        -0.8,
    )
    assert decide(settings, csat=4, nps=9, sentiment=-0.5) is None
    off = TenantFeedback(follow_up=FollowUpSettings(enabled=False))
    assert decide(off, csat=1, nps=0, sentiment=-1) is None
