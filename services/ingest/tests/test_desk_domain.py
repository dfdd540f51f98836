"""The desk's pure rules: the conversation state machine, which commands a state allows,
list cursors, and the outbound retry policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convohub.ingest.domain.desk import (
    ConversationState,
    DeliveryOutcome,
    InvalidCursorError,
    ListCursor,
    RetryPolicy,
    check_close,
    check_human_request,
    check_note,
    check_reopen,
    check_reply,
    check_resolve,
    command_fingerprint,
    decode_cursor,
    email_thread_headers,
    encode_cursor,
    http_status_is_retryable,
    next_state,
    reply_subject,
)

OPEN, RESOLVED, CLOSED = (
    ConversationState.OPEN,
    ConversationState.RESOLVED,
    ConversationState.CLOSED,
)
C = "convohub.conversation."


def test_the_state_machine_follows_resolve_reopen_close() -> None:
    state = next_state(None, C + "started.v1")
    assert state == OPEN
    state = next_state(state, C + "message_received.v1")
    assert state == OPEN
    state = next_state(state, C + "resolved.v1")
    assert state == RESOLVED
    state = next_state(state, C + "reopened.v1")
    assert state == OPEN
    assert next_state(state, C + "closed.v1") == CLOSED


@given(st.lists(st.sampled_from(["started", "resolved", "reopened", "closed", "note_added"])))
def test_closed_is_final_whatever_comes_after(kinds: list[str]) -> None:
    state: ConversationState | None = CLOSED
    for kind in kinds:
        state = next_state(state, f"{C}{kind}.v1")
    assert state == CLOSED


@pytest.mark.parametrize(
    ("check", "state", "code"),
    [
        (check_reply, CLOSED, "conversation_closed"),
        (check_note, CLOSED, "conversation_closed"),
        (check_resolve, CLOSED, "conversation_closed"),
        (check_resolve, RESOLVED, "already_resolved"),
        (check_reopen, OPEN, "not_resolved"),
        (check_reopen, CLOSED, "conversation_closed"),
        (check_close, CLOSED, "already_closed"),
        (check_human_request, CLOSED, "conversation_closed"),
    ],
)
def test_commands_refused_in_the_wrong_state_are_conflicts(check, state, code) -> None:  # type: ignore[no-untyped-def]
    refusal = check(state)
    assert refusal is not None
    assert (refusal.status, refusal.code) == (409, code)


@pytest.mark.parametrize(
    ("check", "state"),
    [
        (check_reply, OPEN),
        (check_reply, RESOLVED),
        (check_note, RESOLVED),
        (check_resolve, OPEN),
        (check_reopen, RESOLVED),
        (check_close, OPEN),
        (check_close, RESOLVED),
        (check_human_request, OPEN),
    ],
)
def test_commands_allowed_in_the_right_state(check, state) -> None:  # type: ignore[no-untyped-def]
    assert check(state) is None


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.text(min_size=1, max_size=80),
)
def test_cursors_round_trip(moment: datetime, conversation_id: str) -> None:
    cursor = ListCursor(moment, conversation_id)
    encoded = encode_cursor(cursor)
    assert encoded.isascii()
    assert "/" not in encoded
    assert "+" not in encoded
    assert decode_cursor(encoded) == cursor


@given(st.text(max_size=60))
def test_anything_else_is_an_invalid_cursor(value: str) -> None:
    try:
        decode_cursor(value)
    except InvalidCursorError:
        return
    # Only a well-formed cursor (possible for short base64 text) may decode.
    assert encode_cursor(decode_cursor(value)).rstrip("=") == value.rstrip("=")


def test_retry_policy_backs_off_exponentially_then_gives_up() -> None:
    policy = RetryPolicy(max_attempts=4, base_seconds=1.0, cap_seconds=5.0)
    assert [policy.delay_after(n).total_seconds() for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    transient = DeliveryOutcome.failed("500", "server error", retryable=True)
    permanent = DeliveryOutcome.failed("21211", "invalid To", retryable=False)
    assert not policy.gives_up_after(3, transient)
    assert policy.gives_up_after(4, transient)
    assert policy.gives_up_after(1, permanent)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    assert policy.next_attempt_at(2, now) == now + timedelta(seconds=2)


def test_which_http_answers_are_retried() -> None:
    assert [http_status_is_retryable(s) for s in (200, 400, 401, 404, 408, 429, 500, 503)] == [
        False,
        False,
        False,
        False,
        True,
        True,
        True,
        True,
    ]


def test_email_threading_headers() -> None:
    assert email_thread_headers([]) == {}
    headers = email_thread_headers(["<a@x>", "b@x"])
    assert headers == {"In-Reply-To": "<b@x>", "References": "<a@x> <b@x>"}
    assert reply_subject("Order 42") == "Re: Order 42"
    assert reply_subject("RE: Order 42") == "RE: Order 42"


def test_fingerprints_tell_retries_from_other_commands() -> None:
    one = command_fingerprint("reply", "c1", {"text": "hi"})
    assert one == command_fingerprint("reply", "c1", {"text": "hi"})
    assert one != command_fingerprint("reply", "c1", {"text": "hello"})
    assert one != command_fingerprint("note", "c1", {"text": "hi"})
