"""Async engines for the projection store: SQLite (embedded) or PostgreSQL (distributed).

SQLite is tuned so that several writers in one or more processes serialise instead of
failing: every transaction takes the write lock at `BEGIN IMMEDIATE` (the documented
SQLAlchemy recipe for pysqlite/aiosqlite: the driver's own BEGIN is switched off and the
engine's `begin` event emits ours), and a writer that finds the lock taken waits up to
`SQLITE_BUSY_TIMEOUT_MS` instead of raising "database is locked".

Statements run on the event loop's thread (`_LoopThreadConnection`): a SQLite statement on
a local file takes microseconds, while aiosqlite's hop to the connection's own thread and
back took about 2 ms under `convohub up`'s load, with write transactions of a store taking
turns, so the hops, not SQLite, set how many transactions a store commits a second.
`BEGIN IMMEDIATE` is tried inline without waiting; only when another process holds the
write lock does it go to the thread, to wait there with the busy timeout. `COMMIT` (its
fsync took 0.23 ms at the median but 7.6 ms at p99 on the development VM), PRAGMAs and
closing go to the thread, so the loop never waits for the disk.

Reads need no lock under WAL, and taking the write lock for them makes every API read and
every poll queue behind (and in front of) the projections' batches. A connection from
`read_only(engine)` begins a plain deferred transaction instead: it sees a consistent
snapshot and never blocks a writer. Use it only for work that writes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for the write lock before failing."""

POSTGRES_POOL_SIZE = 5
POSTGRES_MAX_OVERFLOW = 5

READ_ONLY_OPTION = "convohub_read_only"
"""The execution option that marks an engine's connections as readers (see `read_only`)."""

_DEFAULT_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `sqlite+aiosqlite:///path` or `postgresql+asyncpg://...`.

    `sqlite:///` and `postgresql://` are accepted and get the async driver. For a SQLite
    file the parent directory is created. Call at start-up; dispose of it at shutdown.
    """
    parsed = make_url(url)
    parsed = parsed.set(drivername=_DEFAULT_DRIVERS.get(parsed.drivername, parsed.drivername))
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    if parsed.get_backend_name() == "postgresql":
        return create_async_engine(
            parsed,
            pool_size=POSTGRES_POOL_SIZE,
            max_overflow=POSTGRES_MAX_OVERFLOW,
            pool_pre_ping=True,  # a restarted server must not fail the next batch
        )
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}")


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, for transactions that only read: on SQLite they begin
    deferred (no write lock); on PostgreSQL nothing changes."""
    return engine.execution_options(**{READ_ONLY_OPTION: True})


def _sqlite_engine(url: URL) -> AsyncEngine:
    path = url.database if url.database not in (None, "", ":memory:") else None
    if path is not None and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    if path is None or path.startswith("file:") or url.query:
        engine = create_async_engine(url)  # memory, URI or driver options: aiosqlite as is
    else:
        engine = create_async_engine(url, async_creator=_loop_thread_connector(path))
    event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    event.listen(engine.sync_engine, "begin", _begin_immediate)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _connection_record: Any) -> None:
    # Stop the driver from emitting its own (deferred) BEGIN; `_begin_immediate` does it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # FULL, not NORMAL: under WAL, NORMAL may lose the last commits on power loss, and
        # an outbox row is a fact that exists nowhere else until published; batching
        # amortises the one fsync per commit.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _begin_immediate(connection: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then writes can
    # fail with SQLITE_BUSY at once when another writer got there first. Readers (see
    # `read_only`) write nothing, so they begin deferred and hold no lock.
    if connection.get_execution_options().get(READ_ONLY_OPTION):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class _LoopThreadConnection(aiosqlite.Connection):
    """An aiosqlite connection whose quick calls run on the event loop's thread; only the
    calls that may wait (see the module doc) go to the connection's own thread."""

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        statement = args[0].lstrip()[:15].upper() if args and isinstance(args[0], str) else ""
        if getattr(fn, "__name__", "") in _WAITING_CALLS or statement.startswith(_WAITING):
            return await super()._execute(fn, *args, **kwargs)
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        if not statement.startswith(_LOCKING):
            return fn(*args, **kwargs)
        connection = self._connection
        connection.execute("PRAGMA busy_timeout=0")  # take the lock now or not at all
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as error:
            if connection.in_transaction or not _busy(error):
                raise
        finally:
            connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        return await super()._execute(fn, *args, **kwargs)  # another process writes: wait


_WAITING_CALLS = frozenset({"commit", "close", "backup", "iterdump"})
_WAITING = ("COMMIT", "PRAGMA", "VACUUM")
_LOCKING = ("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")


def _busy(error: sqlite3.OperationalError) -> bool:
    return error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _loop_thread_connector(path: str) -> Callable[[], _LoopThreadConnection]:
    def connect() -> _LoopThreadConnection:
        # The sqlite3 connection is opened on the worker thread and used from the loop's
        # too, one call at a time (each is awaited before the next).
        connection = _LoopThreadConnection(
            lambda: sqlite3.connect(path, check_same_thread=False), iter_chunk_size=64
        )
        connection._thread.daemon = True  # as SQLAlchemy sets it for aiosqlite's own
        return connection

    return connect
