"""Latent shift: counterfactuals that move an autoencoder's code along the classifier's gradient.

The method of Cohen et al. (2021, "Gifsplanation via Latent Shift: a simple autoencoder approach
to counterfactual generation for chest X-rays"): encode the image, ``z = E(x)``; take the
gradient of the target's probability with respect to the code; decode ``D(z + λ·g)`` for a
sweep of λ. Because every frame is a decoding, the edit stays on what the autoencoder learnt
images look like (no adversarial noise), and the sequence of frames is a movie of the change.

What is implemented, exactly:

1. ``z = E(x)``, ``x̂ = D(z)``; the **frame** for a code ``z'`` is ``D(z')`` (``keep_detail=False``)
   or ``x + m ⊙ (D(z') − x̂)`` (``keep_detail=True``, ``m`` the field of view): the photograph
   itself with the decoded *change*, so detail the autoencoder blurs away is kept and pixels
   outside the field of view stay bit-identical. Frame 0 (``z' = z``) is ``x̂`` or ``x`` itself.
2. ``g = ∂p/∂z`` at ``z``, where ``p`` is the target's probability (sigmoid of a logit, softmax of
   a class, the vCDR value; :func:`~xmed.explain.counterfactual.adversarial.target_score`) **on
   frame 0** — with ``keep_detail=False`` that is the paper's ``∂p(f(D(z)))/∂z``; with
   ``keep_detail=True`` it is the gradient of the probability of the image actually returned
   (``J_Dᵀ ∇ₓp`` at ``x``, ``x̂`` held fixed), so the search below moves what it measures.
3. With ``normalise_gradient=True`` (default) the shift is ``λ · ‖z‖/‖g‖ · g`` per image: λ is the
   size of the shift relative to the code's norm, the same scale for every image, classifier and
   autoencoder, however saturated the sigmoid. (Its direction is computed from the target's
   logit-scale score, which is a positive multiple of ``∂p/∂z`` — the same direction without the
   underflow of a saturated sigmoid.) With ``False`` the shift is the paper's ``λ · ∂p/∂z``.
4. The λ search (Cohen et al. step λ outward until the prediction stops falling or has fallen
   far enough; here per image, batched): λ takes the values ``s·k·max_lambda/n_lambdas``,
   ``k = 1 … n_lambdas``, ``s = −1`` for ``"decrease"`` and ``+1`` for ``"increase"``. At each
   ``k`` the frame of every still-moving image is decoded and classified; the image

   * takes the step if its target score moved the requested way (or its probability crossed
     ``threshold``), and **stops** there if the probability crossed ``threshold``;
   * **stops** without taking it if the score did not move the requested way (the shift has
     stopped working: ``s·(score_k − score_{k−1}) ≤ 0``; the score is on the logit scale so a
     saturated probability does not count as "not moving");
   * stops at ``k = n_lambdas`` (``|λ| = max_lambda``) in any case.

   An image already on the requested side of ``threshold`` takes no step and is returned as frame
   0. ``steps`` is the ``k`` of each image's last step, so its final ``λ = s·steps·max_lambda/
   n_lambdas``; ``reached`` says whether it crossed.

The path: frame 0, then one frame per ``k`` run (the last ``k`` at which any image was still
moving); an image that stopped stays at its last frame. ``difference`` is the per-pixel maximum
over the frames of ``|frame − frame 0|`` summed over channels (the paper builds its heatmap from
the frame differences). Along the path each image's probability moves the requested way only.

The classifier and the autoencoder get no parameter gradients (``torch.autograd.grad`` with
respect to the code only) and their train/eval modes are left as they are. Cost: one encoder
pass, one decoder + classifier forward and backward pass, then one decoder + classifier forward
per λ step of the images still moving.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from xmed.models.autoencoder import FundusAutoencoder
    >>> net = nn.Sequential(nn.Conv2d(3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> ae = FundusAutoencoder(input_size=16, channels=(4, 8), latent_channels=2)
    >>> cf = LatentShiftExplainer(net, ae, n_lambdas=3, threshold=1.0, fov_threshold=None)(
    ...     torch.rand(2, 3, 16, 16), target=0, direction="increase")
    >>> cf.method, tuple(cf.frames.shape[1:]), tuple(cf.difference.shape), cf.epsilon
    ('latent_shift', (2, 3, 16, 16), (2, 1, 16, 16), None)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from xmed.checks import int_at_least, positive
from xmed.data.keywords import RENAMED_CONFIG_KEYS, renamed_keywords
from xmed.errors import ConfigError
from xmed.explain.base import option_value
from xmed.explain.counterfactual import (
    Counterfactual,
    CounterfactualExplainer,
    Direction,
    Threshold,
    at_goal,
    direction_thresholds,
    register_counterfactual,
)
from xmed.explain.counterfactual.adversarial import (
    DEFAULT_FOV_THRESHOLD,
    InputSpace,
    recorded_heads,
    target_score,
)
from xmed.explain.targets import Target, fix_target
from xmed.models.autoencoder import load_autoencoder

DEFAULT_MAX_LAMBDA = 1.0
DEFAULT_N_LAMBDAS = 20


@register_counterfactual
class LatentShiftExplainer(CounterfactualExplainer):
    """Latent shift (Cohen et al., 2021): decode the code moved along the classifier's gradient.

    Args:
        model: any differentiable ``nn.Module``; a :class:`~xmed.models.FundusClassifier` also
            gets findings and vCDR recorded along the path.
        autoencoder: an ``nn.Module`` with ``encode(x)`` and ``decode(z)`` working in the model's
            input space (a :class:`~xmed.models.autoencoder.FundusAutoencoder`), or the path of an
            exported one / of a Lightning checkpoint (loaded with
            :func:`~xmed.models.autoencoder.load_autoencoder` onto the model's device).
        max_lambda: the largest ``|λ|`` (with ``normalise_gradient``: the shift's norm as a share
            of the code's norm).
        n_lambdas: λ steps from 0 to ``max_lambda`` (the most frames after frame 0).
        threshold: the decision threshold on the target's probability (the vCDR value for
            ``"vcdr"``); ``"decrease"`` aims below it, ``"increase"`` above it; a mapping gives a
            goal per direction (:func:`~xmed.explain.counterfactual.direction_thresholds`).
        keep_detail: return the photograph plus the decoded change inside the field of view
            (True) instead of the raw decoding (False).
        fov_threshold: default field of view: pixels whose un-normalised RGB has a maximum above
            this (in [0, 1]); None: the whole image. A ``fov_mask`` given to the call wins.
        normalise_gradient: scale the shift to the code's norm (see the module docstring); False:
            the paper's raw ``λ · ∂p/∂z``. (Formerly ``normalize_gradient``, still read with a
            :class:`DeprecationWarning`.)

    Example:
        >>> LatentShiftExplainer(nn.Identity(), nn.Identity())
        Traceback (most recent call last):
        ...
        xmed.errors.ConfigError: config key 'autoencoder': needs encode(x) and decode(z) methods (a FundusAutoencoder), got Identity
    """

    name, title = "latent_shift", "Latent shift"

    @renamed_keywords(**RENAMED_CONFIG_KEYS["explainer.*"])
    def __init__(self, model: nn.Module, autoencoder: nn.Module | str | os.PathLike,
                 max_lambda: float = DEFAULT_MAX_LAMBDA, n_lambdas: int = DEFAULT_N_LAMBDAS,
                 threshold: Threshold = 0.5, keep_detail: bool = True,
                 fov_threshold: float | None = DEFAULT_FOV_THRESHOLD, normalise_gradient: bool = True):
        super().__init__(model)
        if isinstance(autoencoder, (str, os.PathLike)):
            autoencoder = load_autoencoder(autoencoder, device=self.device)
        if not (isinstance(autoencoder, nn.Module) and callable(getattr(autoencoder, "encode", None))
                and callable(getattr(autoencoder, "decode", None))):
            raise ConfigError("autoencoder", f"needs encode(x) and decode(z) methods (a FundusAutoencoder), "
                                             f"got {type(autoencoder).__name__}")
        self.autoencoder = autoencoder
        self.max_lambda = positive("max_lambda", max_lambda)
        self.n_lambdas = int_at_least("n_lambdas", n_lambdas, 1)
        self.thresholds = direction_thresholds(threshold)
        self.keep_detail = bool(keep_detail)
        self.normalise_gradient = bool(normalise_gradient)
        # the field of view and the normalisation are read as the adversarial method reads them
        self._space = InputSpace(model, fov_threshold=fov_threshold)
        self.fov_threshold, self.mean, self.std = self._space.fov_threshold, self._space.mean, self._space.std
        _check_same_space(model, autoencoder)

    @classmethod
    def recorded_frames(cls, options: Mapping[str, Any]) -> int:
        """The frames of its path: the input and one per λ step."""
        return int(option_value(cls, options, "n_lambdas")) + 1

    def field_of_view(self, images: Tensor, fov_mask: Tensor | None = None) -> Tensor:
        """B×1×H×W bool: where the change is kept (``fov_mask`` checked, or the default)."""
        return self._space.field_of_view(images, fov_mask)

    def _check_inputs(self, images: Tensor) -> None:
        param = next(self.autoencoder.parameters(), None)
        if param is not None and param.device != images.device:
            raise ConfigError("autoencoder", f"is on {param.device}, the model on {images.device}: "
                                             "move it to the model's device")
        config = getattr(self.autoencoder, "data_config", None)
        size = getattr(config, "input_size", None)
        if size is not None and tuple(images.shape[2:]) != (size, size):
            raise ConfigError("autoencoder", f"was trained on {size}×{size} images, these are "
                                             f"{images.shape[2]}×{images.shape[3]}: use an autoencoder "
                                             "trained at the model's input size")

    def _classify(self, frames: Tensor, target: Target) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Score (logit scale), probability, finding probabilities, vCDR of a batch of frames."""
        output = self.model(frames)
        score, probability = target_score(output, target)
        findings, vcdr = recorded_heads(output)
        return score.detach(), probability.detach(), findings, vcdr

    def generate(self, images: Tensor, target: Target | None, direction: Direction,
                 fov_mask: Tensor | None) -> Counterfactual:
        x0 = images
        self._check_inputs(x0)
        fov = self.field_of_view(x0, fov_mask)
        keep = fov.to(x0.dtype)
        if target is None:
            target = fix_target(self.model, x0, None)  # each image's predicted class, fixed once
        sign = 1.0 if direction == "increase" else -1.0
        threshold = self.thresholds[direction]

        def done(p: Tensor) -> Tensor:
            return at_goal(p, direction, threshold)

        def frame_of(decoded: Tensor, x: Tensor, x_hat: Tensor, m: Tensor) -> Tensor:
            return x + m * (decoded - x_hat) if self.keep_detail else decoded

        # the code, its decoding and the gradient of the target on frame 0 (w.r.t. the code only)
        with torch.no_grad():
            z0 = self.autoencoder.encode(x0)
        with torch.enable_grad():
            z = z0.detach().requires_grad_(True)
            decoded = self.autoencoder.decode(z)
            x_hat = decoded.detach()
            start = frame_of(decoded, x0, x_hat, keep)  # = x0 (keep_detail) or x̂, with a graph to z
            output = self.model(start)
            score, probability = target_score(output, target)
            objective = score if self.normalise_gradient else probability
            if not objective.requires_grad:
                raise ConfigError("target", "the target does not depend on the input image")
            (g,) = torch.autograd.grad(objective.sum(), z)
        start = start.detach()
        s, p = score.detach(), probability.detach()
        findings = vcdr = None
        if isinstance(output, Mapping):
            findings = torch.sigmoid(output["finding_logits"].detach()) if "finding_logits" in output else None
            vcdr = output["vcdr"].detach() if "vcdr" in output else None
        del output, score, probability, decoded

        per_image = (-1,) + (1,) * (z0.ndim - 1)
        if self.normalise_gradient:
            scale = z0.flatten(1).norm(dim=1) / g.flatten(1).norm(dim=1).clamp_min(1e-12)
            g = g * scale.view(per_image)
        step = sign * self.max_lambda / self.n_lambdas

        current = start.clone()
        frames, probs = [start], [p.clone()]
        find_path = [findings.clone()] if findings is not None else []
        vcdr_path = [vcdr.clone()] if vcdr is not None else []
        b = x0.shape[0]
        steps = torch.zeros(b, dtype=torch.long, device=x0.device)
        active = ~done(p)
        for k in range(1, self.n_lambdas + 1):
            if not bool(active.any()):
                break
            idx = active.nonzero().squeeze(1)
            sub_target = target[idx] if isinstance(target, Tensor) and target.ndim == 1 else target
            with torch.no_grad():
                decoded = self.autoencoder.decode(z0.index_select(0, idx) + (k * step) * g.index_select(0, idx))
                frame = frame_of(decoded, x0.index_select(0, idx), x_hat.index_select(0, idx),
                                 keep.index_select(0, idx))
                s_k, p_k, f_k, v_k = self._classify(frame, sub_target)
            crossed = done(p_k)
            take = (sign * (s_k - s.index_select(0, idx)) > 0) | crossed
            taken = idx[take]
            current.index_copy_(0, taken, frame[take])
            s.index_copy_(0, taken, s_k[take])
            p.index_copy_(0, taken, p_k[take])
            if findings is not None and f_k is not None:
                findings.index_copy_(0, taken, f_k[take])
            if vcdr is not None and v_k is not None:
                vcdr.index_copy_(0, taken, v_k[take])
            steps.index_fill_(0, taken, k)
            active.index_fill_(0, idx[~take | crossed], False)
            frames.append(current.clone())
            probs.append(p.clone())
            if findings is not None:
                find_path.append(findings.clone())
            if vcdr is not None:
                vcdr_path.append(vcdr.clone())

        path = torch.stack(frames)
        difference = (path - path[0]).abs().sum(dim=2).amax(dim=0).unsqueeze(1)
        return Counterfactual(
            images=current, frames=path, probability=torch.stack(probs),
            findings=torch.stack(find_path) if find_path else None,
            vcdr=torch.stack(vcdr_path) if vcdr_path else None,
            difference=difference, steps=steps, reached=done(p),
            method=self.name, target="", direction=direction, seconds=0.0, epsilon=None, std=self.std, fov=fov,
            threshold=threshold,
        )


def _check_same_space(model: nn.Module, autoencoder: nn.Module) -> None:
    """Both normalise and crop images the same way, when both say how (else the decoding means
    nothing to the classifier: an autoencoder of whole fundi cannot encode a disc-centred crop)."""
    mine, theirs = getattr(model, "data_config", None), getattr(autoencoder, "data_config", None)
    if mine is None or theirs is None:
        return
    for key in ("mean", "std"):
        a, b = tuple(getattr(mine, key)), tuple(getattr(theirs, key))
        if len(a) != len(b) or any(abs(u - v) > 1e-6 for u, v in zip(a, b)):
            raise ConfigError("autoencoder", f"normalises images with {key} {b}, the model with {a}: train the "
                                             "autoencoder on the model's data config")
    if not (hasattr(mine, "preprocess") and hasattr(theirs, "preprocess")):
        return
    model_crops, autoencoder_crops = mine.preprocess(), theirs.preprocess()
    for key in model_crops:
        a, b = model_crops[key], autoencoder_crops.get(key)
        if a != b:
            raise ConfigError("autoencoder", f"was trained on images with {key}={b}, the model sees {key}={a}: "
                                             "train the autoencoder with the model's data.preprocess")


__all__ = ["DEFAULT_MAX_LAMBDA", "DEFAULT_N_LAMBDAS", "LatentShiftExplainer"]
