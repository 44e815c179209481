"""The package as a user installs it: a wheel in a fresh virtual environment, away from the source tree.

The wheel is built from this checkout and installed with ``pip install --no-deps`` into a new venv;
the commands then run in an empty folder, so nothing of the checkout is importable. The venv borrows
the already installed dependencies (torch, timm, Lightning, ...) through a ``.pth`` line naming
this environment's site-packages — a line, not a site directory, so the editable install that lives
there is never activated — instead of downloading several GB of torch again. A user's own config
folder joins the shipped configs through Hydra's search path (``hydra.searchpath``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

USER_EXPERIMENT = """\
# @package _global_
# a user's own experiment, kept outside the package
defaults:
  - override /data: phantom
  - override /model: tiny_test
data:
  root: {data}
  image_size: 48
  batch_size: 16
  num_workers: 0
trainer:
  max_epochs: 1
logger: null
n_bootstrap: 20
tags: [wheel]
"""


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(bin folder of a fresh venv holding the xmed wheel, environment to run it with)."""
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # setuptools' scratch folder: it keeps files of an earlier build, even of configs deleted since
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "-w", str(base / "dist"), str(ROOT)], cwd=base, env=env)
    wheel, = (base / "dist").glob("xmed-*.whl")
    venv.EnvBuilder(with_pip=True).create(base / "venv")
    bin_dir = base / "venv" / "bin"
    run([str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check",
         str(wheel)], cwd=base, env=env)
    site = Path(run([str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=base, env=env).strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return bin_dir, env


def test_the_wheel_holds_configs_and_card_template_and_imports_from_the_venv(installed, tmp_path):
    bin_dir, env = installed
    code = ("import xmed, xmed.cli.common as c, xmed.pipeline.card as card; "
            "print(xmed.__file__); print(c.CONFIG_DIR); print(card.TEMPLATE.is_file()); "
            "print(sorted(p.name for p in (c.CONFIG_DIR / 'experiment').glob('*.yaml')))")
    lines = run([str(bin_dir / "python"), "-c", code], cwd=tmp_path, env=env).splitlines()
    venv_root = str(bin_dir.parent)
    assert lines[0].startswith(venv_root) and lines[1].startswith(venv_root), lines
    assert lines[2] == "True"
    assert "'phantom_smoke.yaml'" in lines[3]


def test_the_package_list_names_every_package_and_maps_the_configs_folder():
    tomllib = pytest.importorskip("tomllib")
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "xmed").rglob("__init__.py")}
    assert set(settings["packages"]) == on_disk | {"xmed.configs"}
    assert settings["package-dir"] == {"xmed.configs": "configs"}
    assert (ROOT / "configs" / "__init__.py").is_file() and not (ROOT / "xmed" / "configs").exists()


def test_the_wheel_ships_every_config_file(installed, tmp_path):
    bin_dir, env = installed
    code = "import xmed.cli.common as c; print(*sorted(str(p.relative_to(c.CONFIG_DIR)) for p in c.CONFIG_DIR.rglob('*.yaml')))"
    shipped = run([str(bin_dir / "python"), "-c", code], cwd=tmp_path, env=env).split()
    assert shipped == sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml"))


def test_data_train_and_explain_from_the_installed_wheel(installed, tmp_path):
    bin_dir, env = installed
    run([str(bin_dir / "xmed-data"), "phantom", "--out", "data", "--n", "48", "--size", "64", "--seed", "0"],
        cwd=tmp_path, env=env)
    user_configs = tmp_path / "my_configs"
    (user_configs / "experiment").mkdir(parents=True)
    (user_configs / "experiment" / "mine.yaml").write_text(USER_EXPERIMENT.format(data=tmp_path / "data"))
    out = run([str(bin_dir / "xmed-train"), f"hydra.searchpath=[file://{user_configs}]", "experiment=mine",
               "paths.output_dir=run"], cwd=tmp_path, env=env)
    assert "test AUROC" in out
    card = (tmp_path / "run" / "model_card.md").read_text()
    assert "## Compute" in card and "- **precision**: " in card
    assert "tags:\n- wheel" in card  # the user's experiment was the one composed
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["model"]["data_config"][
        "input_size"] == 48
    out = run([str(bin_dir / "xmed-explain"), "ckpt_path=run/model", f"data.root={tmp_path / 'data'}",
               "data.num_workers=0", "explainer=gradcam", "n=4", "overlays=1", "randomisation.n_images=0",
               "paths.output_dir=explain"], cwd=tmp_path, env=env)
    result = json.loads((tmp_path / "explain" / "metrics.json").read_text())
    assert result["n"] == 4 and set(result["methods"]) == {"gradcam"}
    assert 0.0 <= result["methods"]["gradcam"]["deletion"] <= 1.0
    assert len(list((tmp_path / "explain" / "maps" / "gradcam").glob("*.npy"))) == 4


def test_the_review_page_and_report_come_from_the_installed_wheel(installed, tmp_path):
    """Templates and page assets ship in the wheel: a session built, served and exported from it."""
    bin_dir, env = installed
    code = ("from starlette.testclient import TestClient\n"
            "from xmed.review.server import create_app\n"
            "from xmed.review.store import RatingStore\n"
            "from xmed.review.synthetic import synthetic_session\n"
            "folder = synthetic_session('session', n_cases=2, size=64)\n"
            "token = RatingStore(folder / 'ratings.sqlite').add_reader('ana')\n"
            "client = TestClient(create_app(folder), base_url='http://127.0.0.1')\n"
            "page = client.get('/login', params={'token': token})\n"
            "print(page.status_code, 'Explanation A' in page.text, client.get('/static/review.js').status_code,\n"
            "      client.get('/static/review.css').status_code)\n")
    assert run([str(bin_dir / "python"), "-c", code], cwd=tmp_path, env=env).split()[-4:] == ["200", "True", "200", "200"]
    run([str(bin_dir / "xmed-review"), "export", "session", "--out", "report"], cwd=tmp_path, env=env)
    assert (tmp_path / "report" / "report.html").stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "report" / "cases").iterdir()) == ["case-001.png", "case-002.png"]
