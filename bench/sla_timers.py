"""SLA timers: breach-emission lag after the due time with 1,000,000 open timers, and memory.

Usage: uv run python bench/sla_timers.py [--timers 1000000] [--due 3000] [--spread 10]
           [--store postgresql|sqlite] [--batch 500]

What one run measures, on one machine, against one database:

1. setup: a fresh database (PostgreSQL from `DATABASE_URL`, else `scripts/infra/infra up`;
   or a SQLite file) with the sla service's tables; `--timers` open breach timers due a day
   or more from now are bulk-inserted by the database itself (generate_series / a recursive
   CTE), then `--due` timers due over the next `--spread` seconds.
2. raw baseline: a bare claim loop on the same table and index (`SELECT ... WHERE due_at <=
   now ORDER BY due_at LIMIT n FOR UPDATE SKIP LOCKED`, `UPDATE ... SET fired`, commit), no
   events. Lag = commit time - due time.
3. the sla service's `TimerLoop` with the wall clock: it claims the same way, builds each
   `convohub.sla.breached.v1` envelope (validated) and writes it to the outbox in the same
   transaction that marks the timer fired. Lag = the outbox row's commit time - due time
   (the event is durable then; the relay publishes it to the log after).

Printed: lag p50/p99/max for both, their ratio, and the process's resident memory (RSS)
before the timers exist, with the million open timers, and after the run: the service keeps
no timer in memory, so RSS does not grow with the number of open timers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from convohub.runtime.service import SystemClock
from convohub.runtime.store import OUTBOX, ProjectionStore, create_engine, migrate_runtime
from convohub.sla.adapters.tables import METADATA, TIMERS
from convohub.sla.handlers import TimerLoop

REPO_DIR = Path(__file__).resolve().parents[1]
INFRA_SCRIPT = REPO_DIR / "scripts" / "infra" / "infra"
_EXPORT_LINE = re.compile(r"^export ([A-Z_][A-Z0-9_]*)=(.*)$")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def database_url() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    print(f"starting (or finding) the local infrastructure: {INFRA_SCRIPT} up", flush=True)
    result = subprocess.run(
        [str(INFRA_SCRIPT), "up"], capture_output=True, text=True, timeout=900, check=False
    )
    for line in result.stdout.splitlines():
        match = _EXPORT_LINE.match(line.strip())
        if match and match[1] == "DATABASE_URL":
            return match[2].strip().strip("'\"")
    raise SystemExit(f"no DATABASE_URL in the environment nor from {INFRA_SCRIPT} up")


async def admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


COLUMNS = (
    "timer_id, tenant_id, conversation_id, clock_id, timer_key, kind, due_at, policy_id, "
    "metric, target_seconds, offset_seconds, clock_due_at, cause_event_id, correlation_id"
)


def timer_values(prefix: str, number: str, due: str) -> str:
    clock = f"'{prefix}|c' || {number}"
    return (
        f"{clock} || '|breach', 'acme', 'c' || {number}, {clock}, 'breach', 'breach', {due}, "
        f"'bench', 'first_response', 60, 60, {due}, {clock}, {clock}"
    )


async def insert_timers(
    engine: AsyncEngine, prefix: str, count: int, first_due: datetime, step_ms: float
) -> None:
    """`count` timers due from `first_due` on, one every `step_ms`, generated in the database."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            due = "CAST(:first AS timestamptz) + g * (:step * interval '1 millisecond')"
            await connection.execute(
                text(
                    f"INSERT INTO sla_timers ({COLUMNS}) SELECT {timer_values(prefix, 'g', due)} "
                    "FROM generate_series(0, :n - 1) AS g"
                ),
                {"first": first_due, "step": step_ms, "n": count},
            )
        else:
            # SQLAlchemy's SQLite DateTime stores 'YYYY-MM-DD HH:MM:SS.ffffff' text (UTC).
            due = "strftime('%Y-%m-%d %H:%M:%f', :first, '+' || (g * :step / 1000.0) || ' seconds')"
            await connection.execute(
                text(
                    f"WITH RECURSIVE s(g) AS (SELECT 0 UNION ALL SELECT g + 1 FROM s "
                    f"WHERE g + 1 < :n) INSERT INTO sla_timers ({COLUMNS}) "
                    f"SELECT {timer_values(prefix, 'g', due)} FROM s"
                ),
                {"first": first_due.strftime("%Y-%m-%d %H:%M:%S"), "step": step_ms, "n": count},
            )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(lags: list[float]) -> str:
    return (
        f"p50 {percentile(lags, 0.5) * 1000:7.1f} ms   p99 {percentile(lags, 0.99) * 1000:7.1f} ms"
        f"   max {max(lags) * 1000:7.1f} ms   ({len(lags)} timers)"
    )


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


async def raw_claim_loop(
    engine: AsyncEngine, expected: int, batch: int, poll: float
) -> list[float]:
    lags: list[float] = []
    while len(lags) < expected:
        now = datetime.now(UTC)
        async with engine.begin() as connection:
            query = select(TIMERS.c.timer_id, TIMERS.c.due_at).where(TIMERS.c.due_at <= now)
            query = query.order_by(TIMERS.c.due_at).limit(batch)
            if connection.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = (await connection.execute(query)).all()
            if rows:
                await connection.execute(
                    update(TIMERS)
                    .where(TIMERS.c.timer_id.in_([row.timer_id for row in rows]))
                    .values(due_at=None, fired_at=now)
                )
        committed = datetime.now(UTC)
        lags.extend((committed - as_utc(row.due_at)).total_seconds() for row in rows)
        if (
            len(rows) < batch
        ):  # the same sleep as the service: until the next due time, at most poll
            async with engine.connect() as connection:
                due = await connection.scalar(select(func.min(TIMERS.c.due_at)))
            wait = poll if due is None else (as_utc(due) - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(min(poll, max(0.0, wait)))
    return lags


async def service_loop(
    store: ProjectionStore, expected: int, batch: int, poll: float
) -> list[float]:
    loop = TimerLoop(lambda: store, SystemClock, {}, batch_size=batch, poll_interval=poll)
    task = asyncio.create_task(loop.run())
    try:
        while loop.fired < expected:  # noqa: ASYNC110 - polling a counter is the point
            await asyncio.sleep(0.2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # The outbox row's created_at is its commit time; the event's data names its due time.
    async with store.engine.connect() as connection:
        events = (await connection.execute(select(OUTBOX.c.created_at, OUTBOX.c.value))).all()
    lags = []
    for created_at, value in events:
        due = datetime.fromisoformat(json.loads(value)["data"]["due_at"].replace("Z", "+00:00"))
        lags.append((as_utc(created_at) - due).total_seconds())
    return lags


async def run(args: argparse.Namespace) -> None:
    print(f"RSS at start: {rss_mib():.0f} MiB")
    drop: str | None = None
    folder: Path | None = None
    if args.store == "postgresql":
        server = database_url()
        name = f"bench_sla_{uuid.uuid4().hex[:8]}"
        await admin(server, f'CREATE DATABASE "{name}"')
        drop = server
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
    else:
        folder = Path(tempfile.mkdtemp(prefix="bench-sla-"))
        url = f"sqlite+aiosqlite:///{folder / 'sla.sqlite3'}"
        name = ""
    engine = create_engine(url)
    try:
        await migrate_runtime(engine)
        async with engine.begin() as connection:
            await connection.run_sync(METADATA.create_all)
        started = time.perf_counter()
        far = datetime.now(UTC) + timedelta(days=1)
        await insert_timers(engine, "open", args.timers, far, 86.4)  # one day's spread
        print(
            f"{args.timers:,} open timers inserted in {time.perf_counter() - started:.1f} s; "
            f"RSS {rss_mib():.0f} MiB"
        )
        results = {}
        for label in ("raw claim loop", "sla TimerLoop"):
            first = datetime.now(UTC) + timedelta(seconds=2)
            step_ms = args.spread * 1000 / args.due
            await insert_timers(engine, label.replace(" ", "-"), args.due, first, step_ms)
            async with engine.begin() as connection:
                await connection.execute(OUTBOX.delete())
            if label == "raw claim loop":
                lags = await raw_claim_loop(engine, args.due, args.batch, args.poll)
            else:
                lags = await service_loop(ProjectionStore(engine), args.due, args.batch, args.poll)
            results[label] = lags
            print(f"{label:>16}: breach lag {summary(lags)}   RSS {rss_mib():.0f} MiB")
        raw, ours = results["raw claim loop"], results["sla TimerLoop"]
        print(
            f"ratio sla/raw: p50 {percentile(ours, 0.5) / max(percentile(raw, 0.5), 1e-6):.2f}, "
            f"p99 {percentile(ours, 0.99) / max(percentile(raw, 0.99), 1e-6):.2f}; "
            f"aim p99 <= 1 s: {'met' if percentile(ours, 0.99) <= 1.0 else 'NOT met'}"
        )
        async with engine.connect() as connection:
            still_open = await connection.scalar(
                select(func.count()).select_from(TIMERS).where(TIMERS.c.due_at.is_not(None))
            )
        print(f"open timers left: {still_open:,}; RSS at the end: {rss_mib():.0f} MiB")
    finally:
        await engine.dispose()
        if drop:
            await admin(drop, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=1_000_000, help="open timers")
    parser.add_argument("--due", type=int, default=3000, help="timers falling due in the run")
    parser.add_argument("--spread", type=float, default=10.0, help="seconds they fall due over")
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--batch", type=int, default=500, help="timers claimed per transaction")
    parser.add_argument("--poll", type=float, default=0.2, help="the loop's longest sleep")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
