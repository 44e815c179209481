"""The Hydra callbacks of run folders: claiming one before anything is written into it, and
summarising a sweep's jobs when they have run.

Hydra creates the run folder and writes ``.hydra/`` and the log file before the command runs, so
the check that the folder holds no earlier run (:func:`xmed.runs.claim_run_folder`) runs as a
Hydra callback, at the start of the run (or of the sweep), while the folder is still as the user
left it. ``overwrite=true`` empties an earlier run's folder; for ``xmed-train`` a ``ckpt_path`` in
the folder itself (or ``ckpt_path=last``) resumes the run there. The folder a command writes into
is :func:`xmed.runs.command_folder`.

Example (``hydra/default.yaml``)::

    callbacks:
      run_folder:
        _target_: xmed.cli.rundir.RunFolderCallback
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from xmed.errors import XmedError
from xmed.runs import claim_run_folder, resumes_in


class RunFolderCallback(Callback):
    """Refuse to start a run (or a sweep) in a folder that holds an earlier one.

    Args:
        resume_key: the config key that names a checkpoint the command resumes from (``ckpt_path``
            for ``xmed-train``); None for commands that never resume.
    """

    def __init__(self, resume_key: str | None = None):
        self.resume_key = resume_key

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, "hydra.run.dir", allow_resume=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, "hydra.sweep.dir", allow_resume=False)

    def _claim(self, config: DictConfig, dir_key: str, allow_resume: bool) -> None:
        folder = Path(str(OmegaConf.select(config, dir_key)))
        ckpt = OmegaConf.select(config, self.resume_key) if self.resume_key else None
        try:
            claim_run_folder(folder, overwrite=config.get("overwrite", False),
                             resume=allow_resume and resumes_in(folder, ckpt))
        except XmedError as err:
            # raised before the run's logging exists; Hydra would print it with its traceback
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)


#: The figures a sweep's summary shows for each job, where its metrics.json has them.
HEADLINE = ("auroc", "sens_at_95spec", "finding_auroc_mean", "vcdr_mae", "reconstruction_l1", "n")


def write_sweep_summary(folder: str | Path) -> Path | None:
    """``summary.md`` and ``summary.csv`` in a sweep's folder: one row per job (``<folder>/<N>``)
    with the overrides that differ between the jobs and the job's headline figures; None when the
    folder holds no job.

    Example::

        write_sweep_summary("logs/train/runs/2026-11-29_10-00-00")
    """
    import csv
    import json

    import yaml

    folder = Path(folder)
    jobs = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)) \
        if folder.is_dir() else []
    if not jobs:
        return None
    rows = []
    for job in jobs:
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        settings = dict(o.split("=", 1) for o in overrides or [] if "=" in o)
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        rows.append((job.name, settings, metrics))
    swept = [key for key in dict.fromkeys(k for _, settings, _ in rows for k in settings)
             if len({settings.get(key) for _, settings, _ in rows}) > 1]
    figures = [key for key in HEADLINE if any(isinstance(m.get(key), (int, float)) for _, _, m in rows)]
    header = ["job", *swept, *figures]
    table = [[name, *(settings.get(k, "") for k in swept),
              *(_figure(metrics.get(k)) for k in figures)] for name, settings, metrics in rows]
    with open(folder / "summary.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *table])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table]
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    print(f"sweep summary   {(folder / 'summary.md').resolve()}")
    return folder / "summary.md"


def _figure(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class SweepSummaryCallback(Callback):
    """Writes :func:`write_sweep_summary` when every job of a sweep (``-m``) has run."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_summary(str(OmegaConf.select(config, "hydra.sweep.dir")))
