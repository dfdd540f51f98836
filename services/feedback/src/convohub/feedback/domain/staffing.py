"""Erlang C: how many agents a queue needs for a target service level.

Traffic A = arrivals per second × average handle time (erlangs). With N agents (N > A) the
probability that a contact waits is

    C(N, A) = (A^N / N! · N / (N − A)) / (Σ_{k<N} A^k / k! + A^N / N! · N / (N − A))

and the service level, the share answered within T seconds, is

    SL = 1 − C(N, A) · e^{−(N − A) · T / AHT}.

Computed with the Erlang B recursion (B(0) = 1, B(k) = A·B(k−1) / (k + A·B(k−1)),
C = N·B / (N − A(1 − B))), stable for hundreds of agents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def erlang_b(agents: int, traffic: float) -> float:
    """Blocking probability of `agents` servers offered `traffic` erlangs."""
    if agents < 0 or traffic < 0:
        raise ValueError("agents and traffic must not be negative")
    blocking = 1.0
    for k in range(1, agents + 1):
        blocking = traffic * blocking / (k + traffic * blocking)
    return blocking


def probability_of_waiting(agents: int, traffic: float) -> float:
    """Erlang C: the chance a contact waits; 1 when the agents cannot keep up (N ≤ A)."""
    if agents <= traffic:
        return 1.0
    blocking = erlang_b(agents, traffic)
    return agents * blocking / (agents - traffic * (1 - blocking))


def service_level(
    agents: int, arrivals_per_hour: float, handle_seconds: float, threshold_seconds: float
) -> float:
    """Share of contacts answered within `threshold_seconds` with `agents` agents."""
    if arrivals_per_hour <= 0:
        return 1.0
    if handle_seconds <= 0:
        raise ValueError("handle time must be positive")
    traffic = arrivals_per_hour * handle_seconds / 3600
    if agents <= traffic:
        return 0.0
    waiting = probability_of_waiting(agents, traffic)
    return max(
        0.0, 1 - waiting * math.exp(-(agents - traffic) * threshold_seconds / handle_seconds)
    )


def average_speed_of_answer(agents: int, arrivals_per_hour: float, handle_seconds: float) -> float:
    """Mean wait in seconds (infinite when the agents cannot keep up)."""
    traffic = arrivals_per_hour * handle_seconds / 3600
    if arrivals_per_hour <= 0:
        return 0.0
    if agents <= traffic:
        return math.inf
    return probability_of_waiting(agents, traffic) * handle_seconds / (agents - traffic)


@dataclass(frozen=True)
class StaffingNeed:
    """The fewest agents meeting the target, and what they achieve."""

    agents: int
    traffic_erlangs: float
    service_level: float
    average_speed_of_answer_seconds: float


def agents_needed(
    arrivals_per_hour: float,
    handle_seconds: float,
    target_ratio: float,
    threshold_seconds: float,
    *,
    max_agents: int = 10_000,
) -> StaffingNeed:
    """The fewest agents whose service level reaches `target_ratio` (e.g. 0.8 for 80/20)."""
    if not 0 < target_ratio < 1:
        raise ValueError("the target service level must be between 0 and 1 (exclusive)")
    if arrivals_per_hour <= 0:
        return StaffingNeed(0, 0.0, 1.0, 0.0)
    traffic = arrivals_per_hour * handle_seconds / 3600
    agents = max(1, math.floor(traffic) + 1)
    while agents <= max_agents:
        level = service_level(agents, arrivals_per_hour, handle_seconds, threshold_seconds)
        if level >= target_ratio:
            asa = average_speed_of_answer(agents, arrivals_per_hour, handle_seconds)
            return StaffingNeed(agents, traffic, level, asa)
        agents += 1
    raise ValueError(f"more than {max_agents} agents would be needed")
