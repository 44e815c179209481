"""Running a trained model over photographs: one scoring step, through Lightning on any device.

:func:`score_batch` turns one batch into per-eye outputs — P(glaucoma), the finding
probabilities, the vCDR, the image-quality flags and a ``status`` that marks an eye whose output
is not finite (it then gets no prediction). :class:`EyeScorer` runs it as Lightning's
``predict_step`` and :class:`PredictionWriter` writes every process's rows as they come, merging
them into one ``predictions.csv`` (one row per eye, in the data set's order) when prediction ends:
``trainer=ddp`` spreads a folder over GPUs with no other change.

Example::

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False,
                        callbacks=[PredictionWriter("out", ids, threshold=model.threshold)])
    trainer.predict(EyeScorer(model), loader, return_predictions=False)
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from xmed.findings import FINDINGS, VCDR

#: The ``status`` of an eye whose model output (diagnosis, findings or vCDR) is NaN or infinite:
#: it gets no prediction and is left out of every metric.
NON_FINITE = "non-finite output"
#: The ``status`` of a file that could not be read (``on_error="skip"``).
UNREADABLE = "unreadable"

#: The columns of ``xmed-predict``'s ``predictions.csv``.
PREDICTION_COLUMNS = ("id", "eye", "prob", "referable", "vcdr", *(f"p_{c}" for c in FINDINGS), "quality", "status")


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
    :class:`~xmed.data.quality.Quality`; ``str()`` joins its flags by ``;``), ``id`` and ``eye``.

    ``intervene_with_truth`` (concept-bottleneck models) replaces the predicted findings and vCDR
    with the batch's known values (unknown ones stay predicted) before the diagnosis.
    """
    from xmed.data.quality import Quality, assess_prepared

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
    return {
        "prob": torch.sigmoid(logits).masked_fill(~finite, math.nan),
        "finding_prob": torch.sigmoid(finding_logits).masked_fill(~finite[:, None], math.nan),
        "vcdr_pred": vcdr.masked_fill(~finite, math.nan),
        "status": ["" if ok else NON_FINITE for ok in finite.tolist()],
        "quality": quality,
        "id": list(batch["meta"]["id"]),
        "eye": list(batch["meta"]["eye"]),
    }


class EyeScorer(L.LightningModule):
    """:func:`score_batch` as Lightning's ``predict_step``, for ``trainer.predict`` on any device
    and strategy; skipped files of a batch (``on_error="skip"``) are passed on as ``skipped``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.eval()

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        skipped = list(batch.get("skipped", []))
        if batch.get("size", 1) == 0:
            return {"rows": [], "skipped": skipped}
        scores = score_batch(self.model, batch)
        return {"rows": prediction_rows(scores), "skipped": skipped}


def prediction_rows(scores: Mapping[str, Any]) -> list[dict[str, str]]:
    """One ``predictions.csv`` row (without the decision) per eye of :func:`score_batch`'s output."""
    rows = []
    for i, eye_id in enumerate(scores["id"]):
        failed = bool(scores["status"][i])
        row = {"id": eye_id, "eye": scores["eye"][i], "prob": "" if failed else f"{float(scores['prob'][i]):.6f}",
               "vcdr": "" if failed else f"{float(scores['vcdr_pred'][i]):.4f}",
               "quality": str(scores["quality"][i]), "status": scores["status"][i]}
        row.update({f"p_{code}": "" if failed else f"{float(p):.6f}"
                    for code, p in zip(FINDINGS, scores["finding_prob"][i].tolist())})
        rows.append(row)
    return rows


class PredictionWriter(BasePredictionWriter):
    """Writes :class:`EyeScorer`'s rows as each batch ends (one part file per process) and, when
    prediction ends, merges them into ``<out_dir>/predictions.csv``: one row per eye of ``records``
    (``(id, image path)`` in the data set's order; a distributed sampler's padding repeats some
    eyes: each is kept once), each with its decision at ``threshold`` (``referable`` 1/0, empty when
    the eye got no prediction); a file that could not be read has ``status`` :data:`UNREADABLE` and
    the reason. Its ``summary`` counts them."""

    def __init__(self, out_dir: str | Path, records: Sequence[tuple[str, str | Path]], threshold: float):
        super().__init__(write_interval="batch")
        self.out_dir, self.threshold = Path(out_dir), float(threshold)
        self.order = [eye_id for eye_id, _ in records]
        self.id_of_file = {str(Path(path)): eye_id for eye_id, path in records}
        self.summary: dict[str, Any] = {}

    def _part(self, rank: int) -> Path:
        return self.out_dir / ".parts" / f"predictions.rank{rank}.csv"

    def on_predict_start(self, trainer, pl_module) -> None:
        part = self._part(trainer.global_rank)
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "w", newline="") as fh:
            csv.DictWriter(fh, fieldnames=PREDICTION_COLUMNS).writeheader()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        unreadable = [{"id": self.id_of_file.get(str(Path(skip["path"])), skip["path"]),
                       "status": f"{UNREADABLE}: {skip['reason']}"} for skip in prediction["skipped"]]
        with open(self._part(trainer.global_rank), "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=PREDICTION_COLUMNS, restval="")
            writer.writerows(self._decided(row) for row in prediction["rows"])
            writer.writerows(unreadable)

    def _decided(self, row: dict[str, str]) -> dict[str, str]:
        return {**row, "referable": "" if row["status"] else str(int(float(row["prob"]) >= self.threshold))}

    def on_predict_end(self, trainer, pl_module) -> None:
        from xmed.runs import write_text_atomic

        trainer.strategy.barrier("prediction_parts")
        if not trainer.is_global_zero:
            return
        rows: dict[str, dict[str, str]] = {}
        for rank in range(trainer.world_size):
            with open(self._part(rank), newline="") as fh:
                for row in csv.DictReader(fh):
                    rows.setdefault(row["id"], row)
        position = {eye_id: i for i, eye_id in enumerate(self.order)}
        ordered = sorted(rows.values(), key=lambda r: (position.get(r["id"], len(position)), r["id"]))
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=PREDICTION_COLUMNS, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(ordered)
        write_text_atomic(self.out_dir / "predictions.csv", table.getvalue())
        for rank in range(trainer.world_size):
            self._part(rank).unlink()
        self._part(0).parent.rmdir()
        status = [r["status"] for r in ordered]
        self.summary = {
            "n": len(ordered), "scored": sum(not s for s in status),
            "referable": sum(r["referable"] == "1" for r in ordered),
            "failed": [r["id"] for r in ordered if r["status"] == NON_FINITE],
            "unreadable": [r["id"] for r in ordered if r["status"].startswith(UNREADABLE)],
            "quality_flagged": [r["id"] for r in ordered if r["quality"]],
            "threshold": self.threshold,
        }
