"""HTTP routes of the feedback service.

- `GET|POST /v1/surveys/{id}?token=...`: the signed web link (no API key).
- `GET /v1/surveys?conversation_id=` (supervisor): a conversation's surveys, with links.
- `GET /v1/follow-ups`, `POST /v1/follow-ups/{id}/close` (supervisor): the closed loop.
- `GET /v1/metrics` (supervisor), JSON or CSV (`Accept: text/csv` or `?format=csv`).
- `GET /v1/staffing` (supervisor): Erlang C agents per skill group and hour of the week.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from convohub.contracts import derived_event_id, new_event
from convohub.contracts.events.feedback import FollowUpClosed, FollowUpOutcome, SurveyAnswerMethod
from convohub.feedback.adapters import repository
from convohub.feedback.adapters.tables import FOLLOW_UPS, SURVEYS
from convohub.feedback.domain.answers import ParsedAnswer
from convohub.feedback.domain.conversations import ConversationState, record_of
from convohub.feedback.domain.metrics import (
    DIMENSIONS,
    MetricsParameters,
    group_records,
    metrics_of,
)
from convohub.feedback.domain.settings import TenantFeedback
from convohub.feedback.domain.staffing import agents_needed
from convohub.feedback.domain.surveys import link_token, token_is_valid
from convohub.feedback.handlers import SOURCE, Emitter, record_answer, schedule_survey
from convohub.runtime.http import Problem, Supervisor
from convohub.runtime.service import ServiceContext


class SurveySubmission(BaseModel):
    """A web-link answer."""

    model_config = ConfigDict(extra="forbid")
    csat: int | None = Field(default=None, ge=1, le=5)
    nps: int | None = Field(default=None, ge=0, le=10)
    comment: str | None = Field(default=None, max_length=4000)

    @model_validator(mode="after")
    def _has_a_score(self) -> SurveySubmission:
        if self.csat is None and self.nps is None:
            raise ValueError("give csat (1-5) or nps (0-10)")
        return self


class FollowUpClosing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: FollowUpOutcome
    note: str | None = Field(default=None, max_length=4000)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Problem(
            422,
            "validation",
            f"{name} is not an ISO 8601 time",
            errors=[{"field": f"query.{name}", "message": "expected an ISO 8601 time"}],
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def build_router(
    context: Callable[[], ServiceContext],
    settings: Mapping[str, TenantFeedback],
    link_secret: Callable[[], bytes],
) -> APIRouter:
    router = APIRouter(tags=["feedback"])

    async def _survey_for_link(survey_id: str, token: str) -> Any:
        async with context().store.reader.connect() as connection:
            row = await repository.survey(connection, survey_id)
        if row is None or not token_is_valid(link_secret(), row.tenant_id, survey_id, token):
            raise Problem(404, "not_found", "no such survey, or the link's token is wrong")
        return row

    @router.get("/v1/surveys/{survey_id}")
    async def show_survey(
        survey_id: str, token: Annotated[str, Query(min_length=1)]
    ) -> dict[str, Any]:
        row = await _survey_for_link(survey_id, token)
        tenant = settings.get(row.tenant_id) or TenantFeedback()
        texts = tenant.texts_for(row.language)
        return {
            "survey_id": row.survey_id,
            "kinds": row.kinds,
            "status": row.status,
            "language": row.language,
            "questions": {kind: getattr(texts, kind) for kind in row.kinds},
            "expires_at": _iso(row.expires_at),
        }

    @router.post("/v1/surveys/{survey_id}")
    async def answer_survey(
        survey_id: str, submission: SurveySubmission, token: Annotated[str, Query(min_length=1)]
    ) -> dict[str, Any]:
        row = await _survey_for_link(survey_id, token)
        for kind in ("csat", "nps"):
            if getattr(submission, kind) is not None and kind not in row.kinds:
                raise Problem(
                    422,
                    "validation",
                    f"this survey does not ask {kind}",
                    errors=[{"field": f"body.{kind}", "message": "not asked"}],
                )
        ctx = context()
        now = ctx.clock.now()
        if row.status == "answered":
            raise Problem(409, "already_answered", "this survey has been answered already")
        if row.status in ("expired", "cancelled") or (
            row.status == "sent" and row.expires_at <= now
        ):
            raise Problem(410, "expired", "this survey no longer accepts answers")
        if row.status != "sent":
            raise Problem(409, "not_sent", "this survey has not been sent yet")
        async with ctx.store.unit_of_work() as uow:
            states = await repository.load_states(uow.connection, [row.conversation_id])
            state = states.get(row.conversation_id)
            stored = await record_answer(
                uow.connection,
                row,
                ParsedAnswer(submission.csat, submission.nps, submission.comment or None),
                raw_answer=None,
                method=SurveyAnswerMethod.WEB_LINK,
                now=now,
                cause=None,
                settings=settings.get(row.tenant_id),
                state=state,
                emit=Emitter(uow),
            )
            if not stored:
                raise Problem(409, "already_answered", "this survey has been answered already")
            if state is not None:
                await repository.save_states(uow.connection, [state])
            await uow.commit()
        return {"survey_id": survey_id, "status": "answered"}

    @router.get("/v1/surveys")
    async def list_surveys(principal: Supervisor, conversation_id: str) -> dict[str, Any]:
        tenant = settings.get(principal.tenant_id) or TenantFeedback()
        async with context().store.reader.connect() as connection:
            rows = await connection.execute(
                select(SURVEYS)
                .where(
                    SURVEYS.c.tenant_id == principal.tenant_id,
                    SURVEYS.c.conversation_id == conversation_id,
                )
                .order_by(SURVEYS.c.due_at)
            )
            items = []
            base = tenant.public_base_url.rstrip("/")
            for row in rows:
                token = link_token(link_secret(), row.tenant_id, row.survey_id)
                items.append(
                    {
                        "survey_id": row.survey_id,
                        "status": row.status,
                        "kinds": row.kinds,
                        "delivery": row.delivery,
                        "due_at": _iso(row.due_at),
                        "sent_at": _iso(row.sent_at),
                        "expires_at": _iso(row.expires_at),
                        "csat": row.csat,
                        "nps": row.nps,
                        "follow_up_id": row.follow_up_id,
                        "link": f"{base}/v1/surveys/{row.survey_id}?token={token}",
                    }
                )
        return {"items": items}

    @router.get("/v1/follow-ups")
    async def list_follow_ups(
        principal: Supervisor, status: Annotated[str, Query(pattern="^(open|closed|all)$")] = "open"
    ) -> dict[str, Any]:
        query = select(FOLLOW_UPS).where(FOLLOW_UPS.c.tenant_id == principal.tenant_id)
        if status != "all":
            query = query.where(FOLLOW_UPS.c.status == status)
        async with context().store.reader.connect() as connection:
            rows = await connection.execute(query.order_by(FOLLOW_UPS.c.requested_at))
            items = [_follow_up_json(row) for row in rows]
        return {"items": items}

    @router.post("/v1/follow-ups/{follow_up_id}/close")
    async def close_follow_up(
        principal: Supervisor, follow_up_id: str, closing: FollowUpClosing
    ) -> dict[str, Any]:
        ctx = context()
        now = ctx.clock.now()
        closed_by = principal.agent_id or f"{principal.role.value}@{principal.tenant_id}"
        async with ctx.store.unit_of_work() as uow:
            connection = uow.connection
            row = await repository.follow_up(connection, follow_up_id)
            if row is None or row.tenant_id != principal.tenant_id:
                raise Problem(404, "not_found", f"no follow-up {follow_up_id}")
            if not await repository.close_follow_up(
                connection,
                follow_up_id,
                closed_at=now,
                outcome=closing.outcome.value,
                closed_by=closed_by,
                note=closing.note,
            ):
                raise Problem(409, "already_closed", "this follow-up is closed already")
            closed = FollowUpClosed(
                conversation_id=row.conversation_id,
                follow_up_id=follow_up_id,
                outcome=closing.outcome,
                closed_by=closed_by,
                note=closing.note,
                closed_at=now,
            )
            uow.emit(
                new_event(
                    closed,
                    tenant_id=row.tenant_id,
                    source=SOURCE,
                    time=now,
                    event_id=derived_event_id(follow_up_id, closed.event_type),
                    correlation_id=row.correlation_id,
                )
            )
            resurvey_id = None
            tenant = settings.get(row.tenant_id)
            states = await repository.load_states(connection, [row.conversation_id])
            state: ConversationState | None = states.get(row.conversation_id)
            if tenant is not None and state is not None:
                resurvey_id = await schedule_survey(
                    connection,
                    state,
                    tenant,
                    now=now,
                    survey_id="svy-" + derived_event_id(follow_up_id, "convohub.feedback.resurvey"),
                    follow_up_id=follow_up_id,
                    correlation_id=row.correlation_id,
                    delay_seconds=tenant.follow_up.resurvey_delay_seconds,
                )
            await uow.commit()
        return {"follow_up_id": follow_up_id, "status": "closed", "resurvey_id": resurvey_id}

    @router.get("/v1/metrics", response_model=None)
    async def metrics(
        request: Request,
        principal: Supervisor,
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
        channel: str | None = None,
        skill_group: str | None = None,
        agent: str | None = None,
        group_by: str | None = None,
        format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
    ) -> Any:
        since, until = _parse_time(from_, "from"), _parse_time(to, "to")
        dimensions = [d.strip() for d in (group_by or "").split(",") if d.strip()]
        unknown = [d for d in dimensions if d not in DIMENSIONS]
        if unknown:
            raise Problem(
                422,
                "validation",
                f"group_by: unknown {', '.join(unknown)}; use {', '.join(DIMENSIONS)}",
                errors=[{"field": "query.group_by", "message": "unknown dimension"}],
            )
        tenant = settings.get(principal.tenant_id) or TenantFeedback()
        parameters = MetricsParameters(
            service_level_seconds=tenant.metrics.service_level_seconds,
            fcr_window=timedelta(days=tenant.metrics.fcr_window_days),
            repeat_window=timedelta(days=tenant.metrics.repeat_contact_window_days),
        )
        async with context().store.reader.connect() as connection:
            states = await repository.tenant_states(connection, principal.tenant_id, None, None)
        history = [r for r in (record_of(s) for s in states) if r is not None]
        chosen = [
            r
            for r in history
            if (since is None or r.started_at >= since)
            and (until is None or r.started_at < until)
            and (channel is None or r.channel == channel)
            and (skill_group is None or r.skill_group == skill_group)
            and (agent is None or r.agent_id == agent)
        ]
        rows = []
        for key, records in group_records(chosen, dimensions).items():
            row: dict[str, Any] = dict(zip(dimensions, key, strict=True))
            row.update(metrics_of(records, parameters, history=history))
            rows.append(row)
        if not dimensions and not rows:  # the tenant's total exists even when empty
            rows.append(dict(metrics_of([], parameters, history=history)))
        wants_csv = format == "csv" or (
            format is None and "text/csv" in request.headers.get("accept", "")
        )
        if wants_csv:
            return _csv(rows, dimensions)
        return {
            "tenant": principal.tenant_id,
            "from": from_,
            "to": to,
            "group_by": dimensions,
            "service_level_seconds": parameters.service_level_seconds,
            "rows": rows,
        }

    @router.get("/v1/staffing")
    async def staffing(
        principal: Supervisor,
        target: Annotated[float, Query(gt=0, lt=1)] = 0.8,
        threshold_seconds: Annotated[float, Query(gt=0)] = 20,
        weeks: Annotated[int, Query(ge=1, le=52)] = 4,
        skill_group: str | None = None,
    ) -> dict[str, Any]:
        now = context().clock.now()
        since = now - timedelta(weeks=weeks)
        async with context().store.reader.connect() as connection:
            states = await repository.tenant_states(connection, principal.tenant_id, since, now)
        records = [r for r in (record_of(s) for s in states) if r is not None]
        if skill_group is not None:
            records = [r for r in records if r.skill_group == skill_group]
        slots: dict[tuple[str, int, int], list[Any]] = defaultdict(list)
        handle: dict[str, list[float]] = defaultdict(list)
        for r in records:
            group = r.skill_group or "unrouted"
            slots[(group, r.started_at.weekday(), r.started_at.hour)].append(r)
            if r.handle_seconds:
                handle[group].append(r.handle_seconds)
        rows = []
        for (group, weekday, hour), items in sorted(slots.items()):
            arrivals = len(items) / weeks
            samples = [r.handle_seconds for r in items if r.handle_seconds] or handle[group]
            if not samples:
                continue
            aht = sum(samples) / len(samples)
            need = agents_needed(arrivals, aht, target, threshold_seconds)
            rows.append(
                {
                    "skill_group": group,
                    "weekday": weekday,
                    "hour": hour,
                    "arrivals_per_hour": round(arrivals, 3),
                    "average_handle_seconds": round(aht, 1),
                    "traffic_erlangs": round(need.traffic_erlangs, 3),
                    "agents": need.agents,
                    "service_level": round(need.service_level, 4),
                    "average_speed_of_answer_seconds": round(
                        need.average_speed_of_answer_seconds, 1
                    ),
                }
            )
        return {
            "target": target,
            "threshold_seconds": threshold_seconds,
            "weeks": weeks,
            "from": since.isoformat(),
            "to": now.isoformat(),
            "rows": rows,
        }

    return router


def _follow_up_json(row: Any) -> dict[str, Any]:
    return {
        "follow_up_id": row.follow_up_id,
        "conversation_id": row.conversation_id,
        "customer_id": row.customer_id,
        "survey_id": row.survey_id,
        "trigger": row.trigger,
        "trigger_score": row.trigger_score,
        "priority": row.priority,
        "status": row.status,
        "requested_at": _iso(row.requested_at),
        "closed_at": _iso(row.closed_at),
        "outcome": row.outcome,
        "closed_by": row.closed_by,
    }


def _csv(rows: list[dict[str, Any]], dimensions: list[str]) -> Response:
    buffer = io.StringIO()
    columns = dimensions + [c for c in (rows[0] if rows else {}) if c not in dimensions]
    if not rows:
        columns = [*dimensions, "conversations"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8")
