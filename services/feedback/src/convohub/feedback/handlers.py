"""The feedback service's projection and the commands it shares with the API.

`ConversationFeedback` reads conversations, routing, SLA and customer events: it folds each
conversation's facts (metrics, BI facts), schedules a survey on resolution, reads survey
answers out of customer replies, analyses customer texts, asks for follow-ups and purges an
erased customer's texts. Everything it emits is derived from the consumed event's id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.contracts import Envelope, caused_by, derived_event_id, new_event
from convohub.contracts.events.conversation import (
    ConversationClosed,
    ConversationReopened,
    ConversationResolved,
    MessageReceived,
)
from convohub.contracts.events.customer import CustomerErased, CustomerIdentified
from convohub.contracts.events.feedback import (
    FeedbackAnalysed,
    FeedbackSourceKind,
    FollowUpRequested,
    SurveyAnswered,
    SurveyAnswerMethod,
    SurveyDelivery,
    SurveyKind,
)
from convohub.contracts.topics import CONVERSATION, CUSTOMER, ROUTING, SLA
from convohub.feedback.adapters import repository
from convohub.feedback.adapters.tables import METADATA, SURVEYS
from convohub.feedback.domain.answers import ParsedAnswer, parse_answer
from convohub.feedback.domain.conversations import ConversationState, facts_of, fold
from convohub.feedback.domain.sentiment import MODEL_NAME, analyse, detect_language
from convohub.feedback.domain.settings import TenantFeedback
from convohub.feedback.domain.surveys import follow_up_for_answer, plan_survey
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.store import UnitOfWork

SOURCE = "/convohub/feedback"


class Emitter:
    """Where handlers put the events they cause (the unit of work's outbox)."""

    def __init__(self, uow: UnitOfWork, traceparent: str | None = None) -> None:
        self.uow = uow
        self.traceparent = traceparent

    def __call__(self, event: Envelope[Any]) -> None:
        self.uow.emit(event, traceparent=self.traceparent)


class ConversationFeedback(Projection):
    name = "feedback.conversations"
    topics = (CONVERSATION.name, ROUTING.name, SLA.name, CUSTOMER.name)
    metadata = METADATA

    def __init__(self, settings: Mapping[str, TenantFeedback]) -> None:
        self.settings = settings
        self._pending: dict[str, Any] = {}

    async def apply(self, events: Sequence[ConsumedEvent], uow: UnitOfWork) -> None:
        connection = uow.connection
        ids = {_conversation_of(c.event) for c in events} - {None}
        states = await repository.load_states(connection, ids)  # type: ignore[arg-type]
        # One query for the batch: surveys awaiting a reply in the conversations it touches.
        self._pending = await repository.pending_surveys(connection, ids)  # type: ignore[arg-type]
        touched: dict[str, ConversationState] = {}
        for consumed in events:
            event = consumed.event
            emit = Emitter(uow, consumed.traceparent)
            if isinstance(event.data, CustomerErased):
                await self._erase(connection, event.data.customer_id, states)
                continue
            conversation_id = _conversation_of(event)
            if conversation_id is None:
                continue
            state = states.get(conversation_id)
            if state is None:
                state = ConversationState(tenant_id=event.tenantid, conversation_id=conversation_id)
                states[conversation_id] = state
            touched[conversation_id] = state
            await self._apply_one(connection, event, state, emit)
        await repository.save_states(connection, list(touched.values()))

    async def _apply_one(
        self,
        connection: AsyncConnection,
        event: Envelope[Any],
        state: ConversationState,
        emit: Emitter,
    ) -> None:
        payload = event.data
        settings = self.settings.get(event.tenantid)
        if isinstance(payload, CustomerIdentified):
            state.customer_id = payload.customer_id
            await repository.attach_customer(connection, state.conversation_id, payload.customer_id)
            return
        awaiting_before = state.awaiting_reply_since
        fold(state, payload)
        if isinstance(payload, MessageReceived) and payload.content.text:
            state.language = state.language or detect_language(payload.content.text)
            if await self._customer_text(connection, event, state, settings, emit):
                # A survey answer is no message awaiting an agent's reply.
                state.awaiting_reply_since = awaiting_before
        elif isinstance(payload, ConversationResolved) and settings is not None:
            await schedule_survey(connection, state, settings, now=payload.resolved_at, cause=event)
        elif isinstance(payload, ConversationReopened):
            await repository.cancel_scheduled(connection, state.conversation_id)
        elif isinstance(payload, ConversationClosed):
            facts = facts_of(state)
            if facts is not None:
                emit(caused_by(event, facts, source=SOURCE, time=payload.closed_at))

    async def _customer_text(
        self,
        connection: AsyncConnection,
        event: Envelope[MessageReceived],
        state: ConversationState,
        settings: TenantFeedback | None,
        emit: Emitter,
    ) -> bool:
        """Read a survey answer or analyse the text; True when it was a survey answer."""
        message = event.data
        text = message.content.text or ""
        pending = self._pending.get(state.conversation_id)
        if pending is not None and pending.delivery == SurveyDelivery.CHANNEL_MESSAGE.value:
            kinds = [SurveyKind(kind) for kind in pending.kinds]
            parsed = parse_answer(text, kinds)
            if parsed is not None and pending.expires_at > message.received_at:
                del self._pending[state.conversation_id]  # one answer per survey
                await record_answer(
                    connection,
                    pending,
                    parsed,
                    raw_answer=text,
                    method=SurveyAnswerMethod.CHANNEL_REPLY,
                    now=message.received_at,
                    cause=event,
                    settings=settings,
                    state=state,
                    emit=emit,
                )
                return True
        analysis = analyse(text)
        state.sentiment_total += analysis.score
        state.sentiment_count += 1
        emit(
            caused_by(
                event,
                FeedbackAnalysed(
                    conversation_id=state.conversation_id,
                    source_kind=FeedbackSourceKind.CUSTOMER_MESSAGE,
                    source_id=message.message_id,
                    sentiment=analysis.sentiment,
                    sentiment_score=analysis.score,
                    categories=list(analysis.categories),
                    language=analysis.language,
                    analysis_model=MODEL_NAME,
                ),
                source=SOURCE,
                time=message.received_at,
            )
        )
        # After resolution a strongly negative message is feedback: close the loop.
        if settings is not None and state.is_resolved:
            decision = follow_up_for_answer(settings, csat=None, nps=None, sentiment=analysis.score)
            if decision is not None:
                await request_follow_up(
                    connection,
                    state,
                    settings,
                    decision,
                    now=message.received_at,
                    cause=event,
                    survey_id=None,
                    emit=emit,
                )
        return False

    async def _erase(
        self, connection: AsyncConnection, customer_id: str, states: dict[str, ConversationState]
    ) -> None:
        ids = await repository.conversations_of_customer(connection, customer_id)
        ids += [s.conversation_id for s in states.values() if s.customer_id == customer_id]
        await repository.erase_customer(connection, customer_id, ids)


def _conversation_of(event: Envelope[Any]) -> str | None:
    if isinstance(event.data, CustomerIdentified):
        return event.data.conversation_id
    value = getattr(event.data, "conversation_id", None)
    if not isinstance(value, str) or value.startswith("queue:"):
        return None  # a customer event, or a queue measurement rather than a conversation
    return value


def survey_id_for(cause_id: str, discriminator: str = "") -> str:
    return "svy-" + derived_event_id(cause_id, "convohub.feedback.survey", discriminator)


async def schedule_survey(
    connection: AsyncConnection,
    state: ConversationState,
    settings: TenantFeedback,
    *,
    now: datetime,
    cause: Envelope[Any] | None = None,
    survey_id: str | None = None,
    follow_up_id: str | None = None,
    correlation_id: str | None = None,
    delay_seconds: float | None = None,
) -> str | None:
    """Store a survey due after the configured delay; its id when one was scheduled."""
    if state.channel_id is None or not state.channel_path:
        return None
    if follow_up_id is None and await repository.has_open_survey(connection, state.conversation_id):
        return None
    plan = plan_survey(
        settings,
        channel=state.channel_path[-1],
        language=state.language,
        now=now,
        delay_seconds=delay_seconds,
    )
    if plan is None:
        return None
    survey_id = survey_id or survey_id_for(cause.id if cause else state.conversation_id)
    await repository.insert_survey(
        connection,
        {
            "survey_id": survey_id,
            "tenant_id": state.tenant_id,
            "conversation_id": state.conversation_id,
            "customer_id": state.customer_id,
            "kinds": [kind.value for kind in plan.kinds],
            "delivery": plan.delivery.value,
            "channel_id": state.channel_id,
            "language": plan.language,
            "text": plan.text,
            "status": "scheduled",
            "due_at": plan.due_at,
            "expires_at": plan.expires_at,
            "follow_up_id": follow_up_id,
            "correlation_id": correlation_id or (cause.correlationid if cause else survey_id),
        },
    )
    return survey_id


async def record_answer(
    connection: AsyncConnection,
    survey: Any,
    parsed: ParsedAnswer,
    *,
    raw_answer: str | None,
    method: SurveyAnswerMethod,
    now: datetime,
    cause: Envelope[Any] | None,
    settings: TenantFeedback | None,
    state: ConversationState | None,
    emit: Emitter,
) -> bool:
    """Store the survey's one answer and emit what follows from it; False when the survey
    was answered (or closed) already."""
    stored = await repository.transition_survey(
        connection,
        survey.survey_id,
        "sent",
        status="answered",
        answered_at=now,
        csat=parsed.csat,
        nps=parsed.nps,
        comment=parsed.comment,
        raw_answer=raw_answer,
    )
    if not stored:
        return False
    answered = SurveyAnswered(
        conversation_id=survey.conversation_id,
        survey_id=survey.survey_id,
        csat=parsed.csat,
        nps=parsed.nps,
        comment=parsed.comment,
        raw_answer=raw_answer,
        answered_via=method,
        answered_at=now,
    )
    emit(_caused(answered, cause, survey, "answered", now))
    if state is not None:
        state.csat = parsed.csat if parsed.csat is not None else state.csat
        state.nps = parsed.nps if parsed.nps is not None else state.nps
    sentiment: float | None = None
    if parsed.comment:
        analysis = analyse(parsed.comment)
        sentiment = analysis.score
        analysed = FeedbackAnalysed(
            conversation_id=survey.conversation_id,
            source_kind=FeedbackSourceKind.SURVEY_ANSWER,
            source_id=survey.survey_id,
            sentiment=analysis.sentiment,
            sentiment_score=analysis.score,
            categories=list(analysis.categories),
            language=analysis.language,
            analysis_model=MODEL_NAME,
        )
        emit(_caused(analysed, cause, survey, "analysed", now))
    if state is not None and state.closed_at is not None:
        # An answer after the close: a new fact record supersedes the earlier one.
        facts = facts_of(state)
        if facts is not None:
            emit(_caused(facts, cause, survey, "facts", now))
    if settings is not None and state is not None:
        decision = follow_up_for_answer(
            settings, csat=parsed.csat, nps=parsed.nps, sentiment=sentiment
        )
        if decision is not None:
            await request_follow_up(
                connection,
                state,
                settings,
                decision,
                now=now,
                cause=cause,
                survey_id=survey.survey_id,
                emit=emit,
                correlation_id=survey.correlation_id,
            )
    return True


def _caused(
    payload: Any, cause: Envelope[Any] | None, survey: Any, what: str, now: datetime
) -> Envelope[Any]:
    if cause is not None:
        return caused_by(cause, payload, source=SOURCE, time=now)
    return new_event(
        payload,
        tenant_id=survey.tenant_id,
        source=SOURCE,
        time=now,
        event_id=derived_event_id(survey.survey_id, payload.event_type, what),
        correlation_id=survey.correlation_id,
    )


async def request_follow_up(
    connection: AsyncConnection,
    state: ConversationState,
    settings: TenantFeedback,
    decision: Any,
    *,
    now: datetime,
    cause: Envelope[Any] | None,
    survey_id: str | None,
    emit: Emitter,
    correlation_id: str | None = None,
) -> str | None:
    """Open a follow-up unless the conversation has one open already."""
    if await repository.open_follow_up(connection, state.conversation_id) is not None:
        return None
    basis = cause.id if cause is not None else f"{survey_id}|{state.conversation_id}"
    follow_up_id = "fup-" + derived_event_id(basis, "convohub.feedback.follow_up")
    correlation = correlation_id or (cause.correlationid if cause else follow_up_id)
    inserted = await repository.insert_follow_up(
        connection,
        {
            "follow_up_id": follow_up_id,
            "tenant_id": state.tenant_id,
            "conversation_id": state.conversation_id,
            "customer_id": state.customer_id,
            "survey_id": survey_id,
            "trigger": decision.trigger.value,
            "trigger_score": float(decision.score),
            "priority": settings.follow_up.priority.value,
            "status": "open",
            "requested_at": now,
            "correlation_id": correlation,
        },
    )
    if not inserted:
        return None
    requested = FollowUpRequested(
        conversation_id=state.conversation_id,
        follow_up_id=follow_up_id,
        trigger=decision.trigger,
        customer_id=state.customer_id,
        trigger_score=float(decision.score),
        requested_at=now,
        priority=settings.follow_up.priority,
    )
    if cause is not None:
        emit(caused_by(cause, requested, source=SOURCE, time=now))
    else:
        emit(
            new_event(
                requested,
                tenant_id=state.tenant_id,
                source=SOURCE,
                time=now,
                event_id=derived_event_id(follow_up_id, requested.event_type),
                correlation_id=correlation,
            )
        )
    return follow_up_id


def resurvey_due(settings: TenantFeedback, now: datetime) -> datetime:
    return now + timedelta(seconds=settings.follow_up.resurvey_delay_seconds)


__all__ = [
    "SURVEYS",
    "ConversationFeedback",
    "Emitter",
    "record_answer",
    "request_follow_up",
    "schedule_survey",
]


# --- the survey loop ----------------------------------------------------------------------


async def send_due_surveys(store: Any, now: datetime, *, limit: int = 200) -> int:
    """Send every survey due by `now` (exactly once each: the status moves from scheduled
    to sent in the transaction that writes SurveySent to the outbox); returns how many."""
    from convohub.contracts.events.feedback import SurveySent

    sent = 0
    async with store.unit_of_work() as uow:
        connection = uow.connection
        for row in await repository.due_surveys(
            connection, "scheduled", SURVEYS.c.due_at, now, limit
        ):
            expires_at = max(row.expires_at, now + (row.expires_at - row.due_at))
            if not await repository.transition_survey(
                connection,
                row.survey_id,
                "scheduled",
                status="sent",
                sent_at=now,
                expires_at=expires_at,
            ):
                continue
            payload = SurveySent(
                conversation_id=row.conversation_id,
                survey_id=row.survey_id,
                kinds=[SurveyKind(kind) for kind in row.kinds],
                delivery=SurveyDelivery(row.delivery),
                channel_id=row.channel_id,
                customer_id=row.customer_id,
                expires_at=expires_at,
                sent_at=now,
                follow_up_id=row.follow_up_id,
                text=row.text,
            )
            uow.emit(
                new_event(
                    payload,
                    tenant_id=row.tenant_id,
                    source=SOURCE,
                    time=now,
                    event_id=derived_event_id(row.survey_id, payload.event_type),
                    correlation_id=row.correlation_id,
                )
            )
            sent += 1
        await uow.commit()
    return sent


async def expire_surveys(store: Any, now: datetime, *, limit: int = 200) -> int:
    """Expire sent surveys past their expiry (exactly once each); returns how many."""
    from convohub.contracts.events.feedback import SurveyExpired

    expired = 0
    async with store.unit_of_work() as uow:
        connection = uow.connection
        for row in await repository.due_surveys(
            connection, "sent", SURVEYS.c.expires_at, now, limit
        ):
            if not await repository.transition_survey(
                connection, row.survey_id, "sent", status="expired"
            ):
                continue
            payload = SurveyExpired(
                conversation_id=row.conversation_id, survey_id=row.survey_id, expired_at=now
            )
            uow.emit(
                new_event(
                    payload,
                    tenant_id=row.tenant_id,
                    source=SOURCE,
                    time=now,
                    event_id=derived_event_id(row.survey_id, payload.event_type),
                    correlation_id=row.correlation_id,
                )
            )
            expired += 1
        await uow.commit()
    return expired
