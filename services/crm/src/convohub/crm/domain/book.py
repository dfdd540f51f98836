"""The customers of one tenant that an operation touches, and every decision about them:
resolving identifiers, merging, undoing merges, profile changes, segments and erasure.

A `Book` holds customers loaded by the repository (each with all its identifiers), applies
an operation in memory and returns the events it decided; the repository writes back the
customers and merges it marks dirty. Invariant: every identifier belongs to exactly one
customer, and that customer is active (merged-away and erased customers hold none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from convohub.contracts.events.common import Participant
from convohub.contracts.events.customer import (
    CustomerIdentified,
    CustomerIdentifier,
    CustomerIdentitiesMerged,
    CustomerMergeProposed,
    CustomerMergeUndone,
    CustomerProfileSnapshot,
    CustomerProfileUpdated,
    CustomerSegmentEntered,
    CustomerSegmentLeft,
    CustomerStatus,
    IdentifierKind,
    IdentityMatchMethod,
    MergeReason,
    SurvivorshipDecision,
)
from convohub.crm.domain.identifiers import Identifier, SeenIdentifier
from convohub.crm.domain.profiles import (
    ATTRIBUTE_PREFIX,
    DISPLAY_NAME,
    LIFETIME_VALUE,
    TIER,
    Decision,
    Profile,
    edit_distance,
    name_key,
    segments_of,
    survive,
)
from convohub.crm.domain.settings import CrmSettings


class CustomerNotFoundError(LookupError):
    """No such customer in this tenant (or it was erased)."""


class MergeConflictError(ValueError):
    """The merge or undo cannot be done in the customers' current state."""


@dataclass
class Customer:
    id: str
    created_at: datetime
    status: CustomerStatus = CustomerStatus.ACTIVE
    merged_into: str | None = None
    profile: Profile = field(default_factory=Profile)
    identifiers: dict[Identifier, SeenIdentifier] = field(default_factory=dict)
    segments: dict[str, str] = field(default_factory=dict)
    version: int = 0

    @property
    def active(self) -> bool:
        return self.status == CustomerStatus.ACTIVE


@dataclass
class Merge:
    id: str
    survivor_id: str
    merged_id: str
    at: datetime
    reason: MergeReason
    moved: list[SeenIdentifier]
    survivor_before: Profile
    merged_before: Profile
    decisions: list[Decision]
    approved_by: str | None = None
    proposal_id: str | None = None
    undone: bool = False
    erased: bool = False


@dataclass(frozen=True)
class Proposal:
    id: str
    customer_id: str
    candidate_id: str
    score: float
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class ProfileChange:
    """What an integrator asked to change; None leaves a field as it is."""

    display_name: str | None = None
    tier: str | None = None
    lifetime_value: Decimal | None = None
    lifetime_value_currency: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)  # value None removes
    tags_added: tuple[str, ...] = ()
    tags_removed: tuple[str, ...] = ()


@dataclass
class Observation:
    """What observing a contact decided."""

    customer_id: str | None
    events: list[Any] = field(default_factory=list)
    proposals: list[Proposal] = field(default_factory=list)


def to_contract(seen: SeenIdentifier) -> CustomerIdentifier:
    return CustomerIdentifier(
        kind=seen.identifier.kind,
        value=seen.identifier.value,
        verified=seen.verified,
        channel_id=seen.channel_id,
    )


class Book:
    """Loaded customers and merges of one tenant (see the module doc)."""

    def __init__(
        self,
        settings: CrmSettings,
        customers: Iterable[Customer] = (),
        merges: Iterable[Merge] = (),
    ) -> None:
        self.settings = settings
        self.customers: dict[str, Customer] = {}
        self.owners: dict[Identifier, str] = {}
        self.merges: dict[str, Merge] = {merge.id: merge for merge in merges}
        self.dirty: set[str] = set()
        self.dirty_merges: set[str] = set()
        self.proposals: list[Proposal] = []
        self.proposed_pairs: set[frozenset[str]] = set()
        """Customer pairs proposed before (open or decided): never proposed twice."""
        self._bumped: set[str] = set()
        for customer in customers:
            self.add(customer)

    def add(self, customer: Customer) -> None:
        """Load a customer (with all its identifiers)."""
        self.customers[customer.id] = customer
        for identifier in customer.identifiers:
            self.owners[identifier] = customer.id

    # --- reading --------------------------------------------------------------------------

    def root(self, customer_id: str) -> str:
        """The active customer `customer_id` resolves to (itself, or its survivor)."""
        seen = set()
        current = customer_id
        while True:
            customer = self.customers.get(current)
            if customer is None or customer.status == CustomerStatus.ERASED:
                raise CustomerNotFoundError(customer_id)
            if customer.active:
                return current
            if current in seen or customer.merged_into is None:
                raise CustomerNotFoundError(customer_id)
            seen.add(current)
            current = customer.merged_into

    def owner(self, identifier: Identifier) -> str | None:
        return self.owners.get(identifier)

    def family(self, customer_id: str) -> list[str]:
        """The customer and every loaded customer merged into it, directly or not."""
        members = [customer_id]
        for member in members:
            members.extend(
                c.id
                for c in self.customers.values()
                if c.merged_into == member and c.status == CustomerStatus.MERGED
            )
        return members

    # --- changes --------------------------------------------------------------------------

    def _touch(self, customer_id: str) -> Customer:
        customer = self.customers[customer_id]
        self.dirty.add(customer_id)
        if customer_id not in self._bumped:
            self._bumped.add(customer_id)
            customer.version += 1
        return customer

    def _attach(self, customer_id: str, seen: SeenIdentifier) -> None:
        customer = self._touch(customer_id)
        customer.identifiers[seen.identifier] = seen
        self.owners[seen.identifier] = customer_id

    def create(self, customer_id: str, at: datetime) -> Customer:
        if customer_id in self.customers:
            return self.customers[customer_id]
        customer = Customer(id=customer_id, created_at=at)
        self.customers[customer_id] = customer
        self._touch(customer_id)
        return customer

    def observe(
        self,
        seen: list[SeenIdentifier],
        *,
        at: datetime,
        new_customer_id: str,
        new_id: Callable[[str], str],
        conversation_customer_id: str | None = None,
        conversation_id: str | None = None,
        display_name: str | None = None,
        new_conversation: bool = False,
    ) -> Observation:
        """Resolve a contact's identifiers to one customer.

        A new identifier on a known conversation joins the conversation's customer; known
        identifiers resolve to their owner; nothing known creates `new_customer_id`. When the
        contact ties two customers together (a known conversation and an identifier owned by
        another customer, or two identifiers owned by two customers) they are merged at once
        if every identifier making the tie is verified, and proposed to a supervisor
        otherwise. A new e-mail address close to the address of a same-named customer is
        proposed too. `new_id(discriminator)` mints the deterministic ids of merges and
        proposals.
        """
        observation = Observation(customer_id=None)
        conversation_root = None
        if conversation_customer_id is not None:
            try:
                conversation_root = self.root(conversation_customer_id)
            except CustomerNotFoundError:
                conversation_root = None
        owned: dict[str, list[SeenIdentifier]] = {}
        for item in seen:
            owner = self.owner(item.identifier)
            if owner is not None:
                owned.setdefault(self.root(owner), []).append(item)
        candidates = sorted(owned, key=lambda cid: (self.customers[cid].created_at, cid))
        if conversation_root is not None:
            target = conversation_root
        elif candidates:
            target = candidates[0]
        else:
            target = self.create(new_customer_id, at).id
        observation.customer_id = target
        for other in candidates:
            if other == target:
                continue
            ties = owned[other]
            if all(item.verified for item in ties):
                survivor, merged = sorted(
                    (target, other), key=lambda cid: (self.customers[cid].created_at, cid)
                )
                event = self.merge(
                    survivor,
                    merged,
                    merge_id=new_id(f"merge:{merged}"),
                    reason=MergeReason.VERIFIED_EXACT_MATCH,
                    at=at,
                )
                observation.events.append(event)
                target = survivor
                observation.customer_id = target
            elif frozenset((target, other)) not in self.proposed_pairs:
                proposal = Proposal(
                    id=new_id(f"proposal:{other}"),
                    customer_id=target,
                    candidate_id=other,
                    score=0.9,
                    evidence=(
                        "seen in the same conversation",
                        *(f"{i.identifier.kind.value} {i.identifier.value}" for i in ties),
                    ),
                )
                observation.proposals.append(proposal)
                self.proposed_pairs.add(frozenset((target, other)))
        is_new = target == new_customer_id and target not in owned
        new_emails = []
        for item in seen:
            if self.owner(item.identifier) is not None:
                continue
            self._attach(target, item)
            if item.identifier.kind == IdentifierKind.EMAIL:
                new_emails.append(item.identifier.value)
            matched = (
                IdentityMatchMethod.NEW
                if is_new
                else IdentityMatchMethod.EXACT_VERIFIED
                if item.verified
                else IdentityMatchMethod.EXACT_UNVERIFIED
            )
            observation.events.append(
                CustomerIdentified(
                    customer_id=target,
                    identifier=to_contract(item),
                    conversation_id=conversation_id,
                    is_new_customer=is_new,
                    matched_by=matched,
                )
            )
        if (
            new_conversation
            and seen
            and not any(isinstance(event, CustomerIdentified) for event in observation.events)
        ):
            # A known customer opened a conversation: say so, so consumers that follow
            # conversations (the router) learn whose it is without resolving identifiers.
            first = seen[0]
            observation.events.append(
                CustomerIdentified(
                    customer_id=target,
                    identifier=to_contract(first),
                    conversation_id=conversation_id,
                    is_new_customer=False,
                    matched_by=IdentityMatchMethod.EXACT_VERIFIED
                    if self.customers[target].identifiers[first.identifier].verified
                    else IdentityMatchMethod.EXACT_UNVERIFIED,
                )
            )
        customer = self.customers[target]
        if display_name and not customer.profile.display_name:
            self._touch(target).profile.put(DISPLAY_NAME, display_name, at)
        if new_emails:
            observation.proposals.extend(self._near_matches(target, new_emails, new_id))
        for proposal in observation.proposals:
            observation.events.append(
                CustomerMergeProposed(
                    customer_id=proposal.customer_id,
                    proposal_id=proposal.id,
                    candidate_customer_ids=[proposal.candidate_id],
                    match_score=proposal.score,
                    evidence=list(proposal.evidence),
                )
            )
        self.proposals.extend(observation.proposals)
        return observation

    def _near_matches(
        self, customer_id: str, emails: list[str], new_id: Callable[[str], str]
    ) -> list[Proposal]:
        key = name_key(self.customers[customer_id].profile.display_name)
        if key is None:
            return []
        limit = self.settings.near_match_max_email_distance
        found = []
        for other in self.customers.values():
            if other.id == customer_id or not other.active:
                continue
            if name_key(other.profile.display_name) != key:
                continue
            if frozenset((customer_id, other.id)) in self.proposed_pairs:
                continue
            best: tuple[int, str, str] | None = None
            for identifier in other.identifiers:
                if identifier.kind != IdentifierKind.EMAIL:
                    continue
                for email in emails:
                    distance = edit_distance(email, identifier.value)
                    if 0 < distance <= limit and (best is None or distance < best[0]):
                        best = (distance, email, identifier.value)
            if best is not None:
                self.proposed_pairs.add(frozenset((customer_id, other.id)))
                distance, mine, theirs = best
                score = round(1 - distance / max(len(mine), len(theirs)), 3)
                found.append(
                    Proposal(
                        id=new_id(f"proposal:{other.id}"),
                        customer_id=customer_id,
                        candidate_id=other.id,
                        score=score,
                        evidence=(
                            f"same name {self.customers[customer_id].profile.display_name}",
                            f"similar e-mail addresses {mine} / {theirs}",
                        ),
                    )
                )
        return found

    def attach_identifier(
        self, customer_id: str, seen: SeenIdentifier
    ) -> CustomerIdentified | None:
        """Give a free identifier to the customer (an integrator's own id, an address it
        verified); None when the customer holds it already. MergeConflictError when another
        customer holds it: merging them is a decision of its own."""
        root = self.root(customer_id)
        owner = self.owner(seen.identifier)
        if owner == root:
            return None
        if owner is not None:
            raise MergeConflictError("the identifier belongs to another customer")
        self._attach(root, seen)
        return CustomerIdentified(
            customer_id=root,
            identifier=to_contract(seen),
            is_new_customer=False,
            matched_by=IdentityMatchMethod.EXACT_VERIFIED
            if seen.verified
            else IdentityMatchMethod.EXACT_UNVERIFIED,
        )

    def merge(
        self,
        survivor_id: str,
        merged_id: str,
        *,
        merge_id: str,
        reason: MergeReason,
        at: datetime,
        approved_by: str | None = None,
        proposal_id: str | None = None,
    ) -> CustomerIdentitiesMerged:
        """Merge `merged_id` into `survivor_id` (both resolved to their active customer)."""
        survivor_id, merged_id = self.root(survivor_id), self.root(merged_id)
        if survivor_id == merged_id:
            raise MergeConflictError("the customers are already one customer")
        if merge_id in self.merges:
            raise MergeConflictError(f"merge {merge_id} exists already")
        survivor, merged = self._touch(survivor_id), self._touch(merged_id)
        profile, decisions = survive(self.settings, survivor.profile, merged.profile)
        moved = list(merged.identifiers.values())
        record = Merge(
            id=merge_id,
            survivor_id=survivor_id,
            merged_id=merged_id,
            at=at,
            reason=reason,
            moved=moved,
            survivor_before=survivor.profile.copy(),
            merged_before=merged.profile.copy(),
            decisions=decisions,
            approved_by=approved_by,
            proposal_id=proposal_id,
        )
        survivor.profile = profile
        for item in moved:
            self._attach(survivor_id, item)
        merged.identifiers.clear()
        merged.profile = Profile()
        merged.status = CustomerStatus.MERGED
        merged.merged_into = survivor_id
        self.merges[merge_id] = record
        self.dirty_merges.add(merge_id)
        return CustomerIdentitiesMerged(
            merge_id=merge_id,
            customer_id=survivor_id,
            merged_customer_id=merged_id,
            moved_identifiers=[to_contract(item) for item in moved],
            reason=reason,
            approved_by=approved_by,
            proposal_id=proposal_id,
            survivorship_decisions=[
                SurvivorshipDecision(
                    attribute=decision.key.removeprefix(ATTRIBUTE_PREFIX),
                    chosen_from_customer_id=merged_id if decision.from_merged else survivor_id,
                    rule=decision.rule,
                )
                for decision in decisions
            ],
        )

    def undo(
        self, merge_id: str, *, at: datetime, undone_by: str, reason: str | None = None
    ) -> CustomerMergeUndone:
        """Reverse a merge: the merged customer gets back its profile and the identifiers it
        brought; the survivor drops the values it took from it (unless set again since) and
        its tags. Identifiers the survivor learnt after the merge stay with it. A merge whose
        survivor was itself merged away since must wait until that later merge is undone."""
        record = self.merges.get(merge_id)
        if record is None or record.erased:
            raise CustomerNotFoundError(merge_id)
        if record.undone:
            raise MergeConflictError(f"merge {merge_id} was undone already")
        survivor = self.customers[record.survivor_id]
        merged = self.customers[record.merged_id]
        if not survivor.active:
            raise MergeConflictError(
                f"the survivor {survivor.id} was merged again since; undo that merge first"
            )
        if merged.status != CustomerStatus.MERGED or merged.merged_into != survivor.id:
            raise MergeConflictError(f"customer {merged.id} is not merged by {merge_id}")
        survivor, merged = self._touch(survivor.id), self._touch(merged.id)
        returned = [
            item for item in record.moved if self.owners.get(item.identifier) == survivor.id
        ]
        for item in returned:
            survivor.identifiers.pop(item.identifier, None)
            self._attach(merged.id, item)
        merged.status = CustomerStatus.ACTIVE
        merged.merged_into = None
        merged.profile = record.merged_before.copy()
        for decision in record.decisions:
            if not decision.from_merged:
                continue
            changed = survivor.profile.changed_at.get(decision.key)
            if changed is not None and changed > record.at:
                continue  # set again after the merge: that value is the survivor's own
            before = record.survivor_before
            survivor.profile.put(
                decision.key, before.get(decision.key), before.changed_at.get(decision.key)
            )
        brought = set(record.merged_before.tags) - set(record.survivor_before.tags)
        survivor.profile.tags = [tag for tag in survivor.profile.tags if tag not in brought]
        record.undone = True
        self.dirty_merges.add(merge_id)
        return CustomerMergeUndone(
            merge_id=merge_id,
            customer_id=survivor.id,
            restored_customer_id=merged.id,
            returned_identifiers=[to_contract(item) for item in returned],
            undone_by=undone_by,
            reason=reason,
        )

    def update_profile(
        self, customer_id: str, change: ProfileChange, *, at: datetime, updated_by: Participant
    ) -> CustomerProfileUpdated | None:
        """Apply an integrator's change; None when nothing actually changed."""
        customer = self.customers[self.root(customer_id)]
        profile = customer.profile
        changed: dict[str, Any] = {}
        removed: list[str] = []
        tier = None
        amount = None
        if change.display_name is not None and change.display_name != profile.display_name:
            changed[DISPLAY_NAME] = change.display_name
        if change.tier is not None and change.tier != profile.tier:
            tier = change.tier
        if change.lifetime_value is not None:
            text = format(change.lifetime_value, "f")
            currency = change.lifetime_value_currency or profile.lifetime_value_currency
            if (text, currency) != (profile.lifetime_value, profile.lifetime_value_currency):
                amount = (text, currency)
        for name, value in change.attributes.items():
            if value is None:
                if name in profile.attributes:
                    removed.append(name)
            elif profile.attributes.get(name) != value:
                changed[name] = value
        added_tags = [t for t in dict.fromkeys(change.tags_added) if t not in profile.tags]
        removed_tags = [t for t in dict.fromkeys(change.tags_removed) if t in profile.tags]
        if not (changed or removed or tier or amount or added_tags or removed_tags):
            return None
        profile = self._touch(customer.id).profile
        for name, value in changed.items():
            key = DISPLAY_NAME if name == DISPLAY_NAME else ATTRIBUTE_PREFIX + name
            profile.put(key, value, at)
        for name in removed:
            profile.put(ATTRIBUTE_PREFIX + name, None, at)
        if tier is not None:
            profile.put(TIER, tier, at)
        if amount is not None:
            profile.put(LIFETIME_VALUE, amount, at)
        profile.tags = sorted((set(profile.tags) | set(added_tags)) - set(removed_tags))
        return CustomerProfileUpdated(
            customer_id=customer.id,
            changed_attributes=changed,
            removed_attributes=removed,
            tier=tier,
            lifetime_value=amount[0] if amount else None,
            lifetime_value_currency=amount[1] if amount else None,
            tags_added=added_tags,
            tags_removed=removed_tags,
            updated_by=updated_by,
        )

    def erase(self, customer_id: str) -> list[str]:
        """Forget the person: the customer and everyone merged into it lose identifiers and
        profile; the merges between them keep no copy. Returns the erased customer ids."""
        root = self.root(customer_id)
        members = self.family(root)
        for member in members:
            customer = self._touch(member)
            for identifier in customer.identifiers:
                self.owners.pop(identifier, None)
            customer.identifiers.clear()
            customer.profile = Profile()
            customer.segments = {}
            customer.status = CustomerStatus.ERASED
            customer.merged_into = None
        for record in self.merges.values():
            if record.survivor_id in members or record.merged_id in members:
                record.erased = True
                record.moved = []
                record.survivor_before = Profile()
                record.merged_before = Profile()
                record.decisions = []
                self.dirty_merges.add(record.id)
        return members

    # --- after an operation ---------------------------------------------------------------

    def refresh_segments(self, at: datetime) -> list[Any]:
        """Segment entered/left events of every changed active customer."""
        events: list[Any] = []
        for customer_id in sorted(self.dirty):
            customer = self.customers[customer_id]
            now = segments_of(self.settings, customer.profile) if customer.active else {}
            for segment_id, rule_id in now.items():
                if segment_id not in customer.segments:
                    events.append(
                        CustomerSegmentEntered(
                            customer_id=customer_id,
                            segment_id=segment_id,
                            rule_id=rule_id,
                            entered_at=at,
                        )
                    )
            for segment_id, rule_id in customer.segments.items():
                if segment_id not in now and customer.status != CustomerStatus.ERASED:
                    events.append(
                        CustomerSegmentLeft(
                            customer_id=customer_id,
                            segment_id=segment_id,
                            rule_id=rule_id,
                            left_at=at,
                        )
                    )
            customer.segments = now
        return events

    def snapshots(self, at: datetime) -> list[CustomerProfileSnapshot]:
        """One snapshot per changed customer (its whole current profile)."""
        return [snapshot_of(self.customers[cid], at) for cid in sorted(self.dirty)]


def snapshot_of(customer: Customer, at: datetime) -> CustomerProfileSnapshot:
    if customer.status == CustomerStatus.ERASED:
        return CustomerProfileSnapshot(
            customer_id=customer.id,
            status=customer.status,
            version=customer.version,
            updated_at=at,
        )
    profile = customer.profile
    return CustomerProfileSnapshot(
        customer_id=customer.id,
        status=customer.status,
        merged_into_customer_id=customer.merged_into,
        display_name=profile.display_name,
        identifiers=[
            to_contract(item) for item in sorted(customer.identifiers.values(), key=_order)
        ],
        tier=profile.tier,
        lifetime_value=profile.lifetime_value,
        lifetime_value_currency=profile.lifetime_value_currency,
        attributes=dict(profile.attributes),
        tags=list(profile.tags),
        segments=sorted(customer.segments),
        version=customer.version,
        updated_at=at,
    )


def _order(item: SeenIdentifier) -> tuple[str, str]:
    return (item.identifier.kind.value, item.identifier.value)
