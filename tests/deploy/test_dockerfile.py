"""The Dockerfile, read as text (no Docker engine here): one image per service with only
that service installed, dependencies in their own layer, non-root, health-checked."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, workspace_services


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def stages(text: str) -> dict[str, str]:
    """Each named stage's instructions, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    found: dict[str, str] = {}
    current = None
    for line in joined.splitlines():
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line.strip(), re.IGNORECASE)
        if match:
            current = match.group(1)
            found[current] = ""
        elif current and line.strip() and not line.strip().startswith("#"):
            found[current] += line.strip() + "\n"
    return found


def test_targets_exist(dockerfile: str) -> None:
    assert {"builder", "service", "cli"} <= set(stages(dockerfile))


def test_dependencies_install_before_the_sources_are_copied(dockerfile: str) -> None:
    builder = stages(dockerfile)["builder"].splitlines()
    first_sync = next(i for i, line in enumerate(builder) if "uv sync" in line)
    assert "--no-install-workspace" in builder[first_sync]
    copied_before = " ".join(line for line in builder[:first_sync] if line.startswith("COPY"))
    assert "uv.lock" in copied_before
    for member in ["contracts", "runtime"] + [
        f"services/{name}" for name in sorted(workspace_services())
    ]:
        assert f"{member}/pyproject.toml" in copied_before, member
    assert not any(line.startswith("COPY src") for line in builder[:first_sync])
    second_sync = next(i for i, line in enumerate(builder) if "uv sync" in line and i > first_sync)
    assert any(line.startswith("COPY src") for line in builder[first_sync:second_sync])
    assert "--no-editable" in builder[second_sync]
    assert all("--locked" in line or "uv-args" in line for line in builder if "uv sync" in line)


def test_a_service_image_installs_only_its_own_service(dockerfile: str) -> None:
    builder = stages(dockerfile)["builder"]
    listed = re.search(r'case " ([a-z ]+) "', builder).group(1).split()
    loop = re.search(r"for other in ([a-z ]+);", builder).group(1).split()
    assert set(listed) == set(loop) == set(workspace_services())
    assert "--no-install-package convohub-%s" in builder
    assert "--locked" in builder


def test_images_run_as_a_non_root_user(dockerfile: str) -> None:
    base = stages(dockerfile)["runtime-base"]
    user = re.search(r"^USER\s+(\S+)", base, re.MULTILINE).group(1)
    assert user.split(":")[0] not in {"0", "root"}
    assert "CONVOHUB_HTTP_HOST=0.0.0.0" in base


def test_service_image_is_health_checked_on_healthz(dockerfile: str) -> None:
    service = stages(dockerfile)["service"]
    assert "HEALTHCHECK" in service
    assert "/healthz" in service
    assert 'exec convohub serve \\"$CONVOHUB_SERVICE\\"' in service


def test_build_context_leaves_out_local_state() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for pattern in ("**/.venv", ".git", "**/.convohub", "**/__pycache__"):
        assert pattern in ignored


def builder_script(dockerfile: str, args_file: Path) -> list[str]:
    """The builder stage's RUN commands as shell scripts (cache mounts dropped, the args
    file moved to `args_file`)."""
    scripts = []
    for line in stages(dockerfile)["builder"].splitlines():
        if line.startswith("RUN "):
            script = re.sub(r"--mount=\S+\s+", "", line.removeprefix("RUN ").strip())
            scripts.append(script.replace("/tmp/uv-args", str(args_file)))
    return scripts


def test_the_builder_stage_installs_one_service_with_the_locked_dependencies(
    dockerfile: str, tmp_path: Path
) -> None:
    """Runs the builder stage's own commands (not a copy of them) in a folder laid out as
    its COPY lines lay out /src, for the router image, and checks what got installed."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("uv.lock", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # The members whose pyproject.toml the builder copies (every workspace member: uv
    # refuses to resolve a workspace with one missing).
    members = re.findall(r"^COPY (\S+)/pyproject\.toml ", dockerfile, re.MULTILINE)
    assert {f"services/{s}" for s in workspace_services()} <= set(members)
    for member in members:
        (source / member).mkdir(parents=True)
        shutil.copy(REPO / member / "pyproject.toml", source / member / "pyproject.toml")
    environment = {
        **os.environ,
        "SERVICE": "router",
        "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
    }
    environment.pop("VIRTUAL_ENV", None)
    first, deps, install = builder_script(dockerfile, tmp_path / "uv-args")

    def run(script: str) -> None:
        result = subprocess.run(
            ["sh", "-c", script],
            cwd=source,
            env=environment,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert result.returncode == 0, f"{script}\n{result.stderr[-2000:]}"

    run(first)
    run(deps)  # dependencies only: no workspace member installed yet
    for member in ["contracts", "runtime", "services/router"]:
        shutil.copytree(REPO / member / "src", source / member / "src")
    shutil.copytree(REPO / "src", source / "src")
    run(install)
    probe = (
        "import json; from importlib.metadata import distributions, entry_points;"
        "print(json.dumps([sorted(ep.name for ep in entry_points(group='convohub.services')),"
        "sorted(d.metadata['Name'] for d in distributions()"
        " if d.metadata['Name'].startswith('convohub'))]))"
    )
    python = tmp_path / "venv" / "bin" / "python"
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    services, packages = json.loads(result.stdout)
    assert services == ["router"]
    assert packages == ["convohub", "convohub-contracts", "convohub-router", "convohub-runtime"]
    assert (tmp_path / "venv" / "bin" / "convohub").exists()
