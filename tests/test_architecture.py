"""The code keeps its shape: layers import downward, the pure core does no I/O, lint is clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is missing: install the test extra (pip install -e '.[test]')"
    return found


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_layers_import_only_downward_and_the_core_stays_pure() -> None:
    result = run(tool("lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_ruff_finds_nothing() -> None:
    result = run(tool("ruff"), "check", "georouter", "tests", "geodata", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_formatted() -> None:
    result = run(tool("ruff"), "format", "--check", "georouter", "tests", "geodata", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = run(tool("mypy"))
    assert result.returncode == 0, result.stdout + result.stderr
