"""The model's own out-of-distribution check: are an eye's features like those of its training eyes?

The image-quality gate (:mod:`xmed.data.quality`) judges the pixels; this check judges what the
model makes of them. ``xmed-train`` fits it once training ends: a Gaussian over the pooled backbone
features of the training eyes (one pass without augmentation) with one covariance, shrunk toward a
multiple of the identity by the rule of Ledoit and Wolf (2004) — a 512-wide feature seen on a few
hundred eyes has a singular sample covariance —, and a threshold at the :data:`PERCENTILE`-th
percentile of the validation eyes' distances. An eye's score is the Mahalanobis distance of its
features from that Gaussian; above the threshold it is flagged :data:`UNFAMILIAR_FEATURES`, beside
its image-quality flags (:class:`~xmed.data.quality.Quality`). The name differs from the
gate's ``out_of_distribution``, which is an image whose colours are unlike a fundus photograph's.

The check travels with the model: its settings in ``config.json`` (``model.feature_check``), its
mean and whitening matrix in ``model.safetensors`` (``feature_check.mean``,
``feature_check.whitening``). A model exported without one scores as before, unflagged.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> check = fit_feature_check(torch.randn(400, 4, generator=g), torch.randn(100, 4, generator=g))
    >>> check.settings()["percentile"], check.unfamiliar(check(torch.tensor([[0.0] * 4, [9.0] * 4]))).tolist()
    (99.0, [False, True])
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from xmed.errors import ConfigError

if TYPE_CHECKING:
    from xmed.data.quality import Quality

#: The flag of an eye whose features are farther from the training eyes' than the threshold.
UNFAMILIAR_FEATURES = "unfamiliar_features"
#: The share of validation eyes (in percent) whose distance the threshold lies at or above.
PERCENTILE = 99.0
#: The training eyes the Gaussian is fitted on, at most (a covariance of 1,280 features is well
#: estimated long before; the pass over them is the cost).
MAX_TRAIN_EYES = 5000
#: ``config.json``'s ``feature_check`` keys.
SETTINGS = ("features", "threshold", "percentile", "train_eyes", "val_eyes", "shrinkage")


class FeatureCheck(nn.Module):
    """The fitted check: ``check(features)`` is the Mahalanobis distance (B, float32) of pooled
    backbone features (B×C) from the training eyes' Gaussian, ``check.unfamiliar(distance)`` those
    above :attr:`threshold` (a distance that is not a number counts as above).

    Buffers ``mean`` (C) and ``whitening`` (C×C, lower triangular: ``whitening @ cov @ whitening.T``
    is the identity) hold the statistics; the rest are plain settings (:meth:`settings`).
    """

    def __init__(self, features: int, threshold: float, percentile: float = PERCENTILE, train_eyes: int = 0,
                 val_eyes: int = 0, shrinkage: float = 0.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("whitening", torch.eye(features))
        self.features, self.threshold, self.percentile = features, threshold, percentile
        self.train_eyes, self.val_eyes, self.shrinkage = train_eyes, val_eyes, shrinkage

    @classmethod
    def from_settings(cls, settings: Any, features: int) -> "FeatureCheck":
        """An unfitted check of a model whose pooled features are ``features`` wide, from the
        settings a saved model carries (its buffers come with the weights); a setting out of place
        raises :class:`ConfigError` naming ``model.net.feature_check.<key>``.

        Example:
            >>> FeatureCheck.from_settings({"features": 8, "threshold": -1.0, "percentile": 99, "train_eyes": 9,
            ...                             "val_eyes": 3, "shrinkage": 0.1}, features=8)
            Traceback (most recent call last):
            ...
            xmed.errors.ConfigError: config key 'model.net.feature_check.threshold': must be a finite number ≥ 0, got -1.0
        """
        key = "model.net.feature_check"
        if not isinstance(settings, Mapping):
            raise ConfigError(key, f"must be a mapping of {', '.join(SETTINGS)}, got a {type(settings).__name__}")
        odd = [f"missing key {k!r}" for k in SETTINGS if k not in settings] + [
            f"unknown key {k!r}" for k in settings if k not in SETTINGS]
        if odd:
            raise ConfigError(key, f"{odd[0]} (keys: {', '.join(SETTINGS)})")
        rules = {"features": (int, features, features, f"the width of the model's pooled features, {features}"),
                 "threshold": (float, 0.0, math.inf, "a finite number ≥ 0"),
                 "percentile": (float, 0.0, 100.0, "a number in (0, 100]"),
                 "train_eyes": (int, 2, math.inf, "an integer ≥ 2"),
                 "val_eyes": (int, 1, math.inf, "an integer ≥ 1"),
                 "shrinkage": (float, 0.0, 1.0, "a number in [0, 1]")}
        for name, (kind, low, high, expected) in rules.items():
            value = settings[name]
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not (number and low <= value <= high and (kind is float or value == int(value))
                    and (name != "percentile" or value > 0)):
                raise ConfigError(f"{key}.{name}", f"must be {expected}, got {value!r}")
        return cls(int(settings["features"]), float(settings["threshold"]), float(settings["percentile"]),
                   int(settings["train_eyes"]), int(settings["val_eyes"]), float(settings["shrinkage"]))

    def settings(self) -> dict[str, Any]:
        """What ``config.json`` keeps of the check (:data:`SETTINGS`), JSON-able."""
        return {"features": self.features, "threshold": self.threshold, "percentile": self.percentile,
                "train_eyes": self.train_eyes, "val_eyes": self.val_eyes, "shrinkage": self.shrinkage}

    def forward(self, features: Tensor) -> Tensor:
        # in float32 whatever autocast runs the backbone in: bf16 keeps 3 digits of a sum of C squares
        with torch.no_grad(), torch.autocast(features.device.type, enabled=False):
            return mahalanobis(features.float(), self.mean.float(), self.whitening.float())

    def unfamiliar(self, distance: Tensor) -> Tensor:
        """B bool: the distances above the threshold, or not a number."""
        return ~(distance <= self.threshold)

    def describe(self) -> str:
        """The model card's line: what is measured, on how many eyes, and the threshold."""
        return (f"Mahalanobis distance of the {self.features} pooled backbone features from a Gaussian fitted on "
                f"{self.train_eyes} training eyes (Ledoit-Wolf shrinkage {self.shrinkage:.3f}); an eye farther than "
                f"{self.threshold:.3f}, the {self.percentile:g}th percentile of {self.val_eyes} validation eyes, "
                f"is flagged {UNFAMILIAR_FEATURES}")


def mahalanobis(features: Tensor, mean: Tensor, whitening: Tensor) -> Tensor:
    """``‖whitening (x − mean)‖`` of every row ``x`` of ``features``: the Mahalanobis distance when
    ``whitening`` is the inverse of the covariance's Cholesky factor (:func:`whitening_matrix`).

    Example:
        >>> mahalanobis(torch.tensor([[3.0, 4.0]]), torch.zeros(2), torch.diag(torch.tensor([1.0, 0.5]))).tolist()
        [3.605551242828369]
    """
    return ((features - mean) @ whitening.T).norm(dim=1)


def fit_gaussian(features: Tensor) -> tuple[Tensor, Tensor, float]:
    """The mean (C), the Ledoit-Wolf covariance (C×C: ``(1 − s)·S + s·(tr S / C)·I`` with ``S`` the
    sample covariance over N, and the shrinkage ``s`` that minimises the expected squared error)
    and ``s`` of N×C features, in float64 (scikit-learn's ``ledoit_wolf``).

    Example:
        >>> mean, cov, s = fit_gaussian(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]]))
        >>> mean.tolist(), cov.tolist(), s
        ([1.0, 1.0], [[1.0, 0.0], [0.0, 1.0]], 0.0)
    """
    from sklearn.covariance import ledoit_wolf

    x = features.detach().double().cpu()
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"a Gaussian needs at least 2 rows of features, got shape {tuple(x.shape)}")
    covariance, shrinkage = ledoit_wolf(x.numpy())
    return x.mean(dim=0), torch.from_numpy(covariance), float(shrinkage)


def whitening_matrix(covariance: Tensor) -> Tensor:
    """``L⁻¹`` with ``L Lᵀ = covariance`` (Cholesky), so ``‖L⁻¹ d‖² = dᵀ covariance⁻¹ d``.

    Example:
        >>> whitening_matrix(torch.tensor([[4.0, 0.0], [0.0, 0.25]], dtype=torch.float64)).tolist()
        [[0.5, 0.0], [0.0, 2.0]]
    """
    identity = torch.eye(len(covariance), dtype=covariance.dtype)
    factor, info = torch.linalg.cholesky_ex(covariance)
    if info:  # features constant over every training eye (dead units): give them a sliver of spread
        scale = float(torch.diagonal(covariance).mean())
        factor = torch.linalg.cholesky(covariance + 1e-6 * (scale if scale > 0 else 1.0) * identity)
    return torch.linalg.solve_triangular(factor, identity, upper=False)


def fit_feature_check(train: Tensor, val: Tensor, percentile: float = PERCENTILE) -> FeatureCheck:
    """A :class:`FeatureCheck` fitted on the pooled features of training eyes (N×C) with its
    threshold at ``percentile`` of the validation eyes' (M×C) distances (linear interpolation);
    rows that are not finite are left out.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> check = fit_feature_check(torch.randn(50, 3, generator=g), torch.randn(20, 3, generator=g), percentile=50)
        >>> check.train_eyes, check.val_eyes, round(check.threshold, 3)
        (50, 20, 1.709)
    """
    train, val = (rows[torch.isfinite(rows).all(dim=1)] for rows in (train.detach().cpu(), val.detach().cpu()))
    if len(val) == 0:
        raise ValueError("the threshold needs the features of at least one validation eye")
    mean, covariance, shrinkage = fit_gaussian(train)
    check = FeatureCheck(train.shape[1], 0.0, float(percentile), len(train), len(val), round(shrinkage, 6))
    check.mean.copy_(mean)
    check.whitening.copy_(whitening_matrix(covariance))
    check.threshold = float(torch.quantile(check(val).double(), percentile / 100))
    return check


@torch.inference_mode()
def pooled_features(model: nn.Module, batches: Iterable[Tensor], limit: int | None = None) -> Tensor:
    """The pooled backbone features (N×C, float32, on the CPU) of ``model``
    (:meth:`~xmed.models.FundusClassifier.pooled_features`) for the images of ``batches``
    (prepared batches, uint8 or normalised), on the model's device, the first ``limit`` eyes.

    Example:
        >>> from xmed.models import FundusClassifier
        >>> model = FundusClassifier("test_resnet.r160_in1k", input_size=32).eval()
        >>> tuple(pooled_features(model, [torch.zeros(2, 3, 32, 32)] * 3, limit=5).shape)
        (5, 96)
    """
    device = next(model.parameters()).device
    chunks: list[Tensor] = []
    for images in batches:
        chunks.append(model.pooled_features(images.to(device)).float().cpu())
        if limit is not None and sum(map(len, chunks)) >= limit:
            break
    if not chunks:
        return torch.zeros(0, model.backbone.num_features)
    return torch.cat(chunks)[:limit]


def with_feature_flags(qualities: Sequence[Quality], distance: Tensor | None,
                       check: FeatureCheck | None) -> list[Quality]:
    """``qualities`` (one per eye) with :data:`UNFAMILIAR_FEATURES` added where ``check`` finds the
    eye's ``distance`` too large, and the distance in each one's measures; unchanged without a check.

    Example:
        >>> from xmed.data.quality import Quality
        >>> check = FeatureCheck(2, threshold=3.0)
        >>> flagged = with_feature_flags([Quality(), Quality(("nearly_uniform",))], torch.tensor([1.0, 5.0]), check)
        >>> [str(q) for q in flagged]
        ['', 'nearly_uniform;unfamiliar_features']
    """
    if check is None or distance is None:
        return list(qualities)
    # here, not at the top: OpenCV loads with photographs, not with `import xmed.models`
    from xmed.data.quality import Quality

    flagged = check.unfamiliar(distance).tolist()
    return [Quality(q.flags + ((UNFAMILIAR_FEATURES,) if unfamiliar else ()), q.judged + (UNFAMILIAR_FEATURES,),
                    {**q.measures, "feature_distance": d})
            for q, unfamiliar, d in zip(qualities, flagged, distance.tolist())]
