"""Any sequence of identify, merge and undo keeps every identifier with exactly one active
customer, and undoing a merge restores both customers (stateful hypothesis test)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from convohub.contracts.events.customer import CustomerStatus, IdentifierKind, MergeReason
from convohub.crm.domain.book import Book, MergeConflictError
from convohub.crm.domain.identifiers import Identifier, SeenIdentifier
from convohub.crm.domain.profiles import TIER
from convohub.crm.domain.settings import CrmSettings

IDENTIFIERS = [Identifier(IdentifierKind.PHONE, f"+1415555{n:04d}") for n in range(6)] + [
    Identifier(IdentifierKind.EMAIL, f"p{n}@example.com") for n in range(4)
]


class Merges(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = Book(CrmSettings())
        self.clock = datetime(2026, 1, 1, tzinfo=UTC)
        self.counter = 0
        self.undoable: dict[str, tuple[dict, dict]] = {}

    def tick(self) -> datetime:
        self.clock += timedelta(minutes=1)
        self.counter += 1
        return self.clock

    def active(self) -> list[str]:
        return sorted(c.id for c in self.book.customers.values() if c.active)

    @rule(
        picks=st.lists(st.sampled_from(IDENTIFIERS), min_size=1, max_size=3, unique=True),
        verified=st.booleans(),
        tier=st.sampled_from([None, "silver", "gold"]),
    )
    def identify(self, picks: list[Identifier], verified: bool, tier: str | None) -> None:
        at = self.tick()
        seen = [SeenIdentifier(identifier, verified, "ch") for identifier in picks]
        observation = self.book.observe(
            seen, at=at, new_customer_id=f"c{self.counter}", new_id=lambda d: f"{self.counter}{d}"
        )
        assert observation.customer_id is not None
        if tier:
            customer = self.book.customers[observation.customer_id]
            customer.profile.put(TIER, tier, at)
        self.undoable.clear()  # later changes may legitimately alter what an undo restores

    @precondition(lambda self: len(self.active()) >= 2)
    @rule(data=st.data())
    def merge(self, data: st.DataObject) -> None:
        survivor, merged = data.draw(
            st.lists(st.sampled_from(self.active()), min_size=2, max_size=2, unique=True)
        )
        before = {
            cid: (
                set(self.book.customers[cid].identifiers),
                self.book.customers[cid].profile.copy(),
            )
            for cid in (survivor, merged)
        }
        merge_id = f"m{self.tick().timestamp()}"
        self.book.merge(
            survivor,
            merged,
            merge_id=merge_id,
            reason=MergeReason.INTEGRATOR_REQUEST,
            at=self.clock,
        )
        assert self.book.customers[merged].status == CustomerStatus.MERGED
        assert before[merged][0] <= set(self.book.customers[survivor].identifiers)
        self.undoable = {merge_id: before}

    @precondition(lambda self: bool(self.book.merges))
    @rule(data=st.data())
    def undo(self, data: st.DataObject) -> None:
        merge_id = data.draw(st.sampled_from(sorted(self.book.merges)))
        record = self.book.merges[merge_id]
        try:
            self.book.undo(merge_id, at=self.tick(), undone_by="sup")
        except MergeConflictError:
            survivor = self.book.customers[record.survivor_id]
            assert record.undone or not survivor.active
            return
        survivor = self.book.customers[record.survivor_id]
        merged = self.book.customers[record.merged_id]
        assert merged.active
        assert survivor.active
        if merge_id in self.undoable:  # undone right after the merge: exactly as before
            before = self.undoable[merge_id]
            assert set(survivor.identifiers) == before[survivor.id][0]
            assert set(merged.identifiers) == before[merged.id][0]
            assert survivor.profile.tier == before[survivor.id][1].tier
            assert merged.profile == before[merged.id][1]
        self.undoable.clear()

    @invariant()
    def every_identifier_has_exactly_one_active_customer(self) -> None:
        holders: dict[Identifier, list[str]] = {}
        for customer in self.book.customers.values():
            if not customer.active:
                assert not customer.identifiers, f"{customer.id} is {customer.status}"
            for identifier in customer.identifiers:
                holders.setdefault(identifier, []).append(customer.id)
        for identifier, customers in holders.items():
            assert len(customers) == 1, (identifier, customers)
            assert self.book.owners[identifier] == customers[0]
        assert set(self.book.owners) == set(holders)

    @invariant()
    def every_customer_resolves_to_an_active_one(self) -> None:
        for customer_id in self.book.customers:
            assert self.book.customers[self.book.root(customer_id)].active


Merges.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestMerges = Merges.TestCase
