"""`convohub simulate`: realistic traffic against a running hub, through its real edges.

Customers write in over the tenant's configured channels, each request signed the way the
provider signs it (Twilio's X-Twilio-Signature, Meta's X-Hub-Signature-256, Mailgun's
timestamp/token signature, ConvoHub's signed raw e-mail, web chat sessions, the API channel
with an API key). Arrivals are a Poisson process whose intensity follows a daily curve;
messages are Chinese and English texts built from the tenant's own classification rules;
some customers are VIPs, some come back, some switch channel mid-conversation. Simulated
agents go online, accept offers, reply after thinking, sometimes transfer, resolve, and
customers answer the surveys that reach them within the run.

The plan (who writes when, on which channel, what) is a pure function of the config, the
rate, the duration and the seed: `plan_traffic`. `simulate` plays a plan against a hub and
then checks through the read APIs that every message it sent is in the ingest read model.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from convohub.cli.aiohttp_transport import AiohttpTransport
from convohub.runtime.config import ChannelConfig, ConfigError, HubConfig, Role, Tenant, load_config
from convohub.runtime.settings import RuntimeSettings

__all__ = [
    "DAILY_CURVE",
    "PlannedConversation",
    "PlannedCustomer",
    "PlannedMessage",
    "SimulationStats",
    "SimulationSummary",
    "TrafficPlan",
    "plan_traffic",
    "simulate",
]

# Relative contact volume by hour of day (a contact centre: quiet nights, a morning and an
# afternoon peak, a smaller evening bump); interpolated linearly between hours.
DAILY_CURVE: tuple[float, ...] = (
    0.15, 0.10, 0.08, 0.07, 0.08, 0.12, 0.25, 0.50, 0.80, 1.00, 1.00, 0.90,
    0.75, 0.85, 0.95, 0.95, 0.85, 0.70, 0.60, 0.65, 0.70, 0.60, 0.40, 0.25,
)  # fmt: skip

# Which kinds of channel customers use, and how often (only the tenant's channels count).
CHANNEL_MIX = {
    "web_chat": 0.30,
    "whatsapp": 0.25,
    "email": 0.15,
    "sms": 0.15,
    "api": 0.15,
    "social": 0.05,
}
PHONE_CHANNELS = {"whatsapp", "sms"}
EMAIL_CHANNELS = {"email"}
_EMAIL_SECRETS = {"mailgun_signing_key", "inbound_signing_secret"}
VIP_SHARE = 0.08
RETURN_SHARE = 0.25
RETURN_GAP_SECONDS = 20.0  # a returning customer's previous conversation began this long ago
SWITCH_SHARE = 0.15
TRANSFER_SHARE = 0.10
SURVEY_ANSWER_SHARE = 0.6
AGENT_CAPACITY = 20
MEAN_HANDLE_SECONDS = 25.0  # offer accepted -> resolved, median of a 10/s run of `up`
POLLING_SLOTS = 8
OFFER_POLL_SECONDS = 0.2  # how often the simulated agents look at their offers, together
DEFAULT_ACCEPT_DELAY = 0.5  # for an offer whose conversation this run has not bound yet
ROUTING_CHECK_SECONDS = 3.0  # a waiting conversation checks its routing (auto-accept) this often
CUSTOMER_CONNECTIONS = 40
AGENT_CONNECTIONS = 24

_SURNAMES_ZH = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
_GIVEN_ZH = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛")
_FIRST_EN = ("Emma", "Liam", "Olivia", "Noah", "Ava", "Lucas", "Mia", "Ethan", "Zoe", "Jack")
_LAST_EN = ("Smith", "Brown", "Taylor", "Wilson", "Clark", "Walker", "Hall", "Young", "King")

_TEMPLATES = {
    "zh": (
        "你好，我想问一下{kw}的问题。",
        "请问{kw}怎么处理？谢谢",
        "关于{kw}，能帮我看一下吗？",
        "您好！{kw}这个事情比较急，麻烦尽快回复。",
    ),
    "en": (
        "Hi, I have a question about {kw}.",
        "Hello, could you help me with {kw}?",
        "Quick one on {kw}, please.",
        "Good morning, I need help with {kw} today.",
    ),
}
_NEUTRAL = {
    "zh": ("你好，在吗？", "我想咨询一下你们的服务。", "账户登录不了，怎么办？"),
    "en": ("Hello, is anyone there?", "I'd like to ask about your service.", "I can't log in."),
}
_ORDER_TEXT = {"zh": "我的订单 #{order} 有问题", "en": "There is a problem with order #{order}"}
_FOLLOW_UPS = {
    "zh": ("好的，谢谢。还有一个问题。", "明白了，那大概需要多久？", "收到，我再确认一下。"),
    "en": (
        "Thanks. One more question.",
        "I see, how long will that take?",
        "Got it, let me check.",
    ),
}
_REPLIES = {
    "zh": ("您好，我来帮您处理。", "已经为您查询，请稍等。", "问题已处理，还有其他需要吗？"),
    "en": (
        "Hi, I'm on it.",
        "I've looked it up for you, one moment.",
        "All sorted. Anything else?",
    ),
}


# --- the plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedCustomer:
    """A simulated customer: one identity (phone or e-mail) across the channels it uses."""

    key: str
    name: str
    language: str
    phone: str | None
    email: str | None
    vip: bool


@dataclass(frozen=True)
class PlannedMessage:
    """One customer message: where it goes and what it says. `local_id` becomes the
    provider's message id (prefixed by the run id)."""

    channel_id: str
    text: str
    local_id: str


@dataclass(frozen=True)
class PlannedConversation:
    index: int
    at: float
    """Seconds after the start of the run."""
    customer: PlannedCustomer
    returning: bool
    first: PlannedMessage
    rule_id: str | None
    """The classification rule its first message was written to hit (None: no rule)."""
    follow_ups: tuple[PlannedMessage, ...]
    """Customer messages, each sent after an agent's reply (on another channel: a switch)."""
    agent_think: tuple[float, ...]
    """Seconds each agent reply takes to write: one per follow-up, plus the last reply."""
    customer_think: tuple[float, ...]
    accept_delay: float
    transfer_to: str | None
    survey_answer: tuple[int, int] | None
    """CSAT (1-5) and NPS (0-10) the customer gives when surveyed; None: does not answer."""
    survey_on_channel: bool = False
    """Answer a survey asked in the conversation by replying there (else by its web link)."""


@dataclass(frozen=True)
class TrafficPlan:
    tenant: str
    seed: int
    rate: float
    duration: float
    start_hour: float
    conversations: tuple[PlannedConversation, ...]
    agents: tuple[str, ...]


def curve_at(hour: float) -> float:
    """The daily curve at an hour of day (0-24, wraps)."""
    hour %= 24.0
    low = int(hour)
    weight = hour - low
    return DAILY_CURVE[low] * (1 - weight) + DAILY_CURVE[(low + 1) % 24] * weight


@dataclass(frozen=True)
class _Channels:
    """The tenant's channels the simulator can write on, by kind."""

    by_kind: dict[str, list[ChannelConfig]]

    @classmethod
    def of(cls, tenant: Tenant) -> _Channels:
        found: dict[str, list[ChannelConfig]] = {}
        for channel in tenant.channels:
            kind = channel.type.value
            usable = (
                (kind == "web_chat" and bool(channel.settings.get("allowed_origins")))
                or (kind == "sms" and "auth_token" in channel.secrets)
                or (
                    kind == "whatsapp"
                    and ("app_secret" in channel.secrets or "auth_token" in channel.secrets)
                )
                or (
                    kind == "email"
                    and bool(
                        {"mailgun_signing_key", "inbound_signing_secret"} & set(channel.secrets)
                    )
                )
                or (kind == "api" and _api_key_for(tenant, channel.id) is not None)
                or (
                    kind == "social"
                    and channel.provider == "messenger"
                    and "app_secret" in channel.secrets
                )
            )
            if usable and kind in CHANNEL_MIX:
                found.setdefault(kind, []).append(channel)
        return cls(found)

    def kinds_for(self, customer: PlannedCustomer) -> list[str]:
        kinds = []
        for kind in self.by_kind:
            if kind in PHONE_CHANNELS and customer.phone is None:
                continue
            if kind in EMAIL_CHANNELS and customer.email is None:
                continue
            kinds.append(kind)
        return kinds


def _api_key_for(tenant: Tenant, channel_id: str | None = None) -> str | None:
    """A supervisor's or admin's key of the tenant (allowed on `channel_id` when given)."""
    for wanted in (Role.SUPERVISOR, Role.ADMIN):
        for api_key in tenant.api_keys:
            if (
                api_key.role == wanted
                and api_key.agent_id is None
                and (channel_id is None or api_key.allows_channel(channel_id))
            ):
                return api_key.key.get_secret_value()
    return None


def _texts_from_rules(tenant: Tenant) -> list[tuple[str | None, str, str]]:
    """(rule id, language, keyword or pattern-made text) the tenant's text rules match."""
    found: list[tuple[str | None, str, str]] = []
    for rule in tenant.routing.get("rules") or []:
        match = rule.get("match") or {}
        for keyword in match.get("keywords") or []:
            language = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in keyword) else "en"
            found.append((rule.get("id"), language, str(keyword)))
        if match.get("regex") and "order" in str(match["regex"]).lower():
            found.append((rule.get("id"), "zh", "__order__"))
            found.append((rule.get("id"), "en", "__order__"))
    return found


def _customer(rng: random.Random, index: int, channels: _Channels) -> PlannedCustomer:
    language = rng.choice(("zh", "zh", "en"))
    if language == "zh":
        name = rng.choice(_SURNAMES_ZH) + rng.choice(_GIVEN_ZH) + rng.choice(("", *_GIVEN_ZH))
    else:
        name = f"{rng.choice(_FIRST_EN)} {rng.choice(_LAST_EN)}"
    identity = rng.choice(("phone", "email")) if channels.by_kind else "phone"
    kinds = set(channels.by_kind)
    if not kinds & EMAIL_CHANNELS:
        identity = "phone"
    elif not kinds & PHONE_CHANNELS:
        identity = "email"
    # Drawn from the seed, so another seed brings other customers to the same hub.
    phone = email = None
    if identity == "phone":
        number = rng.randrange(10**7)
        phone = f"+861390{number:07d}" if language == "zh" else f"+1415{number:07d}"
    else:
        email = f"sim.{rng.randrange(16**8):08x}@example.{'cn' if language == 'zh' else 'com'}"
    return PlannedCustomer(
        key=f"sim-{index:05d}",
        name=name,
        language=language,
        phone=phone,
        email=email,
        vip=rng.random() < VIP_SHARE,
    )


def _first_text(
    rng: random.Random, language: str, rule_texts: list[tuple[str | None, str, str]]
) -> tuple[str | None, str]:
    mine = [entry for entry in rule_texts if entry[1] == language]
    if not mine or rng.random() < 0.2:
        return None, rng.choice(_NEUTRAL[language])
    rule_id, _, keyword = rng.choice(mine)
    if keyword == "__order__":
        return rule_id, _ORDER_TEXT[language].format(order=f"A{rng.randint(10000, 99999)}")
    return rule_id, rng.choice(_TEMPLATES[language]).format(kw=keyword)


def _arrivals(
    rng: random.Random, rate: float, duration: float, start_hour: float, day_seconds: float
) -> list[float]:
    """Arrival times of a Poisson process whose intensity follows the daily curve, scaled so
    the mean rate over the run is `rate` (thinning: Lewis and Shedler)."""
    if rate <= 0 or duration <= 0:
        return []

    def hour(t: float) -> float:
        return start_hour + t * 24.0 / day_seconds

    samples = [curve_at(hour(duration * (i + 0.5) / 200)) for i in range(200)]
    mean = sum(samples) / len(samples)
    peak = max(curve_at(hour(duration * i / 400)) for i in range(401))
    bound = rate * peak / mean
    times: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(bound)
        if t >= duration:
            return times
        if rng.random() * bound <= rate * curve_at(hour(t)) / mean:
            times.append(round(t, 3))


def plan_traffic(
    config: HubConfig,
    *,
    rate: float,
    duration: float,
    seed: int = 1,
    tenant: str | None = None,
    start_hour: float = 10.0,
    day_seconds: float = 86_400.0,
) -> TrafficPlan:
    """The conversations a run makes: a pure function of its arguments (same seed, same plan).

    `start_hour` is the hour of day the run begins at; `day_seconds` how long a simulated
    day lasts (86 400: real time; 600: a whole daily curve in ten minutes).
    """
    chosen = config.tenant(tenant) if tenant else (config.tenants[0] if config.tenants else None)
    if chosen is None:
        raise ValueError("the config has no tenant to simulate")
    channels = _Channels.of(chosen)
    if not channels.by_kind:
        raise ValueError(f"tenant {chosen.id!r} has no channel the simulator can write on")
    rng = random.Random(seed)
    rule_texts = _texts_from_rules(chosen)
    groups = [group["id"] for group in chosen.routing.get("skill_groups") or [] if "id" in group]
    conversations: list[PlannedConversation] = []
    customers: list[tuple[PlannedCustomer, float]] = []  # each with its latest start
    for index, at in enumerate(_arrivals(rng, rate, duration, start_hour, day_seconds)):
        returning = [
            (position, entry)
            for position, entry in enumerate(customers)
            if entry[1] <= at - RETURN_GAP_SECONDS
        ]
        if returning and rng.random() < RETURN_SHARE:
            position, (customer, _) = rng.choices(
                returning, weights=[3.0 if entry[0].vip else 1.0 for _, entry in returning]
            )[0]
            customers[position] = (customer, at)
            is_returning = True
        else:
            customer = _customer(rng, len(customers), channels)
            customers.append((customer, at))
            is_returning = False
        usable = channels.kinds_for(customer)
        kind = rng.choices(usable, weights=[CHANNEL_MIX[k] for k in usable])[0]
        channel = rng.choice(channels.by_kind[kind])
        rule_id, text = _first_text(rng, customer.language, rule_texts)
        follow_count = rng.choices((0, 1, 2), weights=(0.35, 0.45, 0.20))[0]
        follow_ups = []
        for turn in range(follow_count):
            channel_id = channel.id
            # A Messenger PSID names nobody on other channels: a switch would be a new customer.
            others = [k for k in usable if k != kind and "social" not in (k, kind)]
            if others and rng.random() < SWITCH_SHARE:
                channel_id = rng.choice(channels.by_kind[rng.choice(others)]).id
            follow_ups.append(
                PlannedMessage(
                    channel_id, rng.choice(_FOLLOW_UPS[customer.language]), f"{index}-{turn + 1}"
                )
            )
        transfer_to = None
        if len(groups) > 1 and rng.random() < TRANSFER_SHARE:
            transfer_to = rng.choice(groups)
        answer, on_channel = None, False
        if rng.random() < SURVEY_ANSWER_SHARE:
            csat = rng.choices((1, 2, 3, 4, 5), weights=(5, 7, 15, 33, 40))[0]
            answer = (csat, max(0, min(10, csat * 2 + rng.randint(-2, 0))))
            on_channel = rng.random() < 0.5
        conversations.append(
            PlannedConversation(
                index=index,
                at=at,
                customer=customer,
                returning=is_returning,
                first=PlannedMessage(channel.id, text, f"{index}-0"),
                rule_id=rule_id,
                follow_ups=tuple(follow_ups),
                agent_think=tuple(round(rng.uniform(0.8, 3.5), 2) for _ in range(follow_count + 1)),
                customer_think=tuple(round(rng.uniform(0.5, 2.5), 2) for _ in range(follow_count)),
                accept_delay=round(rng.uniform(0.1, 1.0), 2),
                transfer_to=transfer_to,
                survey_answer=answer,
                survey_on_channel=on_channel,
            )
        )
    needed = max(rate, 0.1) * MEAN_HANDLE_SECONDS * 1.5
    agent_count = max(3, math.ceil(needed / AGENT_CAPACITY))
    return TrafficPlan(
        tenant=chosen.id,
        seed=seed,
        rate=rate,
        duration=duration,
        start_hour=start_hour,
        conversations=tuple(conversations),
        agents=tuple(f"sim-agent-{number:02d}" for number in range(1, agent_count + 1)),
    )


# --- what a run reports -------------------------------------------------------------------


@dataclass
class SimulationStats:
    """Live counters of a run (passed to the progress callback about once a second)."""

    elapsed: float = 0.0
    duration: float = 0.0
    planned: int = 0
    conversations: int = 0
    messages: int = 0
    replies: int = 0
    assigned: int = 0
    transfers: int = 0
    resolved: int = 0
    surveys_answered: int = 0
    in_flight: int = 0
    requests: int = 0
    """HTTP requests made to the hub (every attempt)."""
    retries: int = 0
    offers_missed: int = 0
    verified: int = 0
    """Sent messages found in the read model so far (while verifying)."""
    errors: Counter[str] = field(default_factory=Counter)
    error_details: Counter[str] = field(default_factory=Counter)
    """Failures by status, method and route (ids replaced by `{id}`)."""
    phase: str = "starting"

    def short(self) -> str:
        """The counters in few characters (for a progress bar's description)."""
        return (
            f"{self.phase:<9} conv {self.conversations}/{self.planned} msg {self.messages} "
            f"reply {self.replies} assigned {self.assigned} resolved {self.resolved} "
            f"survey {self.surveys_answered} err {sum(self.errors.values())}"
        )

    def line(self) -> str:
        """One human line: what happened so far."""
        failed = sum(self.errors.values())
        return (
            f"{self.phase} {self.elapsed:5.0f}s/{self.duration:.0f}s  "
            f"conversations {self.conversations}/{self.planned}  messages {self.messages}  "
            f"replies {self.replies}  assigned {self.assigned}  resolved {self.resolved}  "
            f"surveys {self.surveys_answered}  in flight {self.in_flight}  errors {failed}"
            + (f"  in read model {self.verified}/{self.messages}" if self.verified else "")
        )


@dataclass(frozen=True)
class SimulationSummary:
    """What a run did and what the hub's read APIs showed afterwards."""

    tenant: str
    seed: int
    duration: float
    conversations: int
    """Conversations started (first messages the hub accepted)."""
    messages: int
    """Customer messages the hub accepted."""
    replies: int
    assigned: int
    """Conversations seen assigned to an agent (after offers were accepted)."""
    transfers: int
    resolved: int
    surveys_answered: int
    errors: dict[str, int]
    """Failed requests by HTTP status (or exception name)."""
    error_details: dict[str, int]
    """The same by status, method and route."""
    latency_p50: float | None
    """Seconds from sending a conversation's first message to its routing.assigned event."""
    latency_p99: float | None
    latency_samples: int
    messages_verified: int
    """Sent messages found in the ingest read model (GET /v1/conversations...)."""
    missing_messages: tuple[str, ...]
    """Provider message ids sent and accepted but not found in the read model."""
    conversations_in_read_model: int
    resolved_in_read_model: int
    requests: int
    """HTTP requests the run made to the hub, retries and verification reads included."""
    unfinished: tuple[str, ...]
    """Conversations the run started but did not see resolved (assignment or a step failed,
    or the drain time ran out)."""
    offers_missed: int
    """Offers that had expired or gone elsewhere when a simulated agent accepted them."""

    def lines(self) -> list[str]:
        def seconds(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}s"

        errors = ", ".join(f"{key}: {count}" for key, count in sorted(self.errors.items()))
        details = [f"  {count:6d}  {key}" for key, count in sorted(self.error_details.items())]
        return [
            f"tenant {self.tenant}, seed {self.seed}, {self.duration:.0f}s of traffic",
            f"conversations started  {self.conversations}",
            f"customer messages      {self.messages}",
            f"agent replies          {self.replies}",
            f"assignments seen       {self.assigned}",
            f"transfers              {self.transfers}",
            f"resolutions            {self.resolved}",
            f"surveys answered       {self.surveys_answered}",
            f"errors                 {errors or 'none'}",
            *details,
            f"inbound->assigned      p50 {seconds(self.latency_p50)}  "
            f"p99 {seconds(self.latency_p99)}  ({self.latency_samples} conversations)",
            f"offers missed          {self.offers_missed} (expired or taken before accepted); "
            f"unfinished {len(self.unfinished)}",
            f"read model             {self.messages_verified}/{self.messages} messages found, "
            f"{len(self.missing_messages)} missing; {self.conversations_in_read_model} "
            f"conversations, {self.resolved_in_read_model} resolved or closed",
        ]


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


# --- talking to the hub -------------------------------------------------------------------

_ID_SEGMENT = re.compile(r"/(conv|offer|cust|msg)-[^/?]+|/sim-agent-\d+|/[0-9a-f-]{32,}")


def _template(path: str) -> str:
    """A request path with its ids replaced, so failures group by route."""
    return _ID_SEGMENT.sub("/{id}", path.split("?", 1)[0])


class _Hub:
    """An httpx client that counts failures by status and retries 429 and transport errors.

    Requests wait for a slot in one of two lanes before they reach httpx: customers' and
    agents'. Thousands of requests queued inside httpx's own pool cost it quadratic time,
    and a flood of customer messages must not starve the agents' heartbeats and accepts.
    """

    def __init__(self, client: httpx.AsyncClient, stats: SimulationStats) -> None:
        self.client = client
        self.stats = stats
        self.lanes = {
            "customers": asyncio.Semaphore(CUSTOMER_CONNECTIONS),
            "agents": asyncio.Semaphore(AGENT_CONNECTIONS),
        }
        self.customers_stopped = False  # the run is over: queued customer requests are dropped

    async def request(
        self,
        method: str,
        path: str,
        *,
        ok: Sequence[int] = (),
        lane: str = "agents",
        **kwargs: Any,
    ) -> httpx.Response | None:
        """The response when 2xx or in `ok`; otherwise None, counted under its status."""
        for attempt in range(6):
            try:
                async with self.lanes[lane]:
                    if lane == "customers" and self.customers_stopped:
                        return None
                    self.stats.requests += 1
                    response = await self.client.request(method, path, **kwargs)
            except httpx.TransportError as error:
                if attempt < 2:
                    self.stats.retries += 1
                    await asyncio.sleep(0.5 * (attempt + 1))
                    continue
                self.stats.errors[type(error).__name__] += 1
                self.stats.error_details[f"{type(error).__name__} {method} {_template(path)}"] += 1
                return None
            if response.status_code == 429 and attempt < 5:
                self.stats.retries += 1
                retry_after = response.headers.get("retry-after", "1")
                with contextlib.suppress(ValueError):
                    await asyncio.sleep(min(2.0, max(0.05, float(retry_after))))
                continue
            if response.is_success or response.status_code in ok:
                return response
            self.stats.errors[str(response.status_code)] += 1
            self.stats.error_details[f"{response.status_code} {method} {_template(path)}"] += 1
            return None
        return None


@dataclass
class _Sent:
    conversation_id: str | None
    provider_id: str


class _Edge:
    """Builds and signs each channel's inbound request exactly as its provider would."""

    def __init__(self, hub: _Hub, base_url: str, tenant: Tenant, run_id: str) -> None:
        self.hub = hub
        self.base_url = base_url.rstrip("/")
        self.tenant = tenant
        self.run_id = run_id
        self.sessions: dict[tuple[str, str], str] = {}
        self.send_request = functools.partial(hub.request, lane="customers")

    async def send(self, customer: PlannedCustomer, message: PlannedMessage) -> _Sent | None:
        channel = self.tenant.channel(message.channel_id)
        kind = channel.type.value
        provider_id = f"{self.run_id}.{message.local_id}"
        if kind == "api":
            return await self._api(channel, customer, message, provider_id)
        if kind == "web_chat":
            return await self._webchat(channel, customer, message, provider_id)
        if kind == "sms" or (kind == "whatsapp" and channel.provider == "twilio"):
            return await self._twilio(channel, customer, message, provider_id)
        if kind == "whatsapp":
            return await self._whatsapp(channel, customer, message, provider_id)
        if kind == "email":
            return await self._email(channel, customer, message, provider_id)
        if kind == "social":
            return await self._messenger(channel, customer, message, provider_id)
        raise ValueError(f"cannot simulate channel kind {kind!r}")

    async def _api(
        self, channel: ChannelConfig, customer: PlannedCustomer, message: PlannedMessage, pid: str
    ) -> _Sent | None:
        body: dict[str, Any] = {
            "external_id": pid,
            "customer": {"id": customer.key, "display_name": customer.name},
            "text": message.text,
        }
        if customer.phone:
            body["customer"]["phone"] = customer.phone
        elif customer.email:
            body["customer"]["email"] = customer.email
        key = _api_key_for(self.tenant, channel.id)
        response = await self.send_request(
            "POST",
            f"/v1/channels/{channel.id}/messages",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        )
        return _Sent(response.json()["conversation_id"], pid) if response else None

    async def _webchat(
        self, channel: ChannelConfig, customer: PlannedCustomer, message: PlannedMessage, pid: str
    ) -> _Sent | None:
        origin = str(channel.settings["allowed_origins"][0])
        visitor = f"{customer.key}-{self.run_id}"
        token = self.sessions.get((channel.id, customer.key))
        if token is None:
            asked: dict[str, Any] = {"visitor_id": visitor, "display_name": customer.name}
            if customer.phone:
                asked["phone"] = customer.phone
            elif customer.email:
                asked["email"] = customer.email
            started = await self.send_request(
                "POST",
                f"/v1/webchat/{channel.id}/sessions",
                json=asked,
                headers={"Origin": origin},
            )
            if started is None:
                return None
            token = started.json()["session_token"]
            self.sessions[(channel.id, customer.key)] = token
        response = await self.send_request(
            "POST",
            f"/v1/webchat/{channel.id}/messages",
            json={"client_message_id": pid, "text": message.text},
            headers={"Origin": origin, "X-Session-Token": token},
        )
        provider_id = f"{visitor}:{pid}"
        return _Sent(response.json()["conversation_id"], provider_id) if response else None

    async def _twilio(
        self, channel: ChannelConfig, customer: PlannedCustomer, message: PlannedMessage, pid: str
    ) -> _Sent | None:
        assert customer.phone is not None
        path = f"/v1/webhooks/twilio/{channel.id}"
        sender = customer.phone
        if channel.type.value == "whatsapp":
            sender = f"whatsapp:{sender}"
        sid = "SM" + hashlib.sha256(pid.encode()).hexdigest()[:32]
        form = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": str(channel.settings.get("account_sid", "ACsimulated")),
            "From": sender,
            "To": str(channel.settings.get("from_number", "+15005550006")),
            "Body": message.text,
            "NumMedia": "0",
            "ProfileName": customer.name,
        }
        # Twilio signs the URL it was configured with: the public base URL behind a proxy.
        public = str(channel.settings.get("public_base_url") or self.base_url).rstrip("/")
        signature = twilio_signature(channel.secret("auth_token"), public + path, form.items())
        response = await self.send_request(
            "POST",
            path,
            content=urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
        )
        return _Sent(None, sid) if response else None

    async def _whatsapp(
        self, channel: ChannelConfig, customer: PlannedCustomer, message: PlannedMessage, pid: str
    ) -> _Sent | None:
        assert customer.phone is not None
        wa_id = customer.phone.lstrip("+")
        wamid = "wamid." + base64.urlsafe_b64encode(pid.encode()).decode().rstrip("=")
        document = {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "simulated-waba",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550000000",
                                    "phone_number_id": str(
                                        channel.settings.get("phone_number_id", "0")
                                    ),
                                },
                                "contacts": [{"profile": {"name": customer.name}, "wa_id": wa_id}],
                                "messages": [
                                    {
                                        "from": wa_id,
                                        "id": wamid,
                                        "timestamp": str(int(time.time())),
                                        "type": "text",
                                        "text": {"body": message.text},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
        response = await self._meta_signed(channel, f"/v1/webhooks/whatsapp/{channel.id}", document)
        return _Sent(None, wamid) if response else None

    async def _meta_signed(
        self, channel: ChannelConfig, path: str, document: dict[str, Any]
    ) -> httpx.Response | None:
        """POST a Meta webhook (WhatsApp Cloud, Messenger) signed with the app secret."""
        body = json.dumps(document, ensure_ascii=False).encode()
        digest = hmac.new(channel.secret("app_secret").encode(), body, hashlib.sha256).hexdigest()
        return await self.send_request(
            "POST",
            path,
            content=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"},
        )

    async def _messenger(
        self, channel: ChannelConfig, customer: PlannedCustomer, message: PlannedMessage, pid: str
    ) -> _Sent | None:
        # A page-scoped id of digits, the same for the customer all run (drawn from the seed).
        identity = customer.phone or customer.email or customer.key
        psid = str(int(hashlib.sha256(identity.encode()).hexdigest()[:13], 16))
        page_id = str(channel.settings.get("page_id", "0"))
        mid = "m_" + base64.urlsafe_b64encode(pid.encode()).decode().rstrip("=")
        now = int(time.time() * 1000)
        document = {
            "object": "page",
            "entry": [
                {
                    "id": page_id,
                    "time": now,
                    "messaging": [
                        {
                            "sender": {"id": psid},
                            "recipient": {"id": page_id},
                            "timestamp": now,
                            "message": {"mid": mid, "text": message.text},
                        }
                    ],
                }
            ],
        }
        path = f"/v1/webhooks/messenger/{channel.id}"
        response = await self._meta_signed(channel, path, document)
        return _Sent(None, mid) if response else None

    async def _email(
        self, channel: ChannelConfig, customer: PlannedCustomer, message: PlannedMessage, pid: str
    ) -> _Sent | None:
        assert customer.email is not None
        message_id = f"{pid}@sim.convohub.invalid"
        to = str(channel.settings.get("inbound_address", "support@example.com"))
        subject = message.text[:40]
        if "mailgun_signing_key" in channel.secrets:
            timestamp, token = str(int(time.time())), secrets.token_hex(25)
            key = channel.secret("mailgun_signing_key").encode()
            signature = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
            form = {
                "recipient": to,
                "sender": customer.email,
                "from": f"{customer.name} <{customer.email}>",
                "subject": subject,
                "body-plain": message.text,
                "stripped-text": message.text,
                "Message-Id": f"<{message_id}>",
                "timestamp": timestamp,
                "token": token,
                "signature": signature,
            }
            response = await self.send_request(
                "POST",
                f"/v1/webhooks/mailgun/{channel.id}",
                content=urlencode(form).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            mail = EmailMessage()
            mail["From"] = f"{customer.name} <{customer.email}>"
            mail["To"] = to
            mail["Subject"] = subject
            mail["Message-ID"] = f"<{message_id}>"
            mail["Date"] = format_datetime(datetime.now(UTC))
            mail.set_content(message.text)
            raw = mail.as_bytes()
            secret = channel.secret("inbound_signing_secret").encode()
            digest = hmac.new(secret, raw, hashlib.sha256).hexdigest()
            response = await self.send_request(
                "POST",
                f"/v1/webhooks/email/{channel.id}",
                content=raw,
                headers={
                    "Content-Type": "message/rfc822",
                    "X-ConvoHub-Signature-256": f"sha256={digest}",
                },
            )
        if response is None:
            return None
        return _Sent(response.json().get("conversation_id"), message_id)


def twilio_signature(auth_token: str, url: str, params: Any) -> str:
    """Twilio's X-Twilio-Signature (base64 HMAC-SHA1 of the URL and the sorted parameters)."""
    payload = url + "".join(name + value for name, value in sorted(params, key=lambda p: p[0]))
    return base64.b64encode(
        hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    ).decode()


# --- the run ------------------------------------------------------------------------------


@dataclass
class _Tracked:
    planned: PlannedConversation
    first_sent_at: float  # wall clock (epoch seconds)
    conversation_id: str | None = None
    assigned_agent: str | None = None
    resolved: bool = False


class _Simulation:
    def __init__(
        self,
        hub: _Hub,
        edge: _Edge,
        plan: TrafficPlan,
        tenant: Tenant,
        stats: SimulationStats,
        *,
        agents: bool,
        deadline: float,
        pace: float = 1.0,
    ) -> None:
        self.hub = hub
        self.edge = edge
        self.plan = plan
        self.tenant = tenant
        self.stats = stats
        self.agents = agents
        self.pace = pace  # multiplies every think time and accept delay of the plan
        self.deadline = deadline  # monotonic: handlers give up waiting after it
        key = _api_key_for(tenant)
        if key is None:
            raise ValueError(f"tenant {tenant.id!r} has no supervisor or admin key to act with")
        self.auth = {"Authorization": f"Bearer {key}"}
        self.sent: dict[str, str] = {}  # provider id -> conversation id ("" until known)
        self.by_provider_id: dict[str, _Tracked] = {}
        self.by_conversation: dict[str, _Tracked] = {}
        self.vip_marked: set[str] = set()
        self.closed_customers: dict[str, asyncio.Event] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        # First messages in flight when the run ends are let finish, so a conversation the
        # hub started is always one the summary counts.
        self.first_sends = 0
        self.stopping = False
        # Waiting conversations share a few polling slots: when the hub slows down, the
        # simulator's own polling slows with it instead of piling on.
        self.polls = asyncio.Semaphore(POLLING_SLOTS)
        self.agent_ids = frozenset(plan.agents)
        # Conversations waiting for one of our agents to accept: the future gets the agent.
        self.offer_waiters: dict[str, asyncio.Future[str]] = {}
        self.accepting: set[str] = set()  # offer ids being accepted
        # Offers our agents accepted before the conversation's handler waited for them (its
        # id was not known yet): conversation id -> agent.
        self.accepted_early: dict[str, str] = {}
        feedback = tenant.feedback or {}
        self.survey_delay = (
            float(feedback.get("delay_seconds", 300))
            if feedback.get("surveys_enabled", True)
            else math.inf
        )
        self.started_wall = time.time()

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        self.stats.in_flight = len(self.tasks)

        def done(finished: asyncio.Task[None]) -> None:
            self.tasks.discard(finished)
            self.stats.in_flight = len(self.tasks)
            if not finished.cancelled() and finished.exception() is not None:
                self.stats.errors[type(finished.exception()).__name__] += 1

        task.add_done_callback(done)

    # -- agents --

    async def agents_online(self) -> None:
        groups = {group["id"] for group in self.tenant.routing.get("skill_groups") or []}
        groups.add("supervisor")  # the supervisor queue of escalated complaints
        kinds = {channel.type.value for channel in self.tenant.channels}
        for number, agent_id in enumerate(self.plan.agents):
            profile = {
                "id": agent_id,
                "name": f"Simulated agent {number + 1}",
                "tier": "senior" if number % 2 == 0 else "mid",
                "skills": {group: 5 if number % 2 == 0 else 4 for group in sorted(groups)},
                "capacity": {
                    "per_channel": {kind: AGENT_CAPACITY for kind in sorted(kinds)},
                    "total": AGENT_CAPACITY,
                },
            }
            created = await self.hub.request(
                "POST", "/v1/agents", json=profile, headers=self.auth, ok=(409,)
            )
            if created is not None and created.status_code == 409:
                await self.hub.request(
                    "PUT", f"/v1/agents/{agent_id}", json=profile, headers=self.auth
                )
            await self.presence(agent_id, "online")

    async def presence(self, agent_id: str, presence: str) -> None:
        await self.hub.request(
            "PUT",
            f"/v1/agents/{agent_id}/presence",
            json={"presence": presence},
            headers=self.auth,
        )

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(20)
            for agent_id in self.plan.agents:
                await self.hub.request(
                    "POST", f"/v1/agents/{agent_id}/heartbeat", headers=self.auth
                )

    # -- customers --

    async def customer_writes(self, planned: PlannedConversation) -> None:
        customer = planned.customer
        previous = self.closed_customers.get(customer.key)
        if previous is not None:  # a returning customer writes after their last one closed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(previous.wait(), timeout=30)
        self.closed_customers[customer.key] = asyncio.Event()
        if self.stopping:  # the run is over: this customer never writes
            self.closed_customers[customer.key].set()
            return
        tracked = _Tracked(planned, first_sent_at=time.time())
        self.first_sends += 1
        try:
            sent = await self.edge.send(customer, planned.first)
        finally:
            self.first_sends -= 1
        if sent is None:
            self.closed_customers[customer.key].set()
            return
        self.stats.conversations += 1
        self.stats.messages += 1
        self.sent[sent.provider_id] = sent.conversation_id or ""
        self.by_provider_id[sent.provider_id] = tracked
        if sent.conversation_id:
            self.bind(tracked, sent.conversation_id)
        if not self.agents:
            self.closed_customers[customer.key].set()
            return
        conversation_id = await self.conversation_of(tracked)
        if conversation_id is None:
            return
        await self.mark_vip(tracked, conversation_id)
        await self.handle(tracked, conversation_id)

    def bind(self, tracked: _Tracked, conversation_id: str) -> None:
        tracked.conversation_id = conversation_id
        self.by_conversation[conversation_id] = tracked

    async def conversation_of(self, tracked: _Tracked) -> str | None:
        """The conversation id of a message sent on a channel whose answer does not name it
        (Twilio, WhatsApp): found by its provider message id through the read model."""
        while tracked.conversation_id is None:
            if time.monotonic() > self.deadline:
                return None
            await asyncio.sleep(0.5)
        return tracked.conversation_id

    async def discover(self) -> None:
        """Poll the read model for conversations this run started but whose id it does not
        know yet (the webhooks of Twilio and WhatsApp answer without it)."""
        looked_at: dict[str, str] = {}  # conversation id -> its updated_at when looked into
        while True:
            await asyncio.sleep(0.7)
            waiting = [t for t in self.by_provider_id.values() if t.conversation_id is None]
            if not waiting:
                continue
            # From just before the oldest such message was sent: a row's updated_at is the
            # event's time, which may be well before the lagging read model shows it.
            oldest = min(tracked.first_sent_at for tracked in waiting)
            since = datetime.fromtimestamp(oldest - 5, UTC)
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"updated_since": since.isoformat(), "limit": 200}
                if cursor:
                    params["cursor"] = cursor
                page = await self.hub.request(
                    "GET", "/v1/conversations", params=params, headers=self.auth
                )
                if page is None:
                    break
                document = page.json()
                unknown = []
                for item in document["items"]:
                    conversation_id = item["conversation_id"]
                    if conversation_id in self.by_conversation:
                        continue
                    if looked_at.get(conversation_id) == item["updated_at"]:
                        continue
                    looked_at[conversation_id] = item["updated_at"]
                    unknown.append(conversation_id)
                await asyncio.gather(*(self.look_into(cid) for cid in unknown))
                cursor = document.get("next_cursor")
                if not cursor:
                    break

    async def look_into(self, conversation_id: str) -> None:
        async with self.polls:
            detail = await self.hub.request(
                "GET", f"/v1/conversations/{conversation_id}", headers=self.auth, ok=(404,)
            )
        if detail is None or detail.status_code == 404:
            return
        for entry in detail.json()["timeline"]:
            provider_id = (entry.get("data") or {}).get("provider_message_id")
            tracked = self.by_provider_id.get(provider_id or "")
            if tracked is not None and tracked.conversation_id is None:
                self.bind(tracked, conversation_id)
                self.sent[provider_id] = conversation_id

    async def mark_vip(self, tracked: _Tracked, conversation_id: str) -> None:
        """A VIP customer's tier comes from the integrator's CRM import: set it once."""
        customer = tracked.planned.customer
        if not customer.vip or customer.key in self.vip_marked:
            return
        self.vip_marked.add(customer.key)
        for _ in range(20):
            found = await self.hub.request(
                "GET", f"/v1/conversations/{conversation_id}", headers=self.auth, ok=(404,)
            )
            customer_id = found.json().get("customer_id") if found and found.is_success else None
            if customer_id:
                await self.hub.request(
                    "PATCH",
                    f"/v1/customers/{customer_id}",
                    json={"tier": "gold"},
                    headers=self.auth,
                    ok=(404, 422),
                )
                return
            await asyncio.sleep(0.5)

    # -- an agent's side of one conversation --

    async def await_assignment(self, conversation_id: str) -> str | None:
        """Wait until one of our agents accepted this conversation's offer (the offer desk
        does it); the agent, or None when the run ends first. Every few seconds the
        routing is looked at too: a conversation can be assigned without an offer."""
        if conversation_id in self.accepted_early:
            return self.accepted_early.pop(conversation_id)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.offer_waiters[conversation_id] = future
        try:
            while time.monotonic() < self.deadline:
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(
                        asyncio.shield(future), timeout=ROUTING_CHECK_SECONDS
                    )
                async with self.polls:
                    found = await self.hub.request(
                        "GET",
                        f"/v1/conversations/{conversation_id}/routing",
                        headers=self.auth,
                        ok=(404,),
                    )
                routing = found.json() if found is not None and found.status_code == 200 else {}
                if routing.get("state") == "assigned" and routing.get("agent_id"):
                    return str(routing["agent_id"])
            return None
        finally:
            # A customer who switched channel has two handlers on one conversation.
            if self.offer_waiters.get(conversation_id) is future:
                del self.offer_waiters[conversation_id]

    async def offer_desk(self) -> None:
        """The simulated agents look at their offers together, one request for all of them
        (as an agent's desk page would for one), and accept each after its think time:
        every offer made to one of them, also for a conversation whose id this run has
        not learnt yet."""
        while True:
            await asyncio.sleep(OFFER_POLL_SECONDS)
            listed = await self.hub.request("GET", "/v1/offers", headers=self.auth)
            for offer in listed.json()["offers"] if listed is not None else []:
                if offer["agent_id"] not in self.agent_ids or offer["offer_id"] in self.accepting:
                    continue
                self.accepting.add(offer["offer_id"])
                offered = offer["offer_id"], offer["agent_id"], offer["conversation_id"]
                self.spawn(self.accept(*offered))

    async def accept(self, offer_id: str, agent_id: str, conversation_id: str) -> None:
        tracked = self.by_conversation.get(conversation_id)
        delay = (tracked.planned.accept_delay if tracked else DEFAULT_ACCEPT_DELAY) * self.pace
        try:
            await asyncio.sleep(delay)
            accepted = await self.hub.request(
                "POST", f"/v1/offers/{offer_id}/accept", headers=self.auth, ok=(404, 409, 410)
            )
            if accepted is None or not accepted.is_success:
                self.stats.offers_missed += 1  # expired, or taken meanwhile: a new offer follows
                return
            waiting = self.offer_waiters.get(conversation_id)
            if waiting is None:
                self.accepted_early[conversation_id] = agent_id
            elif not waiting.done():
                waiting.set_result(agent_id)
        finally:
            self.accepting.discard(offer_id)

    async def reply(self, conversation_id: str, agent_id: str, language: str) -> bool:
        text = random.choice(_REPLIES[language])
        for _ in range(10):
            sent = await self.hub.request(
                "POST",
                f"/v1/conversations/{conversation_id}/messages",
                json={"text": text, "author": {"kind": "agent", "id": agent_id}},
                headers=self.auth,
                ok=(404,),
            )
            if sent is None or sent.status_code != 404:
                break
            await asyncio.sleep(0.5)  # the desk's read model has not seen the conversation yet
        else:
            self.stats.errors["404"] += 1
            self.stats.error_details["404 POST /v1/conversations/{id}/messages"] += 1
            return False
        if sent is not None:
            self.stats.replies += 1
        return sent is not None

    async def handle(self, tracked: _Tracked, conversation_id: str) -> None:
        planned = tracked.planned
        customer = planned.customer
        try:
            agent_id = await self.await_assignment(conversation_id)
            if agent_id is None:
                return
            tracked.assigned_agent = agent_id
            self.stats.assigned += 1
            for turn, follow_up in enumerate(planned.follow_ups):
                await asyncio.sleep(planned.agent_think[turn] * self.pace)
                await self.reply(conversation_id, agent_id, customer.language)
                await asyncio.sleep(planned.customer_think[turn] * self.pace)
                sent = await self.edge.send(customer, follow_up)
                if sent is not None:
                    self.stats.messages += 1
                    self.sent[sent.provider_id] = conversation_id
            if planned.transfer_to:
                moved = await self.hub.request(
                    "POST",
                    f"/v1/conversations/{conversation_id}/transfer",
                    json={"to_skill_group": planned.transfer_to, "reason": "needs_specialist"},
                    headers=self.auth,
                    ok=(409,),
                )
                if moved is not None and moved.is_success:
                    self.stats.transfers += 1
                    await asyncio.sleep(0.3)
                    agent_id = await self.await_assignment(conversation_id)
                    if agent_id is None:
                        return
            await asyncio.sleep(planned.agent_think[-1] * self.pace)
            await self.reply(conversation_id, agent_id, customer.language)
            await asyncio.sleep(0.3)
            resolved = await self.hub.request(
                "POST",
                f"/v1/conversations/{conversation_id}/resolve",
                json={"resolution_code": "answered"},
                headers=self.auth,
            )
            if resolved is None:
                return
            tracked.resolved = True
            self.stats.resolved += 1
            # The customer answers before the conversation closes: a reply in a closed
            # conversation would start a new one instead of answering.
            if planned.survey_answer is not None:
                await self.answer_survey(tracked, conversation_id)
            await self.hub.request(
                "POST",
                f"/v1/conversations/{conversation_id}/close",
                json={"reason": "resolved"},
                headers=self.auth,
            )
        finally:
            self.closed_customers[customer.key].set()

    async def answer_survey(self, tracked: _Tracked, conversation_id: str) -> None:
        """Answer the survey once the hub sent it within the run: by replying in the
        conversation's channel when it was asked there (and the plan says so), else through
        its signed link."""
        planned = tracked.planned
        assert planned.survey_answer is not None
        answer = planned.survey_answer
        if time.monotonic() + self.survey_delay > self.deadline:
            return  # it would be sent after the run
        pause = 1.0
        while time.monotonic() < self.deadline:
            await asyncio.sleep(pause)
            listed = await self.hub.request(
                "GET", "/v1/surveys", params={"conversation_id": conversation_id}, headers=self.auth
            )
            for item in listed.json()["items"] if listed is not None else []:
                if item["status"] != "sent":
                    continue
                if planned.survey_on_channel and item["delivery"] == "channel_message":
                    await self.answer_on_channel(tracked, conversation_id, item)
                    return
                link = urlsplit(item["link"])
                body: dict[str, Any] = {}
                if "csat" in item["kinds"]:
                    body["csat"] = answer[0]
                if "nps" in item["kinds"]:
                    body["nps"] = answer[1]
                answered = await self.hub.request(
                    "POST", f"{link.path}?{link.query}", json=body, ok=(409, 410)
                )
                if answered is not None and answered.is_success:
                    self.stats.surveys_answered += 1
                return
            pause = min(3.0, pause * 1.3)

    async def answer_on_channel(
        self, tracked: _Tracked, conversation_id: str, survey: dict[str, Any]
    ) -> None:
        """Reply "5 9" (or just the asked score) where the conversation last was; counted
        once the feedback service shows the survey answered."""
        planned = tracked.planned
        assert planned.survey_answer is not None
        csat, nps = planned.survey_answer
        scores = [str(csat)] if "csat" in survey["kinds"] else []
        scores += [str(nps)] if "nps" in survey["kinds"] else []
        channel_id = (planned.follow_ups[-1] if planned.follow_ups else planned.first).channel_id
        reply = PlannedMessage(channel_id, " ".join(scores), f"{planned.index}-survey")
        sent = await self.edge.send(planned.customer, reply)
        if sent is None:
            return
        self.stats.messages += 1
        self.sent[sent.provider_id] = conversation_id
        for _ in range(20):
            await asyncio.sleep(0.5)
            listed = await self.hub.request(
                "GET", "/v1/surveys", params={"conversation_id": conversation_id}, headers=self.auth
            )
            items = listed.json()["items"] if listed is not None else []
            if any(
                i["survey_id"] == survey["survey_id"] and i["status"] == "answered" for i in items
            ):
                self.stats.surveys_answered += 1
                return

    # -- after the run --

    async def verify(self, settle: float = 30.0) -> dict[str, Any]:
        """Every sent message looked up in the read model; assignment latencies. Messages
        not found yet are looked for again until `settle` seconds pass without one more
        found: a hub that fell behind applies its backlog to the read model after the
        traffic stopped, and a verdict of "lost" must not be one of "not yet"."""
        found: set[str] = set()
        latencies: dict[str, float] = {}
        finished: dict[str, bool] = {}
        gate = asyncio.Semaphore(POLLING_SLOTS)

        async def listed() -> set[str]:
            since = datetime.fromtimestamp(self.started_wall - 5, UTC)
            ids: set[str] = set()
            cursor = None
            while True:
                params: dict[str, Any] = {"updated_since": since.isoformat(), "limit": 200}
                if cursor:
                    params["cursor"] = cursor
                page = await self.hub.request(
                    "GET", "/v1/conversations", params=params, headers=self.auth
                )
                if page is None:
                    return ids
                ids |= {item["conversation_id"] for item in page.json()["items"]}
                cursor = page.json().get("next_cursor")
                if not cursor:
                    return ids

        async def check(conversation_id: str) -> None:
            async with gate:
                detail = await self.hub.request(
                    "GET", f"/v1/conversations/{conversation_id}", headers=self.auth, ok=(404,)
                )
            if detail is None or detail.status_code == 404:
                return
            document = detail.json()
            finished[conversation_id] = document["state"] in ("resolved", "closed")
            assigned_at = None
            for entry in document["timeline"]:
                provider_id = (entry.get("data") or {}).get("provider_message_id")
                if provider_id in self.sent:
                    found.add(provider_id)
                if entry["type"] == "convohub.routing.assigned.v1" and assigned_at is None:
                    assigned_at = datetime.fromisoformat(entry["at"]).timestamp()
            tracked = self.by_conversation.get(conversation_id)
            if tracked is not None and assigned_at is not None:
                latencies[conversation_id] = max(0.0, assigned_at - tracked.first_sent_at)

        known = {cid for cid in self.sent.values() if cid} | set(self.by_conversation)
        if any(not cid for cid in self.sent.values()):  # conversations never learned
            known |= await listed()
        await asyncio.gather(*(check(cid) for cid in sorted(known)))
        give_up = time.monotonic() + settle
        while set(self.sent) - found and time.monotonic() < give_up:
            self.stats.verified = len(found)
            await asyncio.sleep(2.0)
            before = len(found)
            missing = set(self.sent) - found
            again = {self.sent[pid] for pid in missing if self.sent[pid]}
            if any(not self.sent[pid] for pid in missing):
                again |= await listed()
            known |= again
            await asyncio.gather(*(check(cid) for cid in sorted(again)))
            if len(found) > before:  # still catching up: wait on
                give_up = time.monotonic() + settle
        self.stats.verified = len(found)
        return {
            "found": found,
            "latencies": list(latencies.values()),
            "conversations": len(known),
            "resolved": sum(finished.values()),
        }


async def simulate(
    base_url: str,
    config: HubConfig,
    *,
    rate: float,
    duration: float,
    seed: int = 1,
    tenant: str | None = None,
    agents: bool = True,
    progress: Callable[[SimulationStats], None] | None = None,
    drain: float = 30.0,
    day_seconds: float = 86_400.0,
    pace: float = 1.0,
) -> SimulationSummary:
    """Play `plan_traffic(config, rate=..., duration=..., seed=...)` against the hub at
    `base_url`, then check the read model. Takes `duration` seconds of arrivals, then up to
    `drain` seconds for open conversations to finish, then the verification reads.

    With `agents=False` no agent is simulated: conversations stay queued for real agents
    (the console's, say). `progress` is called about once a second with live counters.
    `pace` multiplies the plan's think times (0.5: agents and customers type twice as fast).
    """
    now = datetime.now(UTC)
    plan = plan_traffic(
        config,
        rate=rate,
        duration=duration,
        seed=seed,
        tenant=tenant,
        start_hour=now.hour + now.minute / 60,
        day_seconds=day_seconds,
    )
    chosen = config.tenant(plan.tenant)
    stats = SimulationStats(duration=duration, planned=len(plan.conversations))
    run_id = uuid.uuid4().hex[:10]
    connections = CUSTOMER_CONNECTIONS + AGENT_CONNECTIONS
    started = time.monotonic()
    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        timeout=httpx.Timeout(30.0, pool=None),  # a slow hub queues requests here, not fails
        transport=AiohttpTransport(connections),
    ) as client:
        (await client.get("/healthz")).raise_for_status()  # fail fast on a wrong --url
        hub = _Hub(client, stats)
        edge = _Edge(hub, base_url, chosen, run_id)
        run = _Simulation(
            hub,
            edge,
            plan,
            chosen,
            stats,
            agents=agents,
            deadline=started + duration + drain,
            pace=pace,
        )
        background: list[asyncio.Task[None]] = []

        async def report() -> None:
            while True:
                stats.elapsed = time.monotonic() - started
                if progress is not None:
                    progress(stats)
                await asyncio.sleep(1.0)

        background.append(asyncio.create_task(report()))
        try:
            if agents:
                stats.phase = "agents"
                await run.agents_online()
                background.append(asyncio.create_task(run.heartbeats()))
                background.append(asyncio.create_task(run.offer_desk()))
            background.append(asyncio.create_task(run.discover()))
            stats.phase = "traffic"
            started = time.monotonic()
            run.deadline = started + duration + drain
            for planned in plan.conversations:
                delay = started + planned.at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                run.spawn(run.customer_writes(planned))
            remaining = started + duration - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
            stats.phase = "draining"
            while run.tasks and time.monotonic() < run.deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            run.stopping = True
            hub.customers_stopped = True
            last_call = time.monotonic() + 30
            while run.first_sends and time.monotonic() < last_call:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            for task in list(run.tasks):
                task.cancel()
            await asyncio.gather(*run.tasks, return_exceptions=True)
            if agents:
                for agent_id in plan.agents:
                    await run.presence(agent_id, "offline")
            stats.phase = "verifying"
            await asyncio.sleep(1.0)  # the read model applies the last events
            checked = await run.verify()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        stats.elapsed = time.monotonic() - started
        stats.phase = "done"
        if progress is not None:
            progress(stats)
    missing = tuple(sorted(set(run.sent) - checked["found"]))
    latencies = checked["latencies"]
    return SimulationSummary(
        tenant=plan.tenant,
        seed=seed,
        duration=duration,
        conversations=stats.conversations,
        messages=stats.messages,
        replies=stats.replies,
        assigned=stats.assigned,
        transfers=stats.transfers,
        resolved=stats.resolved,
        surveys_answered=stats.surveys_answered,
        errors=dict(stats.errors),
        error_details=dict(stats.error_details),
        latency_p50=percentile(latencies, 0.50),
        latency_p99=percentile(latencies, 0.99),
        latency_samples=len(latencies),
        messages_verified=len(checked["found"]),
        missing_messages=missing,
        conversations_in_read_model=checked["conversations"],
        resolved_in_read_model=checked["resolved"],
        requests=stats.requests,
        unfinished=tuple(
            sorted(
                tracked.conversation_id or f"(unknown: {provider_id})"
                for provider_id, tracked in run.by_provider_id.items()
                if not tracked.resolved
            )
        ),
        offers_missed=stats.offers_missed,
    )


# --- the command --------------------------------------------------------------------------


def simulate_command(
    url: Annotated[str, typer.Option(help="The hub's base URL.")] = "http://127.0.0.1:8080",
    config: Annotated[
        Path, typer.Option(help="The hub's convohub.yaml (its channels, secrets and keys).")
    ] = Path(".convohub/convohub.yaml"),
    rate: Annotated[float, typer.Option(min=0.01, help="New conversations a second.")] = 2.0,
    duration: Annotated[float, typer.Option(min=1, help="Seconds of arrivals.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Same seed, same traffic plan.")] = 1,
    tenant: Annotated[str | None, typer.Option(help="Tenant id (default: the first).")] = None,
    agents: Annotated[
        bool, typer.Option(help="Simulate agents (--no-agents leaves them to people).")
    ] = True,
    drain: Annotated[
        float, typer.Option(min=0, help="Seconds to let open conversations finish.")
    ] = 30.0,
    day_seconds: Annotated[
        float, typer.Option(min=60, help="Length of a simulated day (86400: real time).")
    ] = 86_400.0,
) -> None:
    """Send realistic, signed customer traffic to a running hub and simulate its agents."""
    try:
        hub_config = load_config(config, RuntimeSettings().environment())
    except ConfigError as error:
        typer.echo(f"convohub simulate: {error}", err=True)
        raise typer.Exit(code=2) from None
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("starting", total=duration)

        def show(stats: SimulationStats) -> None:
            bar.update(task, completed=min(stats.elapsed, duration), description=stats.short())

        try:
            summary = asyncio.run(
                simulate(
                    url,
                    hub_config,
                    rate=rate,
                    duration=duration,
                    seed=seed,
                    tenant=tenant,
                    agents=agents,
                    progress=show,
                    drain=drain,
                    day_seconds=day_seconds,
                )
            )
        except (KeyError, ValueError) as error:
            typer.echo(f"convohub simulate: {error}", err=True)
            raise typer.Exit(code=2) from None
        except (httpx.TransportError, httpx.HTTPStatusError) as error:
            typer.echo(f"convohub simulate: cannot reach the hub at {url}: {error}", err=True)
            raise typer.Exit(code=1) from None
    typer.echo("\n".join(summary.lines()))
    if summary.missing_messages or any(key.startswith("5") for key in summary.errors):
        raise typer.Exit(code=1)
