"""Paths to the committed contract documents."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CONTRACTS_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = CONTRACTS_DIR.parent
ASYNCAPI_CHECK_DIR = REPO_DIR / "tools" / "asyncapi-check"


@pytest.fixture(scope="session")
def asyncapi_validator() -> list[str]:
    """The command that runs the official AsyncAPI parser (installed by scripts/test)."""
    node = shutil.which("node")
    installed = (ASYNCAPI_CHECK_DIR / "node_modules" / "@asyncapi" / "parser").is_dir()
    if node is None or not installed:
        message = "the AsyncAPI parser is not installed: run scripts/test (it runs npm ci)"
        if os.environ.get("CONVOHUB_REQUIRE_ALL_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return [node, str(ASYNCAPI_CHECK_DIR / "validate.mjs")]
