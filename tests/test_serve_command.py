"""`convohub serve NAME` runs one service alone; `convohub migrate` prepares the databases."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import REPO_DIR, free_port

SERVICES = ("crm", "feedback", "ingest", "router", "sla")
INSTALLED_SCRIPT = Path(sys.executable).parent / "convohub"
"""The console script itself, as a container runs it (no wrapper between it and signals)."""


def convohub(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO_DIR / "convohub"), *arguments], capture_output=True, text=True, timeout=timeout
    )


def test_an_unknown_service_is_refused_naming_the_installed_ones() -> None:
    result = convohub("serve", "billing")
    assert result.returncode == 2
    assert "no service 'billing'" in result.stderr
    for name in SERVICES:
        assert name in result.stderr


def test_one_service_serves_its_own_api_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [INSTALLED_SCRIPT, "serve", "sla", "--port", str(port), "--data-dir", tmp_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"sla did not come up:\n{process.stdout.read()}")
            time.sleep(0.2)
        assert set(ready.json()["checks"]) >= {"sla.database"}
        assert not any(name.startswith("router.") for name in ready.json()["checks"])
        paths = httpx.get(f"{base}/openapi.json").json()["paths"]
        assert any(path.startswith("/v1/sla") for path in paths)
        assert not any(path.startswith("/v1/customers") for path in paths)  # crm's, not here
    finally:
        process.terminate()  # SIGTERM, as Kubernetes stops a pod
        output, _ = process.communicate(timeout=30)
    # uvicorn finishes the shutdown (the host stops its consumers and drains its outbox),
    # then re-raises the signal so the exit status says how the process was stopped.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "GET /readyz HTTP/1.1" in output  # one service logs each request it answers


def test_migrate_creates_every_services_tables(tmp_path: Path) -> None:
    result = convohub("migrate", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in SERVICES:
        assert f"{name}: tables ready" in result.stdout
        with sqlite3.connect(tmp_path / f"{name}.sqlite3") as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert "convohub_outbox" in tables or any("outbox" in table for table in tables)
        assert any(table.startswith(f"{name}_") for table in tables), (name, tables)
    with sqlite3.connect(tmp_path / "ingest.sqlite3") as connection:
        ingest = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    # both sides of ingest: the channel edge's and the desk's (read model, delivery queue)
    assert {"ingest_conversations", "ingest_desk_conversations"} <= ingest
    assert "ingest_outbound_deliveries" in ingest
