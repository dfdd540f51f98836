"""Reading survey answers out of channel replies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convohub.contracts.events.feedback import SurveyKind
from convohub.feedback.domain.answers import ParsedAnswer, parse_answer

CSAT = [SurveyKind.CSAT]
NPS = [SurveyKind.NPS]
BOTH = [SurveyKind.CSAT, SurveyKind.NPS]


@pytest.mark.parametrize(
    ("text", "kinds", "expected"),
    [
        ("5", CSAT, ParsedAnswer(5, None, None)),
        (" 4/5 ", CSAT, ParsedAnswer(4, None, None)),
        ("５", CSAT, ParsedAnswer(5, None, None)),  # full-width digit
        ("3分", CSAT, ParsedAnswer(3, None, None)),
        ("1 - nobody helped me", CSAT, ParsedAnswer(1, None, "nobody helped me")),
        ("10 - great service", NPS, ParsedAnswer(None, 10, "great service")),
        ("0", NPS, ParsedAnswer(None, 0, None)),
        ("5 9", BOTH, ParsedAnswer(5, 9, None)),
        ("4, 7 slow delivery", BOTH, ParsedAnswer(4, 7, "slow delivery")),
        ("非常满意", CSAT, ParsedAnswer(5, None, None)),
        ("满意", CSAT, ParsedAnswer(4, None, None)),
        ("不满意", CSAT, ParsedAnswer(2, None, None)),
        ("非常不满意，太慢了", CSAT, ParsedAnswer(1, None, "太慢了")),
        ("一般", CSAT, ParsedAnswer(3, None, None)),
        ("very good", CSAT, ParsedAnswer(5, None, None)),
        ("Good", CSAT, ParsedAnswer(4, None, None)),
        ("not good", CSAT, ParsedAnswer(2, None, None)),
        ("terrible!", CSAT, ParsedAnswer(1, None, None)),
        ("😀", CSAT, ParsedAnswer(5, None, None)),
        ("👎", CSAT, ParsedAnswer(2, None, None)),
        ("😡😡", CSAT, ParsedAnswer(1, None, None)),
    ],
)
def test_replies_read_as_answers(
    text: str, kinds: list[SurveyKind], expected: ParsedAnswer
) -> None:
    assert parse_answer(text, kinds) == expected


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("8", CSAT),  # out of the 1-5 scale
        ("11", NPS),
        ("", CSAT),
        ("where is my order #12345?", CSAT),
        ("great", NPS),  # a word is no NPS score
        ("I ordered 2 items on Monday and the second one is still missing from the box", CSAT),
    ],
)
def test_other_messages_are_not_answers(text: str, kinds: list[SurveyKind]) -> None:
    assert parse_answer(text, kinds) is None


@given(st.text(max_size=80))
def test_any_text_yields_scores_within_their_scales(text: str) -> None:
    parsed = parse_answer(text, BOTH)
    if parsed is not None:
        assert parsed.csat is None or 1 <= parsed.csat <= 5
        assert parsed.nps is None or 0 <= parsed.nps <= 10
        assert parsed.csat is not None or parsed.nps is not None
