"""HTTP routes of the router service: agents, presence and heartbeats, offers, transfers,
and the read APIs (queues, agents, a conversation's routing)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from convohub.contracts import new_event
from convohub.contracts.events.agent import (
    AgentCapacity,
    AgentChannelCapacity,
    AgentProfileChanged,
    AgentRegistered,
    AgentSkill,
    Presence,
    PresenceChangeReason,
)
from convohub.contracts.events.routing import OfferDeclineReason, TransferReason
from convohub.router.adapters import repository as repo
from convohub.router.domain.assignment import estimated_wait_seconds, queue_key
from convohub.router.domain.config import SUPERVISOR_GROUP, AgentConfig, RoutingConfig
from convohub.router.handlers import SOURCE, CommandRefused, Workflow, run_command
from convohub.runtime.config import Role
from convohub.runtime.http import AnyRole, Principal, Problem, Supervisor

if TYPE_CHECKING:
    from convohub.runtime.service import ServiceContext


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PresenceBody(_Body):
    presence: Presence


class DeclineBody(_Body):
    reason: OfferDeclineReason = OfferDeclineReason.OTHER


class TransferBody(_Body):
    to_agent_id: str | None = Field(default=None, min_length=1)
    to_skill_group: str | None = Field(default=None, min_length=1)
    reason: TransferReason = TransferReason.OTHER
    note: str | None = Field(default=None, max_length=4000)

    @model_validator(mode="after")
    def _one_destination(self) -> TransferBody:
        if (self.to_agent_id is None) == (self.to_skill_group is None):
            raise ValueError("give exactly one of to_agent_id and to_skill_group")
        return self


def _refused(error: CommandRefused) -> Problem:
    return Problem(error.status, error.code, error.detail)


def _acting_as(principal: Principal, agent_id: str) -> None:
    """An agent may act only for themself; supervisors and admins for anyone."""
    if not principal.has(Role.SUPERVISOR) and principal.agent_id != agent_id:
        raise Problem(403, "forbidden", "an agent key may only act for its own agent")


def build_routes(
    context: Callable[[], ServiceContext], configs: Mapping[str, RoutingConfig]
) -> APIRouter:
    router = APIRouter(tags=["router"])

    def now() -> datetime:
        return context().clock.now()

    async def command(run: Callable[[Workflow], Any], tenant_id: str) -> Any:
        try:
            return await run_command(context().store, configs, now(), run, tenants=[tenant_id])
        except CommandRefused as error:
            raise _refused(error) from None

    async def read(query: Callable[[Any], Any]) -> Any:
        async with context().store.reader.connect() as connection:
            return await query(connection)

    @router.get("/v1/agents")
    async def list_agents(principal: AnyRole) -> dict[str, Any]:
        return {"agents": await read(lambda c: repo.agents_listing(c, principal.tenant_id))}

    async def save_agent(
        principal: Principal, body: AgentConfig, *, creating: bool
    ) -> dict[str, Any]:
        moment = now()
        skills = [AgentSkill(skill_group=g, proficiency=p) for g, p in body.skills.items()]
        capacity = AgentCapacity(
            per_channel=[
                AgentChannelCapacity(channel=c, max_concurrent=n)
                for c, n in body.capacity.per_channel.items()
            ],
            total=body.capacity.total,
        )

        async def run(work: Workflow) -> None:
            exists = await repo.agent_row(work.connection, principal.tenant_id, body.id)
            if creating and exists is not None:
                raise CommandRefused(409, "agent_exists", f"agent {body.id} already exists")
            if not creating and exists is None:
                raise CommandRefused(404, "not_found", f"no agent {body.id}")
            await repo.upsert_agent(
                work.connection,
                principal.tenant_id,
                body.id,
                name=body.name or None,
                tier=body.tier,
                skills=dict(body.skills),
                capacity_total=body.capacity.total,
                per_channel={c.value: n for c, n in body.capacity.per_channel.items()},
                now=moment,
            )
            payload: Any = (
                AgentRegistered(
                    agent_id=body.id,
                    display_name=body.name or body.id,
                    tier=body.tier,
                    skills=skills,
                    capacity=capacity,
                    registered_at=moment,
                )
                if creating
                else AgentProfileChanged(
                    agent_id=body.id,
                    skills=skills,
                    tier=body.tier,
                    capacity=capacity,
                    changed_by=principal.agent_id or f"key:{principal.role}",
                    changed_at=moment,
                )
            )
            work.uow.emit(
                new_event(payload, tenant_id=principal.tenant_id, source=SOURCE, time=moment)
            )
            work.dirty.add(principal.tenant_id)

        await command(run, principal.tenant_id)
        return {"agent_id": body.id, "tier": body.tier, "skills": body.skills}

    @router.post("/v1/agents", status_code=201)
    async def register_agent(principal: Supervisor, body: AgentConfig) -> dict[str, Any]:
        return await save_agent(principal, body, creating=True)

    @router.put("/v1/agents/{agent_id}")
    async def change_agent(
        agent_id: str, principal: Supervisor, body: AgentConfig
    ) -> dict[str, Any]:
        if body.id != agent_id:
            raise Problem(
                422,
                "validation",
                "body.id must equal the agent id of the path",
                errors=[{"field": "body.id", "message": "differs from the path"}],
            )
        return await save_agent(principal, body, creating=False)

    @router.put("/v1/agents/{agent_id}/presence")
    async def change_presence(
        agent_id: str, principal: AnyRole, body: PresenceBody
    ) -> dict[str, Any]:
        _acting_as(principal, agent_id)
        own = principal.agent_id == agent_id
        reason = PresenceChangeReason.MANUAL if own else PresenceChangeReason.SUPERVISOR_OVERRIDE

        async def run(work: Workflow) -> None:
            if await repo.agent_row(work.connection, principal.tenant_id, agent_id) is None:
                raise CommandRefused(404, "not_found", f"no agent {agent_id}")
            await work.presence(
                principal.tenant_id,
                agent_id,
                body.presence,
                reason,
                principal.agent_id or f"key:{principal.role}",
                publish=True,
            )

        await command(run, principal.tenant_id)
        return {"agent_id": agent_id, "presence": body.presence}

    @router.post("/v1/agents/{agent_id}/heartbeat")
    async def heartbeat(agent_id: str, principal: AnyRole) -> dict[str, Any]:
        _acting_as(principal, agent_id)

        async def run(work: Workflow) -> None:
            if not await repo.heartbeat(work.connection, principal.tenant_id, agent_id, work.now):
                raise CommandRefused(404, "not_found", f"no agent {agent_id}")

        await command(run, principal.tenant_id)
        return {"agent_id": agent_id, "received_at": now()}

    @router.get("/v1/offers")
    async def list_offers(principal: AnyRole, agent_id: str | None = None) -> dict[str, Any]:
        """Offers waiting for an answer: an agent key sees its own; supervisors see every
        agent's, or one agent's with `agent_id`."""
        if not principal.has(Role.SUPERVISOR):
            if agent_id is not None:
                _acting_as(principal, agent_id)
            agent_id = principal.agent_id or ""
        rows = await read(lambda c: repo.pending_offers(c, principal.tenant_id, agent_id))
        return {
            "offers": [
                {
                    "offer_id": row.offer_id,
                    "conversation_id": row.conversation_id,
                    "agent_id": row.agent_id,
                    "channel": row.channel,
                    "skill_group": row.skill_group,
                    "priority": row.priority,
                    "vip": row.vip,
                    "queued_at": row.queued_at,
                    "expires_at": row.offer_expires_at,
                }
                for row in rows
            ]
        }

    @router.post("/v1/offers/{offer_id}/accept")
    async def accept(offer_id: str, principal: AnyRole) -> dict[str, Any]:
        acting = None if principal.has(Role.SUPERVISOR) else (principal.agent_id or "")
        row = await command(
            lambda work: work.accept(principal.tenant_id, offer_id, acting), principal.tenant_id
        )
        return {
            "offer_id": offer_id,
            "conversation_id": row.conversation_id,
            "agent_id": row.agent_id,
            "state": "assigned",
        }

    @router.post("/v1/offers/{offer_id}/decline")
    async def decline(
        offer_id: str, principal: AnyRole, body: DeclineBody | None = None
    ) -> dict[str, Any]:
        acting = None if principal.has(Role.SUPERVISOR) else (principal.agent_id or "")
        reason = (body or DeclineBody()).reason
        await command(
            lambda work: work.decline(principal.tenant_id, offer_id, acting, reason),
            principal.tenant_id,
        )
        return {"offer_id": offer_id, "state": "declined"}

    @router.post("/v1/conversations/{conversation_id}/transfer")
    async def transfer(
        conversation_id: str, principal: AnyRole, body: TransferBody
    ) -> dict[str, Any]:
        owner = None if principal.has(Role.SUPERVISOR) else (principal.agent_id or "")
        await command(
            lambda work: work.transfer(
                principal.tenant_id,
                conversation_id,
                by=principal.agent_id or f"key:{principal.role}",
                to_agent=body.to_agent_id,
                to_group=body.to_skill_group,
                reason=body.reason,
                note=body.note,
                owner_required=owner,
            ),
            principal.tenant_id,
        )
        return {
            "conversation_id": conversation_id,
            "to_agent_id": body.to_agent_id,
            "to_skill_group": body.to_skill_group,
        }

    @router.get("/v1/conversations/{conversation_id}/routing")
    async def routing_of(conversation_id: str, principal: AnyRole) -> dict[str, Any]:
        row = await read(lambda c: repo.conversation(c, conversation_id, principal.tenant_id))
        if row is None:
            raise Problem(404, "not_found", f"no conversation {conversation_id}")
        return {
            "conversation_id": row.conversation_id,
            "state": row.state,
            "channel": row.channel,
            "skill_group": row.skill_group,
            "priority": row.priority,
            "vip": row.vip,
            "required_tier": row.required_tier,
            "agent_id": row.agent_id,
            "offer_id": row.offer_id if row.state == "offered" else None,
            "queued_at": row.queued_at,
            "position": row.last_position if row.state == "queued" else None,
            "classification": row.classification,
            "explanation": row.explanation,
            "transfers": row.history or [],
        }

    @router.get("/v1/queues")
    async def queues(principal: AnyRole) -> dict[str, Any]:
        config = configs.get(principal.tenant_id) or RoutingConfig()
        moment = now()

        async def query(connection: Any) -> dict[str, Any]:
            agents = await repo.agent_states(connection, principal.tenant_id)
            waiting = [
                repo.waiting_of(row) for row in await repo.queued(connection, principal.tenant_id)
            ]
            result = []
            for group in [g.id for g in config.skill_groups] + [SUPERVISOR_GROUP]:
                mine = sorted(
                    (w for w in waiting if w.skill_group == group),
                    key=lambda w: queue_key(w, moment, config.aging_seconds_per_priority),
                )
                online = [a for a in agents if a.online and group in a.skills]
                available = [a for a in online if a.load < a.capacity]
                oldest = min((w.queued_at for w in mine), default=None)
                result.append(
                    {
                        "skill_group": group,
                        "length": len(mine),
                        "oldest_wait_seconds": int((moment - oldest).total_seconds())
                        if oldest
                        else 0,
                        "estimated_wait_seconds": estimated_wait_seconds(
                            len(mine), len(online), config.average_handle_seconds
                        )
                        if mine
                        else 0,
                        "agents_online": len(online),
                        "agents_available": len(available),
                    }
                )
            return {"queues": result}

        return await read(query)

    return router
