"""Reading a customer's reply in the channel as a survey answer: "5", "10 - great service",
"非常满意", "very good", "😀". Pure: `parse_answer(text, kinds)` returns None when the reply
is not an answer (then it is an ordinary message)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from convohub.contracts.events.feedback import SurveyKind

MAX_WORD_ANSWER_LENGTH = 60
"""A reply without a number is read as an answer only when it is this short."""

# CSAT words and emoji, by score. Longer phrases are tried first, so "非常不满意" wins over
# "满意" and "not good" over "good".
_CSAT_PHRASES: dict[int, tuple[str, ...]] = {
    5: (
        "非常满意",
        "十分满意",
        "特别满意",
        "超级满意",
        "很满意",
        "非常好",
        "太棒了",
        "好评",
        "very satisfied",
        "very good",
        "excellent",
        "great",
        "perfect",
        "amazing",
        "awesome",
        "fantastic",
        "outstanding",
        "loved it",
        "😀",
        "😃",
        "😄",
        "😁",
        "😍",
        "🥰",
        "🤩",
        "❤️",
        "❤",
        "👏",
        "💯",
    ),
    4: (
        "满意",
        "不错",
        "挺好",
        "好的",
        "很好",
        "good",
        "satisfied",
        "nice",
        "pretty good",
        "👍",
        "🙂",
        "😊",
    ),
    3: (
        "一般",
        "还行",
        "还可以",
        "凑合",
        "ok",
        "okay",
        "average",
        "so-so",
        "so so",
        "fine",
        "neutral",
        "😐",
        "😶",
    ),
    2: (
        "不满意",
        "不太满意",
        "不好",
        "差",
        "不行",
        "not good",
        "bad",
        "poor",
        "unsatisfied",
        "dissatisfied",
        "not satisfied",
        "disappointed",
        "🙁",
        "😕",
        "☹️",
        "☹",
        "👎",
        "😞",
    ),
    1: (
        "非常不满意",
        "很不满意",
        "极不满意",
        "太差了",
        "很差",
        "非常差",
        "垃圾",
        "very bad",
        "terrible",
        "awful",
        "horrible",
        "very unsatisfied",
        "very dissatisfied",
        "worst",
        "😡",
        "😠",
        "🤬",
        "😤",
        "😭",
    ),
}
_PHRASES = sorted(
    ((phrase, score) for score, phrases in _CSAT_PHRASES.items() for phrase in phrases),
    key=lambda item: -len(item[0]),
)
_NUMBER = re.compile(r"(?<![\d.])(\d{1,2})(?![\d.])")
_SEPARATORS = " \t\r\n-–—:：,，.。/!！;；|()（）[]【】~分"
_SCALE = {SurveyKind.CSAT: range(1, 6), SurveyKind.NPS: range(0, 11)}


@dataclass(frozen=True)
class ParsedAnswer:
    """Scores read from a reply and what remains of it as a comment."""

    csat: int | None
    nps: int | None
    comment: str | None


def normalise(text: str) -> str:
    """NFKC (full-width digits become ASCII), lower case, trimmed."""
    return unicodedata.normalize("NFKC", text).strip().lower()


def parse_answer(text: str | None, kinds: Sequence[SurveyKind]) -> ParsedAnswer | None:
    """The answer a reply gives to a survey asking `kinds`, or None if it gives none."""
    if not text or not text.strip():
        return None
    cleaned = normalise(text)
    numbers = list(_NUMBER.finditer(cleaned))
    if numbers and numbers[0].start() <= 3:  # a score leads the reply ("5", "10 - great")
        return _numeric_answer(cleaned, numbers, kinds)
    if SurveyKind.CSAT in kinds and len(cleaned) <= MAX_WORD_ANSWER_LENGTH:
        return _word_answer(cleaned)
    return None


def _numeric_answer(
    cleaned: str, numbers: list[re.Match[str]], kinds: Sequence[SurveyKind]
) -> ParsedAnswer | None:
    wanted = [kind for kind in (SurveyKind.CSAT, SurveyKind.NPS) if kind in kinds]
    scores: dict[SurveyKind, int] = {}
    used: list[re.Match[str]] = []
    remaining = list(numbers)
    for kind in wanted:
        if not remaining:
            break
        value = int(remaining[0].group(1))
        if value in _SCALE[kind]:
            scores[kind] = value
            used.append(remaining.pop(0))
        elif len(wanted) == 1:
            return None  # "8" to a 1-5 question is not an answer we can trust
    if not scores:
        return None
    end = used[-1].end()
    # A "/5" or "/10" right after the score is part of it ("4/5").
    tail = re.sub(r"^\s*/\s*(5|10)(?!\d)", "", cleaned[end:])
    comment = tail.strip(_SEPARATORS) or None
    return ParsedAnswer(scores.get(SurveyKind.CSAT), scores.get(SurveyKind.NPS), comment)


def _word_answer(cleaned: str) -> ParsedAnswer | None:
    best: tuple[int, int, str] | None = None  # (position, -length, phrase)
    score_of: dict[str, int] = {}
    for phrase, score in _PHRASES:
        position = _find_phrase(cleaned, phrase)
        if position < 0:
            continue
        candidate = (position, -len(phrase), phrase)
        if best is None or candidate < best:
            best = candidate
            score_of[phrase] = score
    if best is None:
        return None
    phrase = best[2]
    rest = (cleaned[: best[0]] + cleaned[best[0] + len(phrase) :]).replace(phrase, "")
    rest = rest.strip(_SEPARATORS)
    return ParsedAnswer(score_of[phrase], None, rest or None)


def _find_phrase(text: str, phrase: str) -> int:
    """Where `phrase` occurs as a whole word (Latin) or anywhere (CJK, emoji); -1 if not."""
    if phrase.isascii() and phrase[0].isalnum():
        found = re.search(rf"(?<![a-z]){re.escape(phrase)}(?![a-z])", text)
        if found is None:
            return -1
        # "not good" is negative: do not read "good" out of it.
        before = text[: found.start()].split()
        if before and before[-1] in {"not", "never", "no", "isn't", "wasn't", "hardly"}:
            return -1
        return found.start()
    position = text.find(phrase)
    if position > 0 and text[position - 1] in "不没" and not phrase.startswith(("不", "没")):
        return -1
    return position
