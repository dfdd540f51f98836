"""Offline sentiment and topic tags for English and Chinese customer text.

A hand-written lexicon with negation and intensifiers (VADER-style scoring): no network, no
model download, no tokenizer for Chinese (the lexicon is matched on characters, longest
entry first). `analyse(text)` returns a score in -1..1, the five-point label of the contract,
the category tags and the language. Its accuracy on the committed labelled set
(`data/labelled.jsonl`, written separately from the lexicon) is printed by the tests and
recorded in docs/metrics.md.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from convohub.contracts.events.feedback import FeedbackSentiment

MODEL_NAME = "feedback-lexicon-zh-en/2026.11"

# --- English ------------------------------------------------------------------------------

_EN_WORDS: dict[str, float] = {
    # positive
    "good": 1.5,
    "great": 2.5,
    "excellent": 3,
    "amazing": 3,
    "awesome": 3,
    "perfect": 3,
    "fantastic": 3,
    "wonderful": 3,
    "outstanding": 3,
    "brilliant": 2.5,
    "superb": 3,
    "love": 2.5,
    "loved": 2.5,
    "like": 1,
    "liked": 1.2,
    "nice": 1.5,
    "happy": 2,
    "glad": 1.5,
    "pleased": 2,
    "satisfied": 1.8,
    "thanks": 1.2,
    "thank": 1.2,
    "thx": 1,
    "appreciate": 1.8,
    "appreciated": 1.8,
    "helpful": 2,
    "friendly": 2,
    "polite": 1.5,
    "patient": 1.8,
    "professional": 1.5,
    "quick": 1.5,
    "quickly": 1.5,
    "fast": 1.5,
    "prompt": 1.5,
    "fixed": 1.2,
    "solved": 1.5,
    "resolved": 1.3,
    "recommend": 1.8,
    "best": 2.5,
    "smooth": 1.5,
    "easy": 1.2,
    "kind": 1.5,
    "efficient": 1.8,
    "reliable": 1.5,
    "works": 0.8,
    "fine": 0.6,
    "ok": 0.3,
    "okay": 0.3,
    "well": 0.8,
    "clear": 0.8,
    "impressed": 2,
    "beautiful": 2,
    "exceeded": 2,
    "lovely": 2,
    "cheers": 1,
    "super": 2,
    "thorough": 1.5,
    "sorted": 1.2,
    # negative
    "bad": -1.8,
    "terrible": -3,
    "awful": -3,
    "horrible": -3,
    "worst": -3,
    "poor": -1.8,
    "rude": -2.5,
    "slow": -1.5,
    "late": -1.5,
    "delayed": -1.5,
    "delay": -1.2,
    "broken": -2,
    "damaged": -2,
    "defective": -2.2,
    "faulty": -2,
    "wrong": -1.5,
    "missing": -1.5,
    "lost": -1.5,
    "angry": -2.5,
    "upset": -2,
    "annoyed": -2,
    "annoying": -2,
    "frustrated": -2.2,
    "frustrating": -2.2,
    "disappointed": -2.2,
    "disappointing": -2.2,
    "unhappy": -2,
    "useless": -2.5,
    "ridiculous": -2.5,
    "unacceptable": -2.8,
    "scam": -3,
    "fraud": -3,
    "hate": -2.8,
    "waste": -2,
    "wasted": -2,
    "never": -0.8,
    "problem": -0.8,
    "problems": -0.8,
    "issue": -0.6,
    "issues": -0.6,
    "complaint": -1.5,
    "complain": -1.5,
    "overcharged": -2.2,
    "cheated": -2.8,
    "ignored": -2,
    "unhelpful": -2.2,
    "incompetent": -2.8,
    "mess": -1.8,
    "nightmare": -2.8,
    "disgusting": -3,
    "pathetic": -2.8,
    "sucks": -2.5,
    "fail": -1.8,
    "failed": -1.8,
    "failure": -1.8,
    "cancel": -0.6,
    "refund": -0.4,
    "worse": -2,
    "dirty": -1.5,
    "cold": -0.8,
    "unprofessional": -2.5,
    "confusing": -1.5,
    "stuck": -1.2,
    "error": -1,
    "crash": -1.5,
    "crashes": -1.5,
    "unreliable": -2,
    "expensive": -1,
    "sorry": -0.3,
    "sad": -1.8,
    "awaiting": -0.3,
    "still": -0.3,
}
_EN_NEGATORS = {
    "not",
    "no",
    "never",
    "n't",
    "dont",
    "don't",
    "didnt",
    "didn't",
    "doesnt",
    "doesn't",
    "isnt",
    "isn't",
    "wasnt",
    "wasn't",
    "cannot",
    "can't",
    "cant",
    "wont",
    "won't",
    "hardly",
    "nobody",
    "nothing",
    "without",
    "aren't",
    "weren't",
    "haven't",
    "hasn't",
}
_EN_BOOSTERS = {
    "very": 1.5,
    "really": 1.4,
    "so": 1.3,
    "extremely": 1.8,
    "super": 1.5,
    "too": 1.3,
    "totally": 1.5,
    "absolutely": 1.6,
    "incredibly": 1.7,
    "quite": 1.2,
    "most": 1.4,
    "completely": 1.6,
    "truly": 1.4,
}
_EN_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")

# --- Chinese ------------------------------------------------------------------------------

_ZH_WORDS: dict[str, float] = {
    # positive
    "满意": 1.8,
    "不错": 1.5,
    "好评": 2.5,
    "棒": 2.2,
    "赞": 2,
    "优秀": 2.5,
    "完美": 3,
    "喜欢": 2,
    "推荐": 1.8,
    "感谢": 1.8,
    "谢谢": 1.2,
    "多谢": 1.2,
    "耐心": 1.8,
    "专业": 1.5,
    "热情": 1.8,
    "周到": 2,
    "及时": 1.5,
    "迅速": 1.5,
    "很快": 1.5,
    "快速": 1.5,
    "高效": 1.8,
    "解决了": 1.5,
    "好": 1.2,
    "开心": 2,
    "高兴": 2,
    "满分": 3,
    "给力": 2.2,
    "贴心": 2,
    "细心": 1.8,
    "靠谱": 1.8,
    "放心": 1.5,
    "舒服": 1.5,
    "漂亮": 1.8,
    "惊喜": 2.2,
    "点赞": 2.2,
    "友好": 1.8,
    "礼貌": 1.5,
    "清楚": 1,
    "方便": 1.3,
    "顺利": 1.5,
    "值得": 1.5,
    "划算": 1.5,
    "物美价廉": 2.5,
    "完好": 1.2,
    "负责": 1.5,
    "认真": 1.5,
    "温柔": 1.5,
    "感动": 2,
    "没问题": 1,
    "可以": 0.5,
    "还行": 0.3,
    "一般": -0.2,
    # negative
    "差": -2,
    "糟糕": -2.8,
    "烂": -2.5,
    "垃圾": -3,
    "失望": -2.5,
    "生气": -2.5,
    "愤怒": -3,
    "投诉": -2,
    "慢": -1.5,
    "太慢": -2,
    "坏": -1.8,
    "坏了": -2,
    "破": -1.5,
    "破损": -2.2,
    "骗": -2.8,
    "骗子": -3,
    "恶心": -3,
    "无语": -2,
    "气死": -3,
    "敷衍": -2.5,
    "不理": -2,
    "没人理": -2.5,
    "不回": -2,
    "难用": -2.2,
    "麻烦": -1.2,
    "后悔": -2.5,
    "坑": -2.5,
    "问题": -0.6,
    "错": -1.2,
    "错误": -1.5,
    "漏": -1.2,
    "延迟": -1.5,
    "延误": -1.8,
    "拖": -1.5,
    "拖延": -2,
    "态度差": -2.8,
    "不耐烦": -2.5,
    "粗鲁": -2.8,
    "离谱": -2.5,
    "过分": -2.2,
    "讨厌": -2.5,
    "欺骗": -3,
    "虚假": -2.5,
    "假货": -3,
    "次品": -2.5,
    "瑕疵": -1.8,
    "退货": -0.8,
    "退款": -0.4,
    "扣费": -1,
    "多收": -2,
    "乱收费": -2.8,
    "贵": -1,
    "卡": -0.8,
    "闪退": -2,
    "报错": -1.5,
    "崩溃": -2.2,
    "丢": -1.5,
    "丢失": -1.8,
    "等了": -1.2,
    "还没": -1,
    "没收到": -1.8,
    "没有收到": -1.8,
    "不能用": -2.2,
    "着急": -1.5,
    "急": -1,
    "郁闷": -2,
    "伤心": -2,
    "难过": -2,
    "可惜": -1.2,
    "遗憾": -1.5,
    "抱歉": -0.3,
    "不满": -2.2,
    "差劲": -2.8,
    "垃圾服务": -3,
    "最差": -3,
    "心累": -2,
    "浪费": -2,
}
_ZH_NEGATORS = ("没有", "不", "没", "别", "未", "无")
_ZH_BOOSTERS = {
    "非常": 1.6,
    "十分": 1.6,
    "特别": 1.5,
    "很": 1.4,
    "太": 1.5,
    "超级": 1.7,
    "超": 1.5,
    "真": 1.3,
    "真的": 1.3,
    "极其": 1.8,
    "相当": 1.4,
    "挺": 1.2,
    "最": 1.6,
    "巨": 1.6,
    "贼": 1.5,
}
_ZH_BY_FIRST_CHARACTER: dict[str, list[str]] = {}
for _word in sorted(_ZH_WORDS, key=len, reverse=True):  # longest entry first
    _ZH_BY_FIRST_CHARACTER.setdefault(_word[0], []).append(_word)

_EMOJI: dict[str, float] = {
    "😀": 2,
    "😃": 2,
    "😄": 2,
    "😁": 2,
    "😊": 1.8,
    "🙂": 1.2,
    "😍": 2.5,
    "🥰": 2.5,
    "🤩": 2.5,
    "👍": 1.8,
    "👏": 1.8,
    "❤": 2.2,
    "💯": 2.5,
    "🙏": 1,
    "😐": 0,
    "😕": -1.2,
    "🙁": -1.5,
    "☹": -1.8,
    "😞": -1.8,
    "😢": -2,
    "😭": -2.5,
    "😡": -3,
    "😠": -2.8,
    "🤬": -3,
    "😤": -2,
    "👎": -2,
}

# --- categories ---------------------------------------------------------------------------

CATEGORIES: dict[str, tuple[str, ...]] = {
    "product_quality": (
        "quality",
        "broken",
        "defective",
        "damaged",
        "faulty",
        "product",
        "item",
        "material",
        "stopped working",
        "doesn't work",
        "does not work",
        "cracked",
        "fake",
        "size",
        "质量",
        "坏了",
        "破损",
        "瑕疵",
        "产品",
        "商品",
        "次品",
        "做工",
        "假货",
        "材质",
        "尺码",
        "用不了",
        "不能用",
        "坏",
        "裂",
    ),
    "service_attitude": (
        "rude",
        "polite",
        "patient",
        "helpful",
        "unhelpful",
        "attitude",
        "friendly",
        "agent",
        "staff",
        "support team",
        "customer service",
        "service",
        "ignored",
        "professional",
        "态度",
        "客服",
        "耐心",
        "热情",
        "敷衍",
        "不理",
        "专业",
        "服务",
        "礼貌",
        "粗鲁",
        "不耐烦",
    ),
    "logistics": (
        "delivery",
        "delivered",
        "shipping",
        "shipped",
        "ship",
        "package",
        "parcel",
        "courier",
        "arrived",
        "arrive",
        "tracking",
        "dispatch",
        "in transit",
        "物流",
        "快递",
        "发货",
        "配送",
        "送货",
        "包裹",
        "到货",
        "收到",
        "签收",
        "运输",
        "派送",
    ),
    "billing": (
        "refund",
        "charge",
        "charged",
        "overcharged",
        "invoice",
        "payment",
        "paid",
        "pay",
        "price",
        "bill",
        "billing",
        "money",
        "fee",
        "subscription",
        "discount",
        "coupon",
        "退款",
        "扣费",
        "发票",
        "付款",
        "支付",
        "价格",
        "账单",
        "多收",
        "费用",
        "收费",
        "退钱",
        "优惠",
        "钱",
    ),
    "response_time": (
        "wait",
        "waited",
        "waiting",
        "slow",
        "quick",
        "quickly",
        "fast",
        "hours",
        "days",
        "reply",
        "respond",
        "response",
        "responded",
        "prompt",
        "等了",
        "等待",
        "回复",
        "太慢",
        "及时",
        "速度",
        "迅速",
        "很快",
        "秒回",
        "半天",
    ),
    "technical": (
        "app",
        "website",
        "login",
        "log in",
        "password",
        "error",
        "bug",
        "crash",
        "crashes",
        "page",
        "account",
        "登录",
        "密码",
        "闪退",
        "报错",
        "网站",
        "页面",
        "账号",
        "卡顿",
        "系统",
    ),
}


@dataclass(frozen=True)
class Analysis:
    """Sentiment and topics of one text."""

    score: float
    sentiment: FeedbackSentiment
    categories: tuple[str, ...]
    language: str


def detect_language(text: str) -> str:
    """`zh-CN` when the text has CJK ideographs, else `en`."""
    return "zh-CN" if any("\u4e00" <= char <= "\u9fff" for char in text) else "en"


def label_of(score: float) -> FeedbackSentiment:
    """The five-point label of a score in -1..1."""
    if score <= -0.6:
        return FeedbackSentiment.VERY_NEGATIVE
    if score <= -0.2:
        return FeedbackSentiment.NEGATIVE
    if score < 0.2:
        return FeedbackSentiment.NEUTRAL
    if score < 0.6:
        return FeedbackSentiment.POSITIVE
    return FeedbackSentiment.VERY_POSITIVE


def analyse(text: str) -> Analysis:
    """Score, label, categories and language of `text` (any mix of English and Chinese)."""
    cleaned = unicodedata.normalize("NFKC", text).lower()
    language = detect_language(cleaned)
    raw = _english_raw(cleaned) + _chinese_raw(cleaned) + _emoji_raw(cleaned)
    if "!" in cleaned and raw:
        raw *= 1 + 0.1 * min(cleaned.count("!"), 3)
    score = raw / math.sqrt(raw * raw + 4) if raw else 0.0
    score = max(-1.0, min(1.0, round(score, 4)))
    return Analysis(score, label_of(score), categories_of(cleaned), language)


def _category_matcher(keywords: tuple[str, ...]) -> tuple[re.Pattern[str], tuple[str, ...]]:
    latin = sorted((k for k in keywords if k.isascii()), key=len, reverse=True)
    pattern = re.compile(r"(?<![a-z])(?:" + "|".join(map(re.escape, latin)) + r")(?![a-z])")
    return pattern, tuple(k for k in keywords if not k.isascii())


_CATEGORY_MATCHERS = {category: _category_matcher(words) for category, words in CATEGORIES.items()}


def categories_of(cleaned: str) -> tuple[str, ...]:
    """The category tags whose keywords occur in the (lower-cased) text: Latin keywords as
    whole words, Chinese ones anywhere."""
    found = []
    for category, (latin, chinese) in _CATEGORY_MATCHERS.items():
        if latin.search(cleaned) or any(keyword in cleaned for keyword in chinese):
            found.append(category)
    return tuple(found)


def _english_raw(cleaned: str) -> float:
    # "I'd like" / "would like" asks for something; it is not liking.
    cleaned = re.sub(r"\b(?:i'd|we'd|would|i would) like\b", "request", cleaned.replace("’", "'"))
    tokens = _EN_TOKEN.findall(cleaned)
    total = 0.0
    for index, token in enumerate(tokens):
        value = _EN_WORDS.get(token)
        if value is None:
            continue
        window = tokens[max(0, index - 3) : index]
        for word in reversed(window[-2:]):
            if word in _EN_BOOSTERS:
                value *= _EN_BOOSTERS[word]
                break
        if any(word in _EN_NEGATORS or word.endswith("n't") for word in window):
            value *= -0.75 if value > 0 else -0.5
        if index > 0 and tokens[index - 1] == "but":
            value *= 1.3
        total += value
    # What follows "but" weighs more than what precedes it.
    return total


def _chinese_raw(cleaned: str) -> float:
    total = 0.0
    index = 0
    while index < len(cleaned):
        candidates = _ZH_BY_FIRST_CHARACTER.get(cleaned[index], ())
        entry = next((word for word in candidates if cleaned.startswith(word, index)), None)
        if entry is None:
            index += 1
            continue
        value = _ZH_WORDS[entry]
        prefix = cleaned[max(0, index - 4) : index]
        negated = _negated(prefix) and not entry.startswith(("不", "没", "无"))
        for booster, factor in _ZH_BOOSTERS.items():
            if prefix.endswith(booster) or (negated and booster in prefix):
                value *= factor
                break
        if negated:
            value *= -0.75 if value > 0 else -0.5
        total += value
        index += len(entry)
    return total


def _negated(prefix: str) -> bool:
    tail = prefix[-3:]
    return any(negator in tail for negator in _ZH_NEGATORS)


def _emoji_raw(cleaned: str) -> float:
    return sum(value * cleaned.count(emoji) for emoji, value in _EMOJI.items())
