"""Metrics: diagnosis, finding-level and vCDR scores with bootstrap intervals; explanation quality.

Each metric declares whether higher or lower is better in :data:`DIRECTION` (Quantus style); the
explanation metrics (:data:`EXPLANATION_METRICS`) declare it as a class attribute.
This package never imports ``xmed.data`` or Lightning: it scores plain tensors or arrays.

Example:
    >>> from xmed.metrics import Predictions, evaluate_predictions
    >>> split = Predictions(prob=[0.1, 0.4, 0.35, 0.8], label=[0, 0, 1, 1])
    >>> evaluate_predictions(split, split, n_bootstrap=0)["auroc"]
    0.75
"""

from xmed.metrics.counterfactual import (
    COUNTERFACTUAL_METRICS,
    CounterfactualMetric,
    EnergyInMask,
    L1InMask,
    ProximityL1,
    ProximityL2,
    ReconstructionError,
    Sparsity,
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
from xmed.metrics.classification import (
    CI_METRICS,
    DIRECTION,
    THRESHOLD_RULES,
    ArrayLike,
    BootstrapCI,
    Predictions,
    ThresholdRule,
    auroc,
    bootstrap_ci,
    bootstrap_predictions,
    brier,
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
    EXPLANATION_METRICS,
    ROAD,
    Deletion,
    EnergyPointingGame,
    ExplanationMetric,
    Insertion,
    MapAUPRC,
    MapAUROC,
    ModelParameterRandomisation,
    ModelParameterRandomisationSSIM,
    PointingGame,
    ROADLeRF,
    Sparseness,
    create_metric,
    evaluate_explanations,
    noisy_linear_imputation,
    randomisation_layers,
)

__all__ = [
    "CI_METRICS", "DIRECTION", "THRESHOLD_RULES", "ArrayLike", "BootstrapCI", "Predictions",
    "ThresholdRule", "auroc", "bootstrap_ci", "bootstrap_predictions", "brier", "choose_threshold",
    "ece", "evaluate_predictions", "finding_auroc", "finding_hamming", "operating_point",
    "resample_indices", "sens_at_spec", "vcdr_mae",
    # explanation quality (xmed.metrics.explanation)
    "EXPLANATION_METRICS", "ExplanationMetric", "PointingGame", "EnergyPointingGame", "MapAUROC",
    "MapAUPRC", "Deletion", "Insertion", "ROAD", "ROADLeRF", "ModelParameterRandomisation",
    "ModelParameterRandomisationSSIM", "Sparseness", "create_metric", "evaluate_explanations",
    "noisy_linear_imputation", "randomisation_layers",
    # counterfactual quality (xmed.metrics.counterfactual)
    "COUNTERFACTUAL_METRICS", "CounterfactualMetric", "Validity", "ProximityL1", "ProximityL2", "Sparsity",
    "EnergyInMask", "L1InMask", "VCDRFalls", "VCDRMonotonic", "ReconstructionError", "energy_in_mask",
    "evaluate_counterfactuals", "flip_rate", "mask_coverage", "reconstruction_error", "seconds_per_image",
    "vcdr_falls", "vcdr_monotonic_fraction",
]
