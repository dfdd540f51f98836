"""The README's first command, `./convohub up`, starts the hub and stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import REPO_DIR, free_port


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    data_dir: Path = tmp_path_factory.mktemp("hub") / ".convohub"
    process = subprocess.Popen(
        [str(REPO_DIR / "convohub"), "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
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
            process.kill()
            pytest.fail(f"hub did not come up:\n{process.stdout.read()}")
        time.sleep(0.2)
    assert data_dir.is_dir()
    yield base, process
    if process.poll() is None:
        process.kill()


def test_hub_serves_health_and_the_event_catalogue(hub: tuple[str, subprocess.Popen]) -> None:
    base, _ = hub
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    events = httpx.get(f"{base}/v1/contracts/events").json()
    types = {event["type"] for event in events}
    assert "convohub.conversation.message_received.v1" in types
    received = next(e for e in events if e["type"] == "convohub.conversation.message_received.v1")
    assert "data.content.text" in received["personal_data"]
    schema = httpx.get(f"{base}/v1/contracts/events/convohub.routing.assigned.v1/schema").json()
    assert schema["properties"]["type"]["const"] == "convohub.routing.assigned.v1"
    assert "ConvoHub" in httpx.get(base).text


def test_hub_serves_readiness_and_prometheus_metrics(hub: tuple[str, subprocess.Popen]) -> None:
    base, _ = hub
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
    hub: tuple[str, subprocess.Popen],
) -> None:
    base, _ = hub
    response = httpx.get(f"{base}/v1/contracts/events/convohub.nope.nothing.v1/schema")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_event_type"


def test_ctrl_c_stops_the_hub_cleanly(hub: tuple[str, subprocess.Popen]) -> None:
    base, process = hub
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", timeout=1)
