"""The Hydra callback that claims a command's run folder before anything is written into it.

Hydra creates the run folder and writes ``.hydra/`` and the log file before the command runs, so
the check that the folder holds no earlier run (:func:`xmed.runs.claim_run_folder`) runs as a
Hydra callback, at the start of the run (or of the sweep), while the folder is still as the user
left it. ``overwrite=true`` empties an earlier run's folder; for ``xmed-train`` a ``ckpt_path`` in
the folder itself (or ``ckpt_path=last``) resumes the run there.

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
from omegaconf import DictConfig, OmegaConf, open_dict

from xmed.errors import XmedError
from xmed.runs import claim_run_folder

#: ``ckpt_path=last``: resume from ``<run folder>/checkpoints/last.ckpt``
RESUME_LAST = "last"


def resumes_in(folder: Path, ckpt_path: Any) -> bool:
    """Whether ``ckpt_path`` continues the run in ``folder`` (``last``, or a file inside it)."""
    if not ckpt_path:
        return False
    if str(ckpt_path) == RESUME_LAST:
        return True
    if "://" in str(ckpt_path):
        return False
    return folder.resolve() in Path(ckpt_path).resolve().parents


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


def command_folder(cfg: DictConfig, resume_key: str | None = None) -> Path:
    """The folder this command (or this job of a sweep) writes into; ``cfg.paths.output_dir`` is
    set to it, so checkpoints and logs follow. Under Hydra the callback above claimed it before the
    run started; called as a library (a composed config, no Hydra run) it is claimed here.

    Example::

        out_dir = command_folder(cfg, resume_key="ckpt_path")    # in xmed-train
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        out_dir = Path(HydraConfig.get().runtime.output_dir)
    else:
        folder = Path(cfg.paths.output_dir)
        ckpt = OmegaConf.select(cfg, resume_key) if resume_key else None
        out_dir = claim_run_folder(folder, overwrite=cfg.get("overwrite", False), resume=resumes_in(folder, ckpt))
    # a sweep's jobs share one paths.output_dir; each must write into its own job folder
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    return out_dir
