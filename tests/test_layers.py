"""The layers hold: ``lint-imports`` checks the contracts of ``[tool.importlinter]`` in pyproject.toml
(cli -> pipeline -> review | viz -> explain | metrics | inference -> models -> data -> core; the
metrics reach neither the data layer nor Lightning; no import cycles inside a package), function-local
imports included; an upward import planted in a copy of the package breaks them, named."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` over the ``xmed`` package in ``root``, with the contracts of its pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(root)}  # this copy of xmed, not the installed one
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_contracts_hold():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 3 kept, 0 broken." in done.stdout


def test_an_upward_import_and_a_hidden_cycle_break_the_contracts_by_name(tmp_path):
    shutil.copytree(ROOT / "xmed", tmp_path / "xmed", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    io = tmp_path / "xmed" / "data" / "io.py"
    io.write_text(io.read_text() + "\n\nimport xmed.cli.common  # planted: data reaches up to the commands\n\n\n"
                  "def _planted():\n    from xmed.data.folders import walk_folder  # planted: folders imports io\n\n"
                  "    return walk_folder\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join(done.stdout.split())  # rich wraps long lines
    assert "Contracts: 1 kept, 2 broken." in out
    assert "xmed's layers, from the top BROKEN" in out and "modules of a package BROKEN" in out
    assert "xmed.data is not allowed to import xmed.cli" in out and "xmed.data.io -> xmed.cli.common" in out
    assert "No cycles are allowed in xmed.data." in out and ".io -> .folders" in out
