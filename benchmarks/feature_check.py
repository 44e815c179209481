"""Which photographs a trained model's feature check flags (``unfamiliar_features``).

Not a timing: a study of one trained model, outside the suites of ``python -m benchmarks``. It
writes a folder of photographs — phantom eyes in the training data's style and in other styles,
the real fundus photograph ``skimage.data.retina()`` and natural photographs —, screens it with
``xmed-predict`` and writes, per group, the share flagged, the feature distances against the
model's threshold and the share the image-quality gate flagged, with the training run's own test
split, into ``<out>/results.{json,md}``.

Example (the runs in ``benchmarks/results/feature_check/``, its ``results.md`` the commands)::

    xmed-data phantom --out /tmp/ood/data --n 600 --size 256 --seed 0
    xmed-train experiment=phantom_smoke paths.data_dir=/tmp/ood/data data.root=/tmp/ood/data paths.output_dir=/tmp/ood/train7
    python -m benchmarks.feature_check /tmp/ood/train7/model --work /tmp/ood/study7 --out <results folder>
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from xmed.models.feature_check import UNFAMILIAR_FEATURES

#: the group rendered as the training data were (``xmed-data phantom``'s defaults)
SAME_STYLE = "phantom, the training style"
#: phantom eyes by group: ``render_phantom`` options, and the side they are rendered at (px)
STYLES = {
    SAME_STYLE: ({}, 256),
    "phantom without camera effects": ({"camera": False}, 256),
    "phantom without distractors": ({"distractors": False}, 256),
    "phantom without either": ({"camera": False, "distractors": False}, 256),
    "phantom with the shortcut marker": ({"shortcut": 1.0, "prevalence": 0.5}, 256),
    "phantom, prevalence 0.9": ({"prevalence": 0.9}, 256),
    "phantom rendered at 128 px": ({}, 128),
    "phantom rendered at 512 px": ({}, 512),
}
#: single photographs: ``skimage.data`` names, and the real fundus photograph mirrored and shrunk
PHOTOGRAPHS = ("retina", "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera", "moon")
SEED = 10**9  # far from the eye seeds a written phantom data set draws (64-bit)


def slug(text: str) -> str:
    """A folder name for a group, e.g. ``phantom_rendered_at_128_px``."""
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def write_photographs(folder: Path, n: int, n_same: int) -> dict[str, str]:
    """Every photograph of the study as a PNG under ``folder``: ``n`` phantom eyes per style,
    ``n_same`` of the training style; returns ``{group folder: group}``."""
    from skimage import data

    from xmed.data import render_phantom

    groups = {}
    for group, (options, size) in STYLES.items():
        sub = folder / slug(group)
        sub.mkdir(parents=True)
        for i in range(n_same if group == SAME_STYLE else n):
            write_png(sub / f"eye_{i:04d}.png", render_phantom(SEED + i, size, **options).image)
        groups[sub.name] = group
    for name in PHOTOGRAPHS:
        write_png(folder / f"{name}.png", getattr(data, name)())
    retina = data.retina()
    write_png(folder / "retina_mirrored.png", retina[:, ::-1])
    write_png(folder / "retina_256px.png", cv2.resize(retina, (256, 256), interpolation=cv2.INTER_AREA))
    return groups


def write_png(path: Path, image: np.ndarray) -> None:
    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(path), image)


def screen(model: Path, folder: Path, out: Path) -> tuple[dict, list[dict[str, str]]]:
    command = [sys.executable, "-m", "xmed.cli.predict", f"ckpt_path={model}", f"input={folder}",
               f"paths.output_dir={out}", "overwrite=true"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    with open(out / "predictions.csv", newline="") as fh:
        return json.loads((out / "summary.json").read_text()), list(csv.DictReader(fh))


def flagged(row: dict[str, str]) -> bool:
    return UNFAMILIAR_FEATURES in row["quality"].split(";")


def image_flags(row: dict[str, str]) -> set[str]:
    """The flags of the image-quality gate in a row (the feature check's left out)."""
    return set(row["quality"].split(";")) - {"", UNFAMILIAR_FEATURES}


def group_results(rows: list[dict[str, str]], groups: dict[str, str], threshold: float) -> list[dict]:
    """Per phantom group and per photograph: eyes, share flagged, feature distances, share the
    image-quality gate flagged (a flag other than ``unfamiliar_features``), mean P(glaucoma)."""
    members: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        head, _, rest = row["id"].partition("/")
        members.setdefault(groups.get(head, row["id"]) if rest else row["id"], []).append(row)
    order = [*STYLES, *PHOTOGRAPHS, "retina_mirrored", "retina_256px"]
    results = []
    for name, group in sorted(members.items(), key=lambda item: order.index(item[0])):
        distances = [float(r["feature_distance"]) for r in group]
        results.append({
            "group": name, "n": len(group), "flagged": round(sum(map(flagged, group)) / len(group), 4),
            "distance_median": round(statistics.median(distances), 2), "distance_max": round(max(distances), 2),
            "distance_over_threshold": round(statistics.median(distances) / threshold, 2),
            "image_quality_flagged": round(sum(bool(image_flags(r)) for r in group) / len(group), 4),
            "image_quality_flags": sorted(set().union(*map(image_flags, group))),
            "p_glaucoma_mean": round(statistics.mean(float(r["prob"]) for r in group), 3),
        })
    return results


def test_split(model: Path) -> str:
    """What the training run's test split says (its ``metrics.json`` beside the model folder)."""
    metrics = model.parent / "metrics.json"
    if not metrics.is_file():
        return "no metrics.json beside the model"
    m = json.loads(metrics.read_text())
    flagged = m.get("unfamiliar_features", {})
    return (f"test AUROC {m['auroc']:.3f}; flagged unfamiliar_features: {flagged.get('test')} of {m['n']} test eyes, "
            f"{flagged.get('val')} of the validation eyes that set the threshold")


def table(results: list[dict]) -> str:
    lines = ["| photographs | n | flagged unfamiliar_features | feature distance: median (max) | median / threshold "
             "| image-quality flags | mean P(glaucoma) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        quality = f"{r['image_quality_flagged']:.0%}" + (f" ({', '.join(r['image_quality_flags'])})"
                                                          if r["image_quality_flags"] else "")
        lines.append(f"| {r['group']} | {r['n']} | {r['flagged']:.1%} | {r['distance_median']:.1f} "
                     f"({r['distance_max']:.1f}) | {r['distance_over_threshold']:.2f} | {quality} | "
                     f"{r['p_glaucoma_mean']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.feature_check", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="an exported model folder with a feature check")
    parser.add_argument("--work", type=Path, required=True, help="a new folder for the photographs and the screening")
    parser.add_argument("--out", type=Path, required=True, help="where results.json and results.md go")
    parser.add_argument("--n", type=int, default=100, help="phantom eyes per other style")
    parser.add_argument("--n-same", type=int, default=1000, help="phantom eyes of the training style (its share "
                                                                 "flagged is to be near 1 - percentile)")
    args = parser.parse_args(argv)
    groups = write_photographs(args.work / "photographs", args.n, args.n_same)
    summary, rows = screen(args.model, args.work / "photographs", args.work / "screened")
    check = summary["feature_check"]
    if check is None:
        parser.error(f"{args.model} carries no feature check (exported before xmed-train fitted one)")
    record = {"command": "python -m benchmarks.feature_check " + " ".join(argv if argv is not None else sys.argv[1:]),
              "feature_check": check, "training_run": test_split(args.model),
              "groups": group_results(rows, groups, check["threshold"])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(record, indent=2))
    (args.out / "results.md").write_text(markdown(record))
    print(markdown(record))
    return 0


def markdown(record: dict) -> str:
    """results.md of a record that results.json keeps."""
    return "\n".join(["# The feature check of one trained model", "", f"Command: `{record['command']}`", "",
                      f"- **feature check**: {json.dumps(record['feature_check'])}",
                      f"- **training run**: {record['training_run']}", "", table(record["groups"]), ""])


if __name__ == "__main__":
    sys.exit(main())
