"""HTTP routes of the crm service, all under `/v1/customers`.

Every read and write is scoped to the caller's tenant: another tenant's customer ids,
merge ids and identifiers answer 404, exactly like ids that do not exist.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from sqlalchemy import and_, or_, select

from convohub.contracts.events.customer import ErasureReason, IdentifierKind
from convohub.crm.adapters.repository import CustomerRepository, aware, lock_tenant
from convohub.crm.adapters.tables import CONVERSATIONS, MERGES, TIMELINE
from convohub.crm.domain.book import (
    Book,
    CustomerNotFoundError,
    MergeConflictError,
    ProfileChange,
    snapshot_of,
)
from convohub.crm.domain.identifiers import (
    InvalidIdentifierError,
    SeenIdentifier,
    guess_kinds,
    normalise,
)
from convohub.crm.domain.profiles import check_attribute, parse_amount
from convohub.crm.domain.settings import CrmSettings
from convohub.crm.handlers import (
    Actor,
    add_identifier,
    erase_customer,
    merge_customers,
    undo_merge,
    update_profile,
)
from convohub.runtime.http import Admin, AnyRole, Principal, Problem, Supervisor
from convohub.runtime.service import ServiceContext
from convohub.runtime.store import OutboxRelay

MAX_PAGE = 200


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MergeRequest(_Body):
    """Approve a proposal (`proposal_id`), or merge `merged_id` into `survivor_id`."""

    proposal_id: str | None = Field(default=None, description="An open merge proposal.")
    survivor_id: str | None = Field(default=None, description="The customer that remains.")
    merged_id: str | None = Field(default=None, description="The customer merged into it.")


class UndoRequest(_Body):
    reason: str | None = Field(default=None, max_length=500, description="Why, for the audit.")


class ProfilePatch(_Body):
    """Fields to change; absent fields stay as they are. An attribute set to null is removed."""

    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    tier: str | None = Field(default=None, min_length=1)
    lifetime_value: str | None = Field(
        default=None, description="Exact decimal string.", examples=["12850.40"]
    )
    lifetime_value_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    attributes: dict[str, JsonValue] = Field(default_factory=dict)
    tags_add: list[str] = Field(default_factory=list)
    tags_remove: list[str] = Field(default_factory=list)


class IdentifierRequest(_Body):
    """An identifier the integrator knows belongs to the customer."""

    kind: IdentifierKind = Field(description="phone, email, whatsapp_id, social_handle, ...")
    value: str = Field(min_length=1, max_length=320, description="In any spelling.")
    verified: bool = Field(
        default=True,
        description="The integrator vouches for it (login, OTP); a verified identifier "
        "another customer holds merges that customer into this one.",
    )


class EraseRequest(_Body):
    reason: ErasureReason = Field(default=ErasureReason.DATA_SUBJECT_REQUEST)


def _actor(principal: Principal) -> Actor:
    return Actor(principal.tenant_id, principal.agent_id or f"{principal.role.value}-api-key")


def _invalid(field: str, message: str) -> Problem:
    return Problem(
        422, "validation", f"invalid: {field}", errors=[{"field": field, "message": message}]
    )


def _not_found(what: str = "customer") -> Problem:
    return Problem(404, "not_found", f"no such {what}")


def _encode_cursor(at: datetime, entry_id: str) -> str:
    raw = json.dumps([aware(at).isoformat(), entry_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, entry_id = json.loads(base64.urlsafe_b64decode(padded))
        return aware(datetime.fromisoformat(at)), str(entry_id)
    except (ValueError, TypeError, binascii.Error):
        raise _invalid("query.cursor", "not a cursor this API returned") from None


def build_router(
    context: Callable[[], ServiceContext], settings: dict[str, CrmSettings]
) -> APIRouter:
    router = APIRouter(prefix="/v1/customers", tags=["customers"])

    def tenant_settings(principal: Principal) -> CrmSettings:
        return settings.get(principal.tenant_id) or CrmSettings()

    async def view(repository: CustomerRepository, book: Book, customer_id: str) -> dict[str, Any]:
        root = book.root(customer_id)
        customer = book.customers[root]
        snapshot = snapshot_of(customer, customer.created_at).model_dump(mode="json")
        snapshot.pop("updated_at")
        merged = await repository.connection.execute(
            select(MERGES.c.merged_id).where(
                MERGES.c.tenant_id == repository.tenant_id,
                MERGES.c.survivor_id == root,
                MERGES.c.undone.is_(False),
            )
        )
        return {
            **snapshot,
            "requested_customer_id": customer_id,
            "merged_customer_ids": sorted(merged.scalars()),
            "created_at": customer.created_at.isoformat(),
        }

    async def load_view(principal: Principal, customer_id: str) -> dict[str, Any]:
        async with context().store.reader.connect() as connection:
            repository = CustomerRepository(connection, principal.tenant_id)
            book = await repository.load(tenant_settings(principal), [customer_id])
            try:
                return await view(repository, book, customer_id)
            except CustomerNotFoundError:
                raise _not_found() from None

    @router.get("/lookup")
    async def lookup(
        principal: AnyRole,
        identifier: str = Query(min_length=1, max_length=320),
        kind: str | None = Query(default=None),
    ) -> dict[str, Any]:
        """The customer an identifier (any kind, any spelling) resolves to."""
        tenant = tenant_settings(principal)
        kinds = guess_kinds(identifier)
        if kind is not None:
            try:
                kinds = [IdentifierKind(kind)]
            except ValueError:
                raise _invalid("query.kind", "unknown identifier kind") from None
        candidates = []
        for each in kinds:
            try:
                candidates.append(normalise(each, identifier, tenant.default_region))
            except InvalidIdentifierError:
                continue
        async with context().store.reader.connect() as connection:
            repository = CustomerRepository(connection, principal.tenant_id)
            owners = await repository.owners(candidates)
            for candidate in candidates:
                if candidate in owners:
                    book = await repository.load(tenant, [owners[candidate]])
                    try:
                        found = await view(repository, book, owners[candidate])
                    except CustomerNotFoundError:
                        break
                    return {**found, "matched": {"kind": candidate.kind.value}}
        raise _not_found()

    @router.get("/merge-proposals")
    async def proposals(principal: Supervisor) -> dict[str, Any]:
        """Open near-match proposals waiting for a supervisor."""
        async with context().store.reader.connect() as connection:
            rows = await CustomerRepository(connection, principal.tenant_id).open_proposals()
        return {
            "proposals": [
                {
                    "proposal_id": row.proposal_id,
                    "customer_id": row.customer_id,
                    "candidate_customer_id": row.candidate_id,
                    "match_score": row.score,
                    "evidence": row.evidence,
                }
                for row in rows
            ]
        }

    @router.post("/merges", status_code=201)
    async def merge(principal: Supervisor, body: MergeRequest) -> dict[str, Any]:
        """Merge two customers, or carry out a merge proposal."""
        service = context()
        tenant = tenant_settings(principal)
        at = service.clock.now()
        async with service.store.unit_of_work() as uow:
            repository = CustomerRepository(uow.connection, principal.tenant_id)
            survivor_id, merged_id = body.survivor_id, body.merged_id
            if body.proposal_id is not None:
                if survivor_id or merged_id:
                    raise _invalid("body", "give either proposal_id or survivor_id and merged_id")
                await lock_tenant(uow.connection, principal.tenant_id)
                proposal = await repository.proposal(body.proposal_id)
                if proposal is None:
                    raise _not_found("merge proposal")
                if proposal.status != "open":
                    raise Problem(409, "proposal_closed", f"the proposal is {proposal.status}")
                survivor_id, merged_id = proposal.customer_id, proposal.candidate_id
            elif not survivor_id or not merged_id:
                field = "body.survivor_id" if not survivor_id else "body.merged_id"
                raise _invalid(field, "required unless proposal_id is given")
            try:
                merged = await merge_customers(
                    uow,
                    tenant,
                    _actor(principal),
                    survivor_id=survivor_id,
                    merged_id=merged_id,
                    at=at,
                    proposal_id=body.proposal_id,
                )
            except CustomerNotFoundError:
                raise _not_found() from None
            except MergeConflictError as error:
                raise Problem(409, "merge_conflict", str(error)) from None
            await uow.commit()
        return merged.model_dump(mode="json")

    @router.post("/merges/{merge_id}/undo")
    async def undo(principal: Supervisor, merge_id: str, body: UndoRequest | None = None) -> Any:
        """Undo a merge: both customers exist again, each with its own identifiers."""
        service = context()
        at = service.clock.now()
        async with service.store.unit_of_work() as uow:
            try:
                undone = await undo_merge(
                    uow,
                    tenant_settings(principal),
                    _actor(principal),
                    merge_id,
                    at=at,
                    reason=body.reason if body else None,
                )
            except (CustomerNotFoundError, KeyError):
                raise _not_found("merge") from None
            except MergeConflictError as error:
                raise Problem(409, "merge_conflict", str(error)) from None
            await uow.commit()
        return undone.model_dump(mode="json")

    @router.get("/{customer_id}")
    async def customer(principal: AnyRole, customer_id: str) -> dict[str, Any]:
        """Profile, identifiers and segments; a merged-away id answers with its survivor."""
        return await load_view(principal, customer_id)

    @router.patch("/{customer_id}")
    async def patch(principal: Supervisor, customer_id: str, body: ProfilePatch) -> Any:
        """Set tier, lifetime value, tags and declared custom attributes."""
        tenant = tenant_settings(principal)
        errors = []
        attributes = {}
        for name, value in body.attributes.items():
            stored, problem = check_attribute(tenant, name, value)
            if problem:
                errors.append({"field": f"body.attributes.{name}", "message": problem})
            attributes[name] = stored
        if body.tier is not None and body.tier not in tenant.tiers:
            errors.append({"field": "body.tier", "message": f"one of {list(tenant.tiers)}"})
        amount = None
        if body.lifetime_value is not None:
            amount = parse_amount(body.lifetime_value)
            if amount is None or "e" in body.lifetime_value.lower():
                errors.append({"field": "body.lifetime_value", "message": "a decimal string"})
        if errors:
            fields = ", ".join(error["field"] for error in errors)
            raise Problem(422, "validation", f"invalid: {fields}", errors=errors)
        change = ProfileChange(
            display_name=body.display_name,
            tier=body.tier,
            lifetime_value=Decimal(amount) if amount is not None else None,
            lifetime_value_currency=body.lifetime_value_currency,
            attributes=attributes,
            tags_added=tuple(body.tags_add),
            tags_removed=tuple(body.tags_remove),
        )
        service = context()
        async with service.store.unit_of_work() as uow:
            try:
                root = await update_profile(
                    uow, tenant, _actor(principal), customer_id, change, at=service.clock.now()
                )
            except CustomerNotFoundError:
                raise _not_found() from None
            await uow.commit()
        return await load_view(principal, root)

    @router.post("/{customer_id}/identifiers")
    async def add(principal: Supervisor, customer_id: str, body: IdentifierRequest) -> Any:
        """Give the customer an identifier (an integrator's own customer id, a verified
        e-mail address); answers the customer as it is now."""
        tenant = tenant_settings(principal)
        try:
            identifier = normalise(body.kind, body.value, tenant.default_region)
        except InvalidIdentifierError as error:
            raise _invalid("body.value", str(error)) from None
        seen = SeenIdentifier(identifier, body.verified, None)
        service = context()
        async with service.store.unit_of_work() as uow:
            try:
                root = await add_identifier(
                    uow, tenant, _actor(principal), customer_id, seen, at=service.clock.now()
                )
            except CustomerNotFoundError:
                raise _not_found() from None
            except MergeConflictError as error:
                raise Problem(409, "identifier_taken", str(error)) from None
            await uow.commit()
        return await load_view(principal, root)

    @router.get("/{customer_id}/timeline")
    async def timeline(
        principal: AnyRole,
        customer_id: str,
        limit: int = Query(default=50, ge=1, le=MAX_PAGE),
        cursor: str | None = Query(default=None, max_length=512),
    ) -> dict[str, Any]:
        """Conversations and messages across channels, oldest first, `limit` at a time;
        pass `next_cursor` back as `cursor` for the next page."""
        after = _decode_cursor(cursor) if cursor else None
        async with context().store.reader.connect() as connection:
            repository = CustomerRepository(connection, principal.tenant_id)
            book = await repository.load(
                tenant_settings(principal), [customer_id], with_family=True
            )
            try:
                root = book.root(customer_id)
            except CustomerNotFoundError:
                raise _not_found() from None
            members = book.family(root)
            conversations = select(CONVERSATIONS.c.conversation_id).where(
                CONVERSATIONS.c.tenant_id == principal.tenant_id,
                CONVERSATIONS.c.customer_id.in_(members),
            )
            query = (
                select(TIMELINE)
                .where(
                    TIMELINE.c.tenant_id == principal.tenant_id,
                    TIMELINE.c.conversation_id.in_(conversations),
                )
                .order_by(TIMELINE.c.occurred_at, TIMELINE.c.entry_id)
                .limit(limit + 1)
            )
            if after is not None:
                at, entry_id = after
                query = query.where(
                    or_(
                        TIMELINE.c.occurred_at > at,
                        and_(TIMELINE.c.occurred_at == at, TIMELINE.c.entry_id > entry_id),
                    )
                )
            rows = list(await connection.execute(query))
        page, more = rows[:limit], len(rows) > limit
        return {
            "customer_id": root,
            "entries": [
                {
                    "entry_id": row.entry_id,
                    "kind": row.kind,
                    "conversation_id": row.conversation_id,
                    "occurred_at": aware(row.occurred_at).isoformat(),
                    "channel": row.channel,
                    "channel_id": row.channel_id,
                    "direction": row.direction,
                    "message_id": row.message_id,
                    "text": row.text,
                }
                for row in page
            ],
            "next_cursor": _encode_cursor(page[-1].occurred_at, page[-1].entry_id)
            if more
            else None,
        }

    @router.post("/{customer_id}/erase", status_code=202)
    async def erase(principal: Admin, customer_id: str, body: EraseRequest | None = None) -> Any:
        """Erase the person's personal data (admin only); every service is told by the
        `erased` event and purges its own copy."""
        service = context()
        async with service.store.unit_of_work() as uow:
            try:
                request = await erase_customer(
                    uow,
                    tenant_settings(principal),
                    _actor(principal),
                    customer_id,
                    reason=(body or EraseRequest()).reason,
                    at=service.clock.now(),
                )
            except CustomerNotFoundError:
                raise _not_found() from None
            await uow.commit()
        # Published outbox rows still hold the events CRM emitted about the person
        # (identifiers); once they are on the log the database needs no copy.
        relay = OutboxRelay(service.store, service.bus)
        await relay.publish_pending()
        await relay.purge_published(timedelta(0))
        return request.model_dump(mode="json")

    return router
