"""Explanations of a model's decision: ``xmed.explain(model, images, method=..., target=...)``.

``xmed.explain`` is both this package and a function: call it for a one-off explanation, or
build an explainer once and call it on many batches (``xmed.explain.GradCAM(model)(images)``).
Explainers work on any ``nn.Module``; on a :class:`~xmed.models.FundusClassifier` the target
may be ``"glaucoma"``, a finding code or ``"vcdr"`` (see :mod:`xmed.explain.targets`).

Every explanation method is one class registered in :data:`METHODS` that states its ``name``, its
``title`` (what readers see) and its ``kind``: ``saliency`` (:class:`Explainer`, also in
:data:`EXPLAINERS`), ``edit`` (:class:`CounterfactualExplainer`, also in :data:`COUNTERFACTUALS`)
or ``rationale`` (:class:`RationaleExplainer`). ``xmed-explain``, the review and the study read
them from there: adding a method is its class, registered, and its config file
``explainer/<name>.yaml`` (``method: <name>`` and its options) on Hydra's search path.

Example:
    >>> import torch, xmed
    >>> from xmed.models import FundusClassifier
    >>> model = FundusClassifier("test_resnet.r160_in1k", input_size=64).eval()
    >>> explanation = xmed.explain(model, torch.rand(2, 3, 64, 64), method="gradcam", target="DH")
    >>> tuple(explanation.maps.shape), explanation.target
    ((2, 1, 64, 64), 'DH')
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from xmed.explain.base import (
    EXPLAINERS,
    KINDS,
    METHODS,
    Explainer,
    Explanation,
    ModelMethod,
    get_explainer,
    make_module_callable,
    register_explainer,
    register_method,
)
from xmed.explain.layers import TargetLayer, find_target_layer
from xmed.explain.saliency import (
    RISE,
    CAMExplainer,
    GradCAM,
    GradCAMPlusPlus,
    GuidedGradCAM,
    HiResCAM,
    InputXGradient,
    IntegratedGradients,
    LayerCAM,
    Occlusion,
    SmoothGrad,
    SmoothGradSquared,
)
from xmed.explain.targets import Target, select_target, target_function
from xmed.explain.counterfactual import (  # the callable submodule stays xmed.explain.counterfactual
    COUNTERFACTUALS,
    DIRECTIONS,
    AdversarialExplainer,
    Counterfactual,
    CounterfactualExplainer,
    get_counterfactual,
)
from xmed.explain.rationale import RationaleExplainer


def explain(model: nn.Module, images: Tensor, method: str = "gradcam", target: Target | None = "glaucoma",
            **options: Any) -> Explanation:
    """Explain ``target`` for a B×C×H×W batch with the registered ``method``.

    ``options`` go to the method's class (e.g. ``layer=``, ``n_steps=``, ``n_masks=``). A string
    target needs a model with named heads; for other models pass a class index, a callable, or
    ``target=None`` (each image's predicted class).
    """
    return get_explainer(method)(model, **options)(images, target)


make_module_callable(__name__, explain)

__all__ = ["COUNTERFACTUALS", "DIRECTIONS", "AdversarialExplainer", "Counterfactual", "CounterfactualExplainer",
           "counterfactual", "get_counterfactual", "EXPLAINERS", "KINDS", "METHODS", "RISE", "CAMExplainer",
           "Explainer", "Explanation", "GradCAM", "GradCAMPlusPlus", "GuidedGradCAM", "HiResCAM", "InputXGradient",
           "IntegratedGradients", "LayerCAM", "ModelMethod", "Occlusion", "RationaleExplainer", "SmoothGrad",
           "SmoothGradSquared", "Target", "TargetLayer", "explain", "find_target_layer", "get_explainer",
           "register_explainer", "register_method", "select_target", "target_function"]
