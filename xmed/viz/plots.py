"""Evaluation plots: ROC curve, reliability diagram, per-finding AUROC; a run's learning curve.

Figures are drawn on matplotlib's Agg canvas directly (``matplotlib.figure.Figure``, never
``pyplot``): nothing is shown, no global backend is switched, no figure is left registered with
pyplot, and each figure is released once written.

Example:
    >>> import tempfile, os
    >>> path = plot_roc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], os.path.join(tempfile.mkdtemp(), "roc.png"))
    >>> path.stat().st_size > 0
    True
"""

from __future__ import annotations

import csv
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Mapping

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchmetrics.functional.classification import binary_roc

from xmed.metrics.classification import ArrayLike, auroc, calibration_bins, ece, labelled

__all__ = ["plot_roc", "plot_calibration", "plot_finding_auroc", "plot_forest", "plot_learning_curve",
           "read_learning_curve"]

log = logging.getLogger(__name__)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, bbox_inches="tight")
    finally:
        fig.clear()  # drop the artists now; the figure is not registered with pyplot
    return path


def plot_roc(prob: ArrayLike, label: ArrayLike, path: str | os.PathLike, spec: float = 0.95) -> Path:
    """ROC curve with the AUROC in the legend and the operating point at ``spec`` marked.

    The marked point is the one :func:`xmed.metrics.sens_at_spec` reports: the highest TPR among
    ROC points with specificity >= ``spec``.

    Args:
        prob: ``B`` probabilities of glaucoma.
        label: ``B`` labels 0 / 1 / NaN (NaN eyes are left out).
        path: where to write the PNG (parent folders are created).
        spec: minimum specificity of the marked operating point.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: when the labelled eyes hold one class only (no ROC curve).

    Example:
        >>> import tempfile, os
        >>> p = plot_roc([0.2, 0.6, 0.4, 0.9], [0, 0, 1, 1], os.path.join(tempfile.mkdtemp(), "roc.png"))
        >>> p.suffix
        '.png'
    """
    p, y = labelled(prob, label)
    if y.numel() == 0 or int(y.sum()) in (0, y.numel()):
        raise ValueError(f"plot_roc: the {y.numel()} labelled eyes hold one class only; no ROC curve")
    fpr, tpr, _ = binary_roc(p, y)
    allowed = (1 - fpr) >= spec
    best = int(torch.argmax(torch.where(allowed, tpr, -1.0)))
    fig = _figure(5, 5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    ax.plot(fpr.numpy(), tpr.numpy(), color="C0", lw=2, label=f"ROC (AUROC = {auroc(p, y):.3f})")
    ax.plot([float(fpr[best])], [float(tpr[best])], "o", color="C3", ms=8,
            label=f"sensitivity {float(tpr[best]):.3f} at specificity >= {spec:.0%}")
    ax.axvline(1 - spec, color="C3", lw=0.8, ls=":")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (FPR)",
           ylabel="sensitivity (TPR)", title=f"ROC, {y.numel()} eyes ({int(y.sum())} glaucoma)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_calibration(prob: ArrayLike, label: ArrayLike, path: str | os.PathLike,
                     n_bins: int = 10) -> Path:
    """Reliability diagram: observed fraction of glaucoma per probability bin, against the diagonal.

    The bins are those of :func:`xmed.metrics.ece` (:func:`~xmed.metrics.calibration_bins`:
    ``[0, 1/n]``, then ``(k/n, (k+1)/n]``, so p = 1.0 is drawn in the last bin); the title gives
    the ECE over the same ``n_bins``.

    Args:
        prob: ``B`` probabilities of glaucoma.
        label: ``B`` labels 0 / 1 / NaN (NaN eyes are left out).
        path: where to write the PNG (parent folders are created).
        n_bins: number of equal-width bins.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: without labelled eyes.

    Example:
        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "cal.png")
        >>> plot_calibration([0.2, 0.6, 0.4, 0.9], [0, 0, 1, 1], out).exists()
        True
    """
    p, y = labelled(prob, label)
    if y.numel() == 0:
        raise ValueError("plot_calibration: no labelled eyes")
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    bins = calibration_bins(p, n_bins)
    count = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, bins, torch.ones_like(p))
    frac = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, bins, y.double()) / count
    conf = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, bins, p) / count
    used = count > 0
    centres = ((edges[:-1] + edges[1:]) / 2)
    fig = _figure(5, 5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfect calibration")
    ax.bar(centres[used].numpy(), frac[used].numpy(), width=1 / n_bins, alpha=0.5, color="C0",
           edgecolor="C0", label="observed fraction per bin (eyes above)")
    ax.plot(conf[used].numpy(), frac[used].numpy(), "o-", color="C1", ms=4,
            label="mean probability vs observed fraction")
    for x, f, c in zip(centres[used].tolist(), frac[used].tolist(), count[used].tolist()):
        ax.annotate(f"{int(c)}", (x, f), textcoords="offset points", xytext=(0, 3), ha="center",
                    fontsize=6, color="0.3")
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="predicted probability of glaucoma",
           ylabel="observed fraction with glaucoma",
           title=f"Reliability, ECE = {ece(p, y, n_bins=n_bins):.3f} ({n_bins} bins, {y.numel()} eyes)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_finding_auroc(finding_auroc: Mapping[str, float | None], path: str | os.PathLike) -> Path:
    """Horizontal bars of the AUROC per finding code; an undefined AUROC (``None``) reads "n/a".

    Args:
        finding_auroc: finding code -> AUROC or ``None``, e.g. ``evaluate_predictions(...)
            ["finding_auroc"]``; drawn top to bottom in the mapping's order.
        path: where to write the PNG (parent folders are created).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, os
        >>> p = plot_finding_auroc({"DH": 0.8, "LC": None}, os.path.join(tempfile.mkdtemp(), "f.png"))
        >>> p.name
        'f.png'
    """
    codes = list(finding_auroc)
    values = [finding_auroc[c] for c in codes]
    fig = _figure(5, 0.8 + 0.35 * max(len(codes), 1))
    ax = fig.add_subplot()
    positions = list(range(len(codes)))
    ax.barh(positions, [0.0 if v is None else v for v in values], color="C0", height=0.6)
    for i, v in enumerate(values):
        ax.text(0.01 if v is None else v + 0.01, i, "n/a" if v is None else f"{v:.3f}",
                va="center", fontsize=8, color="0.3" if v is None else "black")
    ax.axvline(0.5, color="0.6", ls="--", lw=1)
    ax.set_yticks(positions, codes)
    ax.invert_yaxis()
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set(xlim=(0, 1.12), xlabel="AUROC (dashed: chance)", title="AUROC per finding")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


#: The columns of a Lightning CSV log the learning curve reads (the validation panel shows the first present).
TRAIN_LOSS = "train/loss"
VALIDATION_METRICS = ("val/auroc", "val/loss")


def read_learning_curve(metrics_csv: str | os.PathLike) -> dict[str, dict[int, float]]:
    """Per-epoch values of a Lightning CSV log (``<run>/csv/metrics.csv``): ``train/loss`` is the
    mean of its rows in each epoch (it is logged per step), a validation metric the epoch's last
    value. Only the columns present in the log appear; empty cells are skipped.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "metrics.csv")
        >>> _ = open(path, "w").write("epoch,step,train/loss,val/auroc\\n0,1,2.0,\\n0,3,1.0,\\n0,3,,0.6\\n")
        >>> read_learning_curve(path)
        {'train/loss': {0: 1.5}, 'val/auroc': {0: 0.6}}
    """
    train_losses: dict[int, list[float]] = defaultdict(list)
    with open(metrics_csv, newline="") as f:
        reader = csv.DictReader(f)
        columns = [c for c in VALIDATION_METRICS if c in (reader.fieldnames or ())]
        validation: dict[str, dict[int, float]] = {c: {} for c in columns}
        has_train_loss = TRAIN_LOSS in (reader.fieldnames or ())
        for row in reader:
            if not row.get("epoch"):  # learning-rate rows carry a step but no epoch
                continue
            epoch = int(float(row["epoch"]))
            if has_train_loss and row.get(TRAIN_LOSS):
                train_losses[epoch].append(float(row[TRAIN_LOSS]))
            for column in columns:
                if row.get(column):
                    validation[column][epoch] = float(row[column])
    curve = {TRAIN_LOSS: {e: sum(v) / len(v) for e, v in sorted(train_losses.items())}} if has_train_loss else {}
    curve.update({c: dict(sorted(values.items())) for c, values in validation.items()})
    return curve


def plot_learning_curve(metrics_csv: str | os.PathLike | None, out_png: str | os.PathLike) -> list[int]:
    """Training loss and validation AUROC (``val/loss`` where the log has no AUROC, as for the
    autoencoder) by epoch, side by side, from a run's CSV log (:func:`read_learning_curve`).

    Without a CSV log (``metrics_csv`` None or missing: the run used another logger) nothing is
    written and the skip is logged.

    Returns:
        The epochs plotted (sorted; those with a training loss or a validation value).

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> _ = open(os.path.join(folder, "metrics.csv"), "w").write(
        ...     "epoch,step,train/loss,val/loss\\n0,1,2.0,\\n0,1,,1.5\\n1,3,1.0,\\n1,3,,0.9\\n")
        >>> plot_learning_curve(os.path.join(folder, "metrics.csv"), os.path.join(folder, "curve.png"))
        [0, 1]
        >>> plot_learning_curve(None, os.path.join(folder, "none.png"))
        []
    """
    if metrics_csv is None or not Path(metrics_csv).is_file():
        log.info("no learning curve: the run kept no CSV log (logger=csv writes csv/metrics.csv)")
        return []
    curve = read_learning_curve(metrics_csv)
    validation = next((c for c in VALIDATION_METRICS if curve.get(c)), VALIDATION_METRICS[0])
    fig = _figure(9, 3.2)
    for index, (column, title) in enumerate(((TRAIN_LOSS, "training loss (epoch mean)"),
                                            (validation, f"validation {validation.split('/')[1]}"))):
        ax = fig.add_subplot(1, 2, index + 1)
        values = curve.get(column, {})
        if values:
            ax.plot(list(values), list(values.values()), marker="o", color=f"C{index}")
        else:
            ax.text(0.5, 0.5, f"{column} not logged", ha="center", va="center", transform=ax.transAxes, color="0.3")
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    _save(fig, out_png)
    return sorted(set(curve.get(TRAIN_LOSS, {})) | set(curve.get(validation, {})))


def plot_forest(rows: list[Mapping[str, object]], path: str | os.PathLike, title: str,
                label: str = "difference") -> Path:
    """A forest plot: one line per row (``name``, ``estimate``, ``low``, ``high``; a ``marked``
    row is drawn filled — e.g. significant after correction), the interval as a bar around the
    estimate, zero as a dashed line. Rows without an estimate are listed with no bar.

    Example:
        >>> import tempfile, os
        >>> rows = [{"name": "a", "estimate": 0.2, "low": 0.1, "high": 0.3, "marked": True},
        ...         {"name": "b", "estimate": None, "low": None, "high": None}]
        >>> plot_forest(rows, os.path.join(tempfile.mkdtemp(), "f.png"), "t").stat().st_size > 0
        True
    """
    fig = _figure(7.0, 0.8 + 0.32 * max(len(rows), 1))
    ax = fig.add_subplot(1, 1, 1)
    for y, row in enumerate(reversed(rows)):
        if row.get("estimate") is None:
            continue
        low = row["low"] if row.get("low") is not None else row["estimate"]
        high = row["high"] if row.get("high") is not None else row["estimate"]
        ax.plot([low, high], [y, y], color="#1f4e79", linewidth=1.6)
        ax.plot([row["estimate"]], [y], marker="s", color="#1f4e79",
                markerfacecolor="#1f4e79" if row.get("marked") else "white", markersize=6)
    ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([str(row["name"]) for row in reversed(rows)], fontsize=8)
    ax.set_xlabel(label)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
