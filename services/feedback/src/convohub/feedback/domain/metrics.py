"""The service metrics, as pure functions of per-conversation records.

Each formula is documented in docs/metrics.md; every one returns None when its denominator
is empty ("no data" is not 0%). A `ConversationRecord` is what the feedback service's
conversation projection knows about one conversation; `metrics_of` computes all metrics for
a set of them, and `group_records` splits them by channel, skill group, agent or hour.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

DIMENSIONS = ("channel", "skill_group", "agent", "hour")


@dataclass(frozen=True)
class ConversationRecord:
    """One conversation as the metrics see it."""

    conversation_id: str
    started_at: datetime
    channel: str | None = None
    skill_group: str | None = None
    agent_id: str | None = None
    """The last agent assigned (the one credited with the conversation)."""
    customer_id: str | None = None
    first_response_seconds: float | None = None
    response_seconds_total: float = 0.0
    response_count: int = 0
    handle_seconds: float | None = None
    resolved: bool = False
    resolved_at: datetime | None = None
    reopen_count: int = 0
    transfer_count: int = 0
    abandoned: bool = False
    """Closed without any reply from an agent or a bot (the customer gave up)."""
    csat: int | None = None
    nps: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def first_response_time(records: Iterable[ConversationRecord]) -> float | None:
    """Mean seconds from a conversation's start to its first agent or bot reply, over the
    conversations that got one."""
    return _mean(
        [r.first_response_seconds for r in records if r.first_response_seconds is not None]
    )


def average_response_time(records: Iterable[ConversationRecord]) -> float | None:
    """Mean seconds from a customer message (the first of a run) to the next reply, over
    every such exchange of every conversation (weighted by exchanges, not conversations)."""
    items = list(records)
    count = sum(r.response_count for r in items)
    return sum(r.response_seconds_total for r in items) / count if count else None


def average_handle_time(records: Iterable[ConversationRecord]) -> float | None:
    """Mean seconds agents were assigned to a conversation, over handled conversations."""
    return _mean([r.handle_seconds for r in records if r.handle_seconds])


def resolution_rate(records: Iterable[ConversationRecord]) -> float | None:
    """Resolved conversations ÷ conversations."""
    items = list(records)
    return _ratio(sum(1 for r in items if r.resolved), len(items))


def repeat_contacts(
    records: Iterable[ConversationRecord], window: timedelta
) -> dict[str, bool | None]:
    """For each conversation id: did the same customer start another conversation within
    `window` after this one started? None when the customer is unknown."""
    by_customer: dict[str, list[ConversationRecord]] = defaultdict(list)
    result: dict[str, bool | None] = {}
    for record in records:
        if record.customer_id is None:
            result[record.conversation_id] = None
        else:
            by_customer[record.customer_id].append(record)
    for items in by_customer.values():
        items.sort(key=lambda r: r.started_at)
        for index, record in enumerate(items):
            following = items[index + 1] if index + 1 < len(items) else None
            result[record.conversation_id] = bool(
                following and following.started_at - record.started_at <= window
            )
    return result


def first_contact_resolution(
    records: Iterable[ConversationRecord], repeated: dict[str, bool | None]
) -> float | None:
    """Resolved conversations with no reopen, no transfer and no repeat contact of the
    customer within the window ÷ resolved conversations."""
    resolved = [r for r in records if r.resolved]
    first_time = [
        r
        for r in resolved
        if r.reopen_count == 0 and r.transfer_count == 0 and not repeated.get(r.conversation_id)
    ]
    return _ratio(len(first_time), len(resolved))


def csat_score(records: Iterable[ConversationRecord]) -> float | None:
    """Share satisfied: answers of 4 or 5 ÷ CSAT answers."""
    answers = [r.csat for r in records if r.csat is not None]
    return _ratio(sum(1 for a in answers if a >= 4), len(answers))


def net_promoter_score(records: Iterable[ConversationRecord]) -> float | None:
    """(promoters (9-10) − detractors (0-6)) ÷ NPS answers × 100, from −100 to 100."""
    answers = [r.nps for r in records if r.nps is not None]
    if not answers:
        return None
    promoters = sum(1 for a in answers if a >= 9)
    detractors = sum(1 for a in answers if a <= 6)
    return (promoters - detractors) / len(answers) * 100


def service_level(records: Iterable[ConversationRecord], threshold_seconds: float) -> float | None:
    """Conversations first answered within the threshold ÷ (answered + abandoned)."""
    items = list(records)
    answered = [r for r in items if r.first_response_seconds is not None]
    within = sum(1 for r in answered if r.first_response_seconds <= threshold_seconds)  # type: ignore[operator]
    abandoned = sum(1 for r in items if r.abandoned)
    return _ratio(within, len(answered) + abandoned)


def abandonment_rate(records: Iterable[ConversationRecord]) -> float | None:
    """Conversations closed without any reply ÷ (answered + abandoned)."""
    items = list(records)
    answered = sum(1 for r in items if r.first_response_seconds is not None)
    abandoned = sum(1 for r in items if r.abandoned)
    return _ratio(abandoned, answered + abandoned)


def transfer_rate(records: Iterable[ConversationRecord]) -> float | None:
    """Conversations transferred at least once ÷ conversations handled by an agent."""
    handled = [r for r in records if r.agent_id is not None or r.transfer_count > 0]
    return _ratio(sum(1 for r in handled if r.transfer_count > 0), len(handled))


def repeat_contact_rate(repeated: dict[str, bool | None], ids: Iterable[str]) -> float | None:
    """Conversations followed by another from the same customer within the window ÷
    conversations with a known customer."""
    known = [repeated[i] for i in ids if repeated.get(i) is not None]
    return _ratio(sum(1 for flag in known if flag), len(known))


@dataclass(frozen=True)
class MetricsParameters:
    service_level_seconds: float = 20
    fcr_window: timedelta = timedelta(days=7)
    repeat_window: timedelta = timedelta(days=7)


def metrics_of(
    records: Sequence[ConversationRecord],
    parameters: MetricsParameters,
    *,
    history: Sequence[ConversationRecord] | None = None,
) -> dict[str, float | int | None]:
    """Every metric over `records`. `history` (default: the records) is what repeat
    contacts are looked up in, so a conversation just outside a filter still counts."""
    pool = history if history is not None else records
    fcr_repeats = repeat_contacts(pool, parameters.fcr_window)
    repeats = repeat_contacts(pool, parameters.repeat_window)
    return {
        "conversations": len(records),
        "first_response_seconds": first_response_time(records),
        "average_response_seconds": average_response_time(records),
        "average_handle_seconds": average_handle_time(records),
        "resolution_rate": resolution_rate(records),
        "first_contact_resolution": first_contact_resolution(records, fcr_repeats),
        "csat": csat_score(records),
        "csat_answers": sum(1 for r in records if r.csat is not None),
        "nps": net_promoter_score(records),
        "nps_answers": sum(1 for r in records if r.nps is not None),
        "service_level": service_level(records, parameters.service_level_seconds),
        "abandonment_rate": abandonment_rate(records),
        "transfer_rate": transfer_rate(records),
        "repeat_contact_rate": repeat_contact_rate(repeats, [r.conversation_id for r in records]),
    }


def _hour(record: ConversationRecord) -> str:
    return record.started_at.replace(minute=0, second=0, microsecond=0).isoformat()


_KEYS: dict[str, Callable[[ConversationRecord], str | None]] = {
    "channel": lambda r: r.channel,
    "skill_group": lambda r: r.skill_group,
    "agent": lambda r: r.agent_id,
    "hour": _hour,
}


def group_records(
    records: Iterable[ConversationRecord], dimensions: Sequence[str]
) -> dict[tuple[str | None, ...], list[ConversationRecord]]:
    """Records by their values of `dimensions` (in that order), groups sorted by key."""
    unknown = [d for d in dimensions if d not in _KEYS]
    if unknown:
        raise ValueError(f"unknown dimension(s): {', '.join(unknown)}")
    groups: dict[tuple[str | None, ...], list[ConversationRecord]] = defaultdict(list)
    for record in records:
        groups[tuple(_KEYS[d](record) for d in dimensions)].append(record)
    return dict(sorted(groups.items(), key=lambda item: tuple(v or "" for v in item[0])))
