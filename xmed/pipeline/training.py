"""Training a FundusClassifier (``xmed-train``): fit with Lightning, then export the best
checkpoint, evaluate it on the training's devices (:func:`xmed.pipeline.evaluation.evaluate_model`)
and write the model card.

A run writes, into its folder: ``checkpoints/``, ``model/`` (safetensors + JSON, for
:func:`xmed.load_model`; with the image-quality checks the model is held to and its feature check,
fitted on the training eyes' features as training ends), ``metrics.json`` (test split),
``predictions.csv``, ``plots/`` (learning curve, ROC, calibration, finding AUROCs) and
``model_card.md``.

Example::

    from omegaconf import OmegaConf
    train(OmegaConf.load("runs/effb0/.hydra/config.yaml"))["auroc"]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xmed.data.quality import calibrate_checks
from xmed.errors import ConfigError
from xmed.models.autoencoder import export_autoencoder, load_autoencoder, reconstruction_l1
from xmed.models.classifier import DataConfig
from xmed.models.export import WEIGHTS, export_model, load_model, read_checkpoint
from xmed.models.feature_check import MAX_TRAIN_EYES, PERCENTILE, fit_feature_check, pooled_features
from xmed.pipeline.card import render_model_card
from xmed.pipeline.evaluation import evaluate_model, evaluation_artefacts
from xmed.pipeline.instantiate import build_trainer, inference_trainer
from xmed.pipeline.reports import print_run_folder, report_run
from xmed.runs import RESUME_LAST, command_folder, sha256, write_text_atomic
from xmed.runtime import machine_summary
from xmed.saved_config import instantiate_group
from xmed.viz.plots import plot_learning_curve

log = logging.getLogger(__name__)


def data_summary(datamodule) -> dict[str, Any]:
    splits = {name: len(view) for name, view in datamodule.splits.items()}
    prevalence = {}
    for name, view in datamodule.splits.items():
        labels = view.labels()
        graded = labels[labels == labels]
        prevalence[name] = round(float(graded.mean()), 3) if len(graded) else None
    return {
        "dataset": datamodule.dataset_name, "root": datamodule.root, "splits": splits,
        "prevalence": prevalence, "image_size": datamodule.image_size,
        "preprocess": datamodule.preprocess or "none",
        "split_rule": "published split" if datamodule.used_published_splits else
                      f"drawn: by patient where known, stratified by label, seed {datamodule.seed}",
        "skipped": len(datamodule.skipped),
    }


def quality_gate(datamodule, data_config: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, float]]:
    """The image-quality checks the trained model will hold its inputs to — those its validation
    photographs pass (:func:`xmed.data.quality.calibrate_checks`) — and the share of them failing
    each check; logged, a dropped check with its reason."""
    checks, failing = calibrate_checks(loader_images(datamodule.val_dataloader()), DataConfig.from_dict(data_config))
    for check, share in failing.items():
        if check not in checks:
            log.warning("image-quality check %s is off for this model: %.0f%% of its validation photographs fail it",
                        check, 100 * share)
    log.info("image-quality checks %s", ", ".join(checks) or "none")
    return checks, failing


def loader_images(loader):
    """The image batches of ``loader``, batches whose every file was skipped left out."""
    return (batch["image"] for batch in loader if batch.get("size", 1))


def fitted_feature_check(model, datamodule, device):
    """The trained model's out-of-distribution check (:mod:`xmed.models.feature_check`): a Gaussian
    over the pooled features of its training eyes (one pass without augmentation, at most
    ``MAX_TRAIN_EYES``), the threshold at the ``PERCENTILE``-th percentile of its validation eyes'
    distances; computed on ``device`` in full precision (every process of a distributed run
    computes the same), logged. None, with a warning, without two training and one validation eye."""
    place = next(model.parameters()).device
    model.to(device)
    try:
        train = pooled_features(model, loader_images(datamodule.unaugmented_dataloader("train")), MAX_TRAIN_EYES)
        val = pooled_features(model, loader_images(datamodule.unaugmented_dataloader("val")))
    finally:
        model.to(place)
    if len(train) < 2 or len(val) < 1:
        log.warning("no feature check: it needs 2 training and 1 validation eye, the splits hold %d and %d",
                    len(train), len(val))
        return None
    check = fit_feature_check(train, val, PERCENTILE)
    log.info("feature check: %s", check.describe())
    if check.val_eyes < 100 / (100 - PERCENTILE):  # the percentile falls between the largest distances
        log.warning("feature check: %d validation eyes are too few for a %gth percentile; about 1 in %d "
                    "eyes like them will be flagged", check.val_eyes, PERCENTILE, check.val_eyes + 1)
    return check


def describe_gate(checks: tuple[str, ...], failing: dict[str, float]) -> str:
    """The model card's line on the quality gate, e.g. ``nearly_uniform (0% of validation eyes fail
    it); off: no_field_of_view (100% fail it)``."""
    on = ", ".join(f"{c} ({100 * failing.get(c, 0):.0f}% of validation eyes fail it)" for c in checks) or "none"
    off = [f"{c} ({100 * share:.0f}% fail it)" for c, share in failing.items() if c not in checks]
    return on + (f"; off: {', '.join(off)}" if off else "")


def training_data_config(cfg: DictConfig) -> DictConfig:
    """``cfg.data``, set not to decode pixel masks unless a mask head trains on them (decoding
    them is a third of the loading time of a 256 px phantom eye); a ``load_masks`` the user set
    in ``data.dataset_options`` wins."""
    options = cfg.data.get("dataset_options") or {}
    if "load_masks" in options or (cfg.get("model") or {}).get("net", {}).get("mask_head"):
        return cfg.data
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data["dataset_options"] = {**(data.get("dataset_options") or {}), "load_masks": False}
    return OmegaConf.create(data)


def train(cfg: DictConfig) -> dict[str, Any]:
    """``xmed-train`` for a composed config: fit, evaluate the best checkpoint (every process),
    then (process 0) export it and write the model card; returns the test metrics (an empty dict
    on the other processes)."""
    import lightning as L

    out_dir = command_folder(cfg, resume_key="ckpt_path")
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate_group(training_data_config(cfg), "data")
    datamodule.setup("fit")  # the data set and its label tables are checked before any log or checkpoint is written
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["net"]["data_config"] = datamodule.data_config()
    gate = None
    if cfg.get("task_type", "classifier") == "classifier":
        gate = quality_gate(datamodule, model_cfg["net"]["data_config"])
        model_cfg["net"]["data_config"]["quality_checks"] = list(gate[0])
    if model_cfg.get("class_balance") == "sampler":
        datamodule.balanced_sampling = True
    module = instantiate_group(model_cfg, "model")
    if cfg.get("init_from"):
        initialise_from(module, cfg.init_from, task=cfg.get("task_type", "classifier"))
    callbacks = [instantiate_group(c, "callbacks") for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate_group(c, "logger") for c in (cfg.get("logger") or {}).values()]
    if not loggers:  # `logger=none`: Lightning's LearningRateMonitor refuses a Trainer without a logger
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer, precision = build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log.info("loader workers %s", datamodule.num_workers_choice)

    resume = resume_checkpoint(cfg.get("ckpt_path"), bool(cfg.get("allow_remote_checkpoint")), out_dir)
    if resume:
        for logger in loggers:  # the history up to the checkpoint stays, the lost part after it goes
            if hasattr(logger, "resume_from_step"):
                logger.resume_from_step(resume[1])
    # weights_only=True again: Lightning must not unpickle what the check above refused
    trainer.fit(module, datamodule, ckpt_path=str(resume[0]) if resume else None, weights_only=True)
    if trainer.is_global_zero:  # plots/learning_curve.png, from the CSV log where the run keeps one
        from lightning.pytorch.loggers import CSVLogger

        csv_log = next((Path(lg.log_dir) / "metrics.csv" for lg in loggers if isinstance(lg, CSVLogger)), None)
        plot_learning_curve(csv_log, out_dir / "plots" / "learning_curve.png")
    if not cfg.get("test", True):
        return {}
    if cfg.get("task_type", "classifier") == "autoencoder":
        return _finish_autoencoder(trainer, module, datamodule, out_dir) if trainer.is_global_zero else {}

    # every process takes part in the evaluation, on the devices it trained on, in full precision
    # unless the config sets one; process 0 writes the outputs
    checkpoint = _best_checkpoint(trainer)
    model = load_model(checkpoint) if checkpoint else module.model.eval()
    model.feature_check = fitted_feature_check(model, datamodule, trainer.strategy.root_device)
    evaluator, _ = inference_trainer(cfg.trainer, out_dir)
    metrics = evaluate_model(model, datamodule, out_dir, evaluator, threshold_rule=cfg.threshold_rule,
                             n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    if metrics is None:
        return {}
    model.threshold = metrics["threshold"]  # the operating point chosen on validation travels with the model
    model_dir = export_model(model, out_dir / "model", extra={
        "dataset": datamodule.dataset_name, "checkpoint": checkpoint.name if checkpoint else None})
    files = {f"model/{WEIGHTS}": sha256(model_dir / WEIGHTS)}
    if checkpoint:
        files[f"checkpoints/{checkpoint.name}"] = sha256(checkpoint)
    checks = {"quality_checks": describe_gate(*gate)} if gate else {}
    if model.feature_check is not None:
        checks["feature_check"] = model.feature_check.describe()
    card = render_model_card(
        title=f"{model.config['backbone']} on {datamodule.dataset_name}"
              + (f" ({', '.join(cfg.tags)})" if cfg.get("tags") else ""),
        metrics=metrics, data={**data_summary(datamodule), **checks},
        config_yaml=OmegaConf.to_yaml(cfg, resolve=False),
        architecture={"backbone": model.config["backbone"], "mode": model.mode,
                      "input_size": model.data_config.input_size,
                      **({"backbone options": dict(model.config["backbone_kwargs"])}
                         if model.config.get("backbone_kwargs") else {}),
                      **({"mask head": list(model.mask_names)} if model.mask_names else {}),
                      **({"initialised from": str(cfg.init_from)} if cfg.get("init_from") else {}),
                      "parameters": sum(p.numel() for p in model.parameters())},
        files=files, compute=compute_summary(trainer, module, datamodule, precision),
    )
    write_text_atomic(out_dir / "model_card.md", card)
    artefacts = {"checkpoint": checkpoint} if checkpoint else {}
    artefacts.update({"model": model_dir, **evaluation_artefacts(out_dir), "model card": out_dir / "model_card.md"})
    report_run(out_dir, metrics, artefacts)
    return metrics


def resume_checkpoint(ckpt_path: str | Path | None, allow_remote: bool, run_dir: Path) -> tuple[Path, int] | None:
    """The local checkpoint a run resumes from (``ckpt_path=…``) and its global step, checked to hold
    only tensors and plain containers (:func:`xmed.models.export.read_checkpoint`): a pickled object
    in it never runs, whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says. ``last`` is the run's own
    ``checkpoints/last.ckpt``. A remote address (``https://…``, ``s3://…``) is refused unless
    ``allow_remote_checkpoint=true``; it is then downloaded into ``<run>/resume/`` and checked like a
    local file.

    Example::

        resume_checkpoint("runs/a/checkpoints/last.ckpt", allow_remote=False, run_dir=Path("runs/b"))
    """
    from urllib.parse import urlparse

    if not ckpt_path:
        return None
    text = str(ckpt_path)
    address = urlparse(text)
    if text == RESUME_LAST:
        local = run_dir / "checkpoints" / "last.ckpt"
        if not local.is_file():
            raise ConfigError("ckpt_path", f"ckpt_path=last resumes from {local}, which does not exist")
    elif "://" in text and address.scheme != "file":
        if not allow_remote:
            raise ConfigError("ckpt_path", f"{text} is a remote address; a run resumes from a local file unless "
                                           "allow_remote_checkpoint=true (it is then downloaded and read weights-only)")
        local = download_checkpoint(text, run_dir / "resume" / (Path(address.path).name or "remote.ckpt"))
    else:
        local = Path(address.path if address.scheme == "file" else text)
    step = int(read_checkpoint(local).get("global_step", 0))
    log.info("resuming from %s (step %d)", local, step)
    return local, step


def download_checkpoint(address: str, destination: Path) -> Path:
    """Copy a remote checkpoint to ``destination`` (staged, renamed when complete); nothing is loaded."""
    import shutil
    import urllib.request

    destination.parent.mkdir(parents=True, exist_ok=True)
    staged = destination.with_name(destination.name + ".part")
    try:
        if address.startswith(("http://", "https://")):
            source = urllib.request.urlopen(address, timeout=60)  # noqa: S310 (the scheme is checked above)
        else:  # s3://, gs://, ... through fsspec, which Lightning already depends on
            from lightning.fabric.utilities.cloud_io import get_filesystem

            source = get_filesystem(address).open(address, "rb")
        with source, open(staged, "wb") as out:
            shutil.copyfileobj(source, out)
    except (OSError, ValueError, ImportError) as err:
        staged.unlink(missing_ok=True)
        raise ConfigError("ckpt_path", f"cannot download {address}: {err}") from None
    staged.replace(destination)
    log.info("downloaded %s to %s", address, destination)
    return destination


def compute_summary(trainer, module, datamodule, precision) -> dict[str, str]:
    """How the run used the machine, each machine-dependent choice with its reason (model card)."""
    devices = f"{trainer.num_devices} x {trainer.strategy.root_device.type}"
    if trainer.world_size > 1:
        devices += f", {trainer.world_size} processes ({type(trainer.strategy).__name__})"
    compute = {"devices": devices, "precision": str(precision)}
    if getattr(module, "channels_last_choice", None) is not None:
        compute["channels_last"] = str(module.channels_last_choice)
    compute["torch.compile"] = f"{bool(module.hparams.get('compile', False))} (set in the config)"
    compute["loader workers"] = str(datamodule.num_workers_choice)
    if getattr(datamodule, "pipeline_choice", None) is not None:  # where the photographs were prepared
        compute["input pipeline"] = str(datamodule.pipeline_choice)
    compute.update({k: str(v) for k, v in machine_summary().items()})
    return compute


def initialise_from(module, path: str | Path, task: str = "classifier") -> None:
    """Copy the weights of a trained classifier (exported folder or Lightning checkpoint, read
    with :func:`xmed.load_model`, so nothing is unpickled) into ``module.model``: the start of a
    fine-tuning run (``init_from=…``). Raises :class:`ConfigError` on key ``init_from`` when the
    architectures differ.

    Example::

        initialise_from(module, "outputs/phantom_ref/model")   # module: a FundusModule
    """
    if task != "classifier":
        raise ConfigError("init_from", f"fine-tuning starts a classifier; task {task!r} has no init_from")
    trained = load_model(path)
    trained.feature_check = None  # fitted anew on the eyes the fine-tuned model learns from
    if trained.config.get("backbone") != module.model.config.get("backbone"):
        raise ConfigError("init_from", f"{path} holds a {trained.config.get('backbone')!r} model, "
                                       f"model.net.backbone is {module.model.config.get('backbone')!r}")
    try:
        module.model.load_state_dict(trained.state_dict())
    except RuntimeError as err:  # a different head, mode or mask head: name the first mismatch
        first = str(err).strip().splitlines()[1:2] or [str(err)]
        raise ConfigError("init_from", f"the weights in {path} do not fit model.net: {first[0].strip()}") from None
    log.info("initialised the model from %s", path)


def _finish_autoencoder(trainer, module, datamodule, out_dir: Path) -> dict[str, Any]:
    """Export the best autoencoder and score its reconstructions on the test split."""
    import json

    import torch

    checkpoint = _best_checkpoint(trainer)
    model = load_autoencoder(checkpoint) if checkpoint else module.model.eval()
    folder = export_autoencoder(model, out_dir / "autoencoder")
    errors = []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            if batch.get("size", 1):
                errors.append(reconstruction_l1(model, batch["image"]).float().cpu())
    errors = torch.cat(errors) if errors else torch.zeros(0)
    metrics = {"reconstruction_l1": round(float(errors.mean()), 6) if len(errors) else None, "n": len(errors),
               "dataset": datamodule.dataset_name}
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    print(f"test reconstruction L1 (input space) {metrics['reconstruction_l1']} over {metrics['n']} images")
    print_run_folder(out_dir, {"checkpoint": checkpoint, "autoencoder": folder, "metrics": out_dir / "metrics.json"})
    return metrics


def _best_checkpoint(trainer) -> Path | None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and not getattr(cb, "every_epoch", False):
            path = cb.best_model_path or cb.last_model_path
            if path:
                return Path(path)
    return None
