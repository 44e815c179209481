"""Saliency explainers: where in the image the evidence for a target lies.

Example:
    >>> from xmed.explain.saliency import GradCAM
    >>> GradCAM.name
    'gradcam'
"""

from xmed.explain.saliency.cam import CAMExplainer, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from xmed.explain.saliency.gradient import (
    GuidedGradCAM,
    InputXGradient,
    IntegratedGradients,
    SmoothGrad,
    SmoothGradSquared,
)
from xmed.explain.saliency.perturbation import RISE, Occlusion

__all__ = ["CAMExplainer", "GradCAM", "GradCAMPlusPlus", "GuidedGradCAM", "HiResCAM", "InputXGradient",
           "IntegratedGradients", "LayerCAM", "Occlusion", "RISE", "SmoothGrad", "SmoothGradSquared"]
