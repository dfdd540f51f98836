"""Erlang C against the issue's test vector and known properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convohub.feedback.domain.staffing import (
    agents_needed,
    erlang_b,
    probability_of_waiting,
    service_level,
)


def test_the_issue_vector_360_calls_an_hour_240_seconds() -> None:
    assert round(service_level(28, 360, 240, 20), 3) == 0.761
    assert round(service_level(29, 360, 240, 20), 3) == 0.840
    need = agents_needed(360, 240, 0.80, 20)
    assert (need.agents, need.traffic_erlangs) == (29, 24.0)
    # 90/10: 30 agents reach 86.5%, 31 reach 91.0% (checked against the factorial form).
    assert round(service_level(30, 360, 240, 10), 3) == 0.865
    assert agents_needed(360, 240, 0.90, 10).agents == 31


def test_textbook_values() -> None:
    assert erlang_b(0, 5) == 1.0
    assert erlang_b(1, 1) == pytest.approx(0.5)
    # One agent, half busy: waits half the time (M/M/1).
    assert probability_of_waiting(1, 0.5) == pytest.approx(0.5)
    assert probability_of_waiting(24, 24) == 1.0
    assert service_level(24, 360, 240, 20) == 0.0  # cannot keep up
    assert agents_needed(0, 240, 0.8, 20).agents == 0


def test_bad_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        agents_needed(360, 240, 1.0, 20)


@given(
    st.floats(min_value=1, max_value=2000),
    st.floats(min_value=10, max_value=1800),
    st.sampled_from([(0.8, 20), (0.9, 10), (0.7, 60)]),
)
def test_the_answer_is_the_fewest_agents_meeting_the_target(
    arrivals: float, handle: float, target: tuple[float, int]
) -> None:
    ratio, threshold = target
    need = agents_needed(arrivals, handle, ratio, threshold)
    assert service_level(need.agents, arrivals, handle, threshold) >= ratio
    assert need.agents > need.traffic_erlangs
    if need.agents > 1:
        assert service_level(need.agents - 1, arrivals, handle, threshold) < ratio
