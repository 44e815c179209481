"""Running a trained model over photographs: one scoring step, through Lightning on any device.

:func:`score_batch` turns one batch into per-eye outputs — P(glaucoma), the finding
probabilities, the vCDR, the image-quality flags (with ``unfamiliar_features`` where the model's
own feature check finds the eye unlike its training eyes), the feature distance behind that flag
and a ``status`` that marks an eye whose output is not finite (it then gets no prediction).
:class:`EyeScorer` runs it as Lightning's ``predict_step``; :class:`RecordWriter` gathers the
per-eye records of every process, so :func:`score_eyes` — the one path ``xmed-train``'s test,
``xmed-eval`` and ``xmed-predict`` take — runs on the CPU, a GPU or many (``trainer=ddp``) with no
other change.

Example::

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
    records = score_eyes(trainer, model, loader, order=[r.id for r in dataset.records], parts_dir="run/.parts")
    records[0]["prob"], records[0]["status"]      # P(glaucoma) of the first eye, "" when it was scored
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from xmed.data.quality import Quality, assess_prepared, warn_flagged
from xmed.findings import FINDINGS, VCDR
from xmed.models.feature_check import with_feature_flags

#: The ``status`` of an eye whose model output (diagnosis, findings or vCDR) is NaN or infinite:
#: it gets no prediction and is left out of every metric.
NON_FINITE = "non-finite output"
#: The ``status`` of a file that could not be read (``on_error="skip"``).
UNREADABLE = "unreadable"


def finite_outputs(out: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """B bool: which eyes of a model output have a finite diagnosis logit, finding logits and vCDR.
    The logits, not the probabilities, are checked: sigmoid(inf) = 1 would pass as a certain diagnosis.

    Example:
        >>> finite_outputs({"logits": torch.tensor([0.0, math.inf]), "finding_logits": torch.zeros(2, 10),
        ...                 "vcdr": torch.zeros(2)}).tolist()
        [True, False]
    """
    finite = torch.isfinite(out["logits"]) & torch.isfinite(out["vcdr"])
    return finite & torch.isfinite(out["finding_logits"]).flatten(1).all(dim=1)


@torch.inference_mode()
def score_batch(model: torch.nn.Module, batch: Mapping[str, Any], intervene_with_truth: bool = False) -> dict[str, Any]:
    """The per-eye outputs of ``model`` on one Sample batch (on the model's device): CPU tensors
    ``prob`` (B), ``finding_prob`` (B×10), ``vcdr_pred`` (B) — NaN for an eye whose output is not
    finite — and lists ``status`` (:data:`NON_FINITE` or empty), ``quality`` (each eye's
    :class:`~xmed.data.quality.Quality`; ``str()`` joins its flags by ``;``), ``id`` and ``eye``;
    ``feature_distance`` (B, or None for a model without a feature check): the Mahalanobis distance
    of each eye's features from the training eyes' (:mod:`xmed.models.feature_check`), and
    ``unfamiliar_features`` among its quality flags where that is above the model's threshold.

    ``intervene_with_truth`` (concept-bottleneck models) replaces the predicted findings and vCDR
    with the batch's known values (unknown ones stay predicted) before the diagnosis.
    """
    images = batch["image"]
    intervene = None
    if intervene_with_truth:
        intervene = {code: batch["findings"][:, j] for j, code in enumerate(FINDINGS)}
        intervene[VCDR] = batch["vcdr"]
    data_config = getattr(model, "data_config", None)
    quality = assess_prepared(images, data_config) if data_config is not None else [Quality()] * len(images)
    out = model(images.to(next(model.parameters()).device), intervene=intervene)
    logits, finding_logits, vcdr = (out[k].float().cpu() for k in ("logits", "finding_logits", "vcdr"))
    finite = finite_outputs(out).cpu()
    distance = out["feature_distance"].float().cpu() if "feature_distance" in out else None
    quality = with_feature_flags(quality, distance, getattr(model, "feature_check", None))
    return {
        "prob": torch.sigmoid(logits).masked_fill(~finite, math.nan),
        "finding_prob": torch.sigmoid(finding_logits).masked_fill(~finite[:, None], math.nan),
        "vcdr_pred": vcdr.masked_fill(~finite, math.nan),
        "status": ["" if ok else NON_FINITE for ok in finite.tolist()],
        "quality": quality,
        "feature_distance": distance,
        "id": list(batch["meta"]["id"]),
        "eye": list(batch["meta"]["eye"]),
    }


def _value(x: float) -> float | None:
    """A JSON-safe number: None for NaN (an unknown truth, or no prediction)."""
    x = float(x)
    return None if math.isnan(x) else x


def eye_records(scores: Mapping[str, Any], batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One plain record per eye of :func:`score_batch`'s output: ``id``, ``eye``, ``prob``,
    ``finding_prob`` (list), ``vcdr_pred``, ``feature_distance``, ``quality`` (flags joined by ``;``),
    ``status``, and the batch's truth ``label``, ``finding_label`` (list), ``vcdr_true`` — None where
    unknown or not predicted. Floats keep every bit of the model's float32 output (they round-trip
    through JSON)."""
    # one tensor -> list conversion per batch, not one per eye and value
    prob, finding_prob, vcdr_pred = (scores[k].tolist() for k in ("prob", "finding_prob", "vcdr_pred"))
    label, finding_label, vcdr_true = (batch[k].tolist() for k in ("label", "findings", "vcdr"))
    distance = scores.get("feature_distance")
    distance = [math.nan] * len(scores["id"]) if distance is None else distance.tolist()
    return [{
        "id": eye_id, "eye": scores["eye"][i], "prob": _value(prob[i]),
        "finding_prob": [_value(p) for p in finding_prob[i]], "vcdr_pred": _value(vcdr_pred[i]),
        "feature_distance": _value(distance[i]),
        "quality": str(scores["quality"][i]), "status": scores["status"][i], "label": _value(label[i]),
        "finding_label": [_value(v) for v in finding_label[i]], "vcdr_true": _value(vcdr_true[i]),
    } for i, eye_id in enumerate(scores["id"])]


class EyeScorer(L.LightningModule):
    """:func:`score_batch` as Lightning's ``predict_step``, returning ``{"records": eye_records,
    "skipped": files of the batch that could not be read (on_error="skip")}``.

    Example::

        trainer.predict(EyeScorer(model), loader, return_predictions=False)   # with a RecordWriter callback
    """

    def __init__(self, model: torch.nn.Module, intervene_with_truth: bool = False):
        super().__init__()
        self.model = model.eval()
        self.intervene_with_truth = intervene_with_truth

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        skipped = list(batch.get("skipped", []))
        if batch.get("size", 1) == 0:
            return {"records": [], "skipped": skipped}
        return {"records": eye_records(score_batch(self.model, batch, self.intervene_with_truth), batch),
                "skipped": skipped}


class RecordWriter(BasePredictionWriter):
    """Collects the records a ``predict_step`` returns (``{"records": [...], "skipped": [...]}``)
    from every process: each process appends its batches to a part file in ``parts_dir`` as they
    end, and when prediction ends process 0 merges them into :attr:`records`, in the order of
    ``order`` (the data set's ids; records of other ids follow, sorted), each ``key`` once — a
    distributed sampler's padding repeats some eyes — and deletes the parts. A skipped file becomes
    a record ``{"id", "status": "unreadable: <reason>"}``, its id looked up in ``id_of_file``
    (image path -> id) when given.

    Example::

        writer = RecordWriter("run/.parts", order=ids)
        L.Trainer(callbacks=[writer], logger=False).predict(EyeScorer(model), loader, return_predictions=False)
        writer.records     # on process 0; None on the others
    """

    def __init__(self, parts_dir: str | Path, order: Sequence[str], key: Sequence[str] = ("id",),
                 id_of_file: Mapping[str, str] | None = None):
        super().__init__(write_interval="batch")
        self.parts_dir, self.key = Path(parts_dir), tuple(key)
        self.position = {eye_id: i for i, eye_id in enumerate(order)}
        self.id_of_file = {str(Path(path)): eye_id for path, eye_id in (id_of_file or {}).items()}
        self.records: list[dict[str, Any]] | None = None

    def _part(self, rank: int) -> Path:
        return self.parts_dir / f"rank{rank}.jsonl"

    def on_predict_start(self, trainer, pl_module) -> None:
        self.records = None
        self._part(trainer.global_rank).parent.mkdir(parents=True, exist_ok=True)
        self._part(trainer.global_rank).write_text("")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        unreadable = [{"id": self.id_of_file.get(str(Path(skip["path"])), skip["path"]),
                       "status": f"{UNREADABLE}: {skip['reason']}"} for skip in prediction.get("skipped", [])]
        with open(self._part(trainer.global_rank), "a") as fh:
            for record in [*prediction["records"], *unreadable]:
                fh.write(json.dumps(record, allow_nan=False) + "\n")

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("record_parts")
        if not trainer.is_global_zero:
            return
        merged: dict[tuple, dict[str, Any]] = {}
        for rank in range(trainer.world_size):
            with open(self._part(rank)) as fh:
                for line in fh:
                    record = json.loads(line)
                    merged.setdefault(tuple(record.get(k) for k in self.key), record)
        last = len(self.position)
        self.records = sorted(merged.values(), key=lambda r: (self.position.get(r["id"], last), r["id"]))
        shutil.rmtree(self.parts_dir, ignore_errors=True)


def single_device_trainer(accelerator: str = "cpu", **kwargs: Any) -> L.Trainer:
    """A quiet one-device ``Trainer`` for scoring in full precision (no logger, checkpoints or
    progress bar): what :func:`score_eyes` and the pipeline functions use when not given one.

    Example:
        >>> single_device_trainer().num_devices
        1
    """
    options = dict(accelerator=accelerator, devices=1, precision="32-true", logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(**{**options, **kwargs})


def score_eyes(trainer: L.Trainer | None, model: torch.nn.Module, loader, order: Sequence[str], parts_dir: str | Path, *,
               intervene_with_truth: bool = False,
               id_of_file: Mapping[str, str] | None = None) -> list[dict[str, Any]] | None:
    """Every eye of ``loader`` scored by ``model`` through ``trainer.predict`` (whatever its device and
    strategy; None: :func:`single_device_trainer`): :func:`eye_records` in the order of ``order``, on process 0 (None on the others).
    The trainer's other callbacks and loggers stay as they are; ``parts_dir`` holds the processes'
    parts while it runs. A :class:`~xmed.errors.QualityWarning` names the eyes the image-quality
    gate flagged.

    Example::

        records = score_eyes(trainer, model, datamodule.test_dataloader(), test_ids, "run/.parts")
    """
    trainer = trainer or single_device_trainer()
    writer = RecordWriter(parts_dir, order, id_of_file=id_of_file)
    trainer.callbacks.append(writer)
    try:
        trainer.predict(EyeScorer(model, intervene_with_truth), dataloaders=loader, return_predictions=False)
    finally:
        trainer.callbacks.remove(writer)
    if writer.records is None and trainer.is_global_zero:  # an empty loader: Lightning skips the loop
        writer.records = []
    if writer.records:
        scored = [r for r in writer.records if "quality" in r]
        warn_flagged([Quality(tuple(r["quality"].split(";")) if r["quality"] else ()) for r in scored],
                     [r["id"] for r in scored])
    return writer.records
