"""Every metric formula against hand-computed cases, edge cases included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convohub.feedback.domain.metrics import (
    ConversationRecord,
    MetricsParameters,
    abandonment_rate,
    average_handle_time,
    average_response_time,
    csat_score,
    first_contact_resolution,
    first_response_time,
    group_records,
    metrics_of,
    net_promoter_score,
    repeat_contact_rate,
    repeat_contacts,
    resolution_rate,
    service_level,
    transfer_rate,
)

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def record(cid: str, **fields: object) -> ConversationRecord:
    return ConversationRecord(conversation_id=cid, started_at=fields.pop("at", T0), **fields)  # type: ignore[arg-type]


# Four conversations, computed by hand in the comments below.
A = record(
    "a",
    customer_id="c1",
    first_response_seconds=10,
    response_seconds_total=30,
    response_count=3,
    handle_seconds=300,
    resolved=True,
    agent_id="ag1",
    csat=5,
    nps=10,
    channel="web_chat",
)
B = record(
    "b",
    customer_id="c2",
    first_response_seconds=40,
    response_seconds_total=100,
    response_count=1,
    handle_seconds=600,
    resolved=True,
    reopen_count=1,
    agent_id="ag1",
    csat=2,
    nps=6,
    channel="web_chat",
)
C = record(
    "c",
    customer_id="c1",
    at=T0 + timedelta(days=2),
    first_response_seconds=20,
    resolved=False,
    transfer_count=1,
    agent_id="ag2",
    nps=8,
    channel="email",
)
D = record("d", customer_id="c3", abandoned=True, channel="email")
ALL = [A, B, C, D]


def test_first_response_time_averages_answered_conversations() -> None:
    assert first_response_time(ALL) == pytest.approx((10 + 40 + 20) / 3)
    assert first_response_time([D]) is None


def test_average_response_time_is_weighted_by_exchanges() -> None:
    assert average_response_time(ALL) == pytest.approx((30 + 100) / 4)  # 32.5, not 65
    assert average_response_time([C, D]) is None


def test_average_handle_time_over_handled_conversations() -> None:
    assert average_handle_time(ALL) == 450
    assert average_handle_time([D]) is None


def test_resolution_rate() -> None:
    assert resolution_rate(ALL) == 0.5
    assert resolution_rate([]) is None


def test_first_contact_resolution_excludes_reopens_transfers_and_repeats() -> None:
    repeats = repeat_contacts(ALL, WEEK)
    # c1 wrote again (c) two days after a: a is a repeat; b was reopened. 0 of 2 resolved.
    assert repeats == {"a": True, "b": False, "c": False, "d": False}
    assert first_contact_resolution(ALL, repeats) == 0.0
    # With a one-day window c is no repeat of a: 1 of 2.
    assert first_contact_resolution(ALL, repeat_contacts(ALL, timedelta(days=1))) == 0.5
    assert first_contact_resolution([C, D], repeats) is None  # nothing resolved


def test_csat_is_the_share_satisfied() -> None:
    assert csat_score(ALL) == 0.5  # 5 and 2: one of two satisfied
    assert csat_score([C, D]) is None  # no answers is not 0%
    assert csat_score([record("x", csat=4), record("y", csat=3), record("z", csat=4)]) == 2 / 3


def test_nps_is_promoters_minus_detractors() -> None:
    assert net_promoter_score(ALL) == pytest.approx((1 - 1) / 3 * 100)  # 10, 6, 8
    assert net_promoter_score([record("x", nps=9), record("y", nps=0)]) == 0
    assert net_promoter_score([record("x", nps=9), record("y", nps=7)]) == 50
    assert net_promoter_score([D]) is None


def test_service_level_counts_abandoned_in_the_denominator() -> None:
    # answered within 20 s: a (10), c (20); answered 3 + abandoned 1.
    assert service_level(ALL, 20) == 0.5
    assert service_level(ALL, 60) == 0.75
    assert service_level([], 20) is None


def test_abandonment_rate() -> None:
    assert abandonment_rate(ALL) == 0.25
    assert abandonment_rate([A]) == 0


def test_transfer_rate_over_handled_conversations() -> None:
    assert transfer_rate(ALL) == pytest.approx(1 / 3)  # d was never handled
    assert transfer_rate([D]) is None


def test_repeat_contact_rate_over_known_customers() -> None:
    repeats = repeat_contacts([*ALL, record("anon")], WEEK)
    assert repeats["anon"] is None
    assert repeat_contact_rate(repeats, ["a", "b", "c", "d", "anon"]) == 0.25


def test_metrics_of_and_grouping() -> None:
    parameters = MetricsParameters(service_level_seconds=20)
    groups = group_records(ALL, ["channel"])
    assert list(groups) == [("email",), ("web_chat",)]
    web = metrics_of(groups[("web_chat",)], parameters, history=ALL)
    assert web["conversations"] == 2
    assert web["csat"] == 0.5
    assert web["first_contact_resolution"] == 0.0
    assert web["transfer_rate"] == 0
    empty = metrics_of([], parameters)
    assert empty["conversations"] == 0
    assert all(
        v is None
        for k, v in empty.items()
        if k not in {"conversations", "csat_answers", "nps_answers"}
    )
    by_hour = group_records(ALL, ["hour"])
    assert ("2026-11-23T09:00:00+00:00",) in by_hour
    with pytest.raises(ValueError, match="planet"):
        group_records(ALL, ["planet"])


records_strategy = st.lists(
    st.builds(
        ConversationRecord,
        conversation_id=st.uuids().map(str),
        started_at=st.datetimes(
            min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
        ),
        customer_id=st.sampled_from([None, "c1", "c2", "c3"]),
        agent_id=st.sampled_from([None, "a1", "a2"]),
        first_response_seconds=st.none() | st.floats(min_value=0, max_value=1e5),
        response_seconds_total=st.floats(min_value=0, max_value=1e5),
        response_count=st.integers(min_value=0, max_value=50),
        handle_seconds=st.none() | st.floats(min_value=0, max_value=1e5),
        resolved=st.booleans(),
        reopen_count=st.integers(min_value=0, max_value=3),
        transfer_count=st.integers(min_value=0, max_value=3),
        abandoned=st.booleans(),
        csat=st.none() | st.integers(min_value=1, max_value=5),
        nps=st.none() | st.integers(min_value=0, max_value=10),
    ),
    max_size=30,
)


@given(records_strategy)
def test_rates_stay_within_their_ranges_and_groups_partition_the_records(
    records: list[ConversationRecord],
) -> None:
    figures = metrics_of(records, MetricsParameters())
    for name in (
        "resolution_rate",
        "first_contact_resolution",
        "csat",
        "service_level",
        "abandonment_rate",
        "transfer_rate",
        "repeat_contact_rate",
    ):
        value = figures[name]
        assert value is None or 0 <= value <= 1, name
    assert figures["nps"] is None or -100 <= figures["nps"] <= 100
    assert (figures["csat"] is None) == (figures["csat_answers"] == 0)
    groups = group_records(records, ["agent", "hour"])
    assert sum(len(items) for items in groups.values()) == len(records)
