"""Queue service level: the share of conversations answered within a threshold."""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["closed_window", "service_level_ratio"]


def service_level_ratio(answered_within: int, answered: int, abandoned: int) -> float:
    """answered within the threshold / (answered + abandoned); 1 when there was neither."""
    if answered_within > answered:
        raise ValueError("more answered within the threshold than answered")
    offered = answered + abandoned
    return 1.0 if offered == 0 else answered_within / offered


def closed_window(now: datetime, length: timedelta) -> tuple[datetime, datetime]:
    """The latest window of `length` (aligned to the epoch) that has ended by `now`."""
    epoch = datetime(1970, 1, 1, tzinfo=now.tzinfo)
    windows = (now - epoch) // length
    end = epoch + windows * length
    return end - length, end
