"""Profiles: attribute values with the moment each was set, survivorship, segments."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from convohub.crm.domain.settings import AttributeType, CrmSettings, SegmentRule

DISPLAY_NAME = "display_name"
TIER = "tier"
LIFETIME_VALUE = "lifetime_value"
ATTRIBUTE_PREFIX = "attributes."


@dataclass
class Profile:
    """What CRM knows about a customer besides identifiers. `changed_at` holds, per field
    (`tier`, `attributes.city`), when its value was last set: survivorship reads it."""

    display_name: str | None = None
    tier: str | None = None
    lifetime_value: str | None = None
    lifetime_value_currency: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    changed_at: dict[str, datetime] = field(default_factory=dict)

    def copy(self) -> Profile:
        return copy.deepcopy(self)

    def get(self, key: str) -> Any:
        if key.startswith(ATTRIBUTE_PREFIX):
            return self.attributes.get(key.removeprefix(ATTRIBUTE_PREFIX))
        if key == LIFETIME_VALUE:
            if self.lifetime_value is None:
                return None
            return (self.lifetime_value, self.lifetime_value_currency)
        return getattr(self, key)

    def put(self, key: str, value: Any, at: datetime | None) -> None:
        """Set (or with None remove) one field, remembering when."""
        if key.startswith(ATTRIBUTE_PREFIX):
            name = key.removeprefix(ATTRIBUTE_PREFIX)
            if value is None:
                self.attributes.pop(name, None)
            else:
                self.attributes[name] = value
        elif key == LIFETIME_VALUE:
            amount, currency = value if value is not None else (None, None)
            self.lifetime_value, self.lifetime_value_currency = amount, currency
        else:
            setattr(self, key, value)
        if value is None or at is None:
            self.changed_at.pop(key, None)
        else:
            self.changed_at[key] = at

    def keys(self) -> set[str]:
        """The fields that hold a value."""
        found = {key for key in (DISPLAY_NAME, TIER, LIFETIME_VALUE) if self.get(key) is not None}
        return found | {ATTRIBUTE_PREFIX + name for name in self.attributes}


@dataclass(frozen=True)
class Decision:
    """Survivorship of one field: which side's value the survivor keeps, by which rule."""

    key: str
    from_merged: bool
    rule: str


def tier_rank(settings: CrmSettings, tier: str | None) -> int:
    if tier is None:
        return -1
    return settings.tiers.index(tier) if tier in settings.tiers else 0


def survive(
    settings: CrmSettings, survivor: Profile, merged: Profile
) -> tuple[Profile, list[Decision]]:
    """The merged profile: the highest tier wins; for everything else the most recently set
    non-empty value wins (ties keep the survivor's); tags are united. Decisions name every
    field whose value was taken from the merged customer or that both had."""
    result = survivor.copy()
    decisions = []
    for key in sorted(merged.keys()):
        theirs = merged.get(key)
        mine = survivor.get(key)
        if mine is None:
            result.put(key, theirs, merged.changed_at.get(key))
            decisions.append(Decision(key, True, "only_value"))
            continue
        if key == TIER:
            take = tier_rank(settings, theirs) > tier_rank(settings, mine)
            rule = "highest_tier"
        else:
            mine_at = survivor.changed_at.get(key)
            theirs_at = merged.changed_at.get(key)
            take = theirs_at is not None and (mine_at is None or theirs_at > mine_at)
            rule = "most_recent"
        if take:
            result.put(key, theirs, merged.changed_at.get(key))
        decisions.append(Decision(key, take, rule))
    result.tags = sorted(set(survivor.tags) | set(merged.tags))
    return result, decisions


# --- declared attributes ------------------------------------------------------------------


def check_attribute(settings: CrmSettings, name: str, value: Any) -> tuple[Any, str | None]:
    """The stored form of a custom attribute value, or an error message (undeclared name,
    wrong type). None removes the attribute and is always allowed for declared names."""
    declared = settings.attributes.get(name)
    if declared is None:
        known = ", ".join(sorted(settings.attributes)) or "none"
        return None, f"attribute {name!r} is not declared in the tenant's crm config ({known})"
    if value is None:
        return None, None
    match declared:
        case AttributeType.STRING:
            ok = isinstance(value, str)
        case AttributeType.INTEGER:
            ok = isinstance(value, int) and not isinstance(value, bool)
        case AttributeType.NUMBER:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        case AttributeType.BOOLEAN:
            ok = isinstance(value, bool)
        case AttributeType.DATE:
            ok = isinstance(value, str) and _is_date(value)
    if not ok:
        return None, f"attribute {name!r} must be a {declared.value}"
    return value, None


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def parse_amount(text: str) -> Decimal | None:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


# --- segments -----------------------------------------------------------------------------


def rule_matches(rule: SegmentRule, profile: Profile) -> bool:
    if rule.tier_in is not None and profile.tier not in rule.tier_in:
        return False
    if rule.lifetime_value_above is not None:
        amount = parse_amount(profile.lifetime_value) if profile.lifetime_value else None
        if amount is None or amount <= rule.lifetime_value_above:
            return False
    if rule.has_tag is not None and rule.has_tag not in profile.tags:
        return False
    if rule.attribute_equals is not None:
        for name, expected in rule.attribute_equals.items():
            if profile.attributes.get(name) != expected:
                return False
    return True


def segments_of(settings: CrmSettings, profile: Profile) -> dict[str, str]:
    """Segment id to the first rule that puts the profile in it."""
    found = {}
    for segment in settings.segments:
        for rule in segment.rules:
            if rule_matches(rule, profile):
                found[segment.id] = rule.id
                break
    return found


# --- near matches -------------------------------------------------------------------------


def name_key(display_name: str | None) -> str | None:
    """The form of a name compared for near matches (case and spacing ignored)."""
    if not display_name:
        return None
    key = " ".join(display_name.casefold().split())
    return key or None


def edit_distance(left: str, right: str) -> int:
    """Levenshtein distance."""
    if len(left) < len(right):
        left, right = right, left
    previous = list(range(len(right) + 1))
    for i, a in enumerate(left, 1):
        current = [i]
        for j, b in enumerate(right, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1]
