"""The metric protocol: one registry (:data:`METRICS`), one evidence object, one call shape.

Every metric is a class (Quantus style) that declares

* ``name``: its key in :data:`METRICS` and in tables;
* ``score_direction``: ``"higher"`` or ``"lower"``, which values are better;
* ``category``: ``"localisation"``, ``"faithfulness"``, ``"complexity"``, ``"randomisation"`` or
  ``"counterfactual"``;
* ``requires``: the :class:`Evidence` fields it reads (``"counterfactual.vcdr"``: the
  counterfactual, with a vCDR path).

Hyper-parameters go to ``__init__`` (:func:`create_metric` builds one from its name); the data go
either to the metric's own ``__call__`` (``PointingGame()(maps, masks)``) or, the same way for
every metric, to :meth:`Metric.score` as one :class:`Evidence`; :func:`evaluate` scores a batch with
many. Either way the result is one value per image (a float tensor of shape ``B``), NaN where the
metric is undefined for an image.

Example:
    >>> import torch
    >>> maps = torch.tensor([[[[3.0, 0.0], [1.0, 0.0]]]])
    >>> evidence = Evidence(maps=maps, masks=torch.tensor([[[True, False], [False, False]]]))
    >>> create_metric("energy_pointing_game").score(evidence).tolist()
    [0.75]
    >>> score_direction("deletion"), score_direction("ece"), score_direction("mask_coverage")
    ('lower', 'lower', None)
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

from xmed.errors import ConfigError
from xmed.metrics.classification import PREDICTION_SCORE_DIRECTIONS
from xmed.registry import Registry

if TYPE_CHECKING:
    from xmed.explain.counterfactual import Counterfactual

__all__ = [
    "ScoreDirection", "Category", "ForwardFn", "ExplainFn", "SCORE_DIRECTIONS", "CATEGORIES",
    "COMPANION_KEYS", "Evidence", "Metric", "METRICS", "register_metric", "create_metric", "evaluate",
    "score_direction", "nan_unless",
]

log = logging.getLogger(__name__)

ScoreDirection = Literal["higher", "lower"]
Category = Literal["localisation", "faithfulness", "complexity", "randomisation", "counterfactual"]
SCORE_DIRECTIONS: tuple[str, ...] = ("higher", "lower")
CATEGORIES: tuple[str, ...] = ("localisation", "faithfulness", "complexity", "randomisation", "counterfactual")
ForwardFn = Callable[[Tensor], Tensor]
ExplainFn = Callable[[nn.Module, Tensor], Tensor]

#: Per-image keys written beside the metrics (by ``evaluate_counterfactuals``) and which of their
#: values are better: ``mask_coverage`` is the chance level of ``energy_in_mask`` (no better side).
COMPANION_KEYS: dict[str, ScoreDirection | None] = {"mask_coverage": None, "seconds_per_image": "lower",
                                                     "shortcut_energy": "lower"}


def nan_unless(valid: Tensor, values: Tensor) -> Tensor:
    """``values`` where ``valid``, NaN elsewhere (a score that is undefined for an image).

    Example:
        >>> nan_unless(torch.tensor([True, False]), torch.tensor([0.5, 0.7])).tolist()
        [0.5, nan]
    """
    return torch.where(valid, values, torch.full_like(values, math.nan))


@dataclasses.dataclass(frozen=True, eq=False)  # tensors have no single truth value to compare by
class Evidence:
    """What one batch offers the metrics; each metric reads the fields its ``requires`` names.

    Attributes:
        maps: ``B×1×H×W`` attribution maps (any sign; larger = more evidence), at the images'
            resolution.
        masks: ``B×H×W`` or ``B×1×H×W`` bool ground-truth regions (e.g. a finding's mask).
        forward: ``images -> B`` scores, e.g.
            ``xmed.explain.targets.target_function(model, "glaucoma", as_probability=True)``.
        images: ``B×C×H×W``, the images the maps explain.
        counterfactual: a :class:`~xmed.explain.counterfactual.Counterfactual` of the batch.
        autoencoder: ``B×C×H×W -> B×C×H×W``, the realism proxy of ``reconstruction_error``.
        model: the trained model, for the randomisation test (left unchanged).
        explain_fn: ``(model, images) -> B×1×H×W`` maps, for the randomisation test.
    """

    maps: Tensor | None = None
    masks: Tensor | None = None
    forward: ForwardFn | None = None
    images: Tensor | None = None
    counterfactual: Counterfactual | None = None
    autoencoder: Callable[[Tensor], Tensor] | None = None
    model: nn.Module | None = None
    explain_fn: ExplainFn | None = None

    def missing(self, requires: Sequence[str]) -> list[str]:
        """The required fields that are None (``"counterfactual.vcdr"``: the counterfactual or its
        ``vcdr``).

        Example:
            >>> Evidence(maps=torch.zeros(1, 1, 2, 2)).missing(("maps", "masks", "counterfactual.vcdr"))
            ['masks', 'counterfactual.vcdr']
        """
        absent = []
        for need in requires:
            value: Any = self
            for part in need.split("."):
                value = getattr(value, part)
                if value is None:
                    absent.append(need)
                    break
        return absent


class Metric:
    """Base of every metric: what it declares (see the module docstring), :meth:`score` and a
    readable ``repr``.

    Attributes:
        name: registry key (:data:`METRICS`).
        score_direction: ``"higher"`` or ``"lower"``: which values are better.
        category: ``"localisation"``, ``"faithfulness"``, ``"complexity"``, ``"randomisation"`` or
            ``"counterfactual"``.
        requires: the :class:`Evidence` fields :meth:`score` reads.
    """

    name: str = ""
    score_direction: ScoreDirection
    category: Category
    requires: tuple[str, ...] = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def score(self, evidence: Evidence) -> Tensor:
        """One value per image (``B``) from ``evidence``; by default the metric called with the
        fields ``requires`` names, in that order."""
        return self(*(getattr(evidence, field) for field in self.requires))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if not k.startswith("_") and k not in ("name", "score_direction", "category"))
        return f"{type(self).__name__}({params})"


#: Metric name -> class, saliency and counterfactual metrics alike (filled by :func:`register_metric`).
METRICS: Registry[type[Metric]] = Registry("metric")


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: hold a metric class in :data:`METRICS` under its ``name``, once its
    ``score_direction``, ``category`` and ``requires`` are checked."""
    problems = []
    if getattr(cls, "score_direction", None) not in SCORE_DIRECTIONS:
        problems.append(f"score_direction must be one of {', '.join(SCORE_DIRECTIONS)}")
    if getattr(cls, "category", None) not in CATEGORIES:
        problems.append(f"category must be one of {', '.join(CATEGORIES)}")
    fields = {field.name for field in dataclasses.fields(Evidence)}
    unknown = [need for need in cls.requires if need.split(".")[0] not in fields]
    if not cls.requires or unknown:
        problems.append(f"requires must name Evidence fields ({', '.join(sorted(fields))}), got {cls.requires}")
    if problems:
        raise TypeError(f"metric {cls.__name__}: {'; '.join(problems)}")
    return METRICS.register(cls)


def create_metric(name: str, **options: Any) -> Metric:
    """The metric registered as ``name``, built with its hyper-parameters.

    Raises:
        ConfigError: for an unknown name (listing the known ones) or an option the metric does not take.

    Example:
        >>> create_metric("deletion", n_steps=4, baseline="zero")
        Deletion(n_steps=4, baseline='zero', batch_size=None)
        >>> create_metric("road_lerf", percentages=(0.5,)).score_direction
        'higher'
    """
    cls = METRICS.lookup(name)
    signature = inspect.signature(cls)
    try:
        signature.bind(**options)
    except TypeError as err:
        known = ", ".join(signature.parameters) or "none"
        raise ConfigError(name, f"{err}; the options of {name}: {known}") from None
    return cls(**options)


def evaluate(evidence: Evidence, metrics: Sequence[str | Metric] | None = None,
             options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Tensor]:
    """Score one batch with several metrics.

    Args:
        evidence: what the batch offers (maps, masks, a counterfactual, ...).
        metrics: names in :data:`METRICS` or built metrics; ``None``: every registered metric whose
            evidence is given. A metric whose evidence is missing is an error naming what is missing.
        options: ``{name: hyper-parameters}`` for the metrics given by name (:func:`create_metric`).

    Returns:
        ``{name: values (B)}`` in the order of ``metrics``.

    Example:
        >>> maps = torch.tensor([[[[3.0, 0.0], [1.0, 0.0]]]])
        >>> evidence = Evidence(maps=maps, masks=torch.tensor([[[True, False], [False, False]]]))
        >>> {k: v.tolist() for k, v in evaluate(evidence, ["pointing_game", "sparseness"]).items()}
        {'pointing_game': [1.0], 'sparseness': [0.625]}
        >>> evaluate(evidence, ["deletion"])
        Traceback (most recent call last):
        ...
        xmed.errors.ConfigError: config key 'metrics': deletion needs forward and images
    """
    options = dict(options or {})
    if metrics is None:
        metrics = [name for name, cls in METRICS.items() if not evidence.missing(cls.requires)]
        skipped = [name for name in METRICS if name not in metrics]
        if skipped:
            log.debug("evaluate: skipped %s (their evidence is not given)", ", ".join(skipped))
    built: list[Metric] = []
    for metric in metrics:
        if isinstance(metric, Metric):
            if metric.name in options:
                raise ConfigError("options", f"{metric.name} is given built: its options go to its class")
            built.append(metric)
        else:
            built.append(create_metric(metric, **options.get(metric, {})))
    names = [metric.name for metric in built]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError("metrics", f"named more than once: {', '.join(repeated)}")
    unused = set(options) - set(names)
    if unused:
        raise ConfigError("options", f"options for metrics that are not run: {', '.join(sorted(unused))}")
    for metric in built:
        absent = evidence.missing(metric.requires)
        if absent:
            raise ConfigError("metrics", f"{metric.name} needs {' and '.join(absent)}")
    return {metric.name: metric.score(evidence) for metric in built}


def score_direction(name: str) -> ScoreDirection | None:
    """Which values of a table's metric column are better: ``"higher"``, ``"lower"``, or None
    (a column without a better side, or not a metric).

    Answers for the saliency and counterfactual metrics (:data:`METRICS`), the keys written beside
    them (:data:`COMPANION_KEYS`) and the classification metrics of ``evaluate_predictions``
    (:data:`~xmed.metrics.classification.PREDICTION_SCORE_DIRECTIONS`).

    Example:
        >>> score_direction("auroc"), score_direction("changed_fraction"), score_direction("id")
        ('higher', 'lower', None)
    """
    if name in METRICS:
        return METRICS[name].score_direction
    if name in PREDICTION_SCORE_DIRECTIONS:
        return PREDICTION_SCORE_DIRECTIONS[name]
    return COMPANION_KEYS.get(name)
