"""Fixtures every package's tests share: a real Kafka and PostgreSQL, fresh databases, names.

`kafka_bootstrap_servers` and `database_url` (session-scoped) come from, in order:

1. the environment: `KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL`;
2. testcontainers, when a Docker engine answers within a couple of seconds;
3. `scripts/infra/infra up` (a single-node KRaft Kafka from Maven Central's jars and
   Debian's PostgreSQL, no Docker needed), whose `export` lines are parsed.

Nothing is resolved at import time: a test run that requests neither fixture needs neither
server. `fresh_database_url` gives one test its own database and drops it afterwards;
`unique_name` makes topic, group and database names no other test (or run) uses.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parent
INFRA_SCRIPT = REPO_DIR / "scripts" / "infra" / "infra"
INFRA_TIMEOUT_S = 900  # the first run resolves Kafka's jars with Maven
DOCKER_PING_TIMEOUT_S = 2

_EXPORT_LINE = re.compile(r"^export ([A-Z_][A-Z0-9_]*)=(.*)$")


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python 3 loads its protocol schemas with importlib.resources' legacy API.
    for legacy in ("read_text", "open_text"):
        config.addinivalue_line(
            "filterwarnings", f"ignore:{legacy} is deprecated:DeprecationWarning"
        )


@functools.cache
def docker_answers() -> bool:
    """Whether a Docker engine answers a ping (False at once when there is no socket)."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_S)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


@functools.cache
def infra_environment() -> dict[str, str]:
    """Start (or find running) the repo's local Kafka and PostgreSQL; their export lines."""
    try:
        result = subprocess.run(
            [str(INFRA_SCRIPT), "up"],
            capture_output=True,
            text=True,
            timeout=INFRA_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{INFRA_SCRIPT} up did not finish in {INFRA_TIMEOUT_S} s") from error
    if result.returncode != 0:
        raise RuntimeError(
            f"{INFRA_SCRIPT} up failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    exports = {}
    for line in result.stdout.splitlines():
        match = _EXPORT_LINE.match(line.strip())
        if match:
            exports[match[1]] = match[2].strip().strip("'\"")
    missing = {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"} - exports.keys()
    if missing:
        raise RuntimeError(f"{INFRA_SCRIPT} up printed no {sorted(missing)}:\n{result.stdout}")
    return exports


@pytest.fixture(scope="session")
def kafka_bootstrap_servers() -> Iterator[str]:
    """A Kafka bootstrap list (`host:port`) of a real broker, for the whole session."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
    elif docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        yield infra_environment()["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A SQLAlchemy URL (`postgresql+asyncpg://...`) of a real PostgreSQL, for the session.

    Tests that write should use `fresh_database_url` rather than this shared database.
    """
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
    elif docker_answers():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="asyncpg") as postgres:
            yield postgres.get_connection_url()
    else:
        yield infra_environment()["DATABASE_URL"]


@pytest.fixture
def unique_name() -> Callable[..., str]:
    """`unique_name("orders")` -> `"orders-3f9c0a1b2c4d"`: a name no other test uses."""

    def make(prefix: str = "test") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


@asynccontextmanager
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database on the server of `database_url` (dropped on exit)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as connection:
                # FORCE: a test that leaked a connection must not keep its database alive.
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture(scope="session")
def new_database(database_url: str) -> Callable[[], AbstractAsyncContextManager[str]]:
    """`async with new_database() as url:` gives a fresh PostgreSQL database (for fixtures
    that choose their backend at run time)."""
    return functools.partial(fresh_database, database_url)


@pytest.fixture
async def fresh_database_url(database_url: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one test (dropped afterwards); its URL."""
    async with fresh_database(database_url) as url:
        yield url
