"""`FundusAutoencoder`: a convolutional autoencoder of fundus photographs, for latent shift.

Latent-shift counterfactuals (Cohen et al., 2021, :mod:`xmed.explain.counterfactual.latent_shift`)
move an image's code ``z = encode(x)`` along the classifier's gradient and decode the result, so
the edit stays on what the autoencoder learnt fundi look like. That needs an autoencoder that
works in the **same normalised input space as the classifier**: it takes the classifier's
normalised batch, and ``decode(z)`` is such a batch again (its output is not squashed to [0, 1]),
so ``classifier(autoencoder.decode(z))`` is meaningful. Like a classifier it carries its
:class:`~xmed.models.DataConfig`.

Architecture: ``len(channels)`` encoder blocks, each a stride-2 3×3 convolution and a 3×3
convolution (GroupNorm + SiLU after both), then a 1×1 convolution to a spatial latent
``B×latent_channels×(S/2^k)×(S/2^k)``; the decoder mirrors it (3×3 convolution from the latent,
then per block nearest-neighbour ×2 upsampling and two 3×3 convolutions with GroupNorm + SiLU, a
last 3×3 convolution to 3 channels, no activation). GroupNorm rather than BatchNorm: the
autoencoder computes the same in train and eval mode, and an image's code does not depend on the
rest of its batch. SiLU rather than ReLU: smooth, so the latent gradient of a counterfactual is too.

Training: :class:`AutoencoderModule` (Lightning; ``xmed-train task=autoencoder``) — imported on
first use, so that ``xmed.explain`` can load an autoencoder without importing Lightning. Export
and loading mirror :mod:`xmed.models.export`: safetensors + JSON, or a Lightning ``.ckpt`` read
with ``weights_only=True``.

Example:
    >>> import torch
    >>> ae = FundusAutoencoder(input_size=32, channels=(8, 16), latent_channels=4)
    >>> z = ae.encode(torch.zeros(2, 3, 32, 32))
    >>> tuple(z.shape), tuple(ae.decode(z).shape)
    ((2, 4, 8, 8), (2, 3, 32, 32))
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmed.errors import CheckpointError, ConfigError
from xmed.models.classifier import DataConfig
from xmed.models.export import checked_config, load_weights_only, save_folder

FORMAT = "xmed-autoencoder-1"
LOSSES: tuple[str, ...] = ("l1", "mse")


def _groups(channels: int) -> int:
    """GroupNorm groups: the largest divisor of ``channels`` among 8, 4, 2, 1."""
    return math.gcd(channels, 8)


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(_groups(c_out), c_out), nn.SiLU()]


class FundusAutoencoder(nn.Module):
    """Convolutional autoencoder with a spatial latent, in the classifier's normalised input space.

    Args:
        input_size: square input side; must be divisible by ``2 ** len(channels)``. Sets
            ``data_config.input_size``.
        channels: widths of the encoder blocks (each halves the resolution); the decoder
            mirrors them.
        latent_channels: channels of the latent map.
        data_config: a :class:`~xmed.models.DataConfig` or its dict — give the classifier's, so
            both work on the same normalised images (``input_size`` above wins).

    Example:
        >>> FundusAutoencoder(input_size=100, channels=(8, 16, 32))
        Traceback (most recent call last):
        ...
        xmed.errors.ConfigError: config key 'model.net.input_size': must be divisible by 2**3 = 8 (one halving per encoder block), got 100
    """

    def __init__(self, input_size: int = 128, channels: Sequence[int] = (32, 64, 128, 256),
                 latent_channels: int = 64, data_config: DataConfig | Mapping[str, Any] | None = None):
        super().__init__()
        try:
            channels = tuple(int(c) for c in channels)
        except (TypeError, ValueError):
            raise ConfigError("model.net.channels", f"must be a list of positive ints, got {channels!r}") from None
        if not channels or min(channels) < 1:
            raise ConfigError("model.net.channels", f"must be a non-empty list of positive ints, got {list(channels)}")
        if isinstance(latent_channels, bool) or not isinstance(latent_channels, int) or latent_channels < 1:
            raise ConfigError("model.net.latent_channels", f"must be a positive int, got {latent_channels!r}")
        factor = 2 ** len(channels)
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < factor \
                or input_size % factor:
            raise ConfigError("model.net.input_size", f"must be divisible by 2**{len(channels)} = {factor} "
                                                      f"(one halving per encoder block), got {input_size!r}")
        if isinstance(data_config, Mapping):
            data_config = DataConfig.from_dict(data_config)
        self.data_config = replace(data_config) if data_config else DataConfig()  # never the caller's object
        self.data_config.input_size = input_size
        self.channels, self.latent_channels = channels, latent_channels

        encoder: list[nn.Module] = []
        c_in = 3
        for c in channels:
            encoder += _conv_block(c_in, c, stride=2) + _conv_block(c, c)
            c_in = c
        encoder.append(nn.Conv2d(c_in, latent_channels, 1))
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = _conv_block(latent_channels, channels[-1])
        for i in reversed(range(len(channels))):
            c_out = channels[max(i - 1, 0)]
            decoder += [nn.Upsample(scale_factor=2, mode="nearest"),
                        *_conv_block(channels[i], c_out), *_conv_block(c_out, c_out)]
        decoder.append(nn.Conv2d(channels[0], 3, 3, padding=1))  # no activation: normalised space
        self.decoder = nn.Sequential(*decoder)

    @property
    def downsampling(self) -> int:
        """How much smaller the latent map is than the image (``2 ** len(channels)``)."""
        return 2 ** len(self.channels)

    def encode(self, x: Tensor) -> Tensor:
        """B×3×H×W normalised images -> B×latent_channels×H/2^k×W/2^k codes."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % self.downsampling or x.shape[3] % self.downsampling:
            raise ConfigError("images", f"expected B×3×H×W with H and W divisible by {self.downsampling}, "
                                        f"got {tuple(x.shape)}")
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Codes -> B×3×H×W images in the normalised input space (not clamped)."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction ``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def export_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this autoencoder (weights aside), JSON-able."""
        return {"input_size": self.data_config.input_size, "channels": list(self.channels),
                "latent_channels": self.latent_channels, "data_config": self.data_config.as_dict()}


def reconstruction_l1(autoencoder: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    """B mean absolute errors between ``images`` and their reconstructions, in the input space — a
    realism proxy: an autoencoder trained on fundi reconstructs fundus-like images well.

    (:func:`xmed.metrics.counterfactual.reconstruction_error` is the squared-error metric.)

    Example:
        >>> reconstruction_l1(lambda x: x * 0.5, torch.ones(2, 3, 4, 4)).tolist()
        [0.5, 0.5]
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ConfigError("images", f"expected a B×C×H×W tensor, got {getattr(images, 'shape', type(images))}")
    with torch.no_grad():
        recon = autoencoder(images)
    if not isinstance(recon, Tensor) or recon.shape != images.shape:
        raise ConfigError("autoencoder", f"must return a tensor shaped like its input {tuple(images.shape)}, "
                                         f"got {getattr(recon, 'shape', type(recon).__name__)}")
    return (recon.float() - images.float()).abs().flatten(1).mean(1)


# ---------------------------------------------------------------------------------- export / load


def export_autoencoder(model: FundusAutoencoder, folder: str | os.PathLike) -> Path:
    """Write ``model`` to ``folder`` (created) as ``model.safetensors`` + ``config.json``
    (``{"format": "xmed-autoencoder-1", "model": export_config(), ...}``); returns the folder."""
    return save_folder(model, folder, FORMAT)


def autoencoder_from_config(config: Mapping[str, Any], source: str | os.PathLike = "config") -> FundusAutoencoder:
    """Rebuild an (untrained) autoencoder from ``export_config()`` output; a config that is not
    one raises :class:`~xmed.errors.CheckpointError` naming ``source``."""
    config = checked_config(config, ("input_size", "channels", "latent_channels"), ("data_config",), source,
                            "autoencoder")
    try:
        return FundusAutoencoder(**config)
    except (ConfigError, TypeError) as err:
        raise CheckpointError(source, f"bad autoencoder config: {err}") from None


def load_autoencoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> FundusAutoencoder:
    """A :class:`FundusAutoencoder` in eval mode from an exported folder or a Lightning checkpoint
    written by :class:`AutoencoderModule`.

    Never unpickles arbitrary objects: safetensors for folders, ``torch.load(weights_only=True)``
    for ``.ckpt`` files. Raises :class:`~xmed.errors.CheckpointError` naming the path.
    """
    return load_weights_only(path, autoencoder_from_config, FORMAT, "autoencoder", device)


# ---------------------------------------------------------------------------------- training


def reconstruction_loss(recon: Tensor, images: Tensor, loss: str) -> Tensor:
    """Mean ``"l1"`` or ``"mse"`` reconstruction loss (float32)."""
    if loss == "l1":
        return F.l1_loss(recon.float(), images.float())
    return F.mse_loss(recon.float(), images.float())


def _define_module() -> type:
    """Build :class:`AutoencoderModule` (imports Lightning; called on first access)."""
    import lightning as L

    class AutoencoderModule(L.LightningModule):
        """Trains a :class:`FundusAutoencoder` to reconstruct normalised fundus photographs.

        Args:
            net: :class:`FundusAutoencoder` arguments (``input_size``, ``channels``,
                ``latent_channels``, ``data_config`` — the classifier's, for latent shift).
            lr, weight_decay: AdamW settings; the learning rate decays on a cosine over the run.
            loss: reconstruction loss, ``"l1"`` (sharper) or ``"mse"``.

        Batches are dicts with ``"image"`` (B×3×H×W, normalised); empty batches
        (``batch["size"] == 0``) are skipped. Logs ``train/loss`` and ``val/loss``.

        Example:
            >>> module = AutoencoderModule(net={"input_size": 32, "channels": [8, 16], "latent_channels": 4})
            >>> module.hparams.net_config["channels"], module.hparams.loss
            ([8, 16], 'l1')
        """

        def __init__(self, net: Mapping[str, Any], lr: float = 1e-3, weight_decay: float = 1e-4,
                     loss: Literal["l1", "mse"] = "l1"):
            super().__init__()
            if loss not in LOSSES:
                raise ConfigError("model.loss", f"must be 'l1' or 'mse', got {loss!r}")
            try:
                self.model = FundusAutoencoder(**dict(net))
            except TypeError as err:  # an unknown or missing argument
                raise ConfigError("model.net", str(err)) from None
            self.save_hyperparameters({"net_config": self.model.export_config(), "lr": lr,
                                       "weight_decay": weight_decay, "loss": loss})

        def forward(self, x: Tensor) -> Tensor:
            return self.model(x)

        def _step(self, batch: Mapping[str, Any]) -> tuple[Tensor, int]:
            images = batch["image"]
            return reconstruction_loss(self.model(images), images, self.hparams.loss), images.shape[0]

        def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor | None:
            if batch.get("size", 1) == 0:
                return None
            loss, n = self._step(batch)
            if self._trainer is not None:
                self.log("train/loss", loss, prog_bar=True, batch_size=n)
            return loss

        def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
            if batch.get("size", 1) == 0:
                return
            loss, n = self._step(batch)
            if self._trainer is not None:
                self.log("val/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)

        def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
            """Move only the images; everything else in the batch stays where it is."""
            if not isinstance(batch, dict):
                return super().transfer_batch_to_device(batch, device, dataloader_idx)
            moved = dict(batch)
            if "image" in moved:
                moved["image"] = moved["image"].to(device, non_blocking=True)
            return moved

        def configure_optimizers(self):
            optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr,
                                          weight_decay=self.hparams.weight_decay)
            trainer = self._trainer  # None outside a Trainer
            total = trainer.estimated_stepping_batches if trainer is not None else 1
            total = max(int(total), 1) if math.isfinite(total) else 1
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    AutoencoderModule.__module__ = __name__
    AutoencoderModule.__qualname__ = "AutoencoderModule"  # picklable by name (DDP spawn, Hydra)
    return AutoencoderModule


def __getattr__(name: str) -> Any:  # Lightning is imported only by those who train
    if name == "AutoencoderModule":
        cls = _define_module()
        globals()[name] = cls  # defined once; later look-ups find it directly
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FORMAT", "AutoencoderModule", "FundusAutoencoder",  # noqa: F822 - AutoencoderModule: see __getattr__
           "autoencoder_from_config", "export_autoencoder",
           "load_autoencoder", "reconstruction_l1", "reconstruction_loss"]
