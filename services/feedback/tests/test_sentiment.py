"""Sentiment accuracy on the committed labelled set, printed per language, and topic tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import convohub.feedback.domain as domain
from convohub.contracts.events.feedback import FeedbackSentiment
from convohub.feedback.domain.sentiment import analyse, label_of

LABELLED = Path(domain.__file__).parent / "data" / "labelled.jsonl"
POLARITY = {
    "very_negative": -1,
    "negative": -1,
    "neutral": 0,
    "positive": 1,
    "very_positive": 1,
}


def rows(language: str) -> list[dict]:
    lines = LABELLED.read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["language"] == language]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_accuracy_on_the_labelled_set(language: str, capsys: pytest.CaptureFixture[str]) -> None:
    items = rows(language)
    assert len(items) >= 60
    polarity = five_point = categories = 0
    for item in items:
        analysis = analyse(item["text"])
        polarity += POLARITY[analysis.sentiment] == POLARITY[item["sentiment"]]
        five_point += analysis.sentiment == item["sentiment"]
        categories += set(analysis.categories) == set(item["categories"])
        assert analysis.language == ("zh-CN" if language == "zh" else "en")
    n = len(items)
    with capsys.disabled():
        print(
            f"\nsentiment [{language}] n={n}: polarity accuracy {polarity / n:.1%}, "
            f"five-point exact {five_point / n:.1%}, category sets exact {categories / n:.1%}"
        )
    assert polarity / n >= 0.80


def test_negation_intensifiers_and_categories() -> None:
    assert analyse("not good at all").score < 0
    assert analyse("不满意").score < 0
    assert analyse("非常满意").score > analyse("满意").score > 0
    assert analyse("The agent was very rude and my refund is late").sentiment in (
        FeedbackSentiment.VERY_NEGATIVE,
        FeedbackSentiment.NEGATIVE,
    )
    assert set(analyse("快递太慢了，还多收了运费").categories) >= {"logistics", "billing"}
    assert analyse("").sentiment == FeedbackSentiment.NEUTRAL


def test_the_five_point_scale_boundaries() -> None:
    assert [label_of(s) for s in (-1, -0.6, -0.3, 0, 0.3, 0.6, 1)] == [
        FeedbackSentiment.VERY_NEGATIVE,
        FeedbackSentiment.VERY_NEGATIVE,
        FeedbackSentiment.NEGATIVE,
        FeedbackSentiment.NEUTRAL,
        FeedbackSentiment.POSITIVE,
        FeedbackSentiment.VERY_POSITIVE,
        FeedbackSentiment.VERY_POSITIVE,
    ]
