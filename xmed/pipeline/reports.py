"""What a command prints when it ends: the headline figures and where every output went.

Example::

    report_run(Path("runs/eval"), metrics, {"metrics": Path("runs/eval/metrics.json")})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from xmed.pipeline.card import scoring_notes


def print_run_folder(out_dir: Path, artefacts: Mapping[str, Path | None]) -> None:
    """Print where a command's outputs went: the run folder, then each named output (None: skipped)."""
    print(f"run folder      {Path(out_dir).resolve()}")
    for name, path in artefacts.items():
        if path is not None:
            print(f"  {name:<15} {Path(path).resolve()}")


def report_run(out_dir: Path, metrics: Mapping[str, Any], artefacts: Mapping[str, Path | None]) -> None:
    """Print the headline figures of an evaluation and where every output went."""
    def fmt(key):
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        f"test AUROC {fmt('auroc')}  sens@95%spec {fmt('sens_at_95spec')}  "
        f"mean finding AUROC {fmt('finding_auroc_mean')}  vCDR MAE {fmt('vcdr_mae')}",
    ]
    if metrics.get("oracle_auroc") is not None:
        lines.append(f"phantom oracle AUROC on the same eyes {fmt('oracle_auroc')}")
    lines += scoring_notes(metrics)
    print("\n".join(lines))
    print_run_folder(out_dir, artefacts)
