"""Run folders that are never silently mixed: one run per folder, complete files or none.

Every command that writes a folder (``xmed-train``, ``xmed-eval``, ``xmed-explain``, ``xmed-data
phantom``) checks it first with :func:`claim_run_folder`: a folder that already holds results is
refused unless the user asks to resume the run in it or to overwrite it. Files and folders are
written complete or not at all (:func:`write_text_atomic`, :func:`staged_folder`), so a run killed
part-way never leaves a half-written model next to an old one (:mod:`xmed.models.checkpointing` does
the same for Lightning's checkpoints and metric history).

Example:
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> claim_run_folder(run) == run
    True
    >>> write_text_atomic(run / "metrics.json", "{}")
    >>> claim_run_folder(run)
    Traceback (most recent call last):
    ...
    xmed.errors.ConfigError: config key 'paths.output_dir': ... already holds a run (metrics.json); ...
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from xmed.errors import ConfigError, PathError

log = logging.getLogger(__name__)

#: What a run folder may hold before a run starts: Hydra's copy of the config and its log file,
#: which Hydra writes before the command runs (also all a run that failed on its config leaves).
LAUNCHER_FILES = (".hydra",)
LAUNCHER_SUFFIXES = (".log",)
#: Files that mark a folder as written by xmed; ``overwrite`` empties only such folders.
RUN_MARKERS = (".hydra", "checkpoints", "model", "metrics.json", "labels.csv", "phantom.json", "per_image.csv",
               "predictions.csv", "autoencoder", "train.log", "eval.log", "explain.log", "session.json")


def run_contents(folder: Path) -> list[str]:
    """Names in ``folder`` that belong to a run (everything but the launcher's own files)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.name not in LAUNCHER_FILES and not (p.is_file() and p.suffix in LAUNCHER_SUFFIXES))


def claim_run_folder(folder: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                     key: str = "paths.output_dir", holds: str = "a run") -> Path:
    """Make ``folder`` ready for a new run, or refuse: a folder that already holds a run is kept
    as it is unless ``resume`` (the run continues there and appends to its history) or
    ``overwrite`` (its contents are deleted first — only if it looks like an xmed output folder,
    never an arbitrary one). Raises :class:`~xmed.errors.ConfigError` naming ``key``; ``holds``
    says what the folder is for, in that message.

    Example::

        claim_run_folder("runs/a", overwrite=True)    # start afresh in runs/a
    """
    if not isinstance(overwrite, bool):  # "overwrite=maybe" must never read as true
        raise ConfigError("overwrite", f"expected true or false, got {overwrite!r}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(key, f"{folder} is a file, not a folder")
    held = run_contents(folder)
    if held and not resume:
        if not overwrite:
            shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
            advice = "resume the run in it, " if holds == "a run" else ""
            raise ConfigError(key, f"{folder} already holds {holds} ({shown}); choose a new folder, {advice}"
                                   "or pass overwrite=true to delete it first")
        if not any((folder / marker).exists() for marker in RUN_MARKERS):
            raise ConfigError(key, f"{folder} is not empty and does not look like an xmed output folder; "
                                   "overwrite=true deletes only xmed output folders: choose an empty folder")
    if not resume and folder.is_dir():
        # the earlier run's files, or the config and log of a run that never started (it failed on
        # its config): the new run's log and config must be its own
        for path in folder.iterdir():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        if held:
            log.info("overwrite=true: emptied %s", folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


#: ``ckpt_path=last``: resume from ``<run folder>/checkpoints/last.ckpt``
RESUME_LAST = "last"


def resumes_in(folder: Path, ckpt_path: Any) -> bool:
    """Whether ``ckpt_path`` continues the run in ``folder`` (``last``, or a file inside it; for a
    command whose resume key is a switch, ``xmed-study``'s ``resume``, true).

    Example:
        >>> resumes_in(Path("runs/a"), "last"), resumes_in(Path("runs/a"), "runs/b/checkpoints/last.ckpt")
        (True, False)
    """
    if not ckpt_path:
        return False
    if ckpt_path is True or str(ckpt_path) == RESUME_LAST:
        return True
    if "://" in str(ckpt_path):
        return False
    return folder.resolve() in Path(ckpt_path).resolve().parents


def command_folder(cfg: Any, resume_key: str | None = None) -> Path:
    """The folder this command (or this job of a sweep) writes into; ``cfg.paths.output_dir`` is
    set to it, so checkpoints and logs follow. Under Hydra the run-folder callback
    (:class:`xmed.cli.rundir.RunFolderCallback`) claimed it before the run started; called as a
    library (a composed config, no Hydra run) it is claimed here.

    Example::

        out_dir = command_folder(cfg, resume_key="ckpt_path")    # in xmed-train
    """
    # here: Hydra and OmegaConf load with the commands, not with `import xmed.runs` (the review server's)
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

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


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place: readers see the old
    file or the complete new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``folder`` to write into; when the block ends without error it
    replaces ``folder`` in one rename (an older ``folder`` is removed just before), otherwise it is
    deleted. A run killed inside the block leaves only a ``.<name>.*.part`` folder beside it.

    Example::

        with staged_folder(run / "model") as tmp:
            save_everything(tmp)
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.part")
    staged.mkdir()
    try:
        yield staged
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staged, folder)
    finally:
        if staged.exists():
            shutil.rmtree(staged)


def sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks (the model card lists its files with it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def eye_file_stem(eye_id: str) -> str:
    """The file name (without suffix) of an eye's outputs, distinct for distinct ids: an id that is
    already a plain file name is kept; any other (``images/a/b``, ``a b``) has its other characters
    replaced (and a very long one shortened) and a short hash of the whole id appended, so
    ``images/a_b`` and ``images/a/b`` never write the same file.

    Example:
        >>> eye_file_stem("g0001"), eye_file_stem("images/a_b"), eye_file_stem("images/a/b")
        ('g0001', 'images_a_b-e2d12e3254', 'images_a_b-469f7e75ba')
    """
    eye_id = str(eye_id)
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", eye_id)
    if (plain == eye_id and len(eye_id) <= MAX_STEM and not HASHED_STEM.fullmatch(eye_id)
            and eye_id.strip(".")):
        return eye_id
    return f"{plain[:MAX_STEM]}-{hashlib.sha256(eye_id.encode()).hexdigest()[:10]}"


#: file names stay well under the 255 bytes file systems allow, with room for a suffix
MAX_STEM = 120


#: the shape of a hashed stem; a plain id of this shape is hashed too, so it cannot meet one
HASHED_STEM = re.compile(r".*-[0-9a-f]{10}")


#: the columns of an ``xmed-explain`` run's ``per_image.csv`` that hold text, not numbers
PER_IMAGE_TEXT = ("id", "method", "quality", "status")


def read_per_image(path: str | os.PathLike) -> dict[tuple[str, str], dict[str, float]]:
    """``{(eye id, method): {column: value}}`` of an ``xmed-explain`` run's ``per_image.csv``: its
    scores and ``seconds``. An empty or non-finite cell is a value the run could not give and is
    left out; a cell that is not a number raises :class:`~xmed.errors.PathError` naming the file,
    line and column.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "per_image.csv"
        >>> _ = path.write_text("id,method,quality,energy\\neye-1,gradcam,,0.75\\neye-2,gradcam,blur,\\n")
        >>> read_per_image(path)
        {('eye-1', 'gradcam'): {'energy': 0.75}, ('eye-2', 'gradcam'): {}}
    """
    table: dict[tuple[str, str], dict[str, float]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"id", "method"} - set(reader.fieldnames or ())
            if missing:
                raise PathError(path, f"no column {sorted(missing)[0]!r} (not an xmed-explain per_image.csv)")
            for row in reader:
                values = {}
                for column, cell in row.items():
                    if column in PER_IMAGE_TEXT or cell in ("", None):
                        continue
                    try:
                        value = float(cell) if isinstance(cell, str) else math.nan
                    except ValueError:
                        raise PathError(path, f"line {reader.line_num}, column {column!r}: {cell[:40]!r} "
                                              "is not a number") from None
                    if math.isfinite(value):
                        values[str(column)] = value
                table[(str(row["id"]), str(row["method"]))] = values
    except (UnicodeDecodeError, csv.Error) as err:
        raise PathError(path, f"not a readable CSV table: {err}") from None
    return table
