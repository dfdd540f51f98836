"""The README's first command, `./convohub up`, starts the hub and stops cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from convohub.runtime.config import load_config

from .conftest import REPO_DIR, free_port

Hub = tuple[str, subprocess.Popen, Path]
"""The hub's base URL, its process and its data directory."""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    port = free_port()
    data_dir: Path = tmp_path_factory.mktemp("hub") / ".convohub"
    process = subprocess.Popen(
        [str(REPO_DIR / "convohub"), "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the wrapper, uv and the hub
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            kill_group(process)
            pytest.fail(f"hub did not come up:\n{process.stdout.read()}")
        time.sleep(0.2)
    assert data_dir.is_dir()
    yield base, process, data_dir
    kill_group(process)  # whatever a failed test left running, the hub included


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_hub_serves_health_and_the_event_catalogue(hub: Hub) -> None:
    base, _, _ = hub
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    events = httpx.get(f"{base}/v1/contracts/events").json()
    types = {event["type"] for event in events}
    assert "convohub.conversation.message_received.v1" in types
    received = next(e for e in events if e["type"] == "convohub.conversation.message_received.v1")
    assert "data.content.text" in received["personal_data"]
    schema = httpx.get(f"{base}/v1/contracts/events/convohub.routing.assigned.v1/schema").json()
    assert schema["properties"]["type"]["const"] == "convohub.routing.assigned.v1"
    assert "ConvoHub" in httpx.get(base).text


def test_hub_serves_readiness_and_prometheus_metrics(hub: Hub) -> None:
    base, _, _ = hub
    assert httpx.get(f"{base}/readyz").status_code == 200
    metrics = httpx.get(f"{base}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "convohub_events_published_total" in metrics.text


def test_a_wrong_config_stops_the_hub_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "convohub.yaml"
    config.write_text(
        "tenants:\n  - id: acme\n    name: Acme\n    channels:\n      - id: c1\n        type: fax\n"
    )
    result = subprocess.run(
        [str(REPO_DIR / "convohub"), "up", "--config", str(config), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "tenants[0].channels[0].type" in result.stderr


def test_unknown_event_type_is_a_404_with_a_machine_readable_body(
    hub: Hub,
) -> None:
    base, _, _ = hub
    response = httpx.get(f"{base}/v1/contracts/events/convohub.nope.nothing.v1/schema")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unknown_event_type"


def test_the_first_run_writes_a_sample_config_with_fresh_keys_that_work(
    hub: Hub,
) -> None:
    base, _, data_dir = hub
    sample = data_dir / "convohub.yaml"
    text = sample.read_text()
    assert ":-dev-" not in text  # every well-known fallback secret was replaced
    config = load_config(sample, {})
    tenant = config.tenants[0]
    kinds = {channel.type.value for channel in tenant.channels}
    assert kinds >= {"web_chat", "email", "sms", "whatsapp", "voice", "api"}
    supervisor = next(key for key in tenant.api_keys if key.role.value == "supervisor")
    headers = {"Authorization": f"Bearer {supervisor.key.get_secret_value()}"}
    assert httpx.get(f"{base}/v1/queues", headers=headers).status_code == 200
    assert httpx.get(f"{base}/v1/queues").status_code == 401


def test_ctrl_c_stops_the_hub_cleanly(hub: Hub) -> None:
    base, process, _ = hub
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "First run: wrote a sample config" in output
    # The tests' requests above were served, but `up` logs no line per request.
    assert "GET /healthz" not in output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", timeout=1)
