"""`FundusClassifier`: a timm backbone with named heads for diagnosis, findings and vCDR.

Two modes:

* ``multitask`` — three parallel heads on the pooled backbone features.
* ``concept_bottleneck`` — the diagnosis is computed *only* from the predicted findings
  (probabilities) and vCDR through one linear layer (Koh et al., 2020), so each finding's
  contribution to the decision is exact, and a clinician can intervene:
  ``model(x, intervene={"DH": 1.0, "vcdr": 0.4})`` replaces those concepts and recomputes
  the diagnosis.

The model carries its data config (input size, mean/std, field-of-view crop, contrast
normalisation), as timm's ``pretrained_cfg`` does, so a loaded model plus a raw photograph is
all a user needs (:meth:`FundusClassifier.prepare`).

Example:
    >>> import torch
    >>> model = FundusClassifier("test_resnet.r160_in1k", input_size=64).eval()
    >>> out = model(torch.zeros(2, 3, 64, 64))
    >>> tuple(out["logits"].shape), tuple(out["finding_logits"].shape), tuple(out["vcdr"].shape)
    ((2,), (2, 10), (2,))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from xmed.data.normalise import normalise_images
from xmed.decision import check_threshold
from xmed.errors import ConfigError, InputError
from xmed.findings import DIAGNOSIS, FINDINGS, VCDR, canonical_target, finding_index
from xmed.models.feature_check import FeatureCheck
from xmed.findings import TARGETS  # noqa: F401  (re-exported by xmed.models)

Mode = Literal["multitask", "concept_bottleneck"]


@dataclass
class DataConfig:
    """What a photograph must go through before this model sees it:
    :func:`~xmed.data.transforms.eval_transform` builds that transform from it. ``input_size`` is the
    side of the model's square input (``data.image_size`` of the data it was trained on; the path
    is told in :func:`~xmed.data.transforms.eval_transform`)."""

    input_size: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_fov: bool = True
    margin: float = 0.02
    contrast: str | None = None
    crop_disc: float | None = None
    #: the side the crop is resized to before the contrast normalisation (``data.preprocess.size``;
    #: None: the contrast is normalised at the crop's own resolution), then fitted to ``input_size``
    preprocess_size: int | None = None
    #: the image-quality checks this model's inputs are held to: those its validation photographs
    #: pass (chosen when it trains: :func:`xmed.data.quality.calibrate_checks`); None: every check
    quality_checks: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "DataConfig":
        known = {f.name for f in fields(cls)}
        for key in config:
            if key not in known:
                raise ConfigError(f"model.net.data_config.{key}", f"unknown key; known: {', '.join(sorted(known))}")
        out = cls(**config)
        out.mean, out.std = tuple(out.mean), tuple(out.std)
        if out.quality_checks is not None:
            # here, not at the top: OpenCV loads with photographs, not with `import xmed.models`
            from xmed.data.quality import CHECKS

            out.quality_checks = tuple(out.quality_checks)
            unknown = [c for c in out.quality_checks if c not in CHECKS]
            if unknown:
                raise ConfigError("model.net.data_config.quality_checks",
                                  f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
        for key, values, lowest in (("mean", out.mean, -math.inf), ("std", out.std, 0.0)):
            try:
                numbers = [float(v) for v in values]
            except (TypeError, ValueError):
                numbers = []
            if len(numbers) != 3 or not all(math.isfinite(v) and v > lowest for v in numbers):
                need = "three finite numbers" + (" above 0 (images are divided by it)" if key == "std" else "")
                raise ConfigError(f"model.net.data_config.{key}", f"must be {need}, got {list(values)}")
        return out

    def preprocess(self) -> dict[str, Any]:
        """The :class:`~xmed.data.preprocess.FundusPreprocess` settings (FOV crop, disc crop, contrast,
        its own resize ``preprocess_size``); the final fit is ``input_size``'s
        (:func:`~xmed.data.transforms.eval_transform` builds the transform of the whole config)."""
        # here, not at the top: OpenCV loads with photographs, not with `import xmed.models`
        from xmed.data.preprocess import FundusPreprocess

        settings = {f.name: getattr(self, f.name) for f in fields(FundusPreprocess) if f.name != "size"}
        return {**settings, "size": self.preprocess_size}

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.quality_checks is not None:
            d["quality_checks"] = list(self.quality_checks)
        return d


class FundusClassifier(nn.Module):
    """Any timm backbone (CNN or ViT) with heads ``glaucoma``, ``findings`` and ``vcdr``.

    Args:
        backbone: a timm model name (``timm.list_models()``), e.g. ``resnet18``,
            ``efficientnet_b0``, ``convnext_nano``, ``vit_small_patch16_224``.
        pretrained: load the timm hub weights (needs a network).
        checkpoint_path: local backbone weights (``.safetensors``, or a ``.pth``/``.bin`` read
            with ``weights_only=True``); classifier weights in the file are ignored.
        mode: ``"multitask"`` or ``"concept_bottleneck"``.
        input_size: square input side; passed to ViTs as ``img_size``.
        drop_rate: dropout before the heads.
        global_pool: timm's pooling of the feature map (``avg``, ``max``, ``avgmax``,
            ``catavgmax``; ViTs: ``token``, ``avg``); None keeps the backbone's default. Max
            pooling suits small lesions: averaging over the whole fundus dilutes a disc that
            covers ~2% of the image.
        data_config: a :class:`DataConfig` or its dict (``input_size`` there wins if given).
        backbone_kwargs: extra ``timm.create_model`` arguments.
        mask_head: mask names (``disc``, ``cup``, finding codes) predicted on the backbone's
            feature map by a 1×1 convolution — dense auxiliary supervision that teaches the
            features *where* each finding lies, for data sets that publish masks (the phantom
            does for all of them). None: no mask head.
        threshold: the operating threshold on P(glaucoma) — chosen on the validation split when
            ``xmed-train`` exports the model — from which a decision reads "referable glaucoma"
            (``xmed-predict``, :func:`xmed.rationale`); None: not chosen yet.
        feature_check: the settings of the out-of-distribution check fitted on the training eyes'
            features (:class:`~xmed.models.feature_check.FeatureCheck`, whose statistics come with
            the weights); None: no check. ``xmed-train`` fits it as training ends.

    Output of ``forward``: ``{"logits": B, "finding_logits": B×10, "vcdr": B}`` (``vcdr`` in
    [0, 1]); in concept-bottleneck mode also ``"concepts"``: B×11, the finding probabilities and
    vCDR the diagnosis was computed from; with a ``mask_head``, ``"mask_logits"``: B×K×h×w on
    the feature-map grid, one channel per name in ``mask_names``; with a :attr:`feature_check`,
    ``"feature_distance"``: B, the Mahalanobis distance of the pooled features from the training
    eyes' (no gradient flows through it).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        mode: Mode = "multitask",
        input_size: int | None = None,
        drop_rate: float = 0.0,
        global_pool: str | None = None,
        data_config: DataConfig | Mapping[str, Any] | None = None,
        backbone_kwargs: Mapping[str, Any] | None = None,
        mask_head: Sequence[str] | None = None,
        threshold: float | None = None,
        feature_check: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if mode not in ("multitask", "concept_bottleneck"):
            raise ConfigError("model.net.mode", f"must be 'multitask' or 'concept_bottleneck', got {mode!r}")
        if isinstance(data_config, Mapping):
            data_config = DataConfig.from_dict(data_config)
        self.data_config = replace(data_config) if data_config else DataConfig()  # never the caller's object
        if input_size is not None:
            self.data_config.input_size = int(input_size)
        backbone_kwargs = dict(backbone_kwargs or {})
        if global_pool is not None:
            backbone_kwargs["global_pool"] = global_pool
        self.config = {
            "backbone": backbone, "mode": mode, "drop_rate": drop_rate,
            "input_size": self.data_config.input_size, "backbone_kwargs": backbone_kwargs,
            "mask_head": list(mask_head) if mask_head else None,
        }
        self.mode = mode
        self.threshold = check_threshold(threshold)
        self.backbone = create_backbone(backbone, pretrained, checkpoint_path,
                                        self.data_config.input_size, backbone_kwargs)
        width = self.backbone.num_features
        self.dropout = nn.Dropout(drop_rate)
        self.findings_head = nn.Linear(width, len(FINDINGS))
        self.vcdr_head = nn.Linear(width, 1)
        n_concepts = len(FINDINGS) + 1
        self.glaucoma_head = nn.Linear(n_concepts if mode == "concept_bottleneck" else width, 1)
        self.mask_names: tuple[str, ...] = tuple(mask_head or ())
        self.mask_head = nn.Conv2d(width, len(self.mask_names), 1) if self.mask_names else None
        self.feature_check = None  # a FeatureCheck: the statistics come with the weights
        if feature_check is not None:
            self.feature_check = FeatureCheck.from_settings(feature_check, width)

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone features before pooling (B×C×h×w for CNNs, B×N×C tokens for ViTs)."""
        return self.backbone.forward_features(x)

    def feature_map(self, features: Tensor) -> Tensor:
        """Backbone features as a B×C×h×w map: CNN maps as they are, NHWC maps (Swin) permuted,
        ViT tokens without their prefix (class/register) tokens on the patch grid the backbone
        reports — never a grid guessed from the token count.

        Example:
            >>> model = FundusClassifier("vit_tiny_patch16_224", input_size=64)
            >>> tuple(model.feature_map(model.forward_features(torch.zeros(1, 3, 64, 64))).shape)
            (1, 192, 4, 4)
        """
        if features.ndim == 4:
            if getattr(self.backbone, "output_fmt", "NCHW") == "NHWC":
                return features.permute(0, 3, 1, 2)
            return features
        if features.ndim == 3:
            patch_embed = getattr(self.backbone, "patch_embed", None)
            grid = getattr(patch_embed, "grid_size", None)
            if grid is None:
                raise ConfigError("model.net.backbone", "token features without a patch grid: cannot map them to space")
            prefix = getattr(self.backbone, "num_prefix_tokens", features.shape[1] - grid[0] * grid[1])
            tokens = features[:, prefix:]
            return tokens.transpose(1, 2).reshape(features.shape[0], features.shape[2], grid[0], grid[1])
        raise ConfigError("model.net.backbone", f"unsupported feature shape {tuple(features.shape)}")

    def forward_head(self, features: Tensor, intervene: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        pooled = self.backbone.forward_head(features, pre_logits=True)
        out = {} if self.feature_check is None else {"feature_distance": self.feature_check(pooled)}
        pooled = self.dropout(pooled)
        finding_logits = self.findings_head(pooled)
        vcdr = torch.sigmoid(self.vcdr_head(pooled)).squeeze(1)
        out.update({"finding_logits": finding_logits, "vcdr": vcdr})
        if self.mask_head is not None:
            out["mask_logits"] = self.mask_head(self.feature_map(features))
        if self.mode == "concept_bottleneck":
            concepts = torch.cat([torch.sigmoid(finding_logits), vcdr[:, None]], dim=1)
            if intervene:
                concepts = apply_intervention(concepts, intervene)
            out["concepts"] = concepts
            out["logits"] = self.glaucoma_head(concepts).squeeze(1)
        else:
            if intervene:
                raise ConfigError("intervene", "test-time intervention needs mode='concept_bottleneck'")
            out["logits"] = self.glaucoma_head(pooled).squeeze(1)
        return out

    def forward(self, x: Tensor, intervene: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        """Predict from normalised images, or from uint8 pixels (as the training loader hands them
        over), which are normalised first by this model's :attr:`data_config`. ``intervene`` maps
        finding codes / ``"vcdr"`` (any case) to given concept values (a float for the whole batch,
        or a B tensor where NaN means "leave as predicted")."""
        x = normalise_images(x, self.data_config.mean, self.data_config.std)
        return self.forward_head(self.forward_features(x), intervene)

    def pooled_features(self, x: Tensor) -> Tensor:
        """The pooled backbone features (B×C) the heads read, of normalised images or uint8 pixels:
        what :attr:`feature_check` measures.

        Example:
            >>> model = FundusClassifier("test_resnet.r160_in1k", input_size=32)
            >>> tuple(model.pooled_features(torch.zeros(2, 3, 32, 32)).shape)
            (2, 96)
        """
        x = normalise_images(x, self.data_config.mean, self.data_config.std)
        return self.backbone.forward_head(self.forward_features(x), pre_logits=True)

    # ------------------------------------------------------------------ helpers
    def bottleneck_terms(self, concepts: Tensor) -> Tensor:
        """B×11 exact additive terms of each concept in the diagnosis logit (concept-bottleneck
        mode): ``logit = bias + terms.sum(1)``."""
        if self.mode != "concept_bottleneck":
            raise ConfigError("model.net.mode", "bottleneck terms need mode='concept_bottleneck'")
        return concepts * self.glaucoma_head.weight[0]

    def prepare(self, images: Sequence[np.ndarray] | np.ndarray) -> Tensor:
        """Raw photographs -> the normalised batch this model expects (on its device).

        ``images`` is one photograph or several (a list, or an N×H×W×3 array). A photograph is an
        ``H×W×3`` uint8 RGB array at least 32 px on its shorter side; float pixels in [0, 1],
        greyscale and RGBA arrays are converted explicitly, as :func:`xmed.data.read_image` converts
        files (:func:`xmed.data.quality.as_photograph`). Anything else — uint16 or other integer
        pixels, NaN, floats outside [0, 1], channels-first or tiny arrays, non-arrays, an empty
        list — raises :class:`~xmed.errors.InputError` (``images``) naming the image's index and
        what to pass instead. Each photograph goes through the image-quality gate
        (:mod:`xmed.data.quality`); one that fails it is named in a
        :class:`~xmed.errors.QualityWarning`.

        Example:
            >>> from xmed.data import render_phantom
            >>> model = FundusClassifier("test_resnet.r160_in1k", input_size=64)
            >>> tuple(model.prepare(render_phantom(seed=0, size=128).image).shape)
            (1, 3, 64, 64)
        """
        # here, not at the top: OpenCV and albumentations load with photographs, not with `import xmed.models`
        from xmed.data.quality import CHECKS, as_photograph, assess_quality, warn_flagged
        from xmed.data.transforms import eval_transform

        photos = [as_photograph(image, index) for index, image in enumerate(_photograph_list(images))]
        dc = self.data_config
        warn_flagged([assess_quality(photo, mean=dc.mean, std=dc.std, checks=dc.quality_checks or CHECKS)
                      for photo in photos])
        transform = eval_transform(dc)
        batch = []
        for photo in photos:
            sample = transform({"image": photo, "masks": {}, "findings": np.full(len(FINDINGS), np.nan, np.float32),
                                "label": math.nan, "vcdr": math.nan, "meta": {"eye": ""}})
            batch.append(torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1))
        return torch.stack(batch).to(next(self.parameters()).device)

    def export_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (weights aside), JSON-able."""
        check = {} if self.feature_check is None else {"feature_check": self.feature_check.settings()}
        return {**self.config, "data_config": self.data_config.as_dict(), "findings": list(FINDINGS),
                "threshold": self.threshold, **check}


def _photograph_list(images: Any) -> list[Any]:
    """The items :meth:`FundusClassifier.prepare` takes one by one: a list's, an N×H×W×C array's,
    else ``images`` itself as the only one (each is checked by ``as_photograph``)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("images", "is an empty list; pass one photograph or a list of them")
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.shape[-1] not in (1, 3, 4):
            raise InputError("images", f"a 4-D array must hold N×H×W×3 photographs, got shape {tuple(images.shape)}; "
                                       "channels-first? pass images.transpose(0, 2, 3, 1)")
        if images.shape[0] == 0:
            raise InputError("images", "is an empty array (N = 0); pass at least one photograph")
        return list(images)
    return [images]


def create_backbone(name: str, pretrained: bool, checkpoint_path: str | None, input_size: int,
                    kwargs: dict[str, Any]) -> nn.Module:
    """A timm model without classifier (``num_classes=0``), weights from the hub or a file."""
    import timm  # here, not at the top: `import xmed.explain` must not pay for timm's model zoo

    if not timm.is_model(name):
        raise ConfigError("model.net.backbone", f"unknown timm model {name!r}")
    kwargs = dict(kwargs)
    if checkpoint_path is not None:
        from pathlib import Path

        if not Path(checkpoint_path).is_file():
            raise ConfigError("model.net.checkpoint_path", f"no such file: {checkpoint_path}")
        # timm reads a local file through its pretrained machinery (weights_only=True),
        # adapting the classifier and input channels as it does for hub weights.
        kwargs["pretrained_cfg_overlay"] = {"file": str(checkpoint_path)}
        pretrained = True
    if "img_size" not in kwargs:
        # ViTs need the input size to build their position grid; CNNs reject the argument.
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=0, img_size=input_size, **kwargs)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)


def apply_intervention(concepts: Tensor, intervene: Mapping[str, Any]) -> Tensor:
    """Replace concept columns (finding probabilities, then vCDR) with given values."""
    concepts = concepts.clone()
    for key, value in intervene.items():
        col = _concept_column(key)
        value = torch.as_tensor(value, dtype=concepts.dtype, device=concepts.device)
        if value.ndim == 0:
            concepts[:, col] = value
        else:
            keep = torch.isnan(value)
            concepts[:, col] = torch.where(keep, concepts[:, col], value)
    return concepts


def _concept_column(key: str) -> int:
    """The concept column of an intervention key: a finding code's index, or the last for the vCDR."""
    try:
        concept = canonical_target(key)
    except ValueError:
        concept = None
    if concept == VCDR:
        return len(FINDINGS)
    if concept in FINDINGS:
        return finding_index(concept)
    raise ConfigError("intervene", f"unknown concept {key!r}; use a finding code or 'vcdr'")


def target_scalar(output: Mapping[str, Tensor], target: str) -> Tensor:
    """The B-vector a target names: ``"glaucoma"`` (diagnosis logit), a finding code (its
    logit) or ``"vcdr"`` (any case).

    Example:
        >>> out = {"logits": torch.zeros(2), "finding_logits": torch.arange(20.).view(2, 10),
        ...        "vcdr": torch.ones(2)}
        >>> target_scalar(out, "DH").tolist()
        [7.0, 17.0]
    """
    target = canonical_target(target)
    if target == DIAGNOSIS:
        return output["logits"]
    if target == VCDR:
        return output["vcdr"]
    return output["finding_logits"][:, finding_index(target)]
