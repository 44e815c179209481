"""The documentation: the site builds without a warning, and the README stays short, states its two
commands and quotes only what its results files hold.

Every row of the README's results table has an entry in :data:`FIGURES` that reads its figure from
the results file the row names and formats it as the README writes it; a new measurement changes
the file, and the README must follow.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 300


def section(title: str) -> str:
    """The README's text under ``## title``, up to the next ``## `` heading.

    Example:
        >>> section("Two commands").splitlines()[0]
        ''
    """
    text = README.read_text()
    start = text.index(f"\n## {title}\n") + len(title) + 5
    end = text.find("\n## ", start)
    return text[start:end if end >= 0 else None]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the Markdown table in ``text``, header and rule left out.

    Example:
        >>> table_rows("| a | b |\\n|---|---|\\n| 1 | `x` |\\n")
        [['1', '`x`']]
    """
    rows = [[cell.strip() for cell in line.strip()[1:-1].split(" | ")]
            for line in text.splitlines() if line.startswith("|")]
    return rows[2:]


# -- where each figure comes from -------------------------------------------------------------------

def read(path: str) -> Any:
    """A results file, parsed when it is JSON."""
    text = (ROOT / path).read_text()
    return json.loads(text) if path.endswith(".json") else text


def figure(results: dict, part: str, name: str) -> dict:
    """One figure of a benchmark suite's results.json."""
    [found] = [f for p in results["parts"] if p["name"] == part for f in p["figures"] if f["name"] == name]
    return found


def demo_run(results: dict, key: str) -> dict:
    """One run of ``benchmarks/results/demo/results.json`` (``python -m benchmarks.demo``)."""
    [run] = [r for r in results["runs"] if r["key"] == key]
    return run


def demo_time(run: dict) -> str:
    return f"{run['wall_min']:.1f} min ({run['training_min']:.1f} min)"


def demo_scores(run: dict) -> str:
    test = run["test"]
    low, high = test["auroc_ci"]
    return f"{test['auroc']:.3f} ({low:.3f}–{high:.3f}) · {test['finding_auroc_mean']:.3f} · {test['vcdr_mae']:.3f}"


def study_mean(study: dict, model: str, method: str, score: str = "energy_in_evidence") -> float:
    [row] = [r for r in study["means"] if (r["model"], r["method"], r["score"]) == (model, method, score)]
    return row["mean"]


def study_pair(study: dict, model: str) -> str:
    return f"{study_mean(study, model, 'adversarial_toward_normal'):.3f} vs {study_mean(study, model, 'gradcam'):.3f}"


def hue_share(anatomy: dict, mode: str) -> float:
    [found] = [m for m in anatomy["modes"] if m["name"] == mode]
    return found["summary"]["both"]["hue_share"]


def card_row(card: str, name: str) -> str:
    """A value of a model card's metric table (``| AUROC | 0.926 (0.908–0.944) |``)."""
    [value] = re.findall(rf"^\| {re.escape(name)} \| (.+) \|$", card, flags=re.MULTILINE)
    return value


DEMO = "benchmarks/results/demo/results.json"
CPU = "benchmarks/results/results.json"
STUDY = "docs/explanation_study/metrics.json"
NATIVE, AVX2 = "native", "avx2"
POWER = "power, 400 eyes x 5 readers drawn anew, latent difference 0.25 (true 0.232): Obuchowski-Rockette"

#: README row -> (its results file, the figure as the README writes it, from the parsed file)
FIGURES: dict[str, tuple[str, Callable[[Any], str]]] = {
    "`make demo` on 2 CPU cores with native bf16: wall time, install excluded (of it training)":
        (DEMO, lambda d: demo_time(demo_run(d, NATIVE))),
    "`make demo` with native bf16: test AUROC (95 % CI) · mean finding AUROC · vCDR MAE, 450 phantom eyes":
        (DEMO, lambda d: demo_scores(demo_run(d, NATIVE))),
    "`make demo` on the same CPU capped to AVX2 (fp32): wall time (of it training)":
        (DEMO, lambda d: demo_time(demo_run(d, AVX2))),
    "`make demo` capped to AVX2: test AUROC (95 % CI) · mean finding AUROC · vCDR MAE":
        (DEMO, lambda d: demo_scores(demo_run(d, AVX2))),
    "the phantom's oracle on the demo's test eyes: the best possible AUROC":
        (DEMO, lambda d: f"{demo_run(d, NATIVE)['test']['oracle_auroc']:.3f}"),
    "reference phantom model (`experiment=phantom`, resnet18, 20 epochs): test AUROC (95 % CI)":
        ("model_cards/phantom_resnet18.md", lambda card: card_row(card, "AUROC")),
    "explanation study, resnet18, 200 glaucomatous phantom eyes: share of the explanation's energy on the disc "
    "and the findings present, adversarial edit toward normal vs Grad-CAM":
        (STUDY, lambda d: study_pair(d, "resnet18")),
    "the explanation study on efficientnet_b0: the same shares":
        (STUDY, lambda d: study_pair(d, "efficientnet_b0")),
    "the review's edits: share of the colour change that is hue, lightness-only vs unconstrained":
        ("benchmarks/results/edit_anatomy/results.json",
         lambda d: f"{hue_share(d, 'the review' + chr(39) + 's: lightness, logit step, its budget'):.2f} vs "
                   f"{hue_share(d, 'free, logit step'):.2f}"),
    "Grad-CAM, batch 8, 2-core CPU: time against a forward pass":
        (CPU, lambda d: f"{figure(d, 'explain_speed', 'xmed Grad-CAM, batch 8')['ratio']:.3g}×"),
    "`import xmed.explain` against `import torch`":
        (CPU, lambda d: f"{figure(d, 'import_time', 'import xmed.explain')['ratio']:.3g}×"),
    "phantom rendering at 256 px, one core":
        (CPU, lambda d: f"{figure(d, 'phantom_speed', 'render 256 px, 1 core')['value']:.3g} images/s"),
    "NVIDIA H200: training resnet18 at 256 px, batch 256, bf16":
        ("benchmarks/results/nvidia-h200/results.json",
         lambda d: f"{figure(d, 'gpu_training', 'resnet18 256 px, batch 256: eager training')['value']:,.0f} images/s"),
    "a planned reader study, 400 eyes × 5 readers drawn anew: power to find a 0.23-point difference, readers random":
        ("benchmarks/results/reader_study/results.json",
         lambda d: f"{round(100 * figure(d, 'reader_study', POWER)['value'])} %"),
}


def test_results_table_quotes_its_results_files():
    rows = table_rows(section("Results"))
    assert [row[0] for row in rows] == list(FIGURES)  # every row has its source, every source its row
    for result, quoted, source in rows:
        path, value = FIGURES[result]
        assert source == f"`{path}`", result
        assert quoted == value(read(path)), f"README's results table, {result!r}: {quoted} but {path} gives"


def test_results_table_reads_what_it_names():
    """The readers find their figures: one wrong name or model is an error, not a blank."""
    with pytest.raises(ValueError):
        figure(read(CPU), "explain_speed", "xmed Grad-CAM, batch 9")
    with pytest.raises(ValueError):
        study_pair(read(STUDY), "convnext_huge")
    assert card_row(read("model_cards/phantom_resnet18.md"), "AUROC").startswith("0.")


# -- the README ------------------------------------------------------------------------------------

#: the machines the README's results section names -> the results file whose figures were measured on it
MACHINES = {"the `make demo` rows on\na 2-core Intel Xeon": DEMO, "the other CPU timings on a 2-core AMD EPYC": CPU}


def test_results_table_names_the_machines_its_figures_were_measured_on():
    text = README.read_text()
    for phrase, path in MACHINES.items():
        assert phrase in text, phrase
        results = json.loads((ROOT / path).read_text())
        cpu = (results.get("machine") or results["header"])["cpu"].replace("(R)", "")
        assert " ".join(cpu.split()).startswith(phrase.split("2-core ")[1]), (path, cpu)


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= MAX_README_LINES


def commands(text: str) -> list[str]:
    """The commands of ``text``'s bash blocks, comments left out.

    Example:
        >>> commands("```bash\\nmake demo   # all of it\\n```\\n")
        ['make demo']
    """
    blocks = re.findall(r"^```bash\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    return [" ".join(shlex.split(line, comments=True)) for block in blocks for line in block.splitlines()
            if shlex.split(line, comments=True)]


def test_the_two_commands_are_make_demo_and_make_test():
    assert commands(section("Two commands")) == ["make demo", "make test"]
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ci[-1] == "make test"
    targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert {"demo", "test", "docs"} <= set(targets)


# -- the site --------------------------------------------------------------------------------------

def nav_pages(nav: list) -> list[str]:
    """The Markdown files mkdocs.yml's nav lists, in order.

    Example:
        >>> nav_pages([{"Home": "index.md"}, {"API": ["api/index.md", {"x": "api/x.md"}]}])
        ['index.md', 'api/index.md', 'api/x.md']
    """
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_site_builds_strictly(tmp_path):
    import yaml

    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.SafeLoader)
    for page in nav_pages(config["nav"]):
        assert (ROOT / "docs" / page).is_file(), page
        built = site / (page.removesuffix(".md").removesuffix("index") + "/index.html").lstrip("/")
        assert built.is_file(), built
    # the API pages hold every public package, and their doctests render as highlighted Python
    api = "".join(path.read_text() for path in (site / "api").rglob("index.html"))
    for module in ("xmed", "xmed.errors", "xmed.runtime", "xmed.data", "xmed.models", "xmed.explain",
                   "xmed.metrics", "xmed.review", "xmed.viz"):
        assert f'id="{module}"' in api, module
    assert api.count('<span class="gp">&gt;&gt;&gt; </span>') > 100
    assert "&gt;&gt;&gt;" not in re.sub(r"<pre>.*?</pre>", "", api, flags=re.DOTALL)  # no doctest read as prose


def test_doctest_titles_become_examples_sections():
    spec = importlib.util.spec_from_file_location("griffe_examples", ROOT / "docs/griffe_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert doctest.testmod(module).failed == 0
    docstring = ("Summary.\n\nExample:\n    >>> 1\n    1\n\nExample, on a JPEG:\n    >>> 2\n    2\n\n"
                 "Example (three readers,\nall tied):\n    >>> 3\n    3\n\nExample::\n\n    plain: text\n")
    assert module.EXAMPLE_TITLE.sub(module.retitle, docstring) == (
        "Summary.\n\nExamples:\n    >>> 1\n    1\n\nExamples:\n    On a JPEG:\n    >>> 2\n    2\n\n"
        "Examples:\n    Three readers, all tied:\n    >>> 3\n    3\n\nExample::\n\n    plain: text\n")
