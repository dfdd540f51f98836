"""Shared fixtures of the deployment checks: the rendered kustomize overlays and the
workspace's services. Nothing here needs Docker or a cluster."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
TARGETS = ("base", "overlays/dev", "overlays/prod")


def workspace_services() -> dict[str, str]:
    """Each `services/*` member's service name (its `convohub.services` entry point) and
    package name, read from the pyproject files: what the deployment must cover."""
    found = {}
    for pyproject in sorted(REPO.glob("services/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        entry_points = project.get("entry-points", {}).get("convohub.services", {})
        for name in entry_points:
            found[name] = project["name"]
    return found


def render(target: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a base or overlay, as a list of resources."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kustomize {target} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {target: render(target) for target in TARGETS}


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def named(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in of_kind(documents, kind)}
