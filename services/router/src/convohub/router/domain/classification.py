"""Classification: which skill group and priority a new conversation gets, and why."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from convohub.contracts.events.common import Channel, Priority
from convohub.contracts.events.routing import ClassificationRuleKind
from convohub.router.domain.config import Escalation, RoutingConfig, Rule

PRIORITIES = (Priority.P1, Priority.P2, Priority.P3, Priority.P4)


def raised(priority: Priority, steps: int = 1) -> Priority:
    """`priority` made `steps` more urgent (P1 stays P1)."""
    return PRIORITIES[max(0, PRIORITIES.index(priority) - steps)]


@dataclass(frozen=True)
class Contact:
    """What the router knows about a conversation when it classifies it."""

    channel: Channel
    text: str = ""
    ivr_choice: str | None = None
    segments: Collection[str] = ()


@dataclass(frozen=True)
class Classification:
    skill_group: str
    priority: Priority
    rule_id: str
    kind: ClassificationRuleKind
    matched_text: str | None
    vip: bool
    escalate: Escalation | None = None
    complaint: bool = False
    language: str | None = None


def detected_language(text: str) -> str | None:
    """A BCP 47 tag guessed from the script the text is mostly written in: Han `zh`, kana `ja`,
    Hangul `ko`, Latin letters `en`; None without letters. A script guess, not language
    identification (French text is `en` here), enough to tell Chinese from English contacts."""
    counts = {"zh": 0, "ja": 0, "ko": 0, "en": 0}
    for char in text:
        code = ord(char)
        if 0x3040 <= code <= 0x30FF:  # hiragana, katakana
            counts["ja"] += 1
        elif 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF:  # Hangul
            counts["ko"] += 1
        elif 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF:
            counts["zh"] += 1
        elif char.isalpha() and (char.isascii() or 0xC0 <= code <= 0x24F):  # Latin
            counts["en"] += 1
    if counts["ja"]:
        return "ja"  # Japanese mixes kana with Han characters
    # one Han character carries about as much as a three-letter word
    weights = {"zh": counts["zh"] * 3, "ko": counts["ko"] * 3, "en": counts["en"]}
    best = max(weights, key=lambda tag: weights[tag])
    return best if weights[best] else None


def _rule_matches(rule: Rule, contact: Contact) -> tuple[ClassificationRuleKind, str | None] | None:
    """The kind of condition that decided and the matched text, or None when it does not hold."""
    match = rule.match
    kind: ClassificationRuleKind | None = None
    text: str | None = None
    if match.channels:
        if contact.channel not in match.channels:
            return None
        kind = ClassificationRuleKind.CHANNEL
    if match.ivr:
        if contact.ivr_choice not in match.ivr:
            return None
        kind = ClassificationRuleKind.IVR
    if match.segments:
        if not set(match.segments) & set(contact.segments):
            return None
        kind = ClassificationRuleKind.SEGMENT
    if match.keywords:
        lowered = contact.text.casefold()
        found = next((word for word in match.keywords if word.casefold() in lowered), None)
        if found is None:
            return None
        kind, text = ClassificationRuleKind.KEYWORD, found
    if match.regex:
        hit = re.search(match.regex, contact.text, re.IGNORECASE)
        if hit is None:
            return None
        kind, text = ClassificationRuleKind.REGEX, hit.group(0)
    assert kind is not None  # RuleMatch requires one condition
    return kind, text


def classify(config: RoutingConfig, contact: Contact) -> Classification:
    """The first rule (in configuration order) whose conditions all hold decides the group and
    priority; complaint words raise the priority one step; VIP customers go to the VIP group
    (when configured) or get one step more."""
    group, priority = config.default_skill_group, config.default_priority
    rule_id, kind, text, escalate = "default", ClassificationRuleKind.DEFAULT, None, None
    for rule in config.rules:
        matched = _rule_matches(rule, contact)
        if matched is not None:
            group, priority, escalate = rule.skill_group, rule.priority, rule.escalate
            rule_id, (kind, text) = rule.id, matched
            break
    lowered = contact.text.casefold()
    complaint = any(word.casefold() in lowered for word in config.complaint_keywords)
    if complaint:
        priority = raised(priority)
    vip = bool(set(config.vip_segments) & set(contact.segments))
    if vip:
        if config.vip_skill_group and escalate is None:
            group = config.vip_skill_group
        else:
            priority = raised(priority)
    return Classification(
        group,
        priority,
        rule_id,
        kind,
        text,
        vip,
        escalate,
        complaint,
        detected_language(contact.text),
    )
