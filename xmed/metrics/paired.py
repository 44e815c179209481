"""Per-eye scores of two methods on the same eyes: each method's mean with a case-bootstrap
interval, their paired difference with its interval and a Wilcoxon signed-rank test, and Holm's
correction across the methods compared with one reference.

The resamples are those of :func:`~xmed.metrics.classification.resample_indices`: for the same
seed and number of eyes every method sees the same resamples, so intervals of methods scored on
the same eyes are paired.

Example:
    >>> d = paired_difference([0.9, 0.8, 0.7, 0.95, 0.85, 0.9], [0.5, 0.6, 0.55, 0.4, 0.7, 0.6], n_bootstrap=200)
    >>> d.n, round(d.difference, 3), d.test, round(d.p_value, 4)
    (6, 0.292, 'exact', 0.0312)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from xmed.errors import InputError
from xmed.metrics.classification import BootstrapCI, percentile_interval, resample_indices

#: fewer pairs than this cannot reach p < 0.05 with the Wilcoxon signed-rank test (2 / 2**5 > 0.05)
MIN_PAIRS = 6


@dataclass(frozen=True)
class Mean:
    """A mean over eyes and its percentile bootstrap interval (``None`` when no eye was scored)."""

    n: int
    mean: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class PairedDifference:
    """Method A less method B on the eyes both scored.

    Attributes:
        n: eyes with both scores (pairs).
        mean_a, mean_b: each method's mean over those eyes.
        difference, low, high: mean of A − B with its bootstrap interval.
        statistic, p_value: the Wilcoxon signed-rank test (two-sided; ``None`` below 2 pairs).
        test: how its p-value was computed: ``"exact"``, ``"permutation"``, ``"normal
            approximation"`` or ``"none"`` (no pair differs, or fewer than 2 pairs: p = 1 / undefined).
        underpowered: fewer than :data:`MIN_PAIRS` pairs — no p-value can fall below 0.05.
    """

    n: int
    mean_a: float | None
    mean_b: float | None
    difference: float | None
    low: float | None
    high: float | None
    statistic: float | None
    p_value: float | None
    test: str
    underpowered: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(values: Sequence[float] | Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=torch.float64).flatten()


def _check_bootstrap(n_bootstrap: int) -> None:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise InputError("n_bootstrap", f"must be a whole number ≥ 1, got {n_bootstrap!r}")


def bootstrap_mean(values: Sequence[float] | Tensor, n_bootstrap: int = 2000, seed: int = 0,
                   level: float = 0.95) -> Mean:
    """The mean of the finite ``values`` and its percentile bootstrap interval (eyes resampled).

    Example:
        >>> m = bootstrap_mean([1.0, 2.0, 3.0, float("nan")], n_bootstrap=100)
        >>> m.n, m.mean, m.low >= 1.0, m.high <= 3.0
        (3, 2.0, True, True)
    """
    _check_bootstrap(n_bootstrap)
    values = _finite(values)
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return Mean(0, None, None, None)
    ci = _resampled_mean_ci(values, n_bootstrap, seed, level)
    return Mean(values.numel(), float(values.mean()), ci.low, ci.high)


def _resampled_mean_ci(values: Tensor, n_bootstrap: int, seed: int, level: float) -> BootstrapCI:
    # hand-written: a percentile bootstrap of a mean is one gather over the shared resample indices
    index = resample_indices(values.numel(), n_bootstrap, seed)
    return percentile_interval(values[index].mean(dim=1), level)


def paired_difference(a: Sequence[float] | Tensor, b: Sequence[float] | Tensor, n_bootstrap: int = 2000,
                      seed: int = 0, level: float = 0.95) -> PairedDifference:
    """A − B over the eyes where both are finite (``a[i]`` and ``b[i]`` are the same eye's
    scores): means, the mean difference with its bootstrap interval, and the two-sided Wilcoxon
    signed-rank test (:func:`signed_rank_test`).

    Example:
        >>> d = paired_difference([1, 1, 1], [1, 1, 1], n_bootstrap=10)
        >>> d.difference, d.p_value, d.test, d.underpowered
        (0.0, 1.0, 'none', True)
    """
    _check_bootstrap(n_bootstrap)
    a, b = _finite(a), _finite(b)
    if a.shape != b.shape:
        raise InputError("b", f"needs one score per eye of a ({a.numel()}), got {b.numel()}")
    both = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[both], b[both]
    n = int(a.numel())
    if n == 0:
        return PairedDifference(0, None, None, None, None, None, None, None, "none", True)
    differences = a - b
    ci = _resampled_mean_ci(differences, n_bootstrap, seed, level)
    statistic, p_value, test = signed_rank_test(differences.numpy()) if n >= 2 else (None, None, "none")
    return PairedDifference(n, float(a.mean()), float(b.mean()), float(differences.mean()), ci.low, ci.high,
                            statistic, p_value, test, n < MIN_PAIRS)


def signed_rank_test(differences: Sequence[float] | np.ndarray) -> tuple[float, float, str]:
    """``(statistic, p-value, how the p-value was found)`` of the two-sided Wilcoxon signed-rank test
    of paired ``differences`` (scipy), zeros ranked then dropped (Pratt). The method is the one
    scipy's ``"auto"`` would pick, chosen here so that it can be reported: ``"exact"`` for up to 50
    differences without zeros or ties, else ``"permutation"`` (every sign flip) for up to 13, else
    the ``"normal approximation"`` (with tie and zero corrections). All differences zero: 0, 1, ``"none"``.

    Example:
        >>> signed_rank_test([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        (0.0, 0.03125, 'exact')
    """
    from scipy import stats

    differences = np.asarray(differences, dtype=float)
    if not np.any(differences):
        return 0.0, 1.0, "none"
    magnitudes = np.abs(differences)
    if len(differences) <= 50 and np.all(magnitudes > 0) and len(np.unique(magnitudes)) == len(magnitudes):
        method, name = "exact", "exact"
    elif len(differences) <= 13:
        method, name = stats.PermutationMethod(), "permutation"  # 2**13 sign flips: all of them, no sampling
    else:
        method, name = "asymptotic", "normal approximation"
    test = stats.wilcoxon(differences, zero_method="pratt", method=method)
    return float(test.statistic), float(test.pvalue), name


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error across the tests given; ``None``
    stays ``None`` and is not counted). Hand-written: scipy has no Holm correction.

    Example:
        >>> holm([0.01, 0.04, 0.03, None])
        [0.03, 0.06, 0.06, None]
    """
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None and not math.isnan(p))
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = round(running, 12)
    return adjusted
