"""Exporting a model as safetensors + JSON, and loading one without unpickling anything.

An exported model is a folder::

    model/
      model.safetensors   the weights
      config.json         architecture, data config, finding vocabulary, provenance

:func:`load_model` also reads Lightning checkpoints (``.ckpt``) with ``weights_only=True``.

Example:
    >>> import tempfile
    >>> from xmed.models import FundusClassifier
    >>> folder = export_model(FundusClassifier("test_resnet.r160_in1k", input_size=64), tempfile.mkdtemp())
    >>> load_model(folder).config["backbone"]
    'test_resnet.r160_in1k'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from xmed.checks import strict_json
from xmed.errors import CheckpointError, ConfigError
from xmed.findings import FINDINGS
from xmed.models.classifier import FundusClassifier
from xmed.runs import staged_folder
from xmed.saved_config import check_targets
from xmed.version import __version__

WEIGHTS, CONFIG = "model.safetensors", "config.json"
FORMAT = "xmed.FundusClassifier/1"


def export_model(model: FundusClassifier, folder: str | os.PathLike,
                 extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` to ``folder`` (created) as safetensors + JSON; returns the folder."""
    return save_folder(model, folder, FORMAT, extra)


def save_folder(model: nn.Module, folder: str | os.PathLike, format: str,
                extra: Mapping[str, Any] | None = None) -> Path:
    """``folder/model.safetensors`` + ``folder/config.json`` (``{"format", "xmed_version",
    "model": model.export_config(), **extra}``); the writer behind every xmed export. The folder is
    written beside its place and renamed into it when complete (an older one is replaced)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {"format": format, "xmed_version": __version__, "model": model.export_config(), **(extra or {})}
    with staged_folder(folder) as staged:  # replaced whole: never new weights beside an old config
        save_file(state, str(staged / WEIGHTS), metadata={"format": format})
        (staged / CONFIG).write_text(json.dumps(config, indent=2))
    return folder


#: the keys of a model's config (``FundusClassifier.export_config()``): required, then optional
MODEL_KEYS = ("backbone",), ("mode", "input_size", "drop_rate", "data_config", "backbone_kwargs", "mask_head",
                             "findings", "threshold", "feature_check")


#: ``timm.create_model`` options that would read weights or configs from a file or the hub: a model
#: folder someone hands over must not make xmed read (or fetch) anything beside its own weights
BACKBONE_OPTIONS_REFUSED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def checked_config(config: Any, required: tuple[str, ...], optional: tuple[str, ...],
                   source: str | os.PathLike, what: str) -> dict[str, Any]:
    """``config`` as a dict, once it is a mapping holding every key of ``required`` and none beyond
    ``required`` and ``optional``; otherwise :class:`CheckpointError` naming ``source`` and the key.

    Example:
        >>> checked_config({"colour": 1}, ("backbone",), (), "m/config.json", "model")
        Traceback (most recent call last):
        ...
        xmed.errors.CheckpointError: cannot load model m/config.json: not an xmed model config: missing key 'backbone'
    """
    if not isinstance(config, Mapping):
        raise CheckpointError(source, f"not an xmed {what} config: a {type(config).__name__}, "
                                      "not a mapping of settings")
    missing = [key for key in required if key not in config]
    if missing:
        raise CheckpointError(source, f"not an xmed {what} config: missing key {missing[0]!r}")
    unknown = sorted(set(config) - {*required, *optional})
    if unknown:
        raise CheckpointError(source, f"not an xmed {what} config: unknown key {unknown[0]!r} "
                                      f"(known: {', '.join([*required, *optional])})")
    return dict(config)


def model_from_config(config: Mapping[str, Any], source: str | os.PathLike = "config") -> FundusClassifier:
    """Rebuild an (untrained) model from ``export_config()`` output, without hub downloads; a
    config that is not one raises :class:`CheckpointError` naming ``source`` (its file)."""
    config = checked_config(config, *MODEL_KEYS, source, "model")
    options = config.get("backbone_kwargs") or {}
    if not isinstance(options, Mapping):
        raise CheckpointError(source, f"backbone_kwargs: must be a mapping of timm options, got {options!r}")
    reaching_out = sorted(set(options) & set(BACKBONE_OPTIONS_REFUSED))
    if reaching_out:
        raise CheckpointError(source, f"backbone_kwargs.{reaching_out[0]}: a saved model's backbone is built from its "
                                      f"own weights only, never from a file or hub its config names")
    findings = config.pop("findings", list(FINDINGS))
    if list(findings) != list(FINDINGS):
        raise CheckpointError(source, f"model was trained on findings {findings}, this xmed knows {list(FINDINGS)}")
    try:
        return FundusClassifier(
            backbone=config["backbone"], mode=config.get("mode", "multitask"),
            input_size=config.get("input_size"), drop_rate=config.get("drop_rate", 0.0),
            data_config=config.get("data_config"), backbone_kwargs=config.get("backbone_kwargs"),
            mask_head=config.get("mask_head"), threshold=config.get("threshold"),
            feature_check=config.get("feature_check"), pretrained=False,
        )
    except ConfigError:
        raise  # load_weights_only names the file beside the key
    except (TypeError, ValueError) as err:  # e.g. "input_size": "large"
        raise CheckpointError(source, f"bad model config: {err}") from None


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> FundusClassifier:
    """A :class:`FundusClassifier` in eval mode from an exported folder or a Lightning checkpoint.

    Never unpickles arbitrary objects: safetensors for folders, ``torch.load(weights_only=True)``
    for ``.ckpt`` files. Raises :class:`~xmed.errors.CheckpointError` naming the path.
    """
    return load_weights_only(path, model_from_config, FORMAT, "model", device)


def load_weights_only(path: str | os.PathLike, build: Callable[[Mapping[str, Any], Path], nn.Module],
                      format: str, what: str, device: str | torch.device = "cpu") -> nn.Module:
    """The loader behind :func:`load_model` and ``load_autoencoder``: ``build(config, source)``
    makes the untrained module from an exported folder's ``config.json["model"]`` (``format``
    checked) or a Lightning checkpoint's ``hyper_parameters.net_config``; the weights must fit it
    exactly. Returns the module in eval mode on ``device``; every failure is a
    :class:`~xmed.errors.CheckpointError` naming the file."""
    path = Path(path)
    if path.is_dir():
        config, state = _read_folder(path, format, what)
        source, weights = path / CONFIG, path / WEIGHTS
    elif path.is_file():
        config, state = _read_lightning(path)
        source = weights = path
    else:
        raise CheckpointError(path, "no such file or folder")
    check_targets(config, source, allowed=frozenset())  # a model's config names no class to build
    try:
        model = build(config, source)
    except ConfigError as err:  # the file's own settings are at fault, not the user's config
        raise CheckpointError(source, f"{err.key.removeprefix('model.net.')}: {err.reason}") from None
    broken = {name: int((~torch.isfinite(t)).sum()) for name, t in state.items()
              if t.is_floating_point() and not bool(torch.isfinite(t).all())}
    if broken:  # such a model would turn every photograph into NaN: refuse it here, naming the file
        raise CheckpointError(weights, f"{sum(broken.values())} weights are NaN or infinite, in "
                                       f"{', '.join(list(broken)[:3])}{' …' if len(broken) > 3 else ''}")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensors of the wrong shape (strict=False still checks shapes)
        raise CheckpointError(weights, f"weights do not fit the {what}: {err}") from None
    if missing or unexpected:
        raise CheckpointError(weights, f"weights do not fit the {what}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device).eval()


def _read_folder(path: Path, format: str, what: str) -> tuple[Mapping[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            raise CheckpointError(path, f"{name} is missing (an exported {what} folder has {CONFIG} and {WEIGHTS})")
    try:
        config = strict_json((path / CONFIG).read_bytes())
    except ValueError as err:  # bad JSON, nesting too deep, huge integers, NaN, lone surrogates
        raise CheckpointError(path / CONFIG, f"not valid JSON: {err}") from None
    if not isinstance(config, dict) or config.get("format") != format or "model" not in config:
        found = config.get("format") if isinstance(config, dict) else None
        raise CheckpointError(path / CONFIG, f"not an xmed {what} config (format {found!r}, expected {format!r})")
    try:
        state = load_file(str(path / WEIGHTS))
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise CheckpointError(path / WEIGHTS, f"cannot read the weights: {err}") from None
    return config["model"], state


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A Lightning checkpoint read with ``weights_only=True``: tensors and plain containers only,
    whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says (an explicit ``weights_only`` wins over it),
    so a pickled object in the file never runs. Raises :class:`CheckpointError` naming the file.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "x.ckpt"
        >>> torch.save({"epoch": 3, "state_dict": {"w": torch.zeros(1)}}, path)
        >>> read_checkpoint(path)["epoch"]
        3
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/unpickling errors of every kind, incl. refused globals
        raise CheckpointError(path, f"not a weights-only checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(path, f"not a Lightning checkpoint (holds a {type(checkpoint).__name__})")
    return checkpoint


def _read_lightning(path: Path) -> tuple[Mapping[str, Any], dict[str, torch.Tensor]]:
    checkpoint = read_checkpoint(path)
    try:
        config = checkpoint["hyper_parameters"]["net_config"]
        state = checkpoint["state_dict"]
    except (KeyError, TypeError):
        raise CheckpointError(path, "not an xmed Lightning checkpoint (no hyper_parameters.net_config)") from None
    prefix = "model."
    return config, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
