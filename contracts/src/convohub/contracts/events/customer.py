"""Customer events: identities, profile changes, merges and their undoing, segments, erasure.

Carried on `convohub.customer.v1`, keyed by customer id. CRM produces them as it resolves
the identifiers seen on channels to customers and keeps their profiles.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field, JsonValue

from convohub.contracts.events.common import Participant
from convohub.contracts.payload import EventPayload, ValueObject, event, personal
from convohub.contracts.topics import CUSTOMER, CUSTOMER_PROFILE


class IdentifierKind(StrEnum):
    """What kind of identifier a customer identifier is."""

    PHONE = "phone"
    EMAIL = "email"
    WHATSAPP_ID = "whatsapp_id"
    SOCIAL_HANDLE = "social_handle"
    WEB_VISITOR_ID = "web_visitor_id"
    EXTERNAL_ID = "external_id"


class IdentityMatchMethod(StrEnum):
    """How an identifier was resolved to a customer."""

    EXACT_VERIFIED = "exact_verified"
    EXACT_UNVERIFIED = "exact_unverified"
    NEW = "new"


class MergeReason(StrEnum):
    """Why two customers were merged into one."""

    VERIFIED_EXACT_MATCH = "verified_exact_match"
    SUPERVISOR_APPROVED = "supervisor_approved"
    INTEGRATOR_REQUEST = "integrator_request"


class ErasureReason(StrEnum):
    """Why a customer's personal data is to be erased."""

    DATA_SUBJECT_REQUEST = "data_subject_request"
    ACCOUNT_CLOSED = "account_closed"
    RETENTION_POLICY = "retention_policy"
    LEGAL_OBLIGATION = "legal_obligation"


class CustomerStatus(StrEnum):
    """Where a customer record stands."""

    ACTIVE = "active"
    MERGED = "merged"
    ERASED = "erased"


class CustomerIdentifier(ValueObject):
    """One way to recognise a customer: a phone number, e-mail address, handle or id."""

    kind: IdentifierKind = Field(description="What kind of identifier this is.")
    value: str = personal(
        "The identifier, normalised: E.164 phone, lower-cased e-mail address, WhatsApp id, "
        "social handle, web visitor id, or the integrator's own customer id.",
        examples=["+8613800138000"],
    )
    verified: bool = Field(
        description="True when the customer proved control of it (OTP, login, provider-verified)."
    )
    channel_id: str | None = Field(
        default=None,
        description="Configured channel (from convohub.yaml) it was seen on; empty when it "
        "came from the integrator or an agent.",
        examples=["wa-main"],
    )


class SurvivorshipDecision(ValueObject):
    """Which of two merged customers' values an attribute of the surviving profile keeps."""

    attribute: str = Field(description="Profile attribute name.", examples=["tier"])
    chosen_from_customer_id: str = Field(
        description="Customer whose value was kept: the survivor or the merged customer."
    )
    rule: str = Field(
        description="Survivorship rule that decided (e.g. most_recent, verified_wins, "
        "highest_tier, survivor_wins).",
        examples=["most_recent"],
    )


@event("convohub.customer.identified.v1", topic=CUSTOMER)
class CustomerIdentified(EventPayload):
    """CRM resolved an identifier seen on a channel (or given by an integrator) to a customer,
    creating the customer when none matched. Emitted by crm once per newly seen identifier."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cust-19c2",
                    "identifier": {
                        "kind": "whatsapp_id",
                        "value": "8613800138000",
                        "verified": True,
                        "channel_id": "wa-main",
                    },
                    "conversation_id": "conv-7f3a",
                    "is_new_customer": False,
                    "matched_by": "exact_verified",
                }
            ]
        }
    )

    customer_id: str = Field(description="Customer id, the partition key.", examples=["cust-19c2"])
    identifier: CustomerIdentifier = Field(description="The identifier that was resolved.")
    conversation_id: str | None = Field(
        default=None, description="Conversation that revealed the identifier, if any."
    )
    is_new_customer: bool = Field(
        description="True when no customer matched and this one was created for the identifier."
    )
    matched_by: IdentityMatchMethod = Field(
        description="How it matched: exactly to a verified identifier, exactly to an unverified "
        "one, or not at all (new customer)."
    )


@event("convohub.customer.profile_updated.v1", topic=CUSTOMER)
class CustomerProfileUpdated(EventPayload):
    """Attributes, tier, lifetime value or tags of a customer's profile changed. Emitted by crm
    after an agent edit, an integrator update or a recalculation of derived attributes."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cust-19c2",
                    "changed_attributes": {
                        "name": "张三 Zhang San",
                        "city": "上海",
                        "preferred_language": "zh-CN",
                        "orders_last_year": 14,
                    },
                    "removed_attributes": ["fax"],
                    "tier": "gold",
                    "lifetime_value": "12850.40",
                    "lifetime_value_currency": "CNY",
                    "tags_added": ["repeat_buyer"],
                    "tags_removed": ["new_customer"],
                    "updated_by": {"kind": "agent", "id": "agent-42"},
                }
            ]
        }
    )

    customer_id: str = Field(description="Customer id, the partition key.")
    changed_attributes: dict[str, JsonValue] = personal(
        "Attributes set or changed, name to new JSON value (attributes are integrator-defined "
        "and may hold anything, so the whole map is personal data).",
        default_factory=dict,
    )
    removed_attributes: list[str] = Field(
        default_factory=list, description="Names of attributes removed from the profile."
    )
    tier: str | None = Field(
        default=None,
        description="New customer tier as configured by the tenant (e.g. standard, gold, vip); "
        "empty when unchanged.",
    )
    lifetime_value: str | None = Field(
        default=None,
        pattern=r"^-?[0-9]+(\.[0-9]+)?$",
        description="New lifetime value as an exact decimal string (money is never a float); "
        "empty when unchanged.",
        examples=["12850.40"],
    )
    lifetime_value_currency: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 currency of `lifetime_value`.",
        examples=["CNY"],
    )
    tags_added: list[str] = Field(default_factory=list, description="Tags added to the customer.")
    tags_removed: list[str] = Field(
        default_factory=list, description="Tags removed from the customer."
    )
    updated_by: Participant = Field(
        description="Who changed it: an agent, a bot, or the system (integrator API client id "
        "or `crm` for derived attributes in `id`)."
    )


@event("convohub.customer.merge_proposed.v1", topic=CUSTOMER)
class CustomerMergeProposed(EventPayload):
    """CRM found a near (not exact) match between customers and asks a supervisor to approve a
    merge; near matches are never merged silently. Emitted by crm."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cust-19c2",
                    "proposal_id": "mprop-0a71",
                    "candidate_customer_ids": ["cust-88d0"],
                    "match_score": 0.87,
                    "evidence": [
                        "same name 张三 / Zhang San",
                        "e-mail zhang.san@example.com unverified on cust-88d0",
                        "same delivery city",
                    ],
                }
            ]
        }
    )

    customer_id: str = Field(
        description="Customer the near match was found for, the partition key (the proposed "
        "survivor)."
    )
    proposal_id: str = Field(
        description="Id of the proposal; the merge it leads to refers to it.",
        examples=["mprop-0a71"],
    )
    candidate_customer_ids: list[str] = Field(
        min_length=1, description="Customers proposed to be merged into `customer_id`."
    )
    match_score: float = Field(
        ge=0, le=1, description="Confidence of the match as a ratio from 0 to 1."
    )
    evidence: list[str] = personal(
        "Why they look like the same person, for the supervisor (may quote names and identifiers).",
        default_factory=list,
    )


@event("convohub.customer.identities_merged.v1", topic=CUSTOMER)
class CustomerIdentitiesMerged(EventPayload):
    """Two customers were merged: the merged customer's identifiers moved to the survivor, which
    is the key. Emitted by crm; undone by `convohub.customer.merge_undone.v1`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "merge_id": "merge-5e21",
                    "customer_id": "cust-19c2",
                    "merged_customer_id": "cust-88d0",
                    "moved_identifiers": [
                        {
                            "kind": "email",
                            "value": "zhang.san@example.com",
                            "verified": False,
                            "channel_id": "email-support",
                        }
                    ],
                    "reason": "supervisor_approved",
                    "approved_by": "user-sup-7",
                    "proposal_id": "mprop-0a71",
                    "survivorship_decisions": [
                        {
                            "attribute": "tier",
                            "chosen_from_customer_id": "cust-88d0",
                            "rule": "highest_tier",
                        },
                        {
                            "attribute": "name",
                            "chosen_from_customer_id": "cust-19c2",
                            "rule": "verified_wins",
                        },
                    ],
                }
            ]
        }
    )

    merge_id: str = Field(description="Id of the merge; an undo refers to it.")
    customer_id: str = Field(description="The surviving customer, the partition key.")
    merged_customer_id: str = Field(
        description="The customer merged into the survivor; it no longer resolves on its own."
    )
    moved_identifiers: list[CustomerIdentifier] = Field(
        default_factory=list, description="Identifiers moved from the merged customer."
    )
    reason: MergeReason = Field(description="Why the customers were merged.")
    approved_by: str | None = Field(
        default=None,
        description="Supervisor user id who approved; set when reason is supervisor_approved.",
    )
    proposal_id: str | None = Field(
        default=None, description="The merge proposal this merge carries out, if any."
    )
    survivorship_decisions: list[SurvivorshipDecision] = Field(
        default_factory=list,
        description="For each attribute both customers had, whose value the survivor kept.",
    )


@event("convohub.customer.merge_undone.v1", topic=CUSTOMER)
class CustomerMergeUndone(EventPayload):
    """A merge was reversed: the merged customer exists again with the identifiers it brought.
    Emitted by crm when a supervisor undoes a wrong merge."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "merge_id": "merge-5e21",
                    "customer_id": "cust-19c2",
                    "restored_customer_id": "cust-88d0",
                    "returned_identifiers": [
                        {
                            "kind": "email",
                            "value": "zhang.san@example.com",
                            "verified": False,
                            "channel_id": "email-support",
                        }
                    ],
                    "undone_by": "user-sup-7",
                    "reason": "不是同一个人 / different people with the same name",
                }
            ]
        }
    )

    merge_id: str = Field(description="The merge undone.")
    customer_id: str = Field(description="The survivor of the merge, the partition key.")
    restored_customer_id: str = Field(description="The customer restored to its own record.")
    returned_identifiers: list[CustomerIdentifier] = Field(
        default_factory=list, description="Identifiers given back to the restored customer."
    )
    undone_by: str = Field(description="User id of the supervisor who undid the merge.")
    reason: str | None = personal("Why the merge was undone, as typed.", default=None)


@event("convohub.customer.segment_entered.v1", topic=CUSTOMER)
class CustomerSegmentEntered(EventPayload):
    """The customer started matching a segment rule (e.g. became a VIP). Emitted by crm when it
    evaluates segment rules after a profile change."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cust-19c2",
                    "segment_id": "vip",
                    "rule_id": "vip-ltv-10000",
                    "entered_at": "2026-11-23T09:00:00Z",
                }
            ]
        }
    )

    customer_id: str = Field(description="Customer id, the partition key.")
    segment_id: str = Field(description="Segment entered.", examples=["vip"])
    rule_id: str = Field(description="Segment rule that now matches.", examples=["vip-ltv-10000"])
    entered_at: datetime = Field(description="When the customer entered the segment.")


@event("convohub.customer.segment_left.v1", topic=CUSTOMER)
class CustomerSegmentLeft(EventPayload):
    """The customer stopped matching a segment rule. Emitted by crm when it evaluates segment
    rules after a profile change."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cust-19c2",
                    "segment_id": "at_risk",
                    "rule_id": "at-risk-no-order-90d",
                    "left_at": "2026-11-23T09:00:00Z",
                }
            ]
        }
    )

    customer_id: str = Field(description="Customer id, the partition key.")
    segment_id: str = Field(description="Segment left.", examples=["at_risk"])
    rule_id: str = Field(description="Segment rule that no longer matches.")
    left_at: datetime = Field(description="When the customer left the segment.")


@event("convohub.customer.erasure_requested.v1", topic=CUSTOMER)
class CustomerErasureRequested(EventPayload):
    """An administrator asked for the customer's personal data to be erased. Emitted by crm;
    `convohub.customer.erased.v1` follows once crm has erased it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cust-19c2",
                    "request_id": "erase-2026-0042",
                    "requested_by": "user-admin-1",
                    "reason": "data_subject_request",
                    "requested_at": "2026-11-23T09:00:00Z",
                }
            ]
        }
    )

    customer_id: str = Field(description="Customer to erase, the partition key.")
    request_id: str = Field(description="Id of the erasure request, for audit.")
    requested_by: str = Field(description="User id of the administrator who asked.")
    reason: ErasureReason = Field(description="Why the data is to be erased.")
    requested_at: datetime = Field(description="When the erasure was requested.")


@event("convohub.customer.erased.v1", topic=CUSTOMER)
class CustomerErased(EventPayload):
    """CRM erased the customer's personal data; on this event every service purges the
    customer's personal data from its own stores. Emitted by crm."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cust-19c2",
                    "request_id": "erase-2026-0042",
                    "erased_at": "2026-11-23T09:05:00Z",
                    "confirmed_by_services": ["crm"],
                }
            ]
        }
    )

    customer_id: str = Field(description="Customer erased, the partition key.")
    request_id: str = Field(description="The erasure request carried out.")
    erased_at: datetime = Field(description="When crm finished erasing.")
    confirmed_by_services: list[str] = Field(
        default_factory=list,
        description="Services that had already confirmed the purge when this was emitted.",
    )


@event("convohub.customer.profile_snapshot.v1", topic=CUSTOMER_PROFILE)
class CustomerProfileSnapshot(EventPayload):
    """The whole current profile of one customer, published by crm after every change to it
    on the compacted topic `convohub.customer-profile.v1` (keyed by customer id), so the
    latest record per key is the customer as crm knows it now. A merged-away customer's
    record names its survivor. On erasure crm publishes a minimal snapshot with status
    `erased` and no personal data, then a tombstone (a record with a null value) for the
    key, so compaction deletes every snapshot of the person: readers must expect a null
    value and treat it as "this customer is gone"."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cust-19c2",
                    "status": "active",
                    "display_name": "Zhang San",
                    "identifiers": [
                        {
                            "kind": "phone",
                            "value": "+8613800138000",
                            "verified": True,
                            "channel_id": "sms-main",
                        }
                    ],
                    "tier": "gold",
                    "lifetime_value": "12850.40",
                    "lifetime_value_currency": "CNY",
                    "attributes": {"city": "上海"},
                    "tags": ["repeat_buyer"],
                    "segments": ["vip"],
                    "version": 7,
                    "updated_at": "2026-11-23T09:00:00Z",
                }
            ]
        }
    )

    customer_id: str = Field(description="Customer id, the record key.")
    status: CustomerStatus = Field(
        description="active; merged (see `merged_into_customer_id`); or erased (nothing else set)."
    )
    merged_into_customer_id: str | None = Field(
        default=None, description="The survivor this customer was merged into, when merged."
    )
    display_name: str | None = personal("The customer's name, if known.", default=None)
    identifiers: list[CustomerIdentifier] = Field(
        default_factory=list, description="Every identifier that resolves to this customer."
    )
    tier: str | None = Field(default=None, description="Customer tier, if set.")
    lifetime_value: str | None = Field(
        default=None,
        pattern=r"^-?[0-9]+(\.[0-9]+)?$",
        description="Lifetime value as an exact decimal string, if set.",
    )
    lifetime_value_currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217 currency of the value."
    )
    attributes: dict[str, JsonValue] = personal(
        "Custom attributes, name to JSON value (integrator-defined, so personal data).",
        default_factory=dict,
    )
    tags: list[str] = Field(default_factory=list, description="Tags of the customer.")
    segments: list[str] = Field(
        default_factory=list, description="Segments the customer is in now."
    )
    version: int = Field(
        ge=0, description="Grows with every change of the profile; a reader keeps the highest."
    )
    updated_at: datetime = Field(description="When the profile last changed.")
