"""`FundusModule`: the LightningModule that trains a :class:`FundusClassifier`.

Losses, each masked where the label is unknown (NaN): binary cross-entropy for the diagnosis
(optionally weighted for class imbalance), multi-label binary cross-entropy for the findings,
L1 for the vCDR. Concept-bottleneck models train ``joint`` (all losses at once) or
``sequential`` (Koh et al., 2020: first the concepts, then the diagnosis head on the frozen
concept predictions).

Example:
    >>> module = FundusModule(net={"backbone": "test_resnet.r160_in1k", "input_size": 64})
    >>> module.model.mode
    'multitask'
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Mapping

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import BinaryAUROC

from xmed.data.normalise import normalise_images
from xmed.data.sampling import seed_epoch
from xmed.errors import ConfigError
from xmed.models.classifier import FundusClassifier
from xmed.models.robust import AdversarialTraining, bernoulli_kl
from xmed.runtime import Choice, choose_channels_last, is_auto

log = logging.getLogger(__name__)


def masked_bce(logits: Tensor, target: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Mean BCE over the entries whose target is known (not NaN); 0 when none is."""
    known = ~torch.isnan(target)
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], target[known], pos_weight=pos_weight)


def masked_l1(pred: Tensor, target: Tensor) -> Tensor:
    known = ~torch.isnan(target)
    if not known.any():
        return pred.sum() * 0.0
    return F.l1_loss(pred[known], target[known])


def mask_loss(mask_logits: Tensor, names: tuple[str, ...], masks: Mapping[str, Tensor],
              mask_valid: Mapping[str, Tensor]) -> Tensor:
    """BCE between the mask head (B×K×h×w) and each mask's covered fraction of every
    feature-map cell, over the samples that have that mask; 0 when none has any.

    Example:
        >>> m = {"disc": torch.ones(2, 8, 8, dtype=torch.bool)}
        >>> v = {"disc": torch.tensor([True, False])}
        >>> round(float(mask_loss(torch.full((2, 1, 2, 2), 20.0), ("disc",), m, v)), 4)
        0.0
    """
    total, terms = mask_logits.sum() * 0.0, 0
    for k, name in enumerate(names):
        valid = mask_valid.get(name)
        if valid is None or not valid.any():
            continue
        target = F.adaptive_avg_pool2d(masks[name][valid].float()[:, None], mask_logits.shape[-2:])
        total = total + F.binary_cross_entropy_with_logits(mask_logits[valid, k:k + 1].float(), target)
        terms += 1
    return total / max(terms, 1)


class FundusModule(L.LightningModule):
    """Training, validation and test steps for a :class:`FundusClassifier`.

    Args:
        net: :class:`FundusClassifier` arguments (``backbone``, ``pretrained``,
            ``checkpoint_path``, ``mode``, ``input_size``, ``drop_rate``, ``data_config``).
        lr, weight_decay: AdamW settings. ``warmup_epochs``: linear warm-up, then cosine decay.
        loss_weights: weights of the ``glaucoma``, ``findings``, ``vcdr`` and ``masks`` losses
            (``masks`` counts only with ``net.mask_head``).
        class_balance: ``"pos_weight"`` (BCE weighted by negatives/positives of the training
            split), ``"sampler"`` (balanced sampling, set on the data module) or ``"none"``.
        cbm_training: ``"joint"`` or ``"sequential"`` (concept-bottleneck mode only).
        sequential_epochs: epochs of concept training before the diagnosis head (sequential).
        channels_last: NHWC memory format, or ``"auto"``: chosen for the device the trainer runs on
            (:func:`xmed.runtime.choose_channels_last`; the choice is kept in :attr:`channels_last_choice`).
        compile: ``torch.compile`` the forward pass used in training.
        adversarial_training: None, or :class:`~xmed.models.robust.AdversarialTraining` settings
            (``method`` pgd | trades, ``epsilon``, ``steps``, ``step_size``, ``beta``) for a model
            whose input gradients — and so its counterfactuals — follow image structure.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: int = 1,
        loss_weights: Mapping[str, float] | None = None,
        class_balance: Literal["pos_weight", "sampler", "none"] = "pos_weight",
        cbm_training: Literal["joint", "sequential"] = "joint",
        sequential_epochs: int = 0,
        channels_last: bool | Literal["auto"] = False,
        compile: bool = False,
        adversarial_training: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if class_balance not in ("pos_weight", "sampler", "none"):
            raise ConfigError("model.class_balance", f"must be pos_weight, sampler or none, got {class_balance!r}")
        if cbm_training not in ("joint", "sequential"):
            raise ConfigError("model.cbm_training", f"must be joint or sequential, got {cbm_training!r}")
        weights = {"glaucoma": 1.0, "findings": 1.0, "vcdr": 1.0, "masks": 1.0, **(loss_weights or {})}
        unknown = set(weights) - {"glaucoma", "findings", "vcdr", "masks"}
        if unknown:
            raise ConfigError("model.loss_weights",
                              f"unknown loss(es) {sorted(unknown)}; use glaucoma, findings, vcdr, masks")
        self.model = FundusClassifier(**dict(net))
        self.adversarial = None
        if adversarial_training:
            try:
                self.adversarial = AdversarialTraining(**dict(adversarial_training))
            except TypeError as err:
                raise ConfigError("model.adversarial_training", str(err)) from None
        if cbm_training == "sequential" and self.model.mode != "concept_bottleneck":
            raise ConfigError("model.cbm_training", "sequential training needs net.mode=concept_bottleneck")
        self.save_hyperparameters({
            "net_config": self.model.export_config(), "lr": lr, "weight_decay": weight_decay,
            "warmup_epochs": warmup_epochs, "loss_weights": weights, "class_balance": class_balance,
            "cbm_training": cbm_training, "sequential_epochs": sequential_epochs,
            "channels_last": channels_last, "compile": compile,
            "adversarial_training": dict(adversarial_training) if adversarial_training else None,
        })
        self.loss_weights = weights
        self.register_buffer("pos_weight", torch.tensor(1.0), persistent=False)
        self._forward = self.model
        self.channels_last_choice = None if is_auto(channels_last) else Choice(bool(channels_last), "set in the config")
        self.val_auroc = BinaryAUROC()

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage == "fit" and hp.class_balance == "pos_weight":
            labels = self._train_labels()
            if labels is not None:
                pos = float((labels == 1).sum())
                neg = float((labels == 0).sum())
                if pos > 0:
                    self.pos_weight.fill_(neg / pos)
                    log.info("diagnosis loss positive weight %.3f (%d negatives / %d positives)", neg / pos, neg, pos)
        if self.channels_last_choice is None:
            self.channels_last_choice = choose_channels_last(self.trainer.strategy.root_device.type)
            log.info("channels_last %s", self.channels_last_choice)
        if self.channels_last_choice.value:
            self.model.to(memory_format=torch.channels_last)
        if hp.compile and self._forward is self.model:
            # the compiled wrapper is kept apart so that state dicts keep plain parameter names
            self._forward = torch.compile(self.model)

    def _train_labels(self):
        datamodule = getattr(self.trainer, "datamodule", None)
        split = getattr(datamodule, "splits", {}).get("train") if datamodule is not None else None
        return torch.as_tensor(split.labels()) if split is not None else None

    # ------------------------------------------------------------------ steps
    def _images(self, batch: Mapping[str, Any]) -> Tensor:
        """The batch's images as the network takes them: normalised (uint8 pixels, from a train
        loader the data module's hook did not see, by this model's data config), in its memory format."""
        dc = self.model.data_config
        x = normalise_images(batch["image"], dc.mean, dc.std)
        channels_last = self.channels_last_choice is not None and self.channels_last_choice.value
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def _losses(self, out: Mapping[str, Tensor], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        losses = {
            "glaucoma": masked_bce(out["logits"], batch["label"], self.pos_weight),
            "findings": masked_bce(out["finding_logits"], batch["findings"]),
            "vcdr": masked_l1(out["vcdr"], batch["vcdr"]),
        }
        if "mask_logits" in out:
            losses["masks"] = mask_loss(out["mask_logits"], self.model.mask_names,
                                        batch.get("masks", {}), batch.get("mask_valid", {}))
        return losses

    def _stage_weights(self) -> dict[str, float]:
        """Loss weights for this epoch (sequential CBM: concepts first, then the diagnosis)."""
        w = dict(self.loss_weights)
        if self.hparams.cbm_training == "sequential":
            concepts_phase = self.current_epoch < self.hparams.sequential_epochs
            if concepts_phase:
                w["glaucoma"] = 0.0
            else:
                w["findings"] = w["vcdr"] = w["masks"] = 0.0
        return w

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "seed"):  # a resumed run draws as the whole one
            seed_epoch(datamodule.seed, self.current_epoch, self.global_rank)
        # ">=" (not "=="): a run resumed after the concept phase must start frozen too
        if self.hparams.cbm_training == "sequential" and self.current_epoch >= self.hparams.sequential_epochs:
            for name, param in self.model.named_parameters():
                param.requires_grad_(name.startswith("glaucoma_head"))
            # the frozen concept model in eval mode: BatchNorm statistics stay fixed and dropout is
            # off, so the diagnosis head learns from the concepts the model gives at inference
            for name, child in self.model.named_children():
                if name != "glaucoma_head":
                    child.eval()
            if self.current_epoch == self.hparams.sequential_epochs:
                log.info("sequential concept bottleneck: concepts frozen, training the diagnosis head")

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor | None:
        if batch.get("size", 1) == 0:  # every file of the batch skipped (the data module logs each once)
            return None
        images = self._images(batch)
        if self.adversarial is not None and self.adversarial.method == "pgd":
            images = self.adversarial.perturb(self.model, images, batch["label"], self.pos_weight)
        out = self._forward(images)
        losses = self._losses(out, batch)
        if self.adversarial is not None and self.adversarial.method == "trades":
            attacked = self.adversarial.perturb(self.model, images, batch["label"])
            losses["robust"] = self.adversarial.beta * bernoulli_kl(
                out["logits"].float(), self._forward(attacked)["logits"].float()).mean()
        weights = {**self._stage_weights(), "robust": 1.0}
        loss = sum(weights[k] * v for k, v in losses.items())
        if self._log_this_step():
            n = batch["image"].shape[0]
            self.log("train/loss", loss, prog_bar=True, batch_size=n)
            for k, v in losses.items():
                self.log(f"train/loss_{k}", v, batch_size=n)
        return loss

    def _log_this_step(self) -> bool:
        """Log training losses every ``trainer.log_every_n_steps`` steps only: each ``self.log``
        costs a device sync, about a quarter of the loop's overhead on a GPU otherwise."""
        trainer = self._trainer
        every = getattr(trainer, "log_every_n_steps", 1) or 1
        return trainer is None or self.global_step % every == 0

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move the tensors the steps use; ids and paths stay plain Python lists."""
        if not isinstance(batch, dict):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        moved = dict(batch)
        for key in ("image", "label", "findings", "vcdr"):
            if key in moved:
                moved[key] = moved[key].to(device, non_blocking=True)
        if self.model.mask_names:
            for key in ("masks", "mask_valid"):
                moved[key] = {n: t.to(device, non_blocking=True) for n, t in batch.get(key, {}).items()
                              if n in self.model.mask_names}
        return moved

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        if batch.get("size", 1) == 0:
            return
        out = self.model(self._images(batch))
        losses = self._losses(out, batch)
        n = batch["image"].shape[0]
        self.log("val/loss", sum(self.loss_weights[k] * v for k, v in losses.items()), batch_size=n, sync_dist=True)
        self.log("val/vcdr_mae", losses["vcdr"], batch_size=n, sync_dist=True)
        known = ~torch.isnan(batch["label"])
        if known.any():
            self.val_auroc.update(torch.sigmoid(out["logits"][known]), batch["label"][known].long())

    def on_validation_epoch_end(self) -> None:
        if self.val_auroc.update_count:
            self.log("val/auroc", self.val_auroc.compute(), prog_bar=True, sync_dist=True)
        self.val_auroc.reset()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        trainer = self._trainer  # None outside a Trainer (`self.trainer` would raise there)
        total = max(int(trainer.estimated_stepping_batches), 1) if trainer else 1
        steps_per_epoch = max(total // max(trainer.max_epochs or 1, 1), 1) if trainer else 1
        warmup = min(self.hparams.warmup_epochs * steps_per_epoch, total // 2)
        schedule = torch.optim.lr_scheduler.SequentialLR(
            optimizer,
            [torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=max(warmup, 1)),
             torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1))],
            milestones=[max(warmup, 1)],
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
