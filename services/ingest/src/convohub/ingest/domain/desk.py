"""The agent desk's pure decisions: a conversation's state machine, which commands it allows,
list cursors, and outbound delivery retry policy.

No I/O and no clock reads: every moment is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = [
    "CommandRefusal",
    "ConversationState",
    "DeliveryOutcome",
    "ListCursor",
    "RetryPolicy",
    "check_close",
    "check_human_request",
    "check_note",
    "check_reopen",
    "check_reply",
    "check_resolve",
    "command_fingerprint",
    "decode_cursor",
    "email_thread_headers",
    "encode_cursor",
    "next_state",
]


class ConversationState(StrEnum):
    """Where a conversation is in its life: open, resolved (reopenable) or closed (final)."""

    OPEN = "open"
    RESOLVED = "resolved"
    CLOSED = "closed"


_STATE_AFTER = {
    "convohub.conversation.started.v1": ConversationState.OPEN,
    "convohub.conversation.resolved.v1": ConversationState.RESOLVED,
    "convohub.conversation.reopened.v1": ConversationState.OPEN,
    "convohub.conversation.closed.v1": ConversationState.CLOSED,
}


def next_state(current: ConversationState | None, event_type: str) -> ConversationState | None:
    """The state after an event. Closed is final: nothing reopens a closed conversation, so
    a late (re-applied) resolve or reopen leaves it closed."""
    if current == ConversationState.CLOSED:
        return current
    return _STATE_AFTER.get(event_type, current)


@dataclass(frozen=True)
class CommandRefusal:
    """Why a command is refused: an HTTP status, a stable code and a human detail."""

    status: int
    code: str
    detail: str


def _closed(action: str) -> CommandRefusal:
    return CommandRefusal(409, "conversation_closed", f"cannot {action} a closed conversation")


def check_reply(state: ConversationState) -> CommandRefusal | None:
    """Replies go to open or resolved conversations (a reply to a resolved one is allowed:
    the customer may have written again); never to closed ones."""
    return _closed("reply to") if state == ConversationState.CLOSED else None


def check_note(state: ConversationState) -> CommandRefusal | None:
    """Internal notes are allowed until the conversation is closed."""
    return _closed("add a note to") if state == ConversationState.CLOSED else None


def check_resolve(state: ConversationState) -> CommandRefusal | None:
    if state == ConversationState.CLOSED:
        return _closed("resolve")
    if state == ConversationState.RESOLVED:
        return CommandRefusal(409, "already_resolved", "the conversation is already resolved")
    return None


def check_reopen(state: ConversationState) -> CommandRefusal | None:
    if state == ConversationState.CLOSED:
        return CommandRefusal(
            409,
            "conversation_closed",
            "a closed conversation cannot be reopened; the customer's next contact starts "
            "a new one",
        )
    if state == ConversationState.OPEN:
        return CommandRefusal(409, "not_resolved", "only a resolved conversation can be reopened")
    return None


def check_close(state: ConversationState) -> CommandRefusal | None:
    if state == ConversationState.CLOSED:
        return CommandRefusal(409, "already_closed", "the conversation is already closed")
    return None


def check_human_request(state: ConversationState) -> CommandRefusal | None:
    return _closed("ask for a human in") if state == ConversationState.CLOSED else None


def command_fingerprint(command: str, conversation_id: str, body: dict[str, Any]) -> str:
    """A stable digest of a command, to tell a retry (same digest) from a reused
    Idempotency-Key (another digest)."""
    document = json.dumps(
        {"command": command, "conversation_id": conversation_id, "body": body},
        sort_keys=True,
        default=str,
        ensure_ascii=False,
    )
    return hashlib.sha256(document.encode()).hexdigest()


# --- list cursors -------------------------------------------------------------------------


@dataclass(frozen=True)
class ListCursor:
    """Where a page of the conversation list ended: the last row's sort key."""

    updated_at: datetime
    conversation_id: str


class InvalidCursorError(ValueError):
    """A cursor that this service did not issue (or that was altered)."""


def encode_cursor(cursor: ListCursor) -> str:
    """An opaque, URL-safe cursor."""
    document = json.dumps({"u": cursor.updated_at.isoformat(), "c": cursor.conversation_id})
    return base64.urlsafe_b64encode(document.encode()).decode().rstrip("=")


def decode_cursor(value: str) -> ListCursor:
    """The cursor `encode_cursor` produced; InvalidCursorError for anything else."""
    try:
        padded = value + "=" * (-len(value) % 4)
        document = json.loads(base64.urlsafe_b64decode(padded.encode()))
        moment = datetime.fromisoformat(document["u"])
        conversation_id = document["c"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError) as error:
        raise InvalidCursorError("not a cursor this API issued") from error
    if moment.tzinfo is None or not isinstance(conversation_id, str):
        raise InvalidCursorError("not a cursor this API issued")
    return ListCursor(moment, conversation_id)


# --- outbound delivery --------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one delivery attempt came to."""

    delivered: bool
    provider_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool = False

    @classmethod
    def sent(cls, provider_message_id: str) -> DeliveryOutcome:
        return cls(delivered=True, provider_message_id=provider_message_id)

    @classmethod
    def failed(cls, code: str, message: str, *, retryable: bool) -> DeliveryOutcome:
        return cls(delivered=False, error_code=code, error_message=message, retryable=retryable)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: attempt n (1-based) failing waits base * 2^(n-1), capped."""

    max_attempts: int = 5
    base_seconds: float = 2.0
    cap_seconds: float = 300.0

    def delay_after(self, attempt: int) -> timedelta:
        return timedelta(seconds=min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)))

    def gives_up_after(self, attempt: int, outcome: DeliveryOutcome) -> bool:
        """Whether a failed attempt is the last: a permanent error, or no attempts left."""
        return not outcome.retryable or attempt >= self.max_attempts

    def next_attempt_at(self, attempt: int, failed_at: datetime) -> datetime:
        return failed_at + self.delay_after(attempt)


def http_status_is_retryable(status: int) -> bool:
    """Provider answers worth retrying: rate limiting, timeouts and server errors."""
    return status in (408, 425, 429) or status >= 500


def email_thread_headers(customer_message_ids: list[str]) -> dict[str, str]:
    """RFC 5322 threading headers for a reply: In-Reply-To names the customer's latest
    message, References the thread so far (oldest first)."""
    ids = [_angle(value) for value in customer_message_ids if value]
    if not ids:
        return {}
    return {"In-Reply-To": ids[-1], "References": " ".join(ids[-20:])}


def _angle(message_id: str) -> str:
    message_id = message_id.strip()
    return message_id if message_id.startswith("<") else f"<{message_id}>"


def reply_subject(subject: str | None) -> str:
    """`Re: <subject>` once, whatever the customer's subject already starts with."""
    if not subject:
        return "Re: your message"
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"
