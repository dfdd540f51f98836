"""The tenant's `crm:` section of convohub.yaml: declared attributes, tiers and segments."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AttributeType(StrEnum):
    """The type an integrator declares for a custom attribute."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SegmentRule(_Section):
    """One way into a segment; every condition given must hold."""

    id: str = Field(min_length=1, description="Rule id, named in segment events.")
    tier_in: tuple[str, ...] | None = Field(default=None, description="Tier is one of these.")
    lifetime_value_above: Decimal | None = Field(
        default=None, description="Lifetime value strictly greater than this."
    )
    has_tag: str | None = Field(default=None, description="The customer carries this tag.")
    attribute_equals: dict[str, Any] | None = Field(
        default=None, description="Custom attributes equal to these values."
    )

    @model_validator(mode="after")
    def _has_a_condition(self) -> SegmentRule:
        conditions = (self.tier_in, self.lifetime_value_above, self.has_tag, self.attribute_equals)
        if all(condition is None for condition in conditions):
            raise ValueError("a segment rule needs at least one condition")
        return self


class Segment(_Section):
    """A segment: a customer is in it while any of its rules matches."""

    id: str = Field(min_length=1)
    rules: tuple[SegmentRule, ...] = Field(min_length=1)


class CrmSettings(_Section):
    """One tenant's CRM settings."""

    default_region: str = Field(
        default="US",
        min_length=2,
        max_length=2,
        description="ISO 3166 region for phone numbers written without a country code.",
    )
    tiers: tuple[str, ...] = Field(
        default=("standard", "silver", "gold", "platinum"),
        description="Tiers from lowest to highest; a merge keeps the highest.",
    )
    attributes: dict[str, AttributeType] = Field(
        default_factory=dict, description="Custom attributes integrators may set, by type."
    )
    segments: tuple[Segment, ...] = Field(default=(), description="Segment rules.")
    near_match_max_email_distance: int = Field(
        default=2, ge=0, le=5, description="E-mail edit distance that still proposes a merge."
    )

    @model_validator(mode="after")
    def _segments_are_distinct(self) -> CrmSettings:
        ids = [segment.id for segment in self.segments]
        if len(set(ids)) != len(ids):
            raise ValueError(f"segment ids must be distinct: {ids}")
        for segment in self.segments:
            for rule in segment.rules:
                for name in rule.attribute_equals or {}:
                    if name not in self.attributes:
                        raise ValueError(
                            f"segment {segment.id!r} rule {rule.id!r} names undeclared "
                            f"attribute {name!r}"
                        )
        return self
