"""Lightning's checkpoint and CSV-log writers, made safe to kill and to resume.

:class:`AtomicModelCheckpoint` writes every ``.ckpt`` under a temporary name and renames it, and (as
the ``last.ckpt`` writer) saves after every epoch; :class:`ResumableCSVLogger` keeps a run's metric
history when the run resumes in its folder. The shipped ``callbacks`` and ``logger`` configs use them.

Example:
    >>> AtomicModelCheckpoint(dirpath="run/checkpoints", filename="last", every_epoch=True).save_top_k
    1
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

log = logging.getLogger(__name__)


class AtomicModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose files are written to a temporary name and renamed, so a
    kill never leaves a truncated ``.ckpt``. With ``every_epoch=True`` (the ``last.ckpt`` of a run)
    it saves after every validation, whatever the monitored value did — Lightning's own
    ``save_last`` only follows a top-k save, so after a kill it could lag epochs behind.

    Example::

        AtomicModelCheckpoint(dirpath="run/checkpoints", filename="last", every_epoch=True)
    """

    def __init__(self, *args: Any, every_epoch: bool = False, **kwargs: Any):
        if every_epoch:
            kwargs.update(monitor=None, save_top_k=1, enable_version_counter=False, save_last=False)
        super().__init__(*args, **kwargs)
        self.every_epoch = every_epoch

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        # the callers have already recorded ``filepath`` as the best/last path; only the write is staged
        staged = f"{filepath}.part"
        super()._save_checkpoint(trainer, staged)
        if trainer.is_global_zero:
            os.replace(staged, filepath)
        trainer.strategy.barrier("atomic_checkpoint")
        self._last_checkpoint_saved = filepath

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode, every_epoch=self.every_epoch,
                                        filename=self.filename)


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` that keeps a run's history when the run resumes in its folder
    (Lightning's deletes the old ``metrics.csv``): rows up to the resumed step stay, rows logged
    after it (the part of the run the checkpoint does not hold) are dropped, new rows append.
    Rows are flushed every ``flush_logs_every_n_steps`` logging calls (the config flushes each).

    Example::

        logger = ResumableCSVLogger("run", name="csv", version="")
        logger.resume_from_step(1200)      # before fit(), when resuming
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._resume_step: int | None = None

    def resume_from_step(self, step: int) -> None:
        """Keep the rows of ``metrics.csv`` up to ``step`` (the checkpoint's) when the log opens."""
        self._resume_step = int(step)

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        if self._resume_step is None:
            return super().experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _HistoryKeepingWriter(self.log_dir)
        metrics_file = Path(self._experiment.metrics_file_path)
        if metrics_file.is_file():
            with open(metrics_file, newline="") as fh:
                rows = list(csv.DictReader(fh))
            kept = [row for row in rows if _row_step(row) <= self._resume_step]
            self._experiment.metrics_keys = sorted({k for row in rows for k in row})
            with open(metrics_file, "w", newline="") as fh:
                out = csv.DictWriter(fh, fieldnames=self._experiment.metrics_keys)
                out.writeheader()
                out.writerows(kept)
            log.info("resumed: kept %d of %d rows of %s (up to step %d)", len(kept), len(rows), metrics_file,
                     self._resume_step)
        return self._experiment


class _HistoryKeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, minus the deletion of an existing ``metrics.csv`` (done on resume)."""

    def _check_log_dir_exists(self) -> None:
        pass


def _row_step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return float("nan")
