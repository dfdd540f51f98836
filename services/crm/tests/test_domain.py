"""The pure decisions: normalising identifiers, resolving, merging, survivorship, segments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from convohub.contracts.events.common import Channel, ChannelIdentity, Participant
from convohub.contracts.events.customer import (
    CustomerIdentified,
    CustomerIdentitiesMerged,
    CustomerMergeProposed,
    CustomerStatus,
    IdentifierKind,
    MergeReason,
)
from convohub.crm.domain.book import Book, MergeConflictError, Observation, ProfileChange
from convohub.crm.domain.identifiers import (
    Identifier,
    InvalidIdentifierError,
    identifiers_of,
    normalise,
)
from convohub.crm.domain.profiles import check_attribute, edit_distance
from convohub.crm.domain.settings import CrmSettings

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SETTINGS = CrmSettings.model_validate(
    {
        "default_region": "CN",
        "attributes": {"city": "string", "orders": "integer", "vip_since": "date"},
        "segments": [
            {
                "id": "vip",
                "rules": [
                    {"id": "vip-gold", "tier_in": ["gold", "platinum"]},
                    {"id": "vip-ltv", "lifetime_value_above": "10000"},
                ],
            }
        ],
    }
)
SYSTEM = Participant(kind="system", id="integrator")


def seen(channel: str, address: str, name: str | None = None) -> list:
    identity = ChannelIdentity(
        channel=Channel(channel), channel_id=f"{channel}-main", address=address, display_name=name
    )
    return identifiers_of(identity, "CN")


def observe(
    book: Book,
    channel: str,
    address: str,
    n: int,
    *,
    name: str | None = None,
    conversation_customer_id: str | None = None,
) -> Observation:
    return book.observe(
        seen(channel, address, name),
        at=T0 + timedelta(minutes=n),
        new_customer_id=f"c{n}",
        new_id=lambda d: f"{n}:{d}",
        conversation_customer_id=conversation_customer_id,
        display_name=name,
    )


def of_type(observation: Observation, kind: type) -> list:
    return [event for event in observation.events if isinstance(event, kind)]


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        (IdentifierKind.PHONE, "+86 138-0013-8000", "+8613800138000"),
        (IdentifierKind.PHONE, "138 0013 8000", "+8613800138000"),
        (IdentifierKind.PHONE, "0086 13800138000", "+8613800138000"),
        (IdentifierKind.WHATSAPP_ID, "8613800138000", "8613800138000"),
        (IdentifierKind.EMAIL, " Zhang.San@Example.COM ", "zhang.san@example.com"),
        (IdentifierKind.SOCIAL_HANDLE, "@ZhangSan", "zhangsan"),
        (IdentifierKind.WEB_VISITOR_ID, " v-123 ", "v-123"),
        (IdentifierKind.EXTERNAL_ID, "CRM-42", "CRM-42"),
    ],
)
def test_identifiers_are_normalised(kind: IdentifierKind, raw: str, expected: str) -> None:
    assert normalise(kind, raw, "CN") == Identifier(kind, expected)


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (IdentifierKind.PHONE, "12"),
        (IdentifierKind.EMAIL, "no-at-sign"),
        (IdentifierKind.EMAIL, ""),
    ],
)
def test_invalid_identifiers_are_refused(kind: IdentifierKind, raw: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        normalise(kind, raw, "CN")


def test_a_whatsapp_id_reveals_the_phone_number_and_both_are_verified() -> None:
    found = seen("whatsapp", "8613800138000")
    assert [(s.identifier.kind, s.identifier.value, s.verified) for s in found] == [
        (IdentifierKind.WHATSAPP_ID, "8613800138000", True),
        (IdentifierKind.PHONE, "+8613800138000", True),
    ]
    assert [s.verified for s in seen("email", "a@b.example")] == [False]


def test_the_same_number_on_sms_and_whatsapp_is_one_customer() -> None:
    book = Book(SETTINGS)
    first = observe(book, "sms", "13800138000", 1)
    second = observe(book, "whatsapp", "8613800138000", 2)
    assert first.customer_id == second.customer_id == "c1"
    identified = of_type(second, CustomerIdentified)
    assert [(e.identifier.kind, e.is_new_customer) for e in identified] == [
        (IdentifierKind.WHATSAPP_ID, False)
    ]


def test_a_known_customer_opening_a_conversation_is_identified_with_it() -> None:
    book = Book(SETTINGS)
    observe(book, "sms", "13800138000", 1)
    returning = book.observe(
        seen("sms", "138 0013 8000"),
        at=T0,
        new_customer_id="unused",
        new_id=str,
        conversation_id="conv-9",
        new_conversation=True,
    )
    identified = of_type(returning, CustomerIdentified)
    assert [(e.customer_id, e.conversation_id, e.is_new_customer) for e in identified] == [
        ("c1", "conv-9", False)
    ]
    assert "unused" not in book.customers


def test_a_verified_tie_between_two_customers_merges_them_at_once() -> None:
    book = Book(SETTINGS)
    observe(book, "web_chat", "visitor-1", 1)  # conversation on the web: customer c1
    observe(book, "sms", "13800138000", 2)  # the phone is customer c2
    switched = observe(book, "sms", "13800138000", 3, conversation_customer_id="c1")
    merges = of_type(switched, CustomerIdentitiesMerged)
    assert len(merges) == 1
    assert merges[0].reason == MergeReason.VERIFIED_EXACT_MATCH
    assert (merges[0].customer_id, merges[0].merged_customer_id) == ("c1", "c2")
    assert book.owner(Identifier(IdentifierKind.PHONE, "+8613800138000")) == "c1"


def test_an_unverified_tie_is_only_proposed() -> None:
    book = Book(SETTINGS)
    observe(book, "sms", "13800138000", 1)
    observe(book, "email", "zhang@example.com", 2)
    tied = observe(book, "email", "zhang@example.com", 3, conversation_customer_id="c1")
    assert not of_type(tied, CustomerIdentitiesMerged)
    proposals = of_type(tied, CustomerMergeProposed)
    assert proposals[0].candidate_customer_ids == ["c2"]
    assert book.customers["c2"].active


def test_a_pair_is_proposed_once_however_often_the_tie_is_seen() -> None:
    book = Book(SETTINGS)
    observe(book, "sms", "13800138000", 1)
    observe(book, "email", "zhang@example.com", 2)
    again = [
        observe(book, "email", "zhang@example.com", n, conversation_customer_id="c1")
        for n in (3, 4, 5)
    ]
    assert [len(of_type(o, CustomerMergeProposed)) for o in again] == [1, 0, 0]


def test_same_name_and_a_similar_email_is_proposed_never_merged() -> None:
    book = Book(SETTINGS)
    observe(book, "email", "zhang.san@example.com", 1, name="Zhang San")
    near = observe(book, "email", "zhang.sam@example.com", 2, name="ZHANG  san")
    far = observe(book, "email", "someone.else@example.com", 3, name="Zhang San")
    proposals = of_type(near, CustomerMergeProposed)
    assert [(p.customer_id, p.candidate_customer_ids) for p in proposals] == [("c2", ["c1"])]
    assert 0 < proposals[0].match_score < 1
    assert not of_type(far, CustomerMergeProposed)
    assert all(c.active for c in book.customers.values())


def test_survivorship_keeps_the_highest_tier_and_the_most_recent_values() -> None:
    book = Book(SETTINGS)
    observe(book, "sms", "13800138000", 1)
    observe(book, "email", "z@example.com", 2)
    book.update_profile(
        "c1", ProfileChange(tier="gold", attributes={"city": "上海"}), at=T0, updated_by=SYSTEM
    )
    later = T0 + timedelta(hours=1)
    book.update_profile(
        "c2",
        ProfileChange(tier="silver", attributes={"city": "北京", "orders": 3}),
        at=later,
        updated_by=SYSTEM,
    )
    merged = book.merge("c1", "c2", merge_id="m", reason=MergeReason.INTEGRATOR_REQUEST, at=later)
    survivor = book.customers["c1"].profile
    assert survivor.tier == "gold"
    assert survivor.attributes == {"city": "北京", "orders": 3}
    rules = {
        d.attribute: (d.chosen_from_customer_id, d.rule) for d in merged.survivorship_decisions
    }
    assert rules["tier"] == ("c1", "highest_tier")
    assert rules["city"] == ("c2", "most_recent")

    book.undo("m", at=later + timedelta(minutes=1), undone_by="sup")
    assert book.customers["c1"].profile.attributes == {"city": "上海"}
    assert book.customers["c2"].profile.attributes == {"city": "北京", "orders": 3}
    assert book.customers["c2"].profile.tier == "silver"
    with pytest.raises(MergeConflictError):
        book.undo("m", at=later, undone_by="sup")


def test_segments_are_entered_and_left_on_profile_changes() -> None:
    book = Book(SETTINGS)
    observe(book, "sms", "13800138000", 1)
    book.refresh_segments(T0)
    book.update_profile(
        "c1", ProfileChange(lifetime_value=Decimal("12000.50")), at=T0, updated_by=SYSTEM
    )
    entered = book.refresh_segments(T0)
    assert [(e.segment_id, e.rule_id) for e in entered] == [("vip", "vip-ltv")]
    book.update_profile("c1", ProfileChange(lifetime_value=Decimal("10")), at=T0, updated_by=SYSTEM)
    left = book.refresh_segments(T0)
    assert [type(e).__name__ for e in left] == ["CustomerSegmentLeft"]


def test_erasure_forgets_the_customer_and_everyone_merged_into_it() -> None:
    book = Book(SETTINGS)
    observe(book, "sms", "13800138000", 1, name="Zhang San")
    observe(book, "email", "z@example.com", 2)
    book.merge("c1", "c2", merge_id="m", reason=MergeReason.INTEGRATOR_REQUEST, at=T0)
    assert sorted(book.erase("c2")) == ["c1", "c2"]
    assert not book.owners
    assert {c.status for c in book.customers.values()} == {CustomerStatus.ERASED}
    assert book.merges["m"].moved == []
    snapshot = book.snapshots(T0)[0]
    assert snapshot.status == CustomerStatus.ERASED
    assert snapshot.display_name is None


def test_declared_attribute_types() -> None:
    assert check_attribute(SETTINGS, "orders", 3) == (3, None)
    assert check_attribute(SETTINGS, "orders", True)[1] == "attribute 'orders' must be a integer"
    assert check_attribute(SETTINGS, "vip_since", "2026-01-31") == ("2026-01-31", None)
    assert check_attribute(SETTINGS, "vip_since", "yesterday")[1] is not None
    assert "not declared" in (check_attribute(SETTINGS, "shoe", 1)[1] or "")


def test_settings_refuse_rules_without_conditions_and_undeclared_attributes() -> None:
    with pytest.raises(ValidationError):
        CrmSettings.model_validate({"segments": [{"id": "s", "rules": [{"id": "r"}]}]})
    with pytest.raises(ValidationError):
        CrmSettings.model_validate(
            {"segments": [{"id": "s", "rules": [{"id": "r", "attribute_equals": {"x": 1}}]}]}
        )


def test_edit_distance() -> None:
    assert edit_distance("zhang.san", "zhang.sam") == 1
    assert edit_distance("", "abc") == 3
    assert edit_distance("kitten", "sitting") == 3


def test_the_example_config_is_valid() -> None:
    import pathlib

    import yaml

    path = pathlib.Path(__file__).parents[1] / "example-config.yaml"
    settings = CrmSettings.model_validate(yaml.safe_load(path.read_text())["crm"])
    assert [segment.id for segment in settings.segments] == ["vip", "newsletter"]
