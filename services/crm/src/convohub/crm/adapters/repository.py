"""Loading customers into a `Book` and writing back what it changed, per tenant."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from convohub.contracts.events.customer import CustomerStatus, IdentifierKind, MergeReason
from convohub.crm.adapters.tables import (
    CONVERSATIONS,
    CUSTOMERS,
    ERASED_CONVERSATIONS,
    IDENTIFIERS,
    MERGES,
    PROPOSALS,
    TIMELINE,
)
from convohub.crm.domain.book import Book, Customer, Merge, Proposal
from convohub.crm.domain.identifiers import Identifier, SeenIdentifier
from convohub.crm.domain.profiles import Decision, Profile, name_key
from convohub.crm.domain.settings import CrmSettings


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything CRM stores is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _profile_json(profile: Profile) -> dict[str, Any]:
    return {
        "display_name": profile.display_name,
        "tier": profile.tier,
        "lifetime_value": profile.lifetime_value,
        "lifetime_value_currency": profile.lifetime_value_currency,
        "attributes": profile.attributes,
        "tags": profile.tags,
        "changed_at": {key: at.isoformat() for key, at in profile.changed_at.items()},
    }


def _profile_of(document: dict[str, Any]) -> Profile:
    return Profile(
        display_name=document.get("display_name"),
        tier=document.get("tier"),
        lifetime_value=document.get("lifetime_value"),
        lifetime_value_currency=document.get("lifetime_value_currency"),
        attributes=dict(document.get("attributes") or {}),
        tags=list(document.get("tags") or []),
        changed_at={
            key: datetime.fromisoformat(at)
            for key, at in (document.get("changed_at") or {}).items()
        },
    )


def _seen_json(seen: SeenIdentifier) -> dict[str, Any]:
    return {
        "kind": seen.identifier.kind.value,
        "value": seen.identifier.value,
        "verified": seen.verified,
        "channel_id": seen.channel_id,
    }


def _seen_of(document: dict[str, Any]) -> SeenIdentifier:
    return SeenIdentifier(
        Identifier(IdentifierKind(document["kind"]), document["value"]),
        document["verified"],
        document.get("channel_id"),
    )


async def lock_tenant(connection: AsyncConnection, tenant_id: str) -> None:
    """Serialise CRM's writes for one tenant until the transaction ends (PostgreSQL; on
    SQLite the write lock already does): the projection's batches and the API's commands
    read customers, decide, and write them back, so two of them must not interleave."""
    if connection.dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"convohub.crm/{tenant_id}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


class CustomerRepository:
    """CRM's tables for one tenant, inside one unit of work's connection."""

    def __init__(self, connection: AsyncConnection, tenant_id: str) -> None:
        self.connection = connection
        self.tenant_id = tenant_id

    # --- loading --------------------------------------------------------------------------

    async def owners(self, identifiers: Iterable[Identifier]) -> dict[Identifier, str]:
        wanted = sorted({(i.kind.value, i.value) for i in identifiers})
        if not wanted:
            return {}
        rows = await self.connection.execute(
            select(IDENTIFIERS.c.kind, IDENTIFIERS.c.value, IDENTIFIERS.c.customer_id).where(
                IDENTIFIERS.c.tenant_id == self.tenant_id,
                tuple_(IDENTIFIERS.c.kind, IDENTIFIERS.c.value).in_(wanted),
            )
        )
        return {Identifier(IdentifierKind(r.kind), r.value): r.customer_id for r in rows}

    async def conversation_customers(self, conversation_ids: Iterable[str]) -> dict[str, str]:
        ids = sorted(set(conversation_ids))
        if not ids:
            return {}
        rows = await self.connection.execute(
            select(CONVERSATIONS.c.conversation_id, CONVERSATIONS.c.customer_id).where(
                CONVERSATIONS.c.tenant_id == self.tenant_id,
                CONVERSATIONS.c.conversation_id.in_(ids),
            )
        )
        return {row.conversation_id: row.customer_id for row in rows}

    async def erased_conversations(self, conversation_ids: Iterable[str]) -> set[str]:
        ids = sorted(set(conversation_ids))
        if not ids:
            return set()
        rows = await self.connection.execute(
            select(ERASED_CONVERSATIONS.c.conversation_id).where(
                ERASED_CONVERSATIONS.c.tenant_id == self.tenant_id,
                ERASED_CONVERSATIONS.c.conversation_id.in_(ids),
            )
        )
        return set(rows.scalars())

    async def ids_named(self, names: Iterable[str | None]) -> set[str]:
        keys = sorted({key for key in (name_key(name) for name in names) if key})
        if not keys:
            return set()
        rows = await self.connection.execute(
            select(CUSTOMERS.c.customer_id).where(
                CUSTOMERS.c.tenant_id == self.tenant_id,
                CUSTOMERS.c.name_key.in_(keys),
                CUSTOMERS.c.status == CustomerStatus.ACTIVE.value,
            )
        )
        return set(rows.scalars())

    async def load(
        self,
        settings: CrmSettings,
        customer_ids: Iterable[str],
        *,
        with_family: bool = False,
        merge_ids: Iterable[str] = (),
    ) -> Book:
        """A book with these customers, the survivors they resolve to (and with
        `with_family` everyone merged into them), and the merges naming any of them."""
        loaded: dict[str, Customer] = {}
        frontier = set(customer_ids)
        merge_rows = []
        if merge_ids:
            merge_rows = list(
                await self.connection.execute(
                    select(MERGES).where(
                        MERGES.c.tenant_id == self.tenant_id,
                        MERGES.c.merge_id.in_(sorted(set(merge_ids))),
                    )
                )
            )
            for row in merge_rows:
                frontier |= {row.survivor_id, row.merged_id}
        while frontier:
            found = await self._customers(frontier - set(loaded))
            loaded.update(found)
            frontier = {
                c.merged_into
                for c in found.values()
                if c.merged_into is not None and c.merged_into not in loaded
            }
            if with_family and found:
                rows = await self.connection.execute(
                    select(CUSTOMERS.c.customer_id).where(
                        CUSTOMERS.c.tenant_id == self.tenant_id,
                        CUSTOMERS.c.merged_into.in_(sorted(found)),
                    )
                )
                frontier |= set(rows.scalars()) - set(loaded)
        ids = sorted(loaded)
        if ids:
            rows = await self.connection.execute(
                select(MERGES).where(
                    MERGES.c.tenant_id == self.tenant_id,
                    (MERGES.c.survivor_id.in_(ids)) | (MERGES.c.merged_id.in_(ids)),
                )
            )
            merge_rows = list({row.merge_id: row for row in [*merge_rows, *rows]}.values())
        merges = [self._merge_of(row) for row in merge_rows]
        book = Book(settings, loaded.values(), merges)
        if ids:
            rows = await self.connection.execute(
                select(PROPOSALS.c.customer_id, PROPOSALS.c.candidate_id).where(
                    PROPOSALS.c.tenant_id == self.tenant_id,
                    PROPOSALS.c.customer_id.in_(ids) | PROPOSALS.c.candidate_id.in_(ids),
                )
            )
            book.proposed_pairs = {frozenset((r.customer_id, r.candidate_id)) for r in rows}
        return book

    async def _customers(self, ids: set[str]) -> dict[str, Customer]:
        if not ids:
            return {}
        wanted = sorted(ids)
        rows = await self.connection.execute(
            select(CUSTOMERS).where(
                CUSTOMERS.c.tenant_id == self.tenant_id, CUSTOMERS.c.customer_id.in_(wanted)
            )
        )
        customers = {
            row.customer_id: Customer(
                id=row.customer_id,
                created_at=aware(row.created_at),
                status=CustomerStatus(row.status),
                merged_into=row.merged_into,
                profile=_profile_of(row.profile),
                segments=dict(row.segments),
                version=row.version,
            )
            for row in rows
        }
        identifier_rows = await self.connection.execute(
            select(IDENTIFIERS).where(
                IDENTIFIERS.c.tenant_id == self.tenant_id,
                IDENTIFIERS.c.customer_id.in_(sorted(customers)),
            )
        )
        for row in identifier_rows:
            identifier = Identifier(IdentifierKind(row.kind), row.value)
            customers[row.customer_id].identifiers[identifier] = SeenIdentifier(
                identifier, row.verified, row.channel_id
            )
        return customers

    @staticmethod
    def _merge_of(row: Any) -> Merge:
        detail = row.detail
        return Merge(
            id=row.merge_id,
            survivor_id=row.survivor_id,
            merged_id=row.merged_id,
            at=aware(row.merged_at),
            reason=MergeReason(row.reason),
            moved=[_seen_of(item) for item in detail.get("moved", [])],
            survivor_before=_profile_of(detail.get("survivor_before", {})),
            merged_before=_profile_of(detail.get("merged_before", {})),
            decisions=[Decision(**item) for item in detail.get("decisions", [])],
            approved_by=row.approved_by,
            proposal_id=row.proposal_id,
            undone=row.undone,
            erased=row.erased,
        )

    # --- saving ---------------------------------------------------------------------------

    async def save(self, book: Book, at: datetime) -> None:
        """Write back the customers, identifiers, merges and proposals the book changed."""
        dirty = sorted(book.dirty)
        if dirty:
            await self.connection.execute(
                delete(IDENTIFIERS).where(
                    IDENTIFIERS.c.tenant_id == self.tenant_id,
                    IDENTIFIERS.c.customer_id.in_(dirty),
                )
            )
            await self.connection.execute(
                delete(CUSTOMERS).where(
                    CUSTOMERS.c.tenant_id == self.tenant_id, CUSTOMERS.c.customer_id.in_(dirty)
                )
            )
            await self.connection.execute(
                CUSTOMERS.insert(),
                [
                    {
                        "tenant_id": self.tenant_id,
                        "customer_id": c.id,
                        "status": c.status.value,
                        "merged_into": c.merged_into,
                        "created_at": c.created_at,
                        "display_name": c.profile.display_name,
                        "name_key": name_key(c.profile.display_name),
                        "profile": _profile_json(c.profile),
                        "segments": c.segments,
                        "version": c.version,
                    }
                    for c in (book.customers[cid] for cid in dirty)
                ],
            )
            identifier_rows = [
                {
                    "tenant_id": self.tenant_id,
                    "kind": seen.identifier.kind.value,
                    "value": seen.identifier.value,
                    "customer_id": cid,
                    "verified": seen.verified,
                    "channel_id": seen.channel_id,
                }
                for cid in dirty
                for seen in book.customers[cid].identifiers.values()
            ]
            if identifier_rows:
                await self.connection.execute(IDENTIFIERS.insert(), identifier_rows)
        merge_ids = sorted(book.dirty_merges)
        if merge_ids:
            await self.connection.execute(
                delete(MERGES).where(
                    MERGES.c.tenant_id == self.tenant_id, MERGES.c.merge_id.in_(merge_ids)
                )
            )
            await self.connection.execute(
                MERGES.insert(), [self._merge_row(book.merges[mid]) for mid in merge_ids]
            )
        if book.proposals:
            await self.add_proposals(book.proposals, at)
            book.proposals = []

    def _merge_row(self, merge: Merge) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "merge_id": merge.id,
            "survivor_id": merge.survivor_id,
            "merged_id": merge.merged_id,
            "merged_at": merge.at,
            "reason": merge.reason.value,
            "approved_by": merge.approved_by,
            "proposal_id": merge.proposal_id,
            "undone": merge.undone,
            "erased": merge.erased,
            "detail": {
                "moved": [_seen_json(item) for item in merge.moved],
                "survivor_before": _profile_json(merge.survivor_before),
                "merged_before": _profile_json(merge.merged_before),
                "decisions": [
                    {"key": d.key, "from_merged": d.from_merged, "rule": d.rule}
                    for d in merge.decisions
                ],
            },
        }

    async def add_proposals(self, proposals: Iterable[Proposal], at: datetime) -> None:
        fresh = {p.id: p for p in proposals}
        if not fresh:
            return
        existing = await self.connection.execute(
            select(PROPOSALS.c.proposal_id).where(
                PROPOSALS.c.tenant_id == self.tenant_id,
                PROPOSALS.c.proposal_id.in_(sorted(fresh)),
            )
        )
        for proposal_id in existing.scalars():
            fresh.pop(proposal_id, None)
        if fresh:
            await self.connection.execute(
                PROPOSALS.insert(),
                [
                    {
                        "tenant_id": self.tenant_id,
                        "proposal_id": p.id,
                        "customer_id": p.customer_id,
                        "candidate_id": p.candidate_id,
                        "score": p.score,
                        "evidence": list(p.evidence),
                        "status": "open",
                        "proposed_at": at,
                    }
                    for p in fresh.values()
                ],
            )

    async def proposal(self, proposal_id: str) -> Any:
        result = await self.connection.execute(
            select(PROPOSALS).where(
                PROPOSALS.c.tenant_id == self.tenant_id, PROPOSALS.c.proposal_id == proposal_id
            )
        )
        return result.first()

    async def close_proposal(self, proposal_id: str, status: str) -> None:
        await self.connection.execute(
            update(PROPOSALS)
            .where(PROPOSALS.c.tenant_id == self.tenant_id, PROPOSALS.c.proposal_id == proposal_id)
            .values(status=status)
        )

    async def open_proposals(self) -> list[Any]:
        rows = await self.connection.execute(
            select(PROPOSALS)
            .where(PROPOSALS.c.tenant_id == self.tenant_id, PROPOSALS.c.status == "open")
            .order_by(PROPOSALS.c.proposed_at, PROPOSALS.c.proposal_id)
        )
        return list(rows)

    # --- erasure --------------------------------------------------------------------------

    async def purge(self, customer_ids: list[str], at: datetime) -> None:
        """Remove what the book does not hold about erased customers: their proposals,
        their conversations' timeline (message texts) and the conversations themselves,
        remembering the conversation ids so a replay skips them."""
        await self.connection.execute(
            delete(PROPOSALS).where(
                PROPOSALS.c.tenant_id == self.tenant_id,
                PROPOSALS.c.customer_id.in_(customer_ids)
                | PROPOSALS.c.candidate_id.in_(customer_ids),
            )
        )
        rows = await self.connection.execute(
            select(CONVERSATIONS.c.conversation_id).where(
                CONVERSATIONS.c.tenant_id == self.tenant_id,
                CONVERSATIONS.c.customer_id.in_(customer_ids),
            )
        )
        conversations = sorted(set(rows.scalars()))
        if not conversations:
            return
        await self.connection.execute(
            delete(TIMELINE).where(
                TIMELINE.c.tenant_id == self.tenant_id,
                TIMELINE.c.conversation_id.in_(conversations),
            )
        )
        await self.connection.execute(
            delete(CONVERSATIONS).where(
                CONVERSATIONS.c.tenant_id == self.tenant_id,
                CONVERSATIONS.c.conversation_id.in_(conversations),
            )
        )
        known = await self.erased_conversations(conversations)
        new = [c for c in conversations if c not in known]
        if new:
            await self.connection.execute(
                ERASED_CONVERSATIONS.insert(),
                [{"tenant_id": self.tenant_id, "conversation_id": c, "erased_at": at} for c in new],
            )
