"""Writing a phantom data set to disk in the layout of a real one.

Layout::

    OUT/
      phantom.json            every generation parameter, counts, the oracle AUROC
      labels.csv              id, image, eye, label, vcdr, oracle, ANRS … LC, split, seed, shortcut
      images/<id>.png
      masks/<id>/<name>.png   disc, cup, fov, one per present finding, shortcut (0/255)

Splits (train/val/test) are drawn stratified by label before rendering, so the optional
shortcut marker can be correlated with the label in the training split only (validation and
test eyes get it at random, independent of the label).

Example:
    >>> from xmed.data.phantom.writer import write_phantom_dataset
    >>> summary = write_phantom_dataset("data/phantom", n=64, size=256, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from xmed.data.phantom import PhantomOptions, draw_phantom_cause, render_phantom
from xmed.errors import ConfigError
from xmed.runs import claim_run_folder, staged_folder
from xmed.findings import FINDINGS

LABEL_COLUMNS = ["id", "image", "eye", "label", "vcdr", "oracle", *FINDINGS, "split", "seed", "shortcut"]
FORMAT_VERSION = 1


def eye_seeds(seed: int, n: int) -> list[int]:
    """Independent per-eye seeds derived from one data-set seed (stable across versions)."""
    state = np.random.SeedSequence(seed).generate_state(n, dtype=np.uint64)
    return [int(s >> np.uint64(2)) for s in state]


def assign_splits(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[str]:
    """Stratified train/val/test assignment, deterministic in ``seed``."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ConfigError("splits", f"must be three non-negative fractions summing to 1, got {fractions}")
    rng = np.random.default_rng([seed, 7])
    out = [""] * len(labels)
    labels = np.asarray(labels)
    for value in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == value))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        for j, i in enumerate(idx):
            out[i] = "train" if j < n_train else "val" if j < n_train + n_val else "test"
    return out


@dataclass(frozen=True)
class _Job:
    index: int
    eye_id: str
    seed: int
    size: int
    options: dict
    out: str
    image_format: str


def _render_and_write(job: _Job) -> dict:
    cv2.setNumThreads(1)  # the pool already uses every core
    eye = render_phantom(job.seed, job.size, **job.options)
    out = Path(job.out)
    image_name = f"images/{job.eye_id}.{job.image_format}"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if job.image_format == "jpg" else []
    if not cv2.imwrite(str(out / image_name), eye.image[..., ::-1], params):
        raise OSError(f"could not write {out / image_name}")
    mask_dir = out / "masks" / job.eye_id
    mask_dir.mkdir(parents=True, exist_ok=True)
    for name, mask in eye.masks.items():
        cv2.imwrite(str(mask_dir / f"{name}.png"), mask.astype(np.uint8) * 255)
    row = {"id": job.eye_id, "image": image_name, "eye": eye.eye, "label": eye.label,
           "vcdr": f"{eye.vcdr:.4f}", "oracle": f"{eye.oracle:.6f}", "seed": job.seed,
           "shortcut": int(eye.shortcut)}
    row.update({code: eye.findings[code] for code in FINDINGS})
    return row


def write_phantom_dataset(
    out: str | os.PathLike,
    n: int,
    size: int = 512,
    seed: int = 0,
    *,
    prevalence: float = 0.3,
    shortcut: float | None = None,
    splits: Sequence[float] = (0.7, 0.15, 0.15),
    image_format: str = "png",
    workers: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    **options,
) -> dict:
    """Render ``n`` eyes into ``out`` (see module docstring); returns the ``phantom.json`` dict.

    Args:
        shortcut: marker strength in the training split (None: no marker anywhere).
        workers: processes (0: one per CPU core). Output is identical for any number.
        overwrite: replace an earlier data set in ``out`` (otherwise a non-empty ``out`` is refused).
            The set is written beside ``out`` and renamed into place when complete, so a killed
            run never leaves images that do not match ``labels.csv``.
        **options: further :class:`~xmed.data.phantom.PhantomOptions` fields.
    """
    if n < 1:
        raise ConfigError("n", f"must be at least 1, got {n}")
    if image_format not in ("png", "jpg"):
        raise ConfigError("image_format", f"must be 'png' or 'jpg', got {image_format!r}")
    base = PhantomOptions.from_kwargs(prevalence=prevalence, shortcut=shortcut, **options)
    out = claim_run_folder(out, overwrite=overwrite, key="out", holds="a data set")
    with staged_folder(out) as staged:
        summary = _write(staged, base, n, size, seed, shortcut, splits, image_format, workers,
                         f"rendering phantom -> {out}" if progress else None)
    return summary


def _write(out: Path, base: PhantomOptions, n: int, size: int, seed: int, shortcut: float | None,
           splits: Sequence[float], image_format: str, workers: int, progress: str | None) -> dict:
    (out / "images").mkdir()
    (out / "masks").mkdir()
    seeds = eye_seeds(seed, n)
    causes = [draw_phantom_cause(s, prevalence=base.prevalence)[0] for s in seeds]
    split_of = assign_splits([c.label for c in causes], splits, seed)
    jobs = []
    for i, (s, split) in enumerate(zip(seeds, split_of)):
        opts = base.as_dict()
        if shortcut is not None and split != "train":
            opts["shortcut"] = 0.0   # marker present at random, independent of the label
        jobs.append(_Job(i, f"phantom_{i:06d}", s, size, opts, str(out), image_format))

    started = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    rows = []
    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc=progress, unit="eye", disable=progress is None)
    if workers == 1:
        for job in jobs:
            rows.append(_render_and_write(job))
            bar.update()
    else:
        # spawned, not forked: a child forked from a process whose thread pools (torch's OpenMP,
        # OpenCV's) have run can deadlock on a lock held by a thread that does not exist in it
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for row in pool.map(_render_and_write, jobs, chunksize=8):
                rows.append(row)
                bar.update()
    bar.close()
    for row, split in zip(rows, split_of):
        row["split"] = split
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    labels = np.array([r["label"] for r in rows])
    summary = {
        "format_version": FORMAT_VERSION,
        "generator": "xmed.data.phantom",
        "n": n, "size": size, "seed": seed, "image_format": image_format,
        "options": base.as_dict(), "shortcut_in_splits": ["train"] if shortcut is not None else [],
        "splits": dict(zip(("train", "val", "test"), map(float, splits))),
        "n_positive": int(labels.sum()),
        "split_counts": {sp: split_of.count(sp) for sp in ("train", "val", "test")},
        "oracle_auroc": _auroc(labels, np.array([float(r["oracle"]) for r in rows])),
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / "phantom.json").write_text(json.dumps(summary, indent=2))
    return summary


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """AUROC of the oracle against the labels; None when only one class is present."""
    if labels.min() == labels.max():
        return None
    import torch
    from torchmetrics.functional.classification import binary_auroc

    return float(binary_auroc(torch.as_tensor(scores), torch.as_tensor(labels)))
