"""The import-linter contracts really catch the violations ARCHITECTURE.md forbids.

Each case copies the source trees, plants one forbidden import, and runs `lint-imports`
against the copy (it comes first on PYTHONPATH, so it shadows the installed packages).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_DIR

SOURCE_ROOTS = [
    Path("contracts/src"),
    Path("runtime/src"),
    Path("src"),
    *sorted(p.relative_to(REPO_DIR) for p in (REPO_DIR / "services").glob("*/src")),
]


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    python_path = os.pathsep.join(str(tree / root) for root in SOURCE_ROOTS)
    command = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(command), "--config", str(tree / ".importlinter"), "--no-cache"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": python_path, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for root in SOURCE_ROOTS:
        shutil.copytree(
            REPO_DIR / root, tmp_path / root, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO_DIR / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_untouched_tree_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "planted_import", "broken_contract"),
    [
        (
            "services/router/src/convohub/router/handlers.py",
            "import convohub.crm.handlers",
            "a service never imports another service",
        ),
        (
            "contracts/src/convohub/contracts/topics.py",
            "import convohub.runtime",
            "contracts import nothing of ours",
        ),
        (
            "services/sla/src/convohub/sla/domain/__init__.py",
            "import sqlalchemy",
            "a service's domain imports no SQLAlchemy",
        ),
        (
            "services/crm/src/convohub/crm/domain/__init__.py",
            "from convohub.crm import adapters",
            "a service's domain imports no SQLAlchemy",
        ),
        (
            "services/feedback/src/convohub/feedback/domain/__init__.py",
            "import faststream",
            "a service's domain imports no SQLAlchemy",
        ),
    ],
)
def test_a_planted_forbidden_import_breaks_its_contract(
    tree: Path, module: str, planted_import: str, broken_contract: str
) -> None:
    target = tree / module
    target.write_text(target.read_text() + f"\n{planted_import}\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [line for line in result.stdout.splitlines() if line.endswith(" BROKEN")]
    assert any(line.startswith(broken_contract) for line in broken), result.stdout
