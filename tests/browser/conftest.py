"""Browser tests: Debian's headless chromium, driven by Playwright, against `convohub up`.

Playwright drives the system browser (`/usr/bin/chromium`, installed by scripts/test through
scripts/lib/chromium.sh); it downloads no browser of its own. Screenshots land in
`test-artifacts/browser/` (ignored by git).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from convohub.runtime.config import HubConfig, Role, load_config
from tests.conftest import REPO_DIR, free_port

CHROMIUM = Path(os.environ.get("CONVOHUB_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO_DIR / "test-artifacts" / "browser"


@dataclass(frozen=True)
class Hub:
    """A running `convohub up`: its base URL, its loaded config and its process."""

    base: str
    config: HubConfig
    process: subprocess.Popen[str]

    def key(self, *, role: Role = Role.SUPERVISOR, agent_id: str | None = None) -> str:
        """The first key of the tenant with `role` (and acting as `agent_id`, if given)."""
        for api_key in self.config.tenants[0].api_keys:
            if api_key.role == role and (agent_id is None or api_key.agent_id == agent_id):
                return api_key.key.get_secret_value()
        raise LookupError(f"no {role} key for {agent_id}")

    def get(self, path: str, key: str, **params: str | int) -> httpx.Response:
        return httpx.get(
            self.base + path, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The system chromium; without it the tests fail under scripts/test, else skip."""
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing: run scripts/test (scripts/lib/chromium.sh installs it)"
        if os.environ.get("CONVOHUB_REQUIRE_ALL_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="package")
def browser(chromium: Path) -> Iterator[Browser]:
    # Package scope, not session: Playwright's sync API runs an event loop on this thread
    # while it is open, and the asyncio tests that come after these need the thread free.
    with sync_playwright() as playwright:
        # Chromium's sandbox needs user namespaces that a root CI container rarely has.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=str(chromium), args=args)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """`convohub up` on a free port with a fresh data directory (its sample config)."""
    port = free_port()
    home = tmp_path_factory.mktemp("console-hub")
    data_dir = home / ".convohub"
    # Its log goes to a file: a pipe nobody drains fills up and blocks the hub.
    log = (home / "hub.log").open("w")
    # The environment's own script (tests run in the synced .venv), else the repo's wrapper.
    installed = Path(sys.executable).with_name("convohub")
    command = str(installed) if installed.exists() else str(REPO_DIR / "convohub")
    process = subprocess.Popen(
        [command, "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the wrapper, uv and the hub
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                kill_group(process)
                pytest.fail(f"hub did not come up:\n{(home / 'hub.log').read_text()}")
            time.sleep(0.2)
        yield Hub(base, load_config(data_dir / "convohub.yaml", {}), process)
    finally:
        kill_group(process)
        log.close()


def kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
