"""The router's workflow (commands over one unit of work) and its projection of the log.

Every write goes through `Workflow`: the projection for consumed events, the API for agent
commands, the background loop for expiry, heartbeats and widening. A unit of work first takes
the router locks of the tenants it works for (PostgreSQL), then changes state with conditional
updates and emits the facts through the outbox in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from convohub.contracts import Envelope, caused_by, new_event
from convohub.contracts.events.agent import (
    AgentPresenceChanged,
    AgentProfileChanged,
    AgentRegistered,
    Presence,
    PresenceChangeReason,
)
from convohub.contracts.events.common import AgentTier, Channel, Priority
from convohub.contracts.events.conversation import (
    CallStarted,
    ConversationClosed,
    ConversationReopened,
    ConversationResolved,
    ConversationStarted,
    HumanRequested,
    MessageReceived,
)
from convohub.contracts.events.customer import (
    CustomerErased,
    CustomerIdentified,
    CustomerSegmentEntered,
    CustomerSegmentLeft,
)
from convohub.contracts.events.feedback import FollowUpRequested
from convohub.contracts.events.routing import (
    AssignmentExplanation,
    AssignmentStrategy,
    ClassificationRuleMatch,
    ConversationAssigned,
    ConversationClassified,
    ConversationEscalated,
    ConversationEscalationReason,
    ConversationEscalationTarget,
    ConversationOffered,
    ConversationQueued,
    ConversationTransferred,
    OfferAccepted,
    OfferDeclined,
    OfferDeclineReason,
    OfferExpired,
    RoutingCandidate,
    TransferReason,
)
from convohub.contracts.events.sla import SlaEscalated, SlaEscalationAction
from convohub.contracts.payload import EventPayload
from convohub.contracts.topics import AGENT, CONVERSATION, CUSTOMER, FEEDBACK, SLA
from convohub.router.adapters import repository as repo
from convohub.router.adapters.roster import rosters_of
from convohub.router.adapters.tables import METADATA
from convohub.router.domain.assignment import (
    Decision,
    choose_agent,
    estimated_wait_seconds,
    queue_key,
)
from convohub.router.domain.classification import Contact, classify, raised
from convohub.router.domain.config import (
    SUPERVISOR_GROUP,
    Escalation,
    OfferMode,
    RoutingConfig,
    Strategy,
)
from convohub.runtime.projection import ConsumedEvent, Projection
from convohub.runtime.store import UnitOfWork

SOURCE = "convohub://router"
POSITION_UPDATES_UP_TO = 50
"""Queue position updates are published for the first positions only (and on entry)."""


class CommandRefused(Exception):
    """A command that cannot be carried out: `status`, `code`, `detail` for the API."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass
class Workflow:
    """One unit of work's worth of routing, for one tenant at a time."""

    uow: UnitOfWork
    configs: Mapping[str, RoutingConfig]
    now: datetime
    cause: Envelope[Any] | None = None
    traceparent: str | None = None
    emitted: int = 0
    dirty: set[str] = field(default_factory=set)
    """Tenants whose queues must be re-evaluated before commit."""
    locked: set[str] = field(default_factory=set)
    """Tenants whose router lock this transaction holds."""

    async def lock(self, *tenant_ids: str) -> None:
        """Hold the tenants' router locks until commit (callers take every tenant they know
        of at the start, in one call, so that the lock order is the same everywhere)."""
        wanted = set(tenant_ids) - self.locked
        if wanted:
            await repo.lock_tenants(self.connection, wanted)
            self.locked |= wanted

    @property
    def connection(self) -> Any:
        return self.uow.connection

    def config(self, tenant_id: str) -> RoutingConfig:
        return self.configs.get(tenant_id) or RoutingConfig()

    def emit(self, tenant_id: str, payload: EventPayload, key: str) -> None:
        self.emitted += 1
        if self.cause is not None:
            event = caused_by(
                self.cause,
                payload,
                source=SOURCE,
                time=self.now,
                discriminator=f"{key}:{self.emitted}",
            )
        else:
            event = new_event(payload, tenant_id=tenant_id, source=SOURCE, time=self.now)
        self.uow.emit(event, traceparent=self.traceparent)

    # --- conversations ----------------------------------------------------------------------

    async def conversation_started(self, tenant_id: str, event: ConversationStarted) -> None:
        key = repo.customer_key(tenant_id, event.channel_id, event.customer.address)
        values = {
            "channel": event.channel.value,
            "customer_key": key,
            "ivr_choice": event.routing_hints.get("ivr_choice"),
        }
        row = None
        if not await repo.insert_conversation(
            self.connection,
            conversation_id=event.conversation_id,
            tenant_id=tenant_id,
            state="new",
            **values,
        ):
            row = await repo.conversation(self.connection, event.conversation_id)
            if row.state == "new" and row.customer_key is None:
                # crm identified the customer before this start was consumed (another topic)
                await repo.claim(self.connection, event.conversation_id, ["new"], **values)
        customer_id = row.customer_id if row is not None else None
        if customer_id:
            await repo.remember_customer(self.connection, tenant_id, key, customer_id=customer_id)
        else:
            await repo.remember_customer(self.connection, tenant_id, key)

    async def contact(
        self,
        tenant_id: str,
        conversation_id: str,
        channel: Channel,
        *,
        text: str = "",
        ivr: str | None = None,
        channel_id: str | None = None,
        address: str | None = None,
    ) -> None:
        """A first message, a call or a request for a human: classify and queue if still new."""
        row = await repo.conversation(self.connection, conversation_id)
        if row is None:
            key = (
                repo.customer_key(tenant_id, channel_id, address)
                if channel_id and address
                else None
            )
            await repo.insert_conversation(
                self.connection,
                conversation_id=conversation_id,
                tenant_id=tenant_id,
                channel=channel.value,
                customer_key=key,
                state="new",
            )
            if key:
                await repo.remember_customer(self.connection, tenant_id, key)
            row = await repo.conversation(self.connection, conversation_id)
        if row.state != "new" or row.tenant_id != tenant_id:
            return
        if row.customer_key is None and channel_id and address:
            # a placeholder from an early identification: now the channel is known
            key = repo.customer_key(tenant_id, channel_id, address)
            await repo.claim(
                self.connection, conversation_id, ["new"], channel=channel.value, customer_key=key
            )
            await repo.remember_customer(
                self.connection,
                tenant_id,
                key,
                **({"customer_id": row.customer_id} if row.customer_id else {}),
            )
            row = await repo.conversation(self.connection, conversation_id)
        config = self.config(tenant_id)
        customer = (
            await repo.customer(self.connection, tenant_id, row.customer_key)
            if row.customer_key
            else None
        )
        customer_id = row.customer_id or (customer.customer_id if customer else None)
        segments = await repo.segments(self.connection, tenant_id, customer_id)
        decided = classify(
            config,
            Contact(
                channel=Channel(row.channel),
                text=text,
                ivr_choice=ivr or row.ivr_choice,
                segments=segments,
            ),
        )
        group, tier = decided.skill_group, None
        if decided.escalate is Escalation.SUPERVISOR_QUEUE:
            group = SUPERVISOR_GROUP
        elif decided.escalate is Escalation.SENIOR_TIER:
            tier = AgentTier.SENIOR.value
        preferred, until = None, None
        if (
            config.sticky_agent_seconds
            and customer is not None
            and customer.last_agent_id
            and customer.last_assigned_at is not None
            and repo._aware(customer.last_assigned_at)
            > self.now - timedelta(days=config.sticky_memory_days)
        ):
            preferred = customer.last_agent_id
            until = self.now + timedelta(seconds=config.sticky_agent_seconds)
        classification = {
            "skill_group": decided.skill_group,
            "priority": decided.priority.value,
            "rule_id": decided.rule_id,
            "kind": decided.kind.value,
            "vip": decided.vip,
            "complaint": decided.complaint,
            "language": decided.language,
            "classified_at": self.now.isoformat(),
        }
        await repo.claim(
            self.connection,
            conversation_id,
            ["new"],
            state="queued",
            skill_group=group,
            priority=decided.priority.value,
            vip=decided.vip,
            required_tier=tier,
            preferred_agent=preferred,
            preferred_until=until,
            queued_at=self.now,
            customer_id=customer_id,
            classification=classification,
        )
        self.emit(
            tenant_id,
            ConversationClassified(
                conversation_id=conversation_id,
                skill_group=decided.skill_group,
                priority=decided.priority,
                matched_rule=ClassificationRuleMatch(
                    rule_id=decided.rule_id, kind=decided.kind, matched_text=decided.matched_text
                ),
                vip=decided.vip,
                language=decided.language,
                classified_at=self.now,
            ),
            conversation_id,
        )
        if decided.escalate is not None:
            self.emit(
                tenant_id,
                ConversationEscalated(
                    conversation_id=conversation_id,
                    target=ConversationEscalationTarget(decided.escalate.value),
                    reason=ConversationEscalationReason.COMPLAINT,
                    source_event_id=self.cause.id if self.cause else None,
                    escalated_at=self.now,
                ),
                conversation_id,
            )
        self.dirty.add(tenant_id)

    async def finished(self, tenant_id: str, conversation_id: str) -> None:
        """Resolved or closed: the agent's capacity is free again."""
        row = await repo.conversation(self.connection, conversation_id, tenant_id)
        if row is None or row.state == "closed":
            return
        if await repo.claim(
            self.connection,
            conversation_id,
            [row.state],
            state="closed",
            offer_id=None,
            last_position=None,
        ):
            if row.agent_id and row.state in ("offered", "assigned"):
                await repo.release(self.connection, tenant_id, row.agent_id, row.channel, self.now)
            self.dirty.add(tenant_id)

    async def reopened(self, tenant_id: str, conversation_id: str) -> None:
        row = await repo.conversation(self.connection, conversation_id, tenant_id)
        if row is None or row.state != "closed" or not row.skill_group:
            return
        config = self.config(tenant_id)
        until = (
            self.now + timedelta(seconds=config.sticky_agent_seconds)
            if config.sticky_agent_seconds
            else None
        )
        await repo.claim(
            self.connection,
            conversation_id,
            ["closed"],
            state="queued",
            queued_at=self.now,
            preferred_agent=row.agent_id if until else None,
            preferred_until=until,
            agent_id=None,
            excluded=[],
            last_position=None,
        )
        self.dirty.add(tenant_id)

    async def escalate(
        self,
        tenant_id: str,
        conversation_id: str,
        target: ConversationEscalationTarget,
        reason: ConversationEscalationReason,
        *,
        priority: Priority | None = None,
    ) -> bool:
        """Reroute to the senior tier or the supervisor queue (releasing a non-matching agent)."""
        row = await repo.conversation(self.connection, conversation_id, tenant_id)
        if (
            row is None
            or row.state == "new"
            or (row.state == "closed" and reason is not ConversationEscalationReason.FOLLOW_UP)
        ):
            return False
        values: dict[str, Any] = {}
        if target is ConversationEscalationTarget.SENIOR_TIER:
            agents = {a.id: a for a in await repo.agent_states(self.connection, tenant_id)}
            current = agents.get(row.agent_id) if row.agent_id else None
            if row.state == "assigned" and current is not None and current.tier is AgentTier.SENIOR:
                return False
            values["required_tier"] = AgentTier.SENIOR.value
        else:
            if row.skill_group == SUPERVISOR_GROUP and row.state in (
                "queued",
                "offered",
                "assigned",
            ):
                return False
            values["skill_group"] = SUPERVISOR_GROUP
            values["required_tier"] = None
        new_priority = priority or raised(Priority(row.priority or "P3"))
        if row.state in ("offered", "assigned") and row.agent_id:
            await repo.release(self.connection, tenant_id, row.agent_id, row.channel, self.now)
        await repo.claim(
            self.connection,
            conversation_id,
            [row.state],
            state="queued",
            queued_at=self.now,
            agent_id=None,
            offer_id=None,
            offer_expires_at=None,
            excluded=[],
            preferred_agent=None,
            last_position=None,
            priority=new_priority.value,
            **values,
        )
        self.emit(
            tenant_id,
            ConversationEscalated(
                conversation_id=conversation_id,
                target=target,
                reason=reason,
                source_event_id=self.cause.id if self.cause else None,
                escalated_at=self.now,
            ),
            conversation_id,
        )
        self.dirty.add(tenant_id)
        return True

    # --- dispatch ---------------------------------------------------------------------------

    async def dispatch(self, tenant_id: str) -> int:
        """Offer or assign every queued conversation of the tenant an agent can take now, in
        queue order; then publish changed queue positions. Returns the number placed."""
        config = self.config(tenant_id)
        connection = self.connection
        await self.lock(tenant_id)
        rows = await repo.queued(connection, tenant_id)
        if not rows:
            return 0
        waiting = sorted(
            (repo.waiting_of(row) for row in rows),
            key=lambda w: queue_key(w, self.now, config.aging_seconds_per_priority),
        )
        roster = await rosters_of(self.uow.store).current(connection, tenant_id, config)
        index = roster.index
        plan = repo.Placements(tenant_id)
        by_id = {row.conversation_id: row for row in rows}
        placed: set[str] = set()
        round_robin: dict[str, str | None] = {}
        for item in waiting:
            if not index.free_on(item.channel):
                continue
            if item.skill_group not in round_robin and config.strategy is Strategy.ROUND_ROBIN:
                round_robin[item.skill_group] = await repo.round_robin_last(
                    connection, tenant_id, item.skill_group
                )
            shortlist, eligible = index.shortlist(
                item, self.now, round_robin_after=round_robin.get(item.skill_group)
            )
            decision = choose_agent(
                config,
                item,
                shortlist,
                self.now,
                round_robin_after=round_robin.get(item.skill_group),
                eligible_count=eligible,
            )
            if decision.agent_id is None:
                continue
            agent = index.agents[decision.agent_id]
            channel = item.channel.value
            self._place(tenant_id, by_id[item.conversation_id], decision, config, plan)
            plan.reserve(agent.id, channel)
            placed.add(item.conversation_id)
            round_robin[item.skill_group] = agent.id
            if config.strategy is Strategy.ROUND_ROBIN:
                plan.round_robin[item.skill_group] = agent.id
            roster.update(
                replace(
                    agent,
                    load=agent.load + 1,
                    channel_load={
                        **agent.channel_load,
                        channel: agent.channel_load.get(channel, 0) + 1,
                    },
                    idle_since=self.now,
                )
            )
        # The round's decisions were taken on state read under the tenant's lock; they are
        # written together, and `write` refuses (rolling the transaction back) if any would
        # take a load above its capacity or find a conversation no longer queued.
        await plan.write(connection)
        roster.placed(connection, tenant_id)
        await self._publish_positions(
            tenant_id,
            [w for w in waiting if w.conversation_id not in placed],
            by_id,
            index.agents,
            config,
        )
        return len(placed)

    def _place(
        self,
        tenant_id: str,
        row: Any,
        decision: Decision,
        config: RoutingConfig,
        plan: repo.Placements,
    ) -> None:
        """Offer or assign `row` as decided: the writes go into `plan`, the events out."""
        explanation = _explanation(decision)
        agent_id = decision.agent_id
        assert agent_id is not None
        stored = {**explanation.model_dump(mode="json"), "strategy": decision.strategy.value}
        if config.offer_mode is OfferMode.OFFER:
            offer_id = (
                f"offer-{uuid4().hex[:16]}"
                if self.cause is None
                else f"offer-{self.cause.id[:8]}-{row.conversation_id[-24:]}-{row.attempts + 1}"
            )
            expires = self.now + timedelta(seconds=config.offer_expiry_seconds)
            plan.offer(row.conversation_id, agent_id, row.attempts + 1, stored, offer_id, expires)
            self.emit(
                tenant_id,
                ConversationOffered(
                    conversation_id=row.conversation_id,
                    offer_id=offer_id,
                    agent_id=agent_id,
                    offered_at=self.now,
                    expires_at=expires,
                    attempt=row.attempts + 1,
                    reason=decision.summary,
                ),
                row.conversation_id,
            )
            return
        plan.assign(row.conversation_id, agent_id, row.attempts + 1, stored)
        if row.customer_key:
            plan.customers[row.customer_key] = (agent_id, self.now)
        self._emit_assigned(tenant_id, row, agent_id, decision.strategy, explanation, None)

    async def _assigned(
        self,
        tenant_id: str,
        row: Any,
        agent_id: str,
        strategy: AssignmentStrategy,
        explanation: AssignmentExplanation,
        offer_id: str | None,
    ) -> None:
        if row.customer_key:
            await repo.remember_customer(
                self.connection,
                tenant_id,
                row.customer_key,
                last_agent_id=agent_id,
                last_assigned_at=self.now,
            )
        self._emit_assigned(tenant_id, row, agent_id, strategy, explanation, offer_id)

    def _emit_assigned(
        self,
        tenant_id: str,
        row: Any,
        agent_id: str,
        strategy: AssignmentStrategy,
        explanation: AssignmentExplanation,
        offer_id: str | None,
    ) -> None:
        self.emit(
            tenant_id,
            ConversationAssigned(
                conversation_id=row.conversation_id,
                agent_id=agent_id,
                skill_group=row.skill_group,
                strategy=strategy,
                explanation=explanation,
                offer_id=offer_id,
                assigned_at=self.now,
            ),
            row.conversation_id,
        )

    async def _publish_positions(
        self,
        tenant_id: str,
        remaining: Sequence[Any],
        by_id: Mapping[str, Any],
        agents: Mapping[str, Any],
        config: RoutingConfig,
    ) -> None:
        positions: dict[str, int] = {}
        online: dict[str, int] = {}
        for item in remaining:
            positions[item.skill_group] = positions.get(item.skill_group, 0) + 1
            position = positions[item.skill_group]
            row = by_id[item.conversation_id]
            if row.last_position == position or (
                row.last_position is not None and position > POSITION_UPDATES_UP_TO
            ):
                continue
            if item.skill_group not in online:
                online[item.skill_group] = sum(
                    1 for a in agents.values() if a.online and item.skill_group in a.skills
                )
            await repo.claim(
                self.connection, item.conversation_id, ["queued"], last_position=position
            )
            self.emit(
                tenant_id,
                ConversationQueued(
                    conversation_id=item.conversation_id,
                    skill_group=item.skill_group,
                    position=position,
                    estimated_wait_seconds=estimated_wait_seconds(
                        position, online[item.skill_group], config.average_handle_seconds
                    ),
                    queued_at=item.queued_at,
                ),
                item.conversation_id,
            )

    # --- offers -----------------------------------------------------------------------------

    async def accept(self, tenant_id: str, offer_id: str, agent_id: str | None) -> Any:
        row = await repo.offer(self.connection, offer_id, tenant_id)
        if row is None:
            raise CommandRefused(404, "not_found", f"no offer {offer_id}")
        if agent_id is not None and row.agent_id != agent_id:
            raise CommandRefused(403, "forbidden", "the offer was made to another agent")
        if row.state != "offered":
            raise CommandRefused(
                409, "offer_closed", f"the offer is no longer open (conversation {row.state})"
            )
        if not await repo.claim(
            self.connection,
            row.conversation_id,
            ["offered"],
            state="assigned",
            offer_expires_at=None,
        ):
            raise CommandRefused(409, "offer_closed", "the offer is no longer open")
        self.emit(
            tenant_id,
            OfferAccepted(
                conversation_id=row.conversation_id,
                offer_id=offer_id,
                agent_id=row.agent_id,
                accepted_at=self.now,
            ),
            row.conversation_id,
        )
        stored = dict(row.explanation or {})
        strategy = AssignmentStrategy(stored.pop("strategy", "least_busy"))
        explanation = (
            AssignmentExplanation.model_validate(stored)
            if stored
            else AssignmentExplanation(summary="offer accepted", widening_level=0)
        )
        await self._assigned(tenant_id, row, row.agent_id, strategy, explanation, offer_id)
        return row

    async def decline(
        self, tenant_id: str, offer_id: str, agent_id: str | None, reason: OfferDeclineReason | None
    ) -> None:
        """Decline (with a reason) or, with `reason` None, expire the offer; requeue."""
        row = await repo.offer(self.connection, offer_id, tenant_id)
        if row is None:
            raise CommandRefused(404, "not_found", f"no offer {offer_id}")
        if agent_id is not None and row.agent_id != agent_id:
            raise CommandRefused(403, "forbidden", "the offer was made to another agent")
        if row.state != "offered" or not await repo.claim(
            self.connection,
            row.conversation_id,
            ["offered"],
            state="queued",
            agent_id=None,
            offer_expires_at=None,
            excluded=sorted({*(row.excluded or ()), row.agent_id}),
            last_position=None,
        ):
            raise CommandRefused(409, "offer_closed", "the offer is no longer open")
        await repo.release(self.connection, tenant_id, row.agent_id, row.channel, self.now)
        if reason is None:
            payload: EventPayload = OfferExpired(
                conversation_id=row.conversation_id,
                offer_id=offer_id,
                agent_id=row.agent_id,
                expired_at=self.now,
            )
        else:
            payload = OfferDeclined(
                conversation_id=row.conversation_id,
                offer_id=offer_id,
                agent_id=row.agent_id,
                reason=reason,
                declined_at=self.now,
            )
        self.emit(tenant_id, payload, row.conversation_id)
        self.dirty.add(tenant_id)

    async def expire_offers(self, tenant_id: str) -> int:
        expired = await repo.expired_offers(self.connection, tenant_id, self.now)
        for row in expired:
            await self.decline(tenant_id, row.offer_id, None, None)
        return len(expired)

    # --- transfer ---------------------------------------------------------------------------

    async def transfer(
        self,
        tenant_id: str,
        conversation_id: str,
        *,
        by: str,
        to_agent: str | None,
        to_group: str | None,
        reason: TransferReason,
        note: str | None,
        owner_required: str | None,
    ) -> None:
        row = await repo.conversation(self.connection, conversation_id, tenant_id)
        if row is None:
            raise CommandRefused(404, "not_found", f"no conversation {conversation_id}")
        if row.state != "assigned" or not row.agent_id:
            raise CommandRefused(
                409, "not_assigned", "only an assigned conversation can be transferred"
            )
        if owner_required is not None and row.agent_id != owner_required:
            raise CommandRefused(
                403, "forbidden", "only the owning agent or a supervisor can transfer it"
            )
        config = self.config(tenant_id)
        history = [
            *(row.history or []),
            {
                "transferred_at": self.now.isoformat(),
                "from_agent_id": row.agent_id,
                "to_agent_id": to_agent,
                "to_skill_group": to_group,
                "by": by,
                "reason": reason.value,
            },
        ]
        if to_agent is not None:
            if to_agent == row.agent_id:
                raise CommandRefused(409, "same_agent", "the conversation is already theirs")
            target = await repo.agent_row(self.connection, tenant_id, to_agent)
            if target is None:
                raise CommandRefused(422, "unknown_agent", f"body.to_agent_id: no agent {to_agent}")
            if target.presence != "online":
                raise CommandRefused(
                    409, "agent_unavailable", f"agent {to_agent} is {target.presence}"
                )
            if not await repo.reserve(self.connection, tenant_id, to_agent, row.channel):
                raise CommandRefused(
                    409, "agent_at_capacity", f"agent {to_agent} has no free {row.channel} capacity"
                )
            await repo.release(self.connection, tenant_id, row.agent_id, row.channel, self.now)
            explanation = AssignmentExplanation(
                summary=f"transferred by {by} from {row.agent_id}", widening_level=0
            )
            await repo.claim(
                self.connection,
                conversation_id,
                ["assigned"],
                agent_id=to_agent,
                history=history,
                explanation={**explanation.model_dump(mode="json"), "strategy": "manual"},
            )
        else:
            groups = {g.id for g in config.skill_groups} | {SUPERVISOR_GROUP}
            if to_group not in groups:
                raise CommandRefused(
                    422, "unknown_skill_group", f"body.to_skill_group: no skill group {to_group}"
                )
            await repo.release(self.connection, tenant_id, row.agent_id, row.channel, self.now)
            await repo.claim(
                self.connection,
                conversation_id,
                ["assigned"],
                state="queued",
                skill_group=to_group,
                agent_id=None,
                queued_at=self.now,
                excluded=[row.agent_id],
                history=history,
                preferred_agent=None,
                last_position=None,
                required_tier=None,
            )
            self.dirty.add(tenant_id)
        self.emit(
            tenant_id,
            ConversationTransferred(
                conversation_id=conversation_id,
                from_agent_id=row.agent_id,
                to_agent_id=to_agent,
                to_skill_group=to_group,
                transferred_by=by,
                reason=reason,
                note=note,
                transferred_at=self.now,
            ),
            conversation_id,
        )
        if to_agent is not None:
            fresh = await repo.conversation(self.connection, conversation_id)
            await self._assigned(
                tenant_id,
                fresh,
                to_agent,
                AssignmentStrategy.MANUAL,
                AssignmentExplanation(
                    summary=f"transferred by {by} from {row.agent_id}", widening_level=0
                ),
                None,
            )

    # --- agents -----------------------------------------------------------------------------

    async def presence(
        self,
        tenant_id: str,
        agent_id: str,
        presence: Presence,
        reason: PresenceChangeReason,
        by: str | None,
        *,
        publish: bool,
    ) -> bool:
        previous = await repo.set_presence(
            self.connection, tenant_id, agent_id, presence.value, self.now
        )
        if previous is None:
            return False
        if publish:
            self.uow.emit(
                new_event(
                    AgentPresenceChanged(
                        agent_id=agent_id,
                        from_presence=Presence(previous),
                        to_presence=presence,
                        reason=reason,
                        changed_at=self.now,
                        changed_by=by,
                    ),
                    tenant_id=tenant_id,
                    source=SOURCE,
                    time=self.now,
                ),
                traceparent=self.traceparent,
            )
        if presence is Presence.ONLINE:
            self.dirty.add(tenant_id)
        return True

    async def sweep_heartbeats(self, tenant_id: str) -> list[str]:
        config = self.config(tenant_id)
        before = self.now - timedelta(seconds=config.heartbeat_timeout_seconds)
        silent = await repo.silent_agents(self.connection, tenant_id, before)
        for agent_id in silent:
            await self.presence(
                tenant_id,
                agent_id,
                Presence.OFFLINE,
                PresenceChangeReason.HEARTBEAT_TIMEOUT,
                None,
                publish=True,
            )
        return silent

    async def settle(self) -> None:
        """Re-evaluate the queues of every tenant something changed for."""
        while self.dirty:
            await self.dispatch(self.dirty.pop())


EXPLAINED_CANDIDATES = 20
"""An explanation lists the chosen agent and the next best candidates, not a whole floor."""


def _explanation(decision: Decision) -> AssignmentExplanation:
    ranked = sorted(
        decision.candidates,
        key=lambda c: (c.agent_id != decision.agent_id, not c.eligible, c.agent_id),
    )[:EXPLAINED_CANDIDATES]
    return AssignmentExplanation(
        summary=decision.summary,
        candidates=[RoutingCandidate(**candidate.__dict__) for candidate in ranked],
        widening_level=decision.widening_level,
    )


class RouterProjection(Projection):
    """Conversations, agents, customers' segments, SLA escalations and follow-ups in; routing
    decisions out. Each batch ends with one dispatch round per touched tenant."""

    name = "router.routing"
    topics = (CONVERSATION.name, AGENT.name, CUSTOMER.name, SLA.name, FEEDBACK.name)
    metadata = METADATA

    def __init__(self, configs: Mapping[str, RoutingConfig], now: Callable[[], datetime]) -> None:
        self.configs = configs
        self.now = now

    async def apply(self, events: Sequence[ConsumedEvent], uow: UnitOfWork) -> None:
        now = self.now()
        work = Workflow(uow, self.configs, now)
        await work.lock(*{c.event.tenantid for c in events if c.event.tenantid in self.configs})
        for consumed in events:
            event = consumed.event
            work.cause, work.traceparent = event, consumed.traceparent
            await self._apply_one(work, event.tenantid, event.data)
        await work.settle()

    async def _apply_one(self, work: Workflow, tenant_id: str, data: Any) -> None:
        if tenant_id not in self.configs:
            return
        match data:
            case ConversationStarted():
                await work.conversation_started(tenant_id, data)
                if data.routing_hints.get("ivr_choice"):
                    await work.contact(
                        tenant_id,
                        data.conversation_id,
                        data.channel,
                        ivr=data.routing_hints["ivr_choice"],
                    )
            case MessageReceived():
                await work.contact(
                    tenant_id,
                    data.conversation_id,
                    data.channel,
                    text=" ".join(filter(None, [data.content.subject, data.content.text])),
                    channel_id=data.channel_id,
                    address=data.customer.address,
                )
            case CallStarted():
                await work.contact(
                    tenant_id,
                    data.conversation_id,
                    Channel.VOICE,
                    ivr=data.ivr_choice,
                    channel_id=data.channel_id,
                    address=data.customer.address,
                )
            case HumanRequested():
                await work.contact(
                    tenant_id, data.conversation_id, data.channel, text=data.trigger_text or ""
                )
            case ConversationResolved() | ConversationClosed():
                await work.finished(tenant_id, data.conversation_id)
            case ConversationReopened():
                await work.reopened(tenant_id, data.conversation_id)
            case AgentRegistered() | AgentProfileChanged():
                await repo.upsert_agent(
                    work.connection,
                    tenant_id,
                    data.agent_id,
                    name=getattr(data, "display_name", None),
                    tier=data.tier,
                    skills={s.skill_group: s.proficiency for s in data.skills},
                    capacity_total=data.capacity.total,
                    per_channel={
                        c.channel.value: c.max_concurrent for c in data.capacity.per_channel
                    },
                    now=work.now,
                )
                work.dirty.add(tenant_id)
            case AgentPresenceChanged():
                saved = work.now
                work.now = data.changed_at
                await work.presence(
                    tenant_id,
                    data.agent_id,
                    data.to_presence,
                    data.reason,
                    data.changed_by,
                    publish=False,
                )
                work.now = saved
            case CustomerIdentified() if data.conversation_id:
                row = await repo.conversation(work.connection, data.conversation_id, tenant_id)
                if row is None:  # identified before its start was consumed: keep the link
                    await repo.insert_conversation(
                        work.connection,
                        conversation_id=data.conversation_id,
                        tenant_id=tenant_id,
                        channel=Channel.API.value,
                        customer_id=data.customer_id,
                        state="new",
                    )
                else:
                    await repo.claim(
                        work.connection,
                        data.conversation_id,
                        ["new", "queued", "offered", "assigned", "closed"],
                        customer_id=data.customer_id,
                    )
                    if row.customer_key:
                        await repo.remember_customer(
                            work.connection,
                            tenant_id,
                            row.customer_key,
                            customer_id=data.customer_id,
                        )
            case CustomerSegmentEntered():
                await repo.enter_segment(
                    work.connection, tenant_id, data.customer_id, data.segment_id
                )
            case CustomerSegmentLeft():
                await repo.leave_segment(
                    work.connection, tenant_id, data.customer_id, data.segment_id
                )
            case CustomerErased():
                await repo.erase_customer(work.connection, tenant_id, data.customer_id)
            case SlaEscalated() if data.action is not SlaEscalationAction.NOTIFY_SUPERVISOR:
                target = (
                    ConversationEscalationTarget.SENIOR_TIER
                    if data.action is SlaEscalationAction.ROUTE_TO_SENIOR
                    else ConversationEscalationTarget.SUPERVISOR_QUEUE
                )
                await work.escalate(
                    tenant_id, data.conversation_id, target, ConversationEscalationReason.SLA_BREACH
                )
            case FollowUpRequested():
                await work.escalate(
                    tenant_id,
                    data.conversation_id,
                    ConversationEscalationTarget.SUPERVISOR_QUEUE,
                    ConversationEscalationReason.FOLLOW_UP,
                    priority=data.priority,
                )
            case _:
                return


async def run_command(
    store: Any,
    configs: Mapping[str, RoutingConfig],
    now: datetime,
    command: Callable[[Workflow], Any],
    *,
    tenants: Iterable[str] | None = None,
) -> Any:
    """Run `command` in its own unit of work: the router locks of `tenants` (default: every
    configured tenant), the command, dispatch of what it changed, commit."""
    async with store.unit_of_work() as uow:
        work = Workflow(uow, configs, now)
        await work.lock(*(configs if tenants is None else tenants))
        result = await command(work)
        await work.settle()
        await uow.commit()
        return result
