"""Metrics: diagnosis, finding-level and vCDR scores with bootstrap intervals; explanation quality.

The classification metrics (:mod:`xmed.metrics.classification`) score a split's predictions:
:func:`evaluate_predictions`, with :data:`PREDICTION_SCORE_DIRECTIONS` saying which values are better.

The explanation metrics — saliency maps (:mod:`xmed.metrics.explanation`: localisation,
faithfulness, complexity, randomisation) and counterfactuals (:mod:`xmed.metrics.counterfactual`)
— follow one protocol (:mod:`xmed.metrics.base`, as Quantus does):

* one registry, :data:`METRICS` (name -> class), filled by the :func:`register_metric` decorator;
* every metric class declares ``score_direction`` (``"higher"`` or ``"lower"`` is better),
  ``category`` and ``requires``, the :class:`Evidence` fields it reads;
* :func:`create_metric` builds one from its name and hyper-parameters;
* one call shape: ``metric.score(evidence)`` gives one value per image (a ``B`` tensor, NaN where
  undefined), and :func:`evaluate` runs several on one :class:`Evidence`; each metric's own
  ``__call__`` takes its data directly (``PointingGame()(maps, masks)``);
* :func:`score_direction` answers, for any metric key a table shows, which values are better.

This package never imports ``xmed.data`` or Lightning: it scores plain tensors or arrays.

Example:
    >>> import torch
    >>> from xmed.metrics import Evidence, Predictions, evaluate, evaluate_predictions, score_direction
    >>> split = Predictions(prob=[0.1, 0.4, 0.35, 0.8], label=[0, 0, 1, 1])
    >>> evaluate_predictions(split, split, n_bootstrap=0)["auroc"]
    0.75
    >>> maps = torch.zeros(1, 1, 4, 4)
    >>> maps[0, 0, 0, 1], maps[0, 0, 3, 3] = 3.0, 1.0
    >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    >>> masks[0, :2, :2] = True
    >>> evidence = Evidence(maps=maps, masks=masks, images=torch.rand(1, 3, 4, 4),
    ...                     forward=lambda x: x.mean((1, 2, 3)))
    >>> scores = evaluate(evidence, ["energy_pointing_game", "deletion"], options={"deletion": {"n_steps": 4}})
    >>> scores["energy_pointing_game"].tolist(), tuple(scores["deletion"].shape)
    ([0.75], (1,))
    >>> score_direction("energy_pointing_game"), score_direction("deletion"), score_direction("ece")
    ('higher', 'lower', 'lower')
    >>> sorted(evaluate(Evidence(maps=maps, masks=masks)))   # None: every metric whose evidence is given
    ['energy_pointing_game', 'map_auprc', 'map_auroc', 'pointing_game', 'sparseness']
    >>> METRICS["changed_fraction"].category, METRICS["changed_fraction"].requires
    ('counterfactual', ('counterfactual',))
"""

from xmed.metrics.base import (
    CATEGORIES,
    COMPANION_KEYS,
    METRICS,
    SCORE_DIRECTIONS,
    Category,
    Evidence,
    ExplainFn,
    ForwardFn,
    Metric,
    ScoreDirection,
    create_metric,
    evaluate,
    nan_unless,
    register_metric,
    score_direction,
)
from xmed.metrics.classification import (
    CI_METRICS,
    PREDICTION_SCORE_DIRECTIONS,
    THRESHOLD_RULES,
    ArrayLike,
    BootstrapCI,
    Predictions,
    ThresholdRule,
    auroc,
    bootstrap_ci,
    bootstrap_predictions,
    brier,
    calibration_bins,
    choose_threshold,
    ece,
    evaluate_predictions,
    finding_auroc,
    finding_hamming,
    operating_point,
    resample_indices,
    sens_at_spec,
    vcdr_mae,
)
from xmed.metrics.explanation import (
    ROAD,
    Deletion,
    EnergyPointingGame,
    Insertion,
    MapAUPRC,
    MapAUROC,
    ModelParameterRandomisation,
    ModelParameterRandomisationSSIM,
    PointingGame,
    ROADLeRF,
    Sparseness,
    evaluate_explanations,
    noisy_linear_imputation,
    randomisation_layers,
)
from xmed.metrics.counterfactual import (
    ChangedFraction,
    CounterfactualMetric,
    EnergyInMask,
    L1InMask,
    ProximityL1,
    ProximityL2,
    ReconstructionError,
    Validity,
    VCDRFalls,
    VCDRMonotonic,
    energy_in_mask,
    evaluate_counterfactuals,
    flip_rate,
    mask_coverage,
    reconstruction_error,
    seconds_per_image,
    vcdr_falls,
    vcdr_monotonic_fraction,
)

__all__ = [
    # the protocol (xmed.metrics.base)
    "CATEGORIES", "COMPANION_KEYS", "METRICS", "SCORE_DIRECTIONS", "Category", "Evidence", "ExplainFn",
    "ForwardFn", "Metric", "ScoreDirection", "create_metric", "evaluate", "nan_unless", "register_metric",
    "score_direction",
    # classification (xmed.metrics.classification)
    "CI_METRICS", "PREDICTION_SCORE_DIRECTIONS", "THRESHOLD_RULES", "ArrayLike", "BootstrapCI", "Predictions",
    "ThresholdRule", "auroc", "bootstrap_ci", "bootstrap_predictions", "brier", "calibration_bins",
    "choose_threshold", "ece", "evaluate_predictions", "finding_auroc", "finding_hamming", "operating_point",
    "resample_indices", "sens_at_spec", "vcdr_mae",
    # saliency maps (xmed.metrics.explanation)
    "PointingGame", "EnergyPointingGame", "MapAUROC", "MapAUPRC", "Deletion", "Insertion", "ROAD", "ROADLeRF",
    "ModelParameterRandomisation", "ModelParameterRandomisationSSIM", "Sparseness", "evaluate_explanations",
    "noisy_linear_imputation", "randomisation_layers",
    # counterfactuals (xmed.metrics.counterfactual)
    "CounterfactualMetric", "Validity", "ProximityL1", "ProximityL2", "ChangedFraction", "EnergyInMask",
    "L1InMask", "VCDRFalls", "VCDRMonotonic", "ReconstructionError", "energy_in_mask",
    "evaluate_counterfactuals", "flip_rate", "mask_coverage", "reconstruction_error", "seconds_per_image",
    "vcdr_falls", "vcdr_monotonic_fraction",
]
