"""Target layers for CAM methods: found automatically, and their outputs seen as B×C×h×w maps.

The automatic choice is the *last spatial stage* of the network:

* ViT-like models (timm ``VisionTransformer``, DeiT, EVA, BEiT: a ``blocks`` list and a
  ``patch_embed``): the first norm of the last block. Its patch tokens still receive gradient
  when the head reads only the class token, which the final norm's patch tokens do not.
* everything else: one traced forward pass of one image records every module's output; the
  module that *finishes last* with a spatial output (h, w > 1) wins — a CNN's last stage
  (``layer4``, ``stages.3``, ``conv_head``/``bn2``) or a Swin's last NHWC stage.

On a :class:`~xmed.models.FundusClassifier` the search runs inside its backbone, so its own
heads (the 1×1 mask head included) are never chosen.

Token outputs are put on the patch grid the model reports (``patch_embed.grid_size``, prefix
tokens dropped by ``num_prefix_tokens``); NHWC outputs (timm's ``output_fmt == "NHWC"``) are
permuted. No grid is ever guessed from a token count.

Example:
    >>> import timm, torch
    >>> net = timm.create_model("resnet10t", num_classes=2)
    >>> layer = find_target_layer(net, torch.zeros(1, 3, 64, 64))
    >>> layer.name, layer.layout
    ('layer4', 'NCHW')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from xmed.errors import ConfigError

Layout = Literal["NCHW", "NHWC", "tokens"]


@dataclass
class TargetLayer:
    """A module whose output a CAM method weighs, and how to read that output as a map."""

    module: nn.Module
    name: str
    layout: Layout = "NCHW"
    grid: tuple[int, int] | None = None      # tokens only: patch grid (rows, cols)
    prefix_tokens: int = 0                   # tokens only: class/register tokens before the patches

    def to_map(self, output: Tensor) -> Tensor:
        """The layer output (or its gradient) as B×C×h×w."""
        if self.layout == "NCHW":
            if output.ndim != 4:
                raise ConfigError("layer", f"{self.name} gave shape {tuple(output.shape)}, expected B×C×h×w")
            return output
        if self.layout == "NHWC":
            return output.permute(0, 3, 1, 2)
        rows, cols = self.grid
        tokens = output[:, self.prefix_tokens:]
        if tokens.shape[1] != rows * cols:
            raise ConfigError("layer", f"{self.name} has {tokens.shape[1]} patch tokens, the model's grid is {rows}×{cols}")
        return tokens.transpose(1, 2).reshape(output.shape[0], output.shape[2], rows, cols)


def find_target_layer(model: nn.Module, example: Tensor) -> TargetLayer:
    """The last spatial stage of ``model`` (see the module docstring); ``example`` is a batch the
    model accepts (one image of it is traced)."""
    root = getattr(model, "backbone", model)
    prefix = "backbone." if root is not model else ""
    blocks = getattr(root, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) and hasattr(root, "patch_embed"):
        last = blocks[-1]
        module = getattr(last, "norm1", last)
        name = f"{prefix}blocks.{len(blocks) - 1}" + (".norm1" if module is not last else "")
        return _token_layer(root, module, name, example)
    nhwc = getattr(root, "output_fmt", "NCHW") == "NHWC"
    finished: list[tuple[str, Tensor]] = []
    names = {module: name for name, module in root.named_modules() if name}
    hooks = [m.register_forward_hook(lambda mod, _i, out: finished.append((names[mod], out)))
             for m in names]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
    for name, out in reversed(finished):
        if isinstance(out, Tensor) and out.ndim == 4:
            h, w = (out.shape[1], out.shape[2]) if nhwc else (out.shape[2], out.shape[3])
            if h > 1 and w > 1:
                return TargetLayer(root.get_submodule(name), prefix + name, "NHWC" if nhwc else "NCHW")
    raise ConfigError("layer", f"{type(model).__name__} has no module with a spatial output; pass layer= explicitly")


def resolve_layer(model: nn.Module, layer: nn.Module | str | None, example: Tensor) -> TargetLayer:
    """A :class:`TargetLayer` from a module, a dotted module name, or None (automatic)."""
    if layer is None:
        return find_target_layer(model, example)
    if isinstance(layer, str):
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            raise ConfigError("layer", f"{type(model).__name__} has no submodule {layer!r}") from None
        name = layer
    else:
        module = layer
        name = next((n for n, m in model.named_modules() if m is layer), type(layer).__name__)
    root = getattr(model, "backbone", model)
    if hasattr(root, "patch_embed") and getattr(getattr(root, "patch_embed"), "grid_size", None) is not None \
            and getattr(root, "output_fmt", "NCHW") != "NHWC":
        return _token_layer(root, module, name, example, allow_spatial=True, model=model)
    nhwc = getattr(root, "output_fmt", "NCHW") == "NHWC"
    return TargetLayer(module, name, "NHWC" if nhwc else "NCHW")


def _token_layer(root: nn.Module, module: nn.Module, name: str, example: Tensor,
                 allow_spatial: bool = False, model: nn.Module | None = None) -> TargetLayer:
    patch_embed = getattr(root, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    if grid is None:
        raise ConfigError("layer", f"{type(root).__name__} has no patch grid (patch_embed.grid_size)")
    grid = (int(grid[0]), int(grid[1]))
    if allow_spatial:  # a user-chosen layer inside a ViT may still be spatial (e.g. the patch conv)
        seen: list[Tensor] = []
        hook = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            with torch.no_grad():
                (model or root)(example[:1])
        finally:
            hook.remove()
        if seen and isinstance(seen[0], Tensor) and seen[0].ndim == 4:
            return TargetLayer(module, name, "NCHW")
    prefix = int(getattr(root, "num_prefix_tokens", 0))
    return TargetLayer(module, name, "tokens", grid, prefix)
