"""Diagnosis, finding and vCDR metrics for glaucoma screening, with bootstrap confidence intervals.

The screening metrics follow the two public glaucoma challenges: AIROGS (AUROC, the standardized
partial AUROC over 90-100 % specificity, sensitivity at >= 95 % specificity) and JustRAIGS
(sensitivity at 95 % specificity by its own rule, the Hamming loss of the ten glaucomatous
features over referable eyes). Everything works on plain
tensors or arrays -- no Lightning, no data sets -- so another project can score its own model.

Conventions:

* ``label`` is 0 (normal) / 1 (referable glaucoma) / NaN (ungraded, left out of every diagnosis
  metric); ``finding_label`` and ``vcdr_true`` use NaN for "unknown" in the same way.
* A threshold ``t`` means "predict glaucoma when ``prob >= t``" (the ROC convention of
  scikit-learn and torchmetrics' ROC; torchmetrics' *stat-score* metrics use ``>``, so hard
  predictions are made here and handed to torchmetrics already binarised).
* A metric that is undefined on the given eyes (one class only, no eye left) is ``None``, never NaN.
* torchmetrics computes AUROC and sensitivity/specificity/accuracy in float32 whatever the input
  dtype; those values are rounded to 6 decimals (a perfect AUROC reads 1.0, not 0.99999994).
  Sensitivity at specificity, Brier, ECE, MAE, the bootstrap and the threshold rules run in
  float64.
* :data:`PREDICTION_SCORE_DIRECTIONS` says, Quantus style, whether higher or lower is better for
  each metric.

Example:
    >>> from xmed.metrics import Predictions, evaluate_predictions
    >>> val = Predictions(prob=[0.1, 0.4, 0.35, 0.8], label=[0, 0, 1, 1])
    >>> out = evaluate_predictions(val, val, n_bootstrap=0)
    >>> out["auroc"], out["threshold"]
    (0.75, 0.8)
"""

from __future__ import annotations

# torchmetrics is imported inside the functions that use it: `import torchmetrics` loads its audio
# and image packages (and torchvision's model zoo), seconds that `import xmed.metrics` need not cost.
import logging
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from xmed.checks import int_at_least
from xmed.decision import is_referable
from xmed.errors import ConfigError
from xmed.findings import FINDINGS

__all__ = [
    "ArrayLike", "ThresholdRule", "THRESHOLD_RULES", "PREDICTION_SCORE_DIRECTIONS", "CI_METRICS",
    "Predictions", "BootstrapCI",
    "SensAtSpecRule", "SENS_AT_SPEC_RULES",
    "auroc", "sens_at_spec", "choose_threshold", "operating_point", "brier", "calibration_bins", "ece",
    "finding_auroc", "finding_hamming", "vcdr_mae",
    "resample_indices", "bootstrap_ci", "bootstrap_predictions", "evaluate_predictions",
]

log = logging.getLogger(__name__)

ArrayLike = Union[Tensor, np.ndarray, Sequence[float]]
ThresholdRule = Literal["youden", "spec95"]
THRESHOLD_RULES: tuple[str, ...] = ("youden", "spec95")
SensAtSpecRule = Literal["airogs", "justraigs"]
SENS_AT_SPEC_RULES: tuple[str, ...] = ("airogs", "justraigs")

#: Whether a higher or a lower value is better, per metric key of :func:`evaluate_predictions`.
PREDICTION_SCORE_DIRECTIONS: dict[str, Literal["higher", "lower"]] = {
    "auroc": "higher",
    "pauroc_90": "higher",
    "sens_at_95spec": "higher",
    "sens_at_95spec_justraigs": "higher",
    "sensitivity": "higher",
    "specificity": "higher",
    "accuracy": "higher",
    "brier": "lower",
    "ece": "lower",
    "finding_auroc": "higher",
    "finding_auroc_mean": "higher",
    "finding_hamming": "lower",
    "vcdr_mae": "lower",
}

#: The metrics that get a bootstrap confidence interval in :func:`evaluate_predictions`.
CI_METRICS: tuple[str, ...] = (
    "auroc", "pauroc_90", "sens_at_95spec", "sens_at_95spec_justraigs", "sensitivity", "specificity", "accuracy",
    "brier", "ece", "finding_auroc_mean", "finding_hamming", "vcdr_mae",
)

_MAX_FPR = 0.1          # AIROGS' partial AUROC: 90-100 % specificity
_SPEC = 0.95            # the operating point of both challenges
_ECE_BINS = 15
_FLOAT32_DECIMALS = 6
_CHUNK_ELEMENTS = 1_000_000  # resamples x eyes held at once by the vectorised bootstrap


# --------------------------------------------------------------------------------------------
# input handling


def _tensor(x: ArrayLike) -> Tensor:
    """float64 on the CPU; Python lists go straight to float64 (not through float32)."""
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _vector(x: ArrayLike, name: str) -> Tensor:
    t = _tensor(x)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of B values, got shape {tuple(t.shape)}")
    return t


def _matrix(x: ArrayLike, name: str, columns: int) -> Tensor:
    t = _tensor(x)
    if t.ndim != 2 or t.shape[1] != columns:
        raise ValueError(f"{name}: expected shape B x {columns} (one column per finding in "
                         f"xmed.FINDINGS), got {tuple(t.shape)}")
    return t


def _check_prob(p: Tensor, name: str) -> None:
    if not bool(torch.isfinite(p).all()) or bool(((p < 0) | (p > 1)).any()):
        raise ValueError(f"{name}: probabilities must be finite and in [0, 1] (got min "
                         f"{float(p.nan_to_num(0).min()):.4g}, max {float(p.nan_to_num(0).max()):.4g}"
                         f"{', and NaN' if bool(p.isnan().any()) else ''}); pass P(glaucoma), not logits")


def _check_binary(y: Tensor, name: str) -> None:
    known = y[~y.isnan()]
    if bool(((known != 0) & (known != 1)).any()):
        bad = known[(known != 0) & (known != 1)][:3].tolist()
        raise ValueError(f"{name}: labels must be 0, 1 or NaN (unknown), got e.g. {bad}")


def labelled(prob: ArrayLike, label: ArrayLike, name: str = "prob") -> tuple[Tensor, Tensor]:
    """Probabilities and integer targets of the eyes whose label is known (NaN: unknown).

    Example:
        >>> p, y = labelled([0.2, 0.9, 0.4], [0, float("nan"), 1]); p.tolist(), y.tolist()
        ([0.2, 0.4], [0, 1])
    """
    p, y = _vector(prob, name), _vector(label, "label")
    if p.shape != y.shape:
        raise ValueError(f"{name} has {p.numel()} values but label has {y.numel()}")
    _check_prob(p, name)
    _check_binary(y, "label")
    known = ~y.isnan()
    return p[known], y[known].long()


def _both_classes(target: Tensor) -> bool:
    return target.numel() > 0 and 0 < int(target.sum()) < target.numel()


def _float(x: Tensor | float | None) -> float | None:
    """A JSON-safe float: ``None`` for undefined (None, NaN, inf).

    torchmetrics computes ROC curves and stat scores in float32 whatever the input dtype; such
    values are rounded to 6 decimals (float32 holds ~7 digits), so that a perfect AUROC reads 1.0
    and not 0.99999994.
    """
    if x is None:
        return None
    v = float(x)
    if not math.isfinite(v):
        return None
    return round(v, _FLOAT32_DECIMALS) if isinstance(x, Tensor) and x.dtype == torch.float32 else v


# --------------------------------------------------------------------------------------------
# the predictions of one split


@dataclass
class Predictions:
    """What a model said about the eyes of one split, and what is known about them.

    Every field is converted to a float64 CPU tensor. Only ``prob`` and ``label`` are required;
    a model without a finding or vCDR head leaves the others ``None`` (their metrics are ``None``).

    Args:
        prob: ``B`` values, P(referable glaucoma), in [0, 1].
        label: ``B`` values, 0 / 1, NaN = ungraded (left out of the diagnosis metrics).
        finding_prob: ``B x 10`` probabilities over :data:`xmed.FINDINGS`.
        finding_label: ``B x 10`` of 0 / 1, NaN = unknown.
        vcdr_pred: ``B`` predicted vertical cup-to-disc ratios.
        vcdr_true: ``B`` true vCDRs, NaN = unknown.

    Example:
        >>> p = Predictions(prob=[0.2, 0.9], label=[0, float("nan")])
        >>> p.prob.dtype, len(p)
        (torch.float64, 2)
    """

    prob: Tensor
    label: Tensor
    finding_prob: Tensor | None = None
    finding_label: Tensor | None = None
    vcdr_pred: Tensor | None = None
    vcdr_true: Tensor | None = None

    def __post_init__(self) -> None:
        self.prob = _vector(self.prob, "prob")
        self.label = _vector(self.label, "label")
        n = self.prob.numel()
        if self.label.numel() != n:
            raise ValueError(f"prob has {n} values but label has {self.label.numel()}")
        _check_prob(self.prob, "prob")
        _check_binary(self.label, "label")
        if (self.finding_prob is None) != (self.finding_label is None):
            raise ValueError("finding_prob and finding_label must be given together")
        if self.finding_prob is not None:
            self.finding_prob = _matrix(self.finding_prob, "finding_prob", len(FINDINGS))
            self.finding_label = _matrix(self.finding_label, "finding_label", len(FINDINGS))
            for name in ("finding_prob", "finding_label"):
                if getattr(self, name).shape[0] != n:
                    raise ValueError(f"{name} has {getattr(self, name).shape[0]} rows, prob has {n}")
            _check_prob(self.finding_prob, "finding_prob")
            _check_binary(self.finding_label, "finding_label")
        if (self.vcdr_pred is None) != (self.vcdr_true is None):
            raise ValueError("vcdr_pred and vcdr_true must be given together")
        if self.vcdr_pred is not None:
            self.vcdr_pred = _vector(self.vcdr_pred, "vcdr_pred")
            self.vcdr_true = _vector(self.vcdr_true, "vcdr_true")
            for name in ("vcdr_pred", "vcdr_true"):
                if getattr(self, name).numel() != n:
                    raise ValueError(f"{name} has {getattr(self, name).numel()} values, prob has {n}")
            if not bool(torch.isfinite(self.vcdr_pred[~self.vcdr_true.isnan()]).all()):
                raise ValueError("vcdr_pred: must be finite wherever vcdr_true is known")

    def __len__(self) -> int:
        return self.prob.numel()


# --------------------------------------------------------------------------------------------
# diagnosis metrics


def auroc(prob: ArrayLike, label: ArrayLike, max_fpr: float | None = None) -> float | None:
    """Area under the ROC curve (torchmetrics ``binary_auroc``) over the labelled eyes.

    With ``max_fpr`` it is the standardized partial AUROC (McClish correction), equal to
    scikit-learn's ``roc_auc_score(max_fpr=...)``; ``max_fpr=0.1`` is AIROGS' pAUROC (90-100 %
    specificity), scaled so that 0.5 is chance and 1 is perfect.

    Args:
        prob: ``B`` probabilities of glaucoma.
        label: ``B`` labels 0 / 1 / NaN (NaN eyes are left out).
        max_fpr: upper end of the false-positive-rate range, or ``None`` for the full AUROC.

    Returns:
        The AUROC, or ``None`` when the labelled eyes hold one class only.

    Example:
        >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
    """
    p, y = labelled(prob, label)
    if not _both_classes(y):
        return None
    from torchmetrics.functional.classification import binary_auroc

    return _float(binary_auroc(p, y, max_fpr=max_fpr))


def sens_at_spec(prob: ArrayLike, label: ArrayLike, spec: float = _SPEC,
                 rule: SensAtSpecRule = "airogs") -> float | None:
    """Sensitivity at a specificity of ``spec``, by the rule of one of the glaucoma challenges.

    Both rules read scikit-learn's ``roc_curve`` (one point per distinct score, ties collapse)
    and give exactly the challenges' evaluation code's values (unrounded), computed here from
    exact TP/FP counts:

    * ``"airogs"`` (AIROGS): the highest sensitivity among the ROC points with specificity >=
      ``spec`` (FPR <= ``1 - spec``), on the full curve (``drop_intermediate=False``). This is
      the ``sens_at_95spec`` of :func:`evaluate_predictions`.
    * ``"justraigs"`` (JustRAIGS): the sensitivity at the *first* point, from the strict end,
      whose FPR reaches ``1 - spec`` (``tpr[argmax(fpr >= 1 - spec)]``) on the curve with
      scikit-learn's default ``drop_intermediate=True``; so the specificity there is at most
      ``spec``, and with tied scores the point can lie well past it. The
      ``sens_at_95spec_justraigs`` of :func:`evaluate_predictions`.

    Args:
        prob: ``B`` probabilities of glaucoma.
        label: ``B`` labels 0 / 1 / NaN (NaN eyes are left out).
        spec: the specificity of the operating point.
        rule: ``"airogs"`` or ``"justraigs"``.

    Returns:
        The sensitivity, or ``None`` when the labelled eyes hold one class only.

    Raises:
        ConfigError: for an unknown rule.

    Example:
        >>> prob = [0.9, 0.8, 0.8, 0.8, 0.3] + [0.8, 0.8] + [0.1] * 28   # 5 glaucoma, 30 normal eyes
        >>> label = [1] * 5 + [0] * 30
        >>> sens_at_spec(prob, label), sens_at_spec(prob, label, rule="justraigs")
        (0.2, 0.8)
    """
    if rule not in SENS_AT_SPEC_RULES:
        raise ConfigError("rule", f"unknown sensitivity-at-specificity rule {rule!r}; "
                                  f"known: {', '.join(SENS_AT_SPEC_RULES)}")
    p, y = labelled(prob, label)
    if not _both_classes(y):
        return None
    _, tp, fp, n_pos, n_neg = _exact_roc(p, y)
    tpr, fpr = tp.double() / n_pos, fp.double() / n_neg
    if rule == "airogs":
        # AIROGS' test, float for float: specificity >= spec - machine epsilon
        allowed = (1 - fpr) >= spec - sys.float_info.epsilon
        return float(tpr[allowed].max())
    kept = torch.cat([torch.tensor([True]), _roc_points_kept(tp[1:], fp[1:])])
    reached = kept & (fpr >= 1 - spec)
    return float(tpr[int(torch.nonzero(reached)[0])])


def _roc_points_kept(tp: Tensor, fp: Tensor) -> Tensor:
    """The points of one ROC curve (one per distinct score, descending) that scikit-learn's
    ``roc_curve(drop_intermediate=True)`` keeps: the ends, and every point that is not the
    midpoint of its two neighbours (zero second difference of both counts)."""
    keep = torch.ones_like(tp, dtype=torch.bool)
    if tp.numel() > 2:
        bend = (tp[2:] - 2 * tp[1:-1] + tp[:-2] != 0) | (fp[2:] - 2 * fp[1:-1] + fp[:-2] != 0)
        keep[1:-1] = bend
    return keep


def _exact_roc(p: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, int, int]:
    """Thresholds (descending, first one rejecting every eye) with integer TP and FP counts."""
    scores = torch.unique(p).flip(0)                                   # distinct, descending
    top = 1.0 if float(scores[0]) < 1.0 else math.nextafter(1.0, 2.0)  # "reject all": above every score
    thresholds = torch.cat([torch.tensor([top], dtype=torch.float64), scores])
    pos, neg = torch.sort(p[y == 1]).values, torch.sort(p[y == 0]).values
    tp = pos.numel() - torch.searchsorted(pos, thresholds, right=False)   # eyes with p >= t
    fp = neg.numel() - torch.searchsorted(neg, thresholds, right=False)
    return thresholds, tp, fp, pos.numel(), neg.numel()


def choose_threshold(prob: ArrayLike, label: ArrayLike, rule: ThresholdRule = "youden") -> float:
    """Choose the decision threshold on a validation split.

    Hand-written because torchmetrics has no threshold rules; it counts TP/FP exactly (integers)
    so that ties and the 95 % boundary are decided exactly rather than in float32.

    The candidates are the distinct scores of the labelled eyes (predict glaucoma when
    ``prob >= t``) plus one threshold above every score (predict none).

    * ``"youden"``: maximises Youden's J = sensitivity + specificity - 1.
    * ``"spec95"``: the largest sensitivity among thresholds with specificity >= 95 % (FPR <= 5 %),
      i.e. the operating point of :func:`sens_at_spec`.

    Ties (several thresholds reach the best value) go to the **highest** threshold, the most
    specific of them: among equal sensitivities that is the one with the fewest false positives.

    Args:
        prob: ``B`` validation probabilities of glaucoma.
        label: ``B`` validation labels 0 / 1 / NaN (NaN eyes are left out).
        rule: ``"youden"`` or ``"spec95"``.

    Returns:
        The threshold, one of the validation scores (or the "predict none" threshold).

    Raises:
        ConfigError: for an unknown rule.
        ValueError: when the labelled validation eyes hold one class only.

    Example:
        >>> choose_threshold([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], "youden")
        0.8
    """
    if rule not in THRESHOLD_RULES:
        raise ConfigError("threshold_rule", f"unknown rule {rule!r}; known: {', '.join(THRESHOLD_RULES)}")
    p, y = labelled(prob, label)
    if not _both_classes(y):
        raise ValueError(f"cannot choose a threshold: the {y.numel()} labelled validation eyes "
                         "hold one class only")
    thresholds, tp, fp, n_pos, n_neg = _exact_roc(p, y)
    if rule == "youden":
        score = tp * n_neg - fp * n_pos          # J * n_pos * n_neg, an exact integer
    else:
        allowed = fp * 20 <= n_neg               # FPR <= 0.05 without rounding
        score = torch.where(allowed, tp, torch.full_like(tp, -1))
    best = int(torch.nonzero(score == score.max())[0])   # first = highest threshold among ties
    return float(thresholds[best])


def operating_point(prob: ArrayLike, label: ArrayLike, threshold: float) -> dict[str, float | None]:
    """Sensitivity, specificity and accuracy when glaucoma is predicted for ``prob >= threshold``.

    The hard predictions are made here (torchmetrics binarises with ``>``) and scored with
    torchmetrics ``binary_recall`` / ``binary_specificity`` / ``binary_accuracy``.

    Args:
        prob: ``B`` probabilities of glaucoma.
        label: ``B`` labels 0 / 1 / NaN (NaN eyes are left out).
        threshold: the decision threshold (from :func:`choose_threshold` on another split).

    Returns:
        ``{"sensitivity", "specificity", "accuracy"}``; each ``None`` when undefined (no positive,
        no negative, no labelled eye).

    Example:
        >>> operating_point([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.4)
        {'sensitivity': 0.5, 'specificity': 0.5, 'accuracy': 0.5}
    """
    from torchmetrics.functional.classification import binary_accuracy, binary_recall, binary_specificity

    p, y = labelled(prob, label)
    pred = is_referable(p, threshold).long()
    n_pos = int(y.sum())
    return {
        "sensitivity": _float(binary_recall(pred, y)) if n_pos > 0 else None,
        "specificity": _float(binary_specificity(pred, y)) if n_pos < y.numel() else None,
        "accuracy": _float(binary_accuracy(pred, y)) if y.numel() > 0 else None,
    }


def brier(prob: ArrayLike, label: ArrayLike) -> float | None:
    """Brier score, the mean squared error of the probabilities (torchmetrics ``mean_squared_error``).

    Args:
        prob: ``B`` probabilities of glaucoma.
        label: ``B`` labels 0 / 1 / NaN (NaN eyes are left out).

    Returns:
        The Brier score (lower is better), ``None`` without labelled eyes.

    Example:
        >>> brier([0.0, 0.5], [0, 1])
        0.125
    """
    from torchmetrics.functional import mean_squared_error

    p, y = labelled(prob, label)
    return _float(mean_squared_error(p, y.double())) if y.numel() else None


def calibration_bins(prob: Tensor, n_bins: int = _ECE_BINS) -> Tensor:
    """The equal-width bin of each probability, of :func:`ece` and of the reliability diagram
    (:func:`xmed.viz.plots.plot_calibration`): ``[0, 1/n]``, then ``(k/n, (k+1)/n]`` (scikit-learn's
    edges), so a probability on an edge joins the lower bin and p = 1.0 the last one.

    Example:
        >>> calibration_bins(torch.tensor([0.0, 0.25, 0.3, 1.0], dtype=torch.float64), 4).tolist()
        [0, 0, 1, 3]
    """
    edges = torch.from_numpy(np.linspace(0.0, 1.0, n_bins + 1))
    return torch.bucketize(prob, edges[1:-1], right=False)


def ece(prob: ArrayLike, label: ArrayLike, n_bins: int = _ECE_BINS) -> float | None:
    """Expected calibration error with ``n_bins`` equal-width bins (l1), as in Guo et al. 2017.

    ECE = sum over bins of (eyes in bin / eyes) * |fraction positive - mean probability|. The bins
    are those of Guo et al. and of scikit-learn's ``calibration_curve``: ``(k/n, (k+1)/n]``, the
    first one ``[0, 1/n]``, so a probability on an edge joins the lower bin and p = 1.0 joins the
    last bin (torchmetrics' ``binary_calibration_error`` instead gives p = 1.0 a bin of its own).

    Args:
        prob: ``B`` probabilities of glaucoma.
        label: ``B`` labels 0 / 1 / NaN (NaN eyes are left out).
        n_bins: number of bins over [0, 1].

    Returns:
        The ECE (lower is better), ``None`` without labelled eyes.

    Example:
        >>> round(ece([0.05, 0.3, 0.32, 0.9], [0, 0, 1, 1]), 4)
        0.1325
        >>> round(ece([1.0, 0.95], [0, 1]), 4)                 # one bin: |0.5 - 0.975|
        0.475
    """
    int_at_least("n_bins", n_bins, 1)
    p, y = labelled(prob, label)
    if not y.numel():
        return None
    bins = calibration_bins(p, n_bins)
    count = torch.bincount(bins, minlength=n_bins).double()
    gap = (torch.bincount(bins, y.double(), minlength=n_bins)
           - torch.bincount(bins, p, minlength=n_bins)).abs()
    return float(gap.sum() / count.sum())


# --------------------------------------------------------------------------------------------
# finding and vCDR metrics


def finding_auroc(finding_prob: ArrayLike, finding_label: ArrayLike) -> dict[str, float | None]:
    """AUROC of each finding over the eyes where that finding is known.

    Args:
        finding_prob: ``B x 10`` probabilities over :data:`xmed.FINDINGS`.
        finding_label: ``B x 10`` of 0 / 1 / NaN (unknown).

    Returns:
        Finding code -> AUROC, ``None`` where the known eyes hold one class only.

    Example:
        >>> import torch
        >>> y = torch.tensor([[0.], [1.], [float("nan")]]).repeat(1, 10)
        >>> finding_auroc(torch.tensor([[0.2], [0.7], [0.5]]).repeat(1, 10), y)["DH"]
        1.0
    """
    fp = _matrix(finding_prob, "finding_prob", len(FINDINGS))
    fl = _matrix(finding_label, "finding_label", len(FINDINGS))
    return {code: auroc(fp[:, k], fl[:, k]) for k, code in enumerate(FINDINGS)}


def _hamming_per_eye(fp: Tensor, fl: Tensor, label: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Per-eye mismatch fraction over known features, and which eyes count (referable, >= 1 known)."""
    known = ~fl.isnan()
    n_known = known.sum(1)
    eligible = (label == 1) & (n_known > 0)
    wrong = ((fp >= threshold).double() != fl.nan_to_num(0)) & known
    per_eye = wrong.sum(1).double() / n_known.clamp(min=1)
    return per_eye, eligible


def finding_hamming(finding_prob: ArrayLike, finding_label: ArrayLike, label: ArrayLike,
                    threshold: float = 0.5) -> float | None:
    """JustRAIGS' Hamming loss of the glaucomatous features over referable eyes.

    Hand-written because torchmetrics' Hamming distance averages over all entries (or per label),
    not per eye over that eye's known features. Over the eyes with ``label == 1`` the features are
    binarised (``finding_prob >= threshold``) and compared with the *known* features only; each
    eye scores its fraction of mismatches among its known features, and the scores are averaged
    over the eyes that have at least one known feature.

    Args:
        finding_prob: ``B x 10`` probabilities over :data:`xmed.FINDINGS`.
        finding_label: ``B x 10`` of 0 / 1 / NaN (unknown).
        label: ``B`` diagnosis labels 0 / 1 / NaN; only the eyes with 1 count.
        threshold: binarisation threshold of the predicted features.

    Returns:
        The mean per-eye Hamming loss (lower is better), ``None`` when no eye counts.

    Example:
        >>> import torch
        >>> nan = float("nan")
        >>> fl = torch.full((2, 10), nan); fl[0, :2] = torch.tensor([1., 0.]); fl[1, 0] = 1.
        >>> finding_hamming(torch.full((2, 10), 0.9), fl, [1, 1])
        0.25
    """
    fp = _matrix(finding_prob, "finding_prob", len(FINDINGS))
    fl = _matrix(finding_label, "finding_label", len(FINDINGS))
    y = _vector(label, "label")
    if not (fp.shape[0] == fl.shape[0] == y.numel()):
        raise ValueError(f"finding_prob, finding_label and label disagree on B: "
                         f"{fp.shape[0]}, {fl.shape[0]}, {y.numel()}")
    _check_prob(fp, "finding_prob")
    _check_binary(fl, "finding_label")
    per_eye, eligible = _hamming_per_eye(fp, fl, y, threshold)
    return _float(per_eye[eligible].mean()) if bool(eligible.any()) else None


def vcdr_mae(vcdr_pred: ArrayLike, vcdr_true: ArrayLike) -> float | None:
    """Mean absolute error of the vCDR (torchmetrics ``mean_absolute_error``) over known eyes.

    Args:
        vcdr_pred: ``B`` predicted vCDRs.
        vcdr_true: ``B`` true vCDRs, NaN = unknown (left out).

    Returns:
        The MAE (lower is better), ``None`` when no vCDR is known.

    Example:
        >>> vcdr_mae([0.5, 0.7, 0.25], [0.25, float("nan"), 0.5])
        0.25
    """
    pred, true = _vector(vcdr_pred, "vcdr_pred"), _vector(vcdr_true, "vcdr_true")
    if pred.shape != true.shape:
        raise ValueError(f"vcdr_pred has {pred.numel()} values but vcdr_true has {true.numel()}")
    known = ~true.isnan()
    if not bool(known.any()):
        return None
    from torchmetrics.functional import mean_absolute_error

    return _float(mean_absolute_error(pred[known], true[known]))


# --------------------------------------------------------------------------------------------
# bootstrap


@dataclass
class BootstrapCI:
    """A percentile bootstrap interval and how many resamples it rests on.

    Attributes:
        low, high: the interval, ``None`` when no resample gave a defined value.
        n_resamples: resamples drawn.
        n_dropped: resamples where the metric was undefined (e.g. one class only) and dropped.
    """

    low: float | None
    high: float | None
    n_resamples: int
    n_dropped: int

    def as_list(self) -> list[float] | None:
        """``[low, high]``, or ``None`` when undefined (JSON-safe)."""
        return None if self.low is None else [self.low, self.high]


def _draw(g: torch.Generator, n: int, rows: int) -> Tensor:
    return torch.stack([torch.randint(n, (n,), generator=g) for _ in range(rows)])


def resample_indices(n: int, n_bootstrap: int, seed: int) -> Tensor:
    """The ``n_bootstrap x n`` eye indices of the bootstrap resamples drawn with ``seed``.

    Every row is drawn in turn from one ``torch.Generator`` seeded with ``seed``, so the resamples
    do not depend on how they are chunked, and :func:`bootstrap_ci` and
    :func:`bootstrap_predictions` see the same resamples for the same seed.

    Example:
        >>> resample_indices(5, 3, seed=0).shape
        torch.Size([3, 5])
    """
    if n_bootstrap == 0:
        return torch.empty(0, n, dtype=torch.long)
    return _draw(torch.Generator().manual_seed(seed), n, n_bootstrap)


def percentile_interval(values: Tensor, level: float) -> BootstrapCI:
    """The percentile interval at ``level`` of a metric's resampled values (NaN ones dropped and
    counted).

    Example:
        >>> percentile_interval(torch.tensor([1.0, 2.0, float("nan"), 3.0]), 0.5)
        BootstrapCI(low=1.5, high=2.5, n_resamples=4, n_dropped=1)
    """
    valid = values[torch.isfinite(values)]
    dropped = values.numel() - valid.numel()
    if valid.numel() == 0:
        return BootstrapCI(None, None, values.numel(), dropped)
    alpha = (1 - level) / 2
    low, high = torch.quantile(valid, torch.tensor([alpha, 1 - alpha], dtype=valid.dtype)).tolist()
    return BootstrapCI(low, high, values.numel(), dropped)


def bootstrap_ci(metric: Callable[..., float | None], *arrays: ArrayLike | None,
                 n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> BootstrapCI:
    """Percentile bootstrap interval of any metric, resampling eyes (rows) with replacement.

    The generic, one-call-per-resample version (hand-written: torchmetrics' ``BootStrapper`` wraps
    stateful metric objects and draws Poisson/multinomial weights without a seed argument).
    :func:`evaluate_predictions` uses the vectorised :func:`bootstrap_predictions`, which gives the
    same intervals for the same seed.

    Args:
        metric: called as ``metric(*resampled_arrays)``; ``None`` or NaN marks an undefined
            resample (e.g. one class only), which is dropped and counted.
        *arrays: arrays with the eyes along dim 0 (``None`` passes through).
        n_bootstrap: number of resamples.
        seed: seed of the resampling.
        level: coverage of the interval.

    Returns:
        A :class:`BootstrapCI`.

    Example:
        >>> ci = bootstrap_ci(auroc, [0.1, 0.4, 0.35, 0.8, 0.7], [0, 0, 1, 1, 1], n_bootstrap=50)
        >>> ci.n_resamples, ci.low <= ci.high
        (50, True)
    """
    tensors = [None if a is None else torch.as_tensor(a).detach().cpu() for a in arrays]
    sizes = {t.shape[0] for t in tensors if t is not None}
    if len(sizes) != 1:
        raise ValueError(f"bootstrap_ci: the arrays must share their first dimension, got {sizes}")
    (n,) = sizes
    values = torch.full((n_bootstrap,), math.nan, dtype=torch.float64)
    for r, idx in enumerate(resample_indices(n, n_bootstrap, seed)):
        v = metric(*[None if t is None else t[idx] for t in tensors])
        values[r] = math.nan if v is None else float(v)
    return percentile_interval(values, level)


def _weighted_roc(score: Tensor, target: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """ROC counts of ``w.shape[0]`` weighted copies of one data set (weights = resample counts).

    A resample with replacement is the original eyes weighted by how often each was drawn, so
    one sort serves every resample. Returns the true- and false-positive counts at each distinct
    score, descending (``R x (distinct scores + 1)``, starting at 0), and the numbers of positive
    and negative eyes per resample. Counts are integers held exactly in float64.
    """
    order = torch.argsort(score, descending=True, stable=True)
    s, t = score[order], target[order].double()
    ws = w[:, order]
    ends = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), torch.tensor([s.numel() - 1])])
    tp = torch.cumsum(ws * t, 1)[:, ends]
    fp = torch.cumsum(ws, 1)[:, ends] - tp
    zero = torch.zeros(w.shape[0], 1, dtype=w.dtype)
    tp, fp = torch.cat([zero, tp], 1), torch.cat([zero, fp], 1)
    return tp, fp, tp[:, -1], fp[:, -1]


def _auroc_from_counts(tp: Tensor, fp: Tensor, n_pos: Tensor, n_neg: Tensor) -> Tensor:
    """Trapezoidal AUROC of batched ROC counts; NaN for a resample with one class."""
    twice_area = ((fp[:, 1:] - fp[:, :-1]) * (tp[:, 1:] + tp[:, :-1])).sum(1)
    defined = (n_pos > 0) & (n_neg > 0)
    return torch.where(defined, twice_area / (2 * n_pos * n_neg).clamp(min=1), math.nan)


def _roc_metrics(tp: Tensor, fp: Tensor, n_pos: Tensor, n_neg: Tensor, max_fpr: float,
                 spec: float) -> tuple[Tensor, Tensor, Tensor]:
    """AUROC, McClish-standardized partial AUROC and sensitivity at ``spec`` of batched ROC counts."""
    defined = (n_pos > 0) & (n_neg > 0)
    full = _auroc_from_counts(tp, fp, n_pos, n_neg)
    tpr = tp / n_pos.clamp(min=1)[:, None]
    fpr = fp / n_neg.clamp(min=1)[:, None]
    # area left of max_fpr, segment by segment, interpolating the segment that crosses it
    # (the same interpolation as scikit-learn and torchmetrics)
    x0, x1, y0, y1 = fpr[:, :-1], fpr[:, 1:], tpr[:, :-1], tpr[:, 1:]
    right = x1.clamp(max=max_fpr)
    width = (right - x0).clamp(min=0)
    dx = x1 - x0
    y_right = torch.where(dx > 0, y0 + (y1 - y0) * (right - x0) / torch.where(dx > 0, dx, 1.0), y1)
    partial = (width * (y0 + y_right)).sum(1) / 2
    min_area = 0.5 * max_fpr ** 2
    pauroc = 0.5 * (1 + (partial - min_area) / (max_fpr - min_area))
    # FPR <= 1 - spec decided on counts (the 1e-9 absorbs 1 - 0.95 != 0.05 in binary)
    allowed = fp <= (1 - spec) * n_neg[:, None] + 1e-9
    sens = torch.where(allowed, tpr, -1.0).max(1).values
    return full, torch.where(defined, pauroc, math.nan), torch.where(defined, sens, math.nan)


def _justraigs_sens(tp: Tensor, fp: Tensor, n_pos: Tensor, n_neg: Tensor, spec: float) -> Tensor:
    """JustRAIGS' sensitivity at ``spec`` (:func:`sens_at_spec` with ``rule="justraigs"``) of batched
    ROC counts; NaN for a resample with one class.

    A resample's own curve has a point only at the scores its eyes hold: a score no eye of the
    resample holds repeats the point before it, and is left out before scikit-learn's
    ``drop_intermediate`` rule keeps the ends and every point that is not the midpoint of its two
    neighbours (the origin, index 0, is added after that rule, as scikit-learn does).
    """
    r, k = tp.shape
    position = torch.arange(k).expand(r, k)
    held = torch.zeros_like(tp, dtype=torch.bool)
    held[:, 1:] = (tp[:, 1:] + fp[:, 1:]) > (tp[:, :-1] + fp[:, :-1])
    last_held = torch.where(held, position, -1).cummax(1).values
    next_held = torch.where(held, position, k).flip(1).cummin(1).values.flip(1)
    before = torch.cat([torch.full((r, 1), -1), last_held[:, :-1]], 1)    # the held point before each
    after = torch.cat([next_held[:, 1:], torch.full((r, 1), k)], 1)       # the held point after each
    b, a = before.clamp(min=0), after.clamp(max=k - 1)
    bends = ((tp.gather(1, a) - 2 * tp + tp.gather(1, b)) != 0) | ((fp.gather(1, a) - 2 * fp + fp.gather(1, b)) != 0)
    kept = held & ((before < 0) | (after >= k) | bends)
    tpr = tp / n_pos.clamp(min=1)[:, None]
    fpr = fp / n_neg.clamp(min=1)[:, None]
    first = (kept & (fpr >= 1 - spec)).int().argmax(1)                   # the first point reaching it
    sens = tpr.gather(1, first[:, None])[:, 0]
    return torch.where((n_pos > 0) & (n_neg > 0), sens, math.nan)


def _weighted_mean(w: Tensor, values: Tensor) -> Tensor:
    total = w.sum(1)
    return torch.where(total > 0, (w @ values) / total.clamp(min=1e-300), math.nan)


def _bootstrap_chunk(test: Predictions, threshold: float | None, w: Tensor) -> dict[str, Tensor]:
    """Every CI metric on the resamples weighted by ``w`` (``R x B`` draw counts)."""
    r = w.shape[0]
    out = {k: torch.full((r,), math.nan, dtype=torch.float64) for k in CI_METRICS}
    labelled = ~test.label.isnan()
    p, y, wl = test.prob[labelled], test.label[labelled], w[:, labelled]
    if y.numel():
        counts = _weighted_roc(p, y, wl)
        out["auroc"], out["pauroc_90"], out["sens_at_95spec"] = _roc_metrics(*counts, _MAX_FPR, _SPEC)
        out["sens_at_95spec_justraigs"] = _justraigs_sens(*counts, _SPEC)
        out["brier"] = _weighted_mean(wl, (p - y) ** 2)
        onehot = torch.nn.functional.one_hot(calibration_bins(p, _ECE_BINS), _ECE_BINS).double()
        gap = (wl @ (onehot * y[:, None]) - wl @ (onehot * p[:, None])).abs().sum(1)
        total = wl.sum(1)
        out["ece"] = torch.where(total > 0, gap / total.clamp(min=1e-300), math.nan)
        if threshold is not None:
            pred = is_referable(p, threshold).double()
            out["sensitivity"] = (wl @ (y * pred)) / (wl @ y)                    # 0/0 -> NaN
            out["specificity"] = (wl @ ((1 - y) * (1 - pred))) / (wl @ (1 - y))
            out["accuracy"] = _weighted_mean(wl, (pred == y).double())
    if test.finding_prob is not None:
        per_finding = []
        for k in range(len(FINDINGS)):
            known = ~test.finding_label[:, k].isnan()
            if int(known.sum()) == 0:
                continue
            per_finding.append(_auroc_from_counts(*_weighted_roc(
                test.finding_prob[known, k], test.finding_label[known, k], w[:, known])))
        if per_finding:
            out["finding_auroc_mean"] = torch.stack(per_finding, 1).nanmean(1)
        per_eye, eligible = _hamming_per_eye(test.finding_prob, test.finding_label, test.label, 0.5)
        if bool(eligible.any()):
            out["finding_hamming"] = _weighted_mean(w[:, eligible], per_eye[eligible])
    if test.vcdr_pred is not None:
        known = ~test.vcdr_true.isnan()
        if bool(known.any()):
            err = (test.vcdr_pred[known] - test.vcdr_true[known]).abs()
            out["vcdr_mae"] = _weighted_mean(w[:, known], err)
    return out


def bootstrap_predictions(test: Predictions, threshold: float | None, *, n_bootstrap: int = 1000,
                          seed: int = 0, level: float = 0.95) -> dict[str, BootstrapCI]:
    """Percentile bootstrap intervals of every metric in :data:`CI_METRICS`, vectorised.

    Hand-written (torchmetrics has no seeded, vectorised bootstrap): a resample with replacement
    equals the eyes weighted by their draw counts, so every metric of a chunk of resamples is a
    few matrix products and cumulative sums. The resamples are those of :func:`resample_indices`
    over all ``B`` test eyes; each metric then uses its own eyes within a resample (labelled eyes,
    eyes with a known finding, referable eyes, eyes with a known vCDR). A resample where a metric
    is undefined (one class only for the AUROC-type metrics and sensitivity/specificity, no eligible
    eye for the others) is dropped and counted in ``n_dropped``.

    Args:
        test: the test predictions.
        threshold: the decision threshold for sensitivity/specificity/accuracy (``None``: skipped).
        n_bootstrap: number of resamples.
        seed: seed of the resampling.
        level: coverage of the interval.

    Returns:
        Metric -> :class:`BootstrapCI`.

    Example:
        >>> t = Predictions(prob=[0.1, 0.4, 0.35, 0.8, 0.7], label=[0, 0, 1, 1, 1])
        >>> bootstrap_predictions(t, 0.5, n_bootstrap=20)["auroc"].n_resamples
        20
    """
    n = len(test)
    chunks: list[dict[str, Tensor]] = []
    if n and n_bootstrap:
        step = max(1, _CHUNK_ELEMENTS // n)
        g = torch.Generator().manual_seed(seed)
        for start in range(0, n_bootstrap, step):
            rows = min(step, n_bootstrap - start)
            idx = _draw(g, n, rows)  # the rows of resample_indices(n, n_bootstrap, seed), in turn
            w = torch.zeros(rows, n, dtype=torch.float64).scatter_add_(
                1, idx, torch.ones(rows, n, dtype=torch.float64))
            chunks.append(_bootstrap_chunk(test, threshold, w))
    result = {}
    for key in CI_METRICS:
        values = (torch.cat([c[key] for c in chunks]) if chunks
                  else torch.empty(0, dtype=torch.float64))
        result[key] = percentile_interval(values, level)
        if result[key].n_dropped:
            log.info("bootstrap %s: %d of %d resamples undefined (e.g. one class) and dropped",
                     key, result[key].n_dropped, n_bootstrap)
    return result


# --------------------------------------------------------------------------------------------
# the report


def evaluate_predictions(val: Predictions, test: Predictions, *,
                         threshold_rule: ThresholdRule = "youden", n_bootstrap: int = 1000,
                         seed: int = 0) -> dict[str, Any]:
    """Every screening metric of a test split, the threshold chosen on a validation split.

    Args:
        val: validation predictions; only ``prob`` and ``label`` are used (to choose the threshold).
        test: test predictions.
        threshold_rule: ``"youden"`` or ``"spec95"`` (see :func:`choose_threshold`).
        n_bootstrap: bootstrap resamples of the test eyes for ``ci`` (0: every interval ``None``).
        seed: seed of the bootstrap.

    Returns:
        A JSON-able dict (``json.dumps(..., allow_nan=False)`` works) with exactly the keys
        ``auroc, pauroc_90, sens_at_95spec, sens_at_95spec_justraigs, sensitivity, specificity,
        accuracy, threshold, threshold_rule, brier, ece, finding_auroc, finding_auroc_mean,
        finding_hamming, vcdr_mae, n, n_positive, ci``. ``sens_at_95spec`` is AIROGS' rule and
        ``sens_at_95spec_justraigs`` JustRAIGS' (see :func:`sens_at_spec`). Undefined values are ``None``: e.g. AUROC with one class in the test
        split, or the threshold (and sensitivity/specificity/accuracy) when the validation split
        has one class (logged as a warning). ``ci`` maps each of :data:`CI_METRICS` to
        ``[low, high]`` (95 % percentile bootstrap) or ``None``; how many resamples each interval
        dropped is logged, and returned by :func:`bootstrap_predictions`.

    Example:
        >>> val = Predictions(prob=[0.1, 0.4, 0.35, 0.8], label=[0, 0, 1, 1])
        >>> out = evaluate_predictions(val, val, threshold_rule="spec95", n_bootstrap=0)
        >>> out["sensitivity"], out["ci"]["auroc"]
        (0.5, None)
    """
    if threshold_rule not in THRESHOLD_RULES:
        raise ConfigError("threshold_rule",
                          f"unknown rule {threshold_rule!r}; known: {', '.join(THRESHOLD_RULES)}")
    _, val_y = labelled(val.prob, val.label)
    if _both_classes(val_y):
        threshold: float | None = choose_threshold(val.prob, val.label, threshold_rule)
    else:
        threshold = None
        log.warning("no threshold: the %d labelled validation eyes hold one class only; "
                    "sensitivity, specificity and accuracy are None", val_y.numel())

    _, y = labelled(test.prob, test.label)
    point = (operating_point(test.prob, test.label, threshold) if threshold is not None
             else {"sensitivity": None, "specificity": None, "accuracy": None})
    if test.finding_prob is not None:
        per_finding = finding_auroc(test.finding_prob, test.finding_label)
        defined = [v for v in per_finding.values() if v is not None]
        finding_mean = _float(sum(defined) / len(defined)) if defined else None
        hamming = finding_hamming(test.finding_prob, test.finding_label, test.label)
    else:
        per_finding, finding_mean, hamming = {code: None for code in FINDINGS}, None, None
    cis = bootstrap_predictions(test, threshold, n_bootstrap=n_bootstrap, seed=seed)
    return {
        "auroc": auroc(test.prob, test.label),
        "pauroc_90": auroc(test.prob, test.label, max_fpr=_MAX_FPR),
        "sens_at_95spec": sens_at_spec(test.prob, test.label, _SPEC, "airogs"),
        "sens_at_95spec_justraigs": sens_at_spec(test.prob, test.label, _SPEC, "justraigs"),
        "sensitivity": point["sensitivity"],
        "specificity": point["specificity"],
        "accuracy": point["accuracy"],
        "threshold": threshold,
        "threshold_rule": threshold_rule,
        "brier": brier(test.prob, test.label),
        "ece": ece(test.prob, test.label, _ECE_BINS),
        "finding_auroc": per_finding,
        "finding_auroc_mean": finding_mean,
        "finding_hamming": hamming,
        "vcdr_mae": (vcdr_mae(test.vcdr_pred, test.vcdr_true) if test.vcdr_pred is not None
                     else None),
        "n": int(y.numel()),
        "n_positive": int(y.sum()),
        "ci": {key: ci.as_list() for key, ci in cis.items()},
    }
