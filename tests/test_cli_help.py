"""`--help` of the Hydra commands: each command's own page (summary, main overrides, examples,
config groups) from configs/hydra/help/<command>.yaml; `--hydra-help` stays Hydra's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xmed.cli.common import CONFIG_DIR

COMMANDS = ("train", "eval", "explain", "predict", "study")


def run_command(command: str, flag: str) -> subprocess.CompletedProcess:
    """The installed console script (``xmed-train``…) of this environment, run with ``flag``."""
    script = Path(sys.executable).parent / f"xmed-{command}"
    return subprocess.run([str(script), flag], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [pytest.param(c, id=f"xmed-{c}") for c in COMMANDS])
def test_help_is_the_commands_own_page(command):
    page = yaml.safe_load((CONFIG_DIR / "hydra" / "help" / f"{command}.yaml").read_text())
    result = run_command(command, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"xmed-{command}: ")
    for section in ("header", "overrides", "examples"):
        for line in page[section].splitlines():
            assert line.replace("$$", "$") in text, (section, line)
    assert f"xmed-{command} --cfg job" in text
    own_text, groups = text.split("== Configuration groups (group=option) ==")
    assert "_base" not in own_text and "$" not in own_text.replace("$XMED_DATA_DIR", "")
    assert "\ndata: " in groups and "phantom" in groups and "hydra/" not in groups
    # Hydra lists every file of a group, the shared bases too; the page says what "_" means
    assert 'Options whose name starts with "_" are shared bases of the others, not choices.' in groups


def test_hydra_help_stays_hydras():
    result = run_command("eval", "--hydra-help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hydra (")
    assert "--hydra-help : Hydra's help" in result.stdout and "xmed-eval: " not in result.stdout
