"""Targets: which scalar per image an explanation (or a faithfulness metric) is about.

A target turns a model's output into one number per image (a B-vector):

* a string on a model with named heads (:class:`~xmed.models.FundusClassifier`, whose output is a
  dict): ``"glaucoma"`` (the diagnosis logit), a finding code such as ``"DH"`` (its logit) or
  ``"vcdr"`` (the regression output; ``"vCDR"`` in any case too, see
  :func:`xmed.findings.canonical_target`);
* an ``int`` class index on any classification model whose output is a B×C tensor (timm,
  torchvision, MONAI), or a B-tensor of class indices (one per image);
* a callable ``output -> B tensor`` for anything else;
* ``None``: ``"glaucoma"`` on a model with named heads, else each image's predicted class.

``as_probability=True`` reads logits as probabilities (sigmoid for one-logit heads and findings,
softmax over classes for a multi-class output); faithfulness curves use that scale.

Example:
    >>> import torch
    >>> logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    >>> select_target(logits, 1).tolist()
    [2.0, -1.0]
    >>> [round(v, 3) for v in select_target(logits, 1, as_probability=True).tolist()]
    [0.881, 0.119]
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Union

import torch
from torch import Tensor, nn

from xmed.errors import ConfigError
from xmed.findings import DIAGNOSIS, TARGETS, VCDR, canonical_target
from xmed.models.classifier import target_scalar

Target = Union[str, int, Tensor, Callable[[Any], Tensor]]


def select_target(output: Any, target: Target | None, as_probability: bool = False) -> Tensor:
    """The B-vector ``target`` names in a model ``output`` (see the module docstring)."""
    if target is None:
        target = DIAGNOSIS if isinstance(output, Mapping) else _predicted_class(output)
    if callable(target) and not isinstance(target, Tensor):
        return _as_vector(target(output), "the target callable")
    if isinstance(target, str):
        if not isinstance(output, Mapping):
            raise ConfigError("target", f"the string target {target!r} needs a model with named heads "
                                        "(a FundusClassifier); give a class index or a callable instead")
        target = canonical_target(target)
        value = target_scalar(output, target)
        return torch.sigmoid(value) if as_probability and target != VCDR else value
    if isinstance(output, Mapping):
        raise ConfigError("target", f"a model with named heads takes a target name ({', '.join(TARGETS)}), "
                                    f"not {target!r}")
    if not isinstance(output, Tensor):
        raise ConfigError("target", f"cannot select a target from a model output of type {type(output).__name__}")
    logits = output.reshape(output.shape[0], -1)
    n_classes = logits.shape[1]
    index = torch.as_tensor(target, device=logits.device).long()
    if index.ndim > 1 or (index.ndim == 1 and index.numel() != logits.shape[0]):
        raise ConfigError("target", f"class indices must be one int or one per image, got shape {tuple(index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n_classes):
        raise ConfigError("target", f"class index {target!r} out of range for a model with {n_classes} output(s)")
    if as_probability:
        logits = torch.sigmoid(logits) if n_classes == 1 else torch.softmax(logits, dim=1)
    index = index.expand(logits.shape[0]) if index.ndim == 0 else index
    return logits.gather(1, index[:, None]).squeeze(1)


def target_function(model: nn.Module, target: Target | None, as_probability: bool = False) -> Callable[[Tensor], Tensor]:
    """``images -> B scores`` of ``target`` — the forward function captum and the metrics take.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> tuple(target_function(net, 2)(torch.zeros(4, 3, 2, 2)).shape)
        (4,)
    """
    def forward(images: Tensor) -> Tensor:
        return select_target(model(images), target, as_probability)

    return forward


def fix_target(model: nn.Module, images: Tensor, target: Target | None) -> Target:
    """Resolve the default target once, on the unperturbed images: methods that run the model on
    many perturbed copies (IG, SmoothGrad, occlusion, RISE) must not follow a predicted class that
    changes along the way."""
    if target is not None:
        return target
    with torch.no_grad():
        output = model(images)
    return DIAGNOSIS if isinstance(output, Mapping) else _predicted_class(output)


def captum_forward(model: nn.Module, target: Target) -> tuple[Callable[[Tensor], Tensor], Any]:
    """A forward function and a ``target`` argument for captum.

    Class indices go to captum (it repeats per-image indices when it expands the batch, for IG
    steps or noise samples); names and callables become a forward that returns one score per row.
    """
    if isinstance(target, (int, Tensor)) and not isinstance(target, bool):
        def logits(images: Tensor) -> Tensor:
            output = model(images)
            if isinstance(output, Mapping):
                select_target(output, target)  # raises the helpful error
            return output.reshape(output.shape[0], -1)

        return logits, target
    return target_function(model, target), None


def _predicted_class(output: Any) -> Tensor:
    if not isinstance(output, Tensor):
        raise ConfigError("target", f"cannot select a target from a model output of type {type(output).__name__}")
    logits = output.reshape(output.shape[0], -1)
    if logits.shape[1] == 1:
        return torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return logits.detach().argmax(dim=1)


def _as_vector(value: Any, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise ConfigError("target", f"{what} must return a tensor, got {type(value).__name__}")
    if value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]
    if value.ndim != 1:
        raise ConfigError("target", f"{what} must return one score per image (B), got shape {tuple(value.shape)}")
    return value
