"""Adversarial training: models whose input gradients are perceptually aligned.

Counterfactual edits of a standard network are often high-frequency noise; a network trained on
L2-bounded adversarial examples has gradients that follow image structure, so its edits look
like pathology (a cup that shrinks) rather than speckle. Two recipes:

* ``pgd`` (Madry et al., 2018): train on the worst case within the L2 ball — the diagnosis loss
  is maximised by projected gradient ascent and the usual losses are taken on that image;
* ``trades`` (Zhang et al., 2019): the usual losses on the clean image plus ``beta`` × the KL
  divergence between the diagnosis on the clean and on the attacked image (the attack maximises
  that divergence).

``epsilon`` is the L2 radius per image in the model's input space (normalised pixels).

Example:
    >>> import torch
    >>> from xmed.models import FundusClassifier
    >>> model = FundusClassifier("test_resnet.r160_in1k", input_size=32).eval()
    >>> attack = AdversarialTraining(method="pgd", epsilon=0.5, steps=2)
    >>> x = torch.rand(2, 3, 32, 32)
    >>> adv = attack.perturb(model, x, torch.tensor([0.0, 1.0]))
    >>> bool(((adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmed.errors import ConfigError


@dataclass
class AdversarialTraining:
    """Settings of adversarial training (``model.adversarial_training`` in the Hydra config)."""

    method: Literal["pgd", "trades"] = "pgd"
    epsilon: float = 1.0
    steps: int = 3
    step_size: float | None = None      # None: 2.5 × epsilon / steps (Madry et al.)
    beta: float = 6.0                    # TRADES weight of the robustness term

    def __post_init__(self):
        if self.method not in ("pgd", "trades"):
            raise ConfigError("model.adversarial_training.method", f"must be pgd or trades, got {self.method!r}")
        if self.epsilon <= 0 or self.steps < 1:
            raise ConfigError("model.adversarial_training", "epsilon must be > 0 and steps >= 1")

    def perturb(self, model: nn.Module, images: Tensor, label: Tensor, pos_weight: Tensor | None = None) -> Tensor:
        """The attacked images (detached): L2 projected gradient ascent on the diagnosis loss
        (``pgd``) or on the clean-vs-attacked KL divergence (``trades``).

        The attack runs with the model in eval mode (BatchNorm statistics are not updated by
        attack passes) and leaves no gradient on its parameters.
        """
        was_training = model.training
        model.eval()
        step = self.step_size or 2.5 * self.epsilon / self.steps
        try:
            with torch.no_grad():
                clean = model(images)["logits"].float() if self.method == "trades" else None
            # TRADES starts from a small random point: at delta = 0 its KL has zero gradient
            delta = 0.001 * torch.randn_like(images) if self.method == "trades" else torch.zeros_like(images)
            known = ~torch.isnan(label)
            for _ in range(self.steps):
                delta.requires_grad_(True)
                logits = model(images + delta)["logits"].float()
                if self.method == "trades":
                    loss = bernoulli_kl(clean, logits).sum()
                elif known.any():
                    loss = F.binary_cross_entropy_with_logits(logits[known], label[known].float(),
                                                              pos_weight=pos_weight, reduction="sum")
                else:
                    break
                (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
                    delta = delta + step * grad / norm
                    scale = (self.epsilon / delta.flatten(1).norm(dim=1).clamp(min=1e-12)).clamp(max=1.0)
                    delta = delta * scale.view(-1, 1, 1, 1)
        finally:
            model.train(was_training)
        return (images + delta).detach()


def bernoulli_kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """KL(Bernoulli(sigmoid(p)) || Bernoulli(sigmoid(q))) per element, from logits.

    Example:
        >>> bernoulli_kl(torch.tensor([0.3]), torch.tensor([0.3])).item()
        0.0
    """
    p = torch.sigmoid(p_logits)
    return (p * (F.logsigmoid(p_logits) - F.logsigmoid(q_logits))
            + (1 - p) * (F.logsigmoid(-p_logits) - F.logsigmoid(-q_logits)))
