"""A ConvoHub channel adapter for the LINE Messaging API (an example of a third-party
channel package; see docs/channels.md)."""

from line_channel.adapter import LineAdapter, line_signature

__all__ = ["LineAdapter", "line_signature"]
