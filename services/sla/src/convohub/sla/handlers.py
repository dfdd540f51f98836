"""Event handlers of the sla service: event in, domain call, unit of work.

`ClockProjection` folds conversation, routing and customer events into each conversation's
SLA clocks (`domain.clocks`), publishes clock started/paused/resumed/met, and keeps the
clocks' timer rows (due time, warning N / breach / escalation step) in step.

`TimerLoop` claims due timer rows and publishes the warning, breach or escalation in the
same transaction that marks the row fired, with an id derived from the timer, so a timer
fires exactly once across restarts and replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.contracts import Envelope, caused_by, new_event
from convohub.contracts.envelope import derived_event_id
from convohub.contracts.events.common import Channel, ParticipantKind
from convohub.contracts.events.conversation import (
    CallAnswered,
    CallStarted,
    ConversationClosed,
    ConversationCloseReason,
    ConversationReopened,
    ConversationResolved,
    ConversationStarted,
    MessageReceived,
    MessageSent,
    PriorityChanged,
)
from convohub.contracts.events.customer import (
    CustomerErased,
    CustomerIdentified,
    CustomerSegmentEntered,
    CustomerSegmentLeft,
)
from convohub.contracts.events.routing import (
    ConversationAssigned,
    ConversationClassified,
    ConversationTransferred,
)
from convohub.contracts.events.sla import (
    SlaBreached,
    SlaClockPaused,
    SlaClockResumed,
    SlaClockStarted,
    SlaEscalated,
    SlaEscalationAction,
    SlaMet,
    SlaMetric,
    SlaPauseReason,
    SlaWarning,
)
from convohub.contracts.topics import CONVERSATION, CUSTOMER, ROUTING
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.service import Clock as TimeSource
from convohub.runtime.store import ProjectionStore, UnitOfWork
from convohub.sla.adapters import repository
from convohub.sla.adapters.tables import ANSWERS, PROJECTION_METADATA, TIMERS
from convohub.sla.domain.clocks import (
    ChangeKind,
    ConversationSla,
    Fact,
    FactKind,
    planned_timers,
)
from convohub.sla.domain.policies import SlaSection

log = structlog.get_logger(__name__)

SOURCE = "/convohub/sla"
EMPTY_SECTION = SlaSection()


def _seconds(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds()))


def fact_of(event: Envelope[Any]) -> Fact | None:
    """The fact an event tells the clocks, or None when it tells them nothing."""
    data = event.data
    common = {"event_id": event.id}
    match data:
        case ConversationStarted():
            return Fact(kind=FactKind.STARTED, at=data.started_at, channel=data.channel, **common)
        case CallStarted():
            return Fact(kind=FactKind.STARTED, at=data.started_at, channel=Channel.VOICE, **common)
        case MessageReceived():
            return Fact(
                kind=FactKind.CUSTOMER_MESSAGE,
                at=data.received_at,
                channel=data.channel,
                message_id=data.message_id,
                **common,
            )
        case MessageSent() if data.author.kind is ParticipantKind.AGENT:
            return Fact(kind=FactKind.AGENT_REPLY, at=data.sent_at, **common)
        case CallAnswered() if data.agent_id is not None:
            return Fact(kind=FactKind.AGENT_REPLY, at=data.answered_at, **common)
        case ConversationResolved():
            return Fact(kind=FactKind.RESOLVED, at=data.resolved_at, **common)
        case ConversationReopened():
            return Fact(kind=FactKind.REOPENED, at=data.reopened_at, **common)
        case ConversationClosed():
            return Fact(kind=FactKind.CLOSED, at=data.closed_at, **common)
        case PriorityChanged():
            return Fact(
                kind=FactKind.PRIORITY_CHANGED,
                at=data.changed_at,
                priority=data.to_priority,
                **common,
            )
        case ConversationClassified():
            return Fact(
                kind=FactKind.CLASSIFIED,
                at=data.classified_at,
                priority=data.priority,
                skill_group=data.skill_group,
                **common,
            )
        case ConversationTransferred() if data.to_skill_group:
            return Fact(
                kind=FactKind.SKILL_GROUP_CHANGED,
                at=data.transferred_at,
                skill_group=data.to_skill_group,
                **common,
            )
    return None


# -- events ---------------------------------------------------------------------------------


def clock_event(
    cause: Envelope[Any],
    kind: ChangeKind,
    state: ConversationSla,
    clock: Any,
    at: datetime,
    elapsed: timedelta,
) -> Envelope[Any] | None:
    common = {
        "conversation_id": state.conversation_id,
        "policy_id": clock.policy_id,
        "metric": clock.metric,
        "target_seconds": clock.target_seconds,
        "due_at": clock.due_at,
    }
    payload: Any
    if kind in (ChangeKind.STARTED, ChangeKind.RETARGETED):
        payload = SlaClockStarted(**common, started_at=clock.started_at)
    elif kind is ChangeKind.PAUSED:
        payload = SlaClockPaused(
            **common,
            reason=clock.pause_reason or SlaPauseReason.WAITING_ON_CUSTOMER,
            elapsed_business_seconds=_seconds(elapsed),
            paused_at=at,
        )
    elif kind is ChangeKind.RESUMED:
        payload = SlaClockResumed(**common, resumed_at=at)
    elif kind is ChangeKind.MET:
        payload = SlaMet(**common, elapsed_business_seconds=_seconds(elapsed), met_at=at)
    else:
        return None  # a stopped clock (resolved before a reply, closed) has no event of its own
    return caused_by(cause, payload, source=SOURCE, time=at, discriminator=clock.clock_id)


def timer_event(row: Row[Any], now: datetime, section: SlaSection) -> Envelope[Any]:
    """The warning, breach or escalation a timer row stands for; its id derives from the
    timer, so whoever fires it (loop or projection, any replica, any retry) emits the same."""
    due_at = repository.as_utc(row.due_at) or now
    policy = section.policy(row.policy_id)
    calendar = section.calendar_of(policy)
    late = calendar.elapsed(due_at, now)
    elapsed = timedelta(seconds=row.offset_seconds) + late
    target = timedelta(seconds=row.target_seconds)
    common = {
        "conversation_id": row.conversation_id,
        "policy_id": row.policy_id,
        "metric": SlaMetric(row.metric),
        "target_seconds": row.target_seconds,
        "due_at": repository.as_utc(row.clock_due_at),
    }
    payload: Any
    if row.kind == "warning":
        payload = SlaWarning(
            **common,
            threshold_percent=row.threshold_percent,
            remaining_seconds=_seconds(target - elapsed),
            elapsed_business_seconds=_seconds(elapsed),
            warned_at=now,
        )
    elif row.kind == "breach":
        payload = SlaBreached(**common, overdue_seconds=_seconds(late), breached_at=now)
    else:
        payload = SlaEscalated(
            **common,
            step=row.step,
            action=SlaEscalationAction(row.action),
            target_id=row.target_id,
            escalated_at=now,
        )
    event = new_event(
        payload,
        tenant_id=row.tenant_id,
        source=SOURCE,
        time=now,
        event_id=derived_event_id(row.timer_id, payload.event_type),
        correlation_id=row.correlation_id,
    )
    return event.model_copy(update={"causationid": row.cause_event_id})


# -- the projection -------------------------------------------------------------------------


class ClockProjection(Projection):
    """Conversation, routing and customer events -> clocks, clock events and timer rows."""

    name = "sla.clocks"
    topics = (CONVERSATION.name, ROUTING.name, CUSTOMER.name)
    metadata = PROJECTION_METADATA

    def __init__(self, sections: dict[str, SlaSection]) -> None:
        self.sections = sections

    def section(self, tenant_id: str) -> SlaSection:
        return self.sections.get(tenant_id, EMPTY_SECTION)

    async def apply(self, events: Sequence[ConsumedEvent], uow: UnitOfWork) -> None:
        states = _BatchStates()
        for consumed in events:
            await self._apply_one(consumed, uow, states)
        await states.save(uow.connection)

    async def _apply_one(
        self, consumed: ConsumedEvent, uow: UnitOfWork, states: _BatchStates
    ) -> None:
        event = consumed.event
        data = event.data
        connection = uow.connection
        tenant = event.tenantid
        if isinstance(data, CustomerErased):
            await repository.forget_customer(connection, tenant, data.customer_id)
            return
        if isinstance(data, CustomerIdentified):
            if data.conversation_id and await repository.link_customer(
                connection, tenant, data.customer_id, data.conversation_id
            ):
                await self._segments_changed(consumed, uow, states, [data.conversation_id])
            return
        if isinstance(data, CustomerSegmentEntered | CustomerSegmentLeft):
            member = isinstance(data, CustomerSegmentEntered)
            await repository.set_segment(
                connection, tenant, data.customer_id, data.segment_id, member
            )
            conversations = await repository.conversations_of_customer(
                connection, tenant, data.customer_id
            )
            await self._segments_changed(consumed, uow, states, conversations)
            return
        if isinstance(data, ConversationClassified):
            await self._record_queue(
                connection, tenant, data.conversation_id, skill_group=data.skill_group
            )
        if isinstance(data, ConversationAssigned):
            await self._record_queue(
                connection, tenant, data.conversation_id, skill_group=data.skill_group
            )
        fact = fact_of(event)
        if fact is None:
            return
        extra: list[Fact] = []
        if isinstance(data, ConversationClassified) and data.vip:
            segments = await repository.segments_of_conversation(
                connection, tenant, data.conversation_id
            )
            extra.append(
                Fact(
                    kind=FactKind.SEGMENTS_CHANGED,
                    at=fact.at,
                    event_id=f"{event.id}#vip",
                    segments=(*segments, "vip"),
                )
            )
        await self._apply_facts(consumed, uow, states, data.conversation_id, [fact, *extra])

    async def _segments_changed(
        self,
        consumed: ConsumedEvent,
        uow: UnitOfWork,
        states: _BatchStates,
        conversation_ids: Sequence[str],
    ) -> None:
        tenant = consumed.event.tenantid
        at = consumed.event.time
        for conversation_id in conversation_ids:
            segments = await repository.segments_of_conversation(
                uow.connection, tenant, conversation_id
            )
            fact = Fact(
                kind=FactKind.SEGMENTS_CHANGED,
                at=at,
                event_id=f"{consumed.event.id}#{conversation_id}",
                segments=segments,
            )
            await self._apply_facts(consumed, uow, states, conversation_id, [fact], create=False)

    async def _apply_facts(
        self,
        consumed: ConsumedEvent,
        uow: UnitOfWork,
        states: _BatchStates,
        conversation_id: str,
        facts: Sequence[Fact],
        *,
        create: bool = True,
    ) -> None:
        event = consumed.event
        tenant = event.tenantid
        connection = uow.connection
        section = self.section(tenant)
        state = await states.load(connection, tenant, conversation_id)
        exists = state is not None
        if state is None:
            if not create:
                return
            state = ConversationSla(tenant_id=tenant, conversation_id=conversation_id)
            # the customer may have been identified (and segmented) before the conversation
            state.segments = await repository.segments_of_conversation(
                connection, tenant, conversation_id
            )
            states.created(state)
        changes = []
        for fact in facts:
            changes += state.apply(fact, section)
        for change in changes:
            clock = change.clock
            calendar = section.calendar_of(section.policy(clock.policy_id))
            if change.kind in (ChangeKind.MET, ChangeKind.STOPPED, ChangeKind.PAUSED):
                # What fell due before the clock stopped still fires (exactly once).
                await fire_due_timers_of_clock(uow, clock.clock_id, change.at, section)
            out = clock_event(
                event, change.kind, state, clock, change.at, clock.elapsed(change.at, calendar)
            )
            if out is not None:
                uow.emit(out, traceparent=consumed.traceparent)
            await repository.save_clock(connection, state, clock)
            timers = planned_timers(clock, section.policy(clock.policy_id), calendar)
            await repository.replace_timers(
                connection, state, clock, timers, correlation_id=event.correlationid
            )
            if change.kind is ChangeKind.MET and clock.metric is SlaMetric.FIRST_RESPONSE:
                await self._record_answer(connection, state, change.at)
        if any(fact.kind is FactKind.STARTED for fact in facts) or (not exists and state.started):
            await self._record_start(connection, state)
        if any(fact.kind is FactKind.CLOSED for fact in facts):
            await self._record_abandon(connection, state, facts, event)

    # -- queue service level inputs -----------------------------------------------------------

    async def _record_start(self, connection: AsyncConnection, state: ConversationSla) -> None:
        started = next((f.at for f in state.facts if f.kind is FactKind.STARTED), None)
        if started is None:
            return
        exists = await connection.scalar(
            select(ANSWERS.c.conversation_id).where(
                ANSWERS.c.tenant_id == state.tenant_id,
                ANSWERS.c.conversation_id == state.conversation_id,
            )
        )
        if exists is None:
            await connection.execute(
                insert(ANSWERS).values(
                    tenant_id=state.tenant_id,
                    conversation_id=state.conversation_id,
                    skill_group=state.skill_group,
                    channel=state.channel and state.channel.value,
                    started_at=started.astimezone(UTC),
                )
            )

    async def _record_queue(
        self, connection: AsyncConnection, tenant: str, conversation_id: str, *, skill_group: str
    ) -> None:
        await connection.execute(
            update(ANSWERS)
            .where(ANSWERS.c.tenant_id == tenant, ANSWERS.c.conversation_id == conversation_id)
            .values(skill_group=skill_group)
        )

    async def _record_answer(
        self, connection: AsyncConnection, state: ConversationSla, at: datetime
    ) -> None:
        await self._record_start(connection, state)
        started = next((f.at for f in state.facts if f.kind is FactKind.STARTED), at)
        await connection.execute(
            update(ANSWERS)
            .where(
                ANSWERS.c.tenant_id == state.tenant_id,
                ANSWERS.c.conversation_id == state.conversation_id,
                ANSWERS.c.answered_at.is_(None),
                ANSWERS.c.abandoned_at.is_(None),
            )
            .values(
                answered_at=at.astimezone(UTC),
                wait_seconds=max(0.0, (at - started).total_seconds()),
                skill_group=state.skill_group,
                channel=state.channel and state.channel.value,
            )
        )

    async def _record_abandon(
        self,
        connection: AsyncConnection,
        state: ConversationSla,
        facts: Sequence[Fact],
        event: Envelope[Any],
    ) -> None:
        data = event.data
        if not isinstance(data, ConversationClosed) or data.reason is not (
            ConversationCloseReason.ABANDONED
        ):
            return
        await connection.execute(
            update(ANSWERS)
            .where(
                ANSWERS.c.tenant_id == state.tenant_id,
                ANSWERS.c.conversation_id == state.conversation_id,
                ANSWERS.c.answered_at.is_(None),
            )
            .values(abandoned_at=data.closed_at.astimezone(UTC))
        )


class _BatchStates:
    """The conversations a batch touches, loaded (and locked) once and saved once when the
    batch ends, however many of its events concern them."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], ConversationSla] = {}
        self._stored: set[tuple[str, str]] = set()

    async def load(
        self, connection: AsyncConnection, tenant_id: str, conversation_id: str
    ) -> ConversationSla | None:
        key = (tenant_id, conversation_id)
        if key not in self._states:
            state = await repository.load_conversation(
                connection, tenant_id, conversation_id, lock=True
            )
            if state is None:
                return None
            self._states[key] = state
            self._stored.add(key)
        return self._states[key]

    def created(self, state: ConversationSla) -> None:
        self._states[(state.tenant_id, state.conversation_id)] = state

    async def save(self, connection: AsyncConnection) -> None:
        for key, state in self._states.items():
            await repository.save_conversation(connection, state, exists=key in self._stored)


async def fire_due_timers_of_clock(
    uow: UnitOfWork, clock_id: str, at: datetime, section: SlaSection
) -> None:
    rows = await repository.due_timers_of_clock(uow.connection, clock_id, at)
    for row in rows:
        uow.emit(timer_event(row, max(at, repository.as_utc(row.due_at) or at), section))
    await repository.mark_fired(uow.connection, [row.timer_id for row in rows], at)


# -- policy changes -------------------------------------------------------------------------


def section_digest(section: SlaSection) -> str:
    import hashlib

    return hashlib.sha256(section.model_dump_json().encode()).hexdigest()


async def recompute_after_policy_change(
    store: ProjectionStore, tenant_id: str, section: SlaSection, *, batch: int = 200
) -> int:
    """When the tenant's `sla:` section changed since the last start, recompute every open
    conversation's clocks from its facts under the new policies (timers re-armed; a timer
    key that fired stays fired). Returns how many conversations were recomputed."""
    digest = section_digest(section)
    async with store.reader.connect() as connection:
        if await repository.policy_digest(connection, tenant_id) == digest:
            return 0
        conversation_ids = await repository.open_conversations(connection, tenant_id)
    for start in range(0, len(conversation_ids), batch):
        async with store.unit_of_work() as uow:
            for conversation_id in conversation_ids[start : start + batch]:
                await recompute_conversation(uow, tenant_id, conversation_id, section)
            await uow.commit()
    async with store.unit_of_work() as uow:
        await repository.save_policy_digest(uow.connection, tenant_id, digest)
        await uow.commit()
    if conversation_ids:
        log.info("sla clocks recomputed", tenant=tenant_id, conversations=len(conversation_ids))
    return len(conversation_ids)


async def recompute_conversation(
    uow: UnitOfWork, tenant_id: str, conversation_id: str, section: SlaSection
) -> None:
    connection = uow.connection
    old = await repository.load_conversation(connection, tenant_id, conversation_id, lock=True)
    if old is None:
        return
    new = ConversationSla.recompute(tenant_id, conversation_id, list(old.facts), section)
    await repository.save_conversation(connection, new, exists=True)
    correlation = old.facts[0].event_id if old.facts else conversation_id
    for clock in new.clocks.values():
        calendar = section.calendar_of(section.policy(clock.policy_id))
        await repository.save_clock(connection, new, clock)
        timers = planned_timers(clock, section.policy(clock.policy_id), calendar)
        await repository.replace_timers(connection, new, clock, timers, correlation_id=correlation)
    for metric, clock in old.clocks.items():
        if metric not in new.clocks:  # no policy covers it any more
            await repository.replace_timers(connection, old, clock, [], correlation_id=correlation)
            await repository.delete_clock(connection, clock.clock_id)


# -- the timer loop -------------------------------------------------------------------------


class TimerLoop:
    """Claims due timers in batches and fires them; sleeps until the next due time, at most
    `poll_interval` (a timer written meanwhile is seen at the next poll)."""

    def __init__(
        self,
        store_of: Any,
        clock_of: Any,
        sections: dict[str, SlaSection],
        *,
        batch_size: int = 500,
        poll_interval: float = 0.2,
    ) -> None:
        self._store_of = store_of
        self._clock_of = clock_of
        self.sections = sections
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.fired = 0
        self.on_fired: Callable[[Sequence[Any]], None] | None = None
        """Called with the timer rows of each committed batch (the fired-timers counter)."""

    async def fire_due(self) -> int:
        """Fire every timer due now; returns how many fired."""
        store: ProjectionStore = self._store_of()
        clock: TimeSource = self._clock_of()
        total = 0
        while True:
            now = clock.now()
            async with store.unit_of_work() as uow:
                rows = await repository.claim_due_timers(uow.connection, now, self.batch_size)
                for row in rows:
                    section = self.sections.get(row.tenant_id, EMPTY_SECTION)
                    uow.emit(timer_event(row, now, section))
                await repository.mark_fired(uow.connection, [row.timer_id for row in rows], now)
                await uow.commit()
            total += len(rows)
            self.fired += len(rows)
            if rows and self.on_fired is not None:
                self.on_fired(rows)
            if len(rows) < self.batch_size:
                return total

    async def run(self) -> None:
        while True:
            await self.fire_due()
            await asyncio.sleep(await self._pause())

    async def _pause(self) -> float:
        store: ProjectionStore = self._store_of()
        async with store.reader.connect() as connection:
            due = await repository.next_due_at(connection)
        if due is None:
            return self.poll_interval
        wait = (due - self._clock_of().now()).total_seconds()
        return min(self.poll_interval, max(0.0, wait))


async def timers_fired(connection: AsyncConnection) -> int:
    """How many timers have fired (for tests and metrics)."""
    from sqlalchemy import func

    query = select(func.count()).select_from(TIMERS).where(TIMERS.c.fired_at.is_not(None))
    return int(await connection.scalar(query) or 0)
