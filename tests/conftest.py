"""Shared helpers for the cross-package tests."""

from __future__ import annotations

import socket
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
