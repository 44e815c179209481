"""A LightningDataModule over any registered data set: splits, transforms, loaders.

Splits follow the data set's published train/val/test split when it has one (a published
train/test split gets a validation part carved from train); otherwise they are drawn here —
by patient where the data set knows patients (both eyes of a person stay in one split),
stratified by label, deterministic in ``seed``.

Example:
    >>> dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": 40, "size": 64},
    ...                       image_size=64, batch_size=8)
    >>> dm.setup()
    >>> {k: len(v) for k, v in dm.splits.items()}
    {'train': 28, 'val': 6, 'test': 6}
    >>> batch = next(iter(dm.train_dataloader())); tuple(batch["image"].shape), batch["image"].dtype
    ((8, 3, 64, 64), torch.uint8)
    >>> dm.on_after_batch_transfer(batch, 0)["image"].dtype   # normalised where the batch is
    torch.float32

The train loader hands its images over as uint8 pixels, normalised after the move to the device
(:meth:`FundusDataModule.on_after_batch_transfer`, which a Trainer given the data module calls;
``normalise_on_device``); the val, test and predict loaders give normalised float32 images.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import sys
from typing import Any, Callable, Iterator, Literal, Sequence

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset, get_worker_info

from xmed.data.cache import SharedEyeStore
from xmed.data.datasets import FundusDataset, SkippedSample, collate_samples, get_dataset, to_tensor_sample
from xmed.data.device_pipeline import (DeviceAugment, DeviceEyeCache, DevicePipeline, EncodedView, bytes_obstacle,
                                       collate_encoded, unsupported)
from xmed.data.normalise import IMAGENET_MEAN, IMAGENET_STD, normalise_images
from xmed.data.preprocess import FundusPreprocess
from xmed.data.sampling import EpochSampler, SeededIndex
from xmed.data.keywords import RENAMED_CONFIG_KEYS, renamed
from xmed.data.transforms import build_transforms, eval_transform, transform_settings
from xmed.errors import ConfigError
from xmed.runtime import Choice, check_pipeline, choose_num_workers, choose_pipeline
from xmed.saved_config import buildable, instantiate_group

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def split_indices(labels: Sequence[float], groups: Sequence[str], fractions: Sequence[float],
                  seed: int) -> dict[str, list[int]]:
    """Stratified, grouped train/val/test indices.

    Every group (patient) lands in exactly one split; groups are stratified by their label
    (the max over their eyes; ungraded is its own stratum). Written here because scikit-learn's
    StratifiedGroupKFold gives k equal folds, not arbitrary fractions, and is not a runtime
    dependency.

    Example:
        >>> parts = split_indices([0, 1, 0, 1, 0, 1], ["a", "a", "b", "c", "d", "e"], (0.5, 0.25, 0.25), 0)
        >>> sorted(i for part in parts.values() for i in part)
        [0, 1, 2, 3, 4, 5]
        >>> [name for name, part in parts.items() if 0 in part and 1 in part]   # patient "a" kept whole
        ['train']
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError("data.splits", f"must be three non-negative fractions summing to 1, got {list(fractions)}")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    strata: dict[str, list[str]] = {}
    for g, idx in members.items():
        values = [labels[i] for i in idx if not math.isnan(labels[i])]
        strata.setdefault(str(max(values)) if values else "ungraded", []).append(g)
    rng = np.random.default_rng(seed)
    out = {s: [] for s in SPLITS}
    for key in sorted(strata):
        names = sorted(strata[key])
        order = rng.permutation(len(names))
        bounds = np.cumsum(fractions) * len(names)
        for rank, j in enumerate(order):
            split = SPLITS[int(np.searchsorted(bounds, rank + 0.5))]  # rank centre against the cut points
            out[split].extend(members[names[j]])
    return {s: sorted(v) for s, v in out.items()}


def balanced_weights(labels: np.ndarray) -> torch.Tensor:
    """Per-sample weights giving each class (0, 1, ungraded) equal total weight.

    Example:
        >>> [round(w, 3) for w in balanced_weights(np.array([0., 0., 0., 1.])).tolist()]
        [0.333, 0.333, 0.333, 1.0]
    """
    keys = np.where(np.isnan(labels), -1, labels)
    values, counts = np.unique(keys, return_counts=True)
    per_class = dict(zip(values.tolist(), (1.0 / counts).tolist()))
    return torch.tensor([per_class[k] for k in keys.tolist()], dtype=torch.float32)


def cache_bytes(cache_mb: float) -> int:
    """``data.cache_mb`` in bytes; a negative budget is a :class:`ConfigError`."""
    if cache_mb < 0:
        raise ConfigError("data.cache_mb", f"must be >= 0 (0 turns the cache off), got {cache_mb}")
    return int(cache_mb * 2**20)


class SplitView(Dataset):
    """The samples of one split of a :class:`FundusDataset`, through that split's transform.

    ``cache_mb`` > 0 keeps each eye's prepared form (decoded, preprocessed, fitted to the input
    size: :meth:`FundusTransform.prepare`) in memory, so later epochs only augment: up to that
    many megabytes in one store that every loader worker of the split shares
    (:class:`~xmed.data.cache.SharedEyeStore`: from the second epoch on, every eye is prepared
    whichever worker it goes to), and, for eyes that store does not take (eyes with masks; workers
    started afresh rather than forked), up to that many per process. Eyes beyond the budget are
    prepared afresh each time; skipped files are never cached.

    ``decode_reduced`` decodes a JPEG photograph at 1/2, 1/4 or 1/8 of its size where the
    transform's :attr:`~xmed.data.transforms.FundusTransform.pixel_need` allows it (the crop
    still at least the input's side): DCT scaling, far cheaper than decoding whole and resizing.

    Example:
        >>> from xmed.data.datasets import get_dataset
        >>> from xmed.data.transforms import build_transforms
        >>> base = get_dataset("phantom_render", n=2, size=64)
        >>> view = SplitView(base, [0, 1], build_transforms("eval", 32), cache_mb=1)
        >>> tuple(view[0]["image"].shape), view.cached
        ((3, 32, 32), 1)
    """

    def __init__(self, base: FundusDataset, indices: Sequence[int], transform, cache_mb: float = 0,
                 decode_reduced: bool = False):
        self.base, self.indices, self.transform = base, list(indices), transform
        preparing = hasattr(transform, "prepare")
        self.cache_bytes = cache_bytes(cache_mb) if preparing else 0
        self.pixel_need = getattr(transform, "pixel_need", None) if decode_reduced and preparing else None
        side = getattr(transform, "input_size", None)
        # made now, in the process that starts the loader's workers, so that forked workers share it
        self._shared = (SharedEyeStore.for_budget(len(self.indices), side, self.cache_bytes)
                        if self.cache_bytes and side else None)
        self._prepared: dict[int, dict] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def cached(self) -> int:
        """How many eyes this process can read prepared: the shared store's and its own."""
        return len(self._prepared) + (self._shared.filled() if self._shared is not None else 0)

    def __getitem__(self, i: int | SeededIndex):
        if isinstance(i, SeededIndex):  # the training sampler's: this sample's augmentations are seeded
            if hasattr(self.transform, "set_random_seed"):
                self.transform.set_random_seed(i.seed)
            i = i.index
        index = self.indices[i]
        if not hasattr(self.transform, "prepare"):  # a plain sample -> sample function
            return self.base.get(index, self.transform)
        sample = self.prepared(i)
        if not isinstance(sample, SkippedSample):
            sample = to_tensor_sample(self.transform.augment(sample), scale_uint8=self.transform.normalised)
        return sample  # a SkippedSample is reported by the batch (and logged by the data module)

    def prepared(self, i: int) -> dict | SkippedSample:
        """Eye ``i`` of this split decoded and prepared (:meth:`FundusTransform.prepare`: not
        augmented, a numpy sample), from the cache when it holds it."""
        index = self.indices[i]
        sample = self._prepared.get(index)
        if sample is None and self._shared is not None:
            sample = self._shared.get(i)
        return sample if sample is not None else self._prepare(i)

    def _prepare(self, i: int) -> dict | SkippedSample:
        """Eye ``i`` of the split decoded and prepared, kept while the cache's budget allows."""
        index = self.indices[i]
        sample = self.base.load(index, self.pixel_need)
        if isinstance(sample, SkippedSample):
            return sample
        sample = self.transform.prepare(sample, decode_whole=lambda: self.base.load(index))
        if isinstance(sample, SkippedSample) or not self.cache_bytes:
            return sample
        if self._shared is not None and self._shared.put(i, sample):
            return sample
        size = sample["image"].nbytes + sum(m.nbytes for m in sample["masks"].values())
        if self._cached_bytes + size <= self.cache_bytes:
            self._prepared[index] = sample
            self._cached_bytes += size
        return sample

    def labels(self) -> np.ndarray:
        return np.array([self.base.records[i].label for i in self.indices], np.float32)


class SkipRecordingLoader(DataLoader):
    """A DataLoader that hands each batch's ``"skipped"`` list to ``record_skips`` as the batch
    reaches the main process, so that samples skipped inside loader worker processes are
    known there too; with ``prepare`` (a :class:`~xmed.data.device_pipeline.DevicePipeline`), each
    batch goes through it there first (its files decoded and its eyes prepared on the device).

    Example:
        >>> from xmed.data.datasets import SkippedSample, collate_samples
        >>> seen = []
        >>> loader = SkipRecordingLoader([SkippedSample("eye.png", "zero-byte file")], batch_size=1,
        ...                              collate_fn=collate_samples, record_skips=seen.extend)
        >>> [batch["size"] for batch in loader], seen
        ([0], [{'path': 'eye.png', 'reason': 'zero-byte file'}])
    """

    def __init__(self, *args: Any, record_skips: Callable[[list[dict]], Any] | None = None,
                 prepare: Callable[[dict], dict] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.record_skips, self.prepare = record_skips, prepare

    def __iter__(self) -> Iterator:
        with _single_threaded_opencv(self.num_workers > 0):
            batches = super().__iter__()  # starts the workers (once: they persist)
        return self._recording(batches)

    def _recording(self, batches: Iterator) -> Iterator:
        for batch in batches:
            if self.prepare is not None:
                batch = self.prepare(batch)
            if self.record_skips is not None and batch.get("skipped"):
                self.record_skips(batch["skipped"])
            yield batch


@contextlib.contextmanager
def _single_threaded_opencv(starting_workers: bool) -> Iterator[None]:
    """OpenCV limited to one thread while loader workers start, its setting restored after.

    The workers already use the cores (torch sets its own threads to 1 in a worker), and
    OpenCV's thread pool in each of N workers would ask for N x cores threads. A forked worker
    inherits the setting; calling ``cv2.setNumThreads`` inside a forked worker instead can hang
    it for good (it reconfigures a thread pool whose threads stayed in the parent)."""
    if not starting_workers:
        yield
        return
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def worker_start_method(num_workers: int) -> str | None:
    """How the loader's workers start: forked where the system forks safely (Linux), else the
    interpreter's default (None).

    Forked workers share the prepared-eye store their split made before them
    (:class:`~xmed.data.cache.SharedEyeStore`) and start in milliseconds. Python 3.14 starts them
    with ``forkserver`` by default, and each would keep its own prepared eyes. macOS forks unsafely
    (its system libraries are not fork-safe), so it keeps its default, ``spawn``.

    Example:
        >>> worker_start_method(0) is None
        True
    """
    if num_workers == 0 or sys.platform == "darwin" or "fork" not in multiprocessing.get_all_start_methods():
        return None
    return "fork"


def _init_worker(worker_id: int) -> None:
    """Set up a loader worker: its own augmentation stream (else workers repeat each other), and
    one OpenCV thread in a worker started afresh (spawn, forkserver; a forked one already has it,
    :func:`_single_threaded_opencv`)."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed % 2**32)


def pipeline_obstacle(view: SplitView) -> str | None:
    """Why ``view``'s eyes cannot be prepared on the device (None when they can): see
    :func:`~xmed.data.device_pipeline.bytes_obstacle` and :func:`~xmed.data.device_pipeline.unsupported`."""
    transform = view.transform
    if not hasattr(transform, "prepare"):
        return "the split's transform is not one of xmed's"
    return bytes_obstacle(view.base) or (unsupported(transform.preprocess) if transform.preprocess else None)


def view_pipeline(view: SplitView, device: torch.device | str, augment: dict[str, Any] | None = None, cache=None):
    """The :class:`~xmed.data.device_pipeline.DevicePipeline` that prepares ``view``'s eyes on
    ``device`` as its transform prepares them in the workers: the same preprocessing, input size and
    normalisation (``augment``: the training augmentations, as
    :func:`~xmed.data.transforms.build_transforms` takes them)."""
    transform = view.transform
    return DevicePipeline(view.base, transform.preprocess or FundusPreprocess(crop_fov=False), transform.input_size,
                          device, transform.mean, transform.std, normalise=transform.normalised,
                          augment=DeviceAugment(**augment) if augment is not None else None, cache=cache)


def eval_loader(view: SplitView, batch_size: int, num_workers: int, device: torch.device | str) -> DataLoader:
    """The eyes of ``view`` in order, prepared on ``device`` as its (evaluation) transform prepares
    them, normalised with its ``mean``/``std``: the loader workers read the files,
    :func:`view_pipeline` decodes and prepares each batch in this process (what ``xmed-predict`` and
    ``xmed-explain`` read under ``pipeline: gpu``).

    Example:
        >>> from xmed.data.datasets import get_dataset
        >>> base = get_dataset("phantom", "data/phantom")                                     # doctest: +SKIP
        >>> view = SplitView(base, range(len(base)), build_transforms("eval", 256))           # doctest: +SKIP
        >>> next(iter(eval_loader(view, 32, 4, "cuda")))["image"].device                      # doctest: +SKIP
        device(type='cuda', index=0)
    """
    return SkipRecordingLoader(EncodedView(view), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                               multiprocessing_context=worker_start_method(num_workers), collate_fn=collate_encoded,
                               worker_init_fn=_init_worker, prepare=view_pipeline(view, device))


class FundusDataModule(L.LightningDataModule):
    """Train/val/test/predict loaders for a registered data set.

    Args:
        dataset: registry name (see :data:`xmed.data.datasets.DATASETS`).
        root: the data set folder (None for ``phantom_render``).
        dataset_options: extra arguments of the data set class (e.g. ``partition``, ``n``).
        image_size: side of the square network input (``data.image_size``; the model's
            ``input_size``, :meth:`data_config`: the path is told in
            :func:`~xmed.data.transforms.eval_transform`).
        batch_size, pin_memory: loader settings.
        num_workers: loader worker processes, or ``"auto"``: one per available core, at most 8
            (:func:`xmed.runtime.choose_num_workers`; the choice is kept in :attr:`num_workers_choice`).
        splits: train/val/test fractions used when the data set publishes no split.
        use_published_splits: follow the published split when there is one.
        seed: split and augmentation seed.
        preprocess: :class:`~xmed.data.preprocess.FundusPreprocess` fields (FOV crop, disc crop, contrast).
        augment: extra arguments of :func:`~xmed.data.transforms.build_transforms` for training
            (``hflip``, ``vflip``, ``rotate``, ``colour``, ``scale``; ``color``, the old name of
            ``colour`` that configs saved before carry, is read with a :class:`DeprecationWarning`).
        on_error: ``"raise"`` or ``"skip"`` (skipped files are logged once and listed in
            :attr:`skipped`; skipped samples arrive in each batch's ``"skipped"`` list).
        cache_mb: memory for keeping the train and val eyes prepared between epochs, each split in
            one store its loader workers share (eyes with masks: per process; see
            :class:`SplitView`); 0 turns the cache off.
        decode_reduced: decode JPEG photographs at 1/2, 1/4 or 1/8 of their size where the
            preprocessing and ``image_size`` still get the pixels they need (see :class:`SplitView`;
            the data configs turn it on).
        normalise_on_device: the train loader hands over uint8 pixels, which
            :meth:`on_after_batch_transfer` normalises where the batch then is (a quarter of the
            bytes out of the workers: ``benchmarks/loader_handover.py``); False: float32 images its
            workers normalised, for a loop that reads the loader's images without that hook.
        pipeline: where the photographs are decoded and prepared: ``cpu`` in the loader workers;
            ``gpu`` on the device the trainer runs on — the workers only read the files, and each
            batch is decoded (nvJPEG) and prepared there (:mod:`xmed.data.device_pipeline`; the
            prepared eyes of train and val kept on the device within ``cache_mb``); ``auto``: gpu
            when the trainer runs on CUDA and the photographs can be read as files without their
            masks, else cpu (:func:`xmed.runtime.choose_pipeline`; the choice is kept in
            :attr:`pipeline_choice` and logged). A loader made before a trainer is attached uses
            the CPU pipeline under ``auto``.
    """

    def __init__(
        self,
        dataset: str = "phantom",
        root: str | None = None,
        dataset_options: dict[str, Any] | None = None,
        image_size: int = 256,
        batch_size: int = 32,
        num_workers: int | Literal["auto"] = 0,
        pin_memory: bool = False,
        splits: Sequence[float] = (0.7, 0.15, 0.15),
        use_published_splits: bool = True,
        seed: int = 0,
        preprocess: dict[str, Any] | None = None,
        augment: dict[str, Any] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        on_error: Literal["raise", "skip"] = "raise",
        balanced_sampling: bool = False,
        cache_mb: float = 0,
        decode_reduced: bool = False,
        normalise_on_device: bool = True,
        pipeline: str = "auto",
    ):
        super().__init__()
        if image_size < 16:
            raise ConfigError("data.image_size", f"must be at least 16, got {image_size}")
        if batch_size < 1:
            raise ConfigError("data.batch_size", f"must be at least 1, got {batch_size}")
        self.save_hyperparameters()
        self.dataset_name, self.root = dataset, root
        self.dataset_options = dict(dataset_options or {})
        self.image_size, self.batch_size = image_size, batch_size
        self.num_workers_choice = choose_num_workers(num_workers)
        self.num_workers, self.pin_memory = self.num_workers_choice.value, pin_memory
        self.split_fractions, self.use_published_splits = tuple(splits), use_published_splits
        self.seed, self.on_error = seed, on_error
        self.preprocess = dict(preprocess or {})
        self.augment = renamed(augment or {}, RENAMED_CONFIG_KEYS["data.augment"], "data.augment")
        self.mean, self.std = tuple(mean), tuple(std)
        self.balanced_sampling = balanced_sampling
        cache_bytes(cache_mb)  # checked now, not at setup
        self.cache_mb = cache_mb
        self.decode_reduced = decode_reduced
        self.normalise_on_device = normalise_on_device
        self.pipeline = check_pipeline(pipeline)
        #: where the last loader made prepares its photographs, and why (:func:`xmed.runtime.choose_pipeline`)
        self.pipeline_choice: Choice | None = None
        self._device_caches: dict[str, Any] = {}
        self.used_published_splits = False
        self.base: FundusDataset | None = None
        self.splits: dict[str, SplitView] = {}
        #: the ``"train"`` (augmenting; uint8 out when normalised on the device) and ``"eval"``
        #: transforms, after :meth:`setup`
        self.transforms: dict[str, Any] = {}
        self._decode_skips: dict[tuple[str, str], dict[str, str]] = {}

    def data_config(self) -> dict[str, Any]:
        """What a model trained on these loaders must do to a raw photograph (it carries this; its
        ``input_size`` is ``image_size``): what the val/test loaders' transform is built from
        (:func:`~xmed.data.transforms.eval_transform`)."""
        # no `preprocess` given means none at all: no FOV crop either (FundusPreprocess defaults to one)
        pre = FundusPreprocess.from_dict({"crop_fov": False, **self.preprocess}).to_dict()
        pre["preprocess_size"] = pre.pop("size")  # "size" alone would read as the model's, image_size
        return {"input_size": self.image_size, "mean": list(self.mean), "std": list(self.std), **pre}

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self.base is not None:
            return
        self.base = get_dataset(self.dataset_name, self.root, on_error=self.on_error, **self.dataset_options)
        if len(self.base) == 0:
            raise ConfigError("data.root", f"data set {self.dataset_name!r} at {self.root} has no usable images")
        for skip in self.base.skipped:
            log.warning("skipped %s: %s", skip.path, skip.reason)
        indices = self._published_split_indices()
        self.used_published_splits = indices is not None
        if indices is None:
            indices = split_indices([r.label for r in self.base.records], self.base.groups(),
                                    self.split_fractions, self.seed)
        config = self.data_config()
        self.transforms = {
            "train": build_transforms("train", **transform_settings(config), seed=self.seed,
                                      normalise=not self.normalise_on_device, **self.augment),
            "eval": eval_transform(config),
        }
        # train and val are read every epoch: worth keeping prepared; test is read once
        self.splits = {s: SplitView(self.base, indices[s], self.transforms["train" if s == "train" else "eval"],
                                    cache_mb=self.cache_mb if s in ("train", "val") else 0,
                                    decode_reduced=self.decode_reduced)
                       for s in SPLITS}
        counts = {s: len(v) for s, v in self.splits.items()}
        log.info("data set %s: %d images, splits %s, %d skipped", self.dataset_name, len(self.base),
                 counts, len(self.base.skipped))

    def _published_split_indices(self) -> dict[str, list[int]] | None:
        """The data set's own train/val/test split (validation carved from train when the data
        set publishes none), or None when it has no complete published split."""
        records = self.base.records
        published = [r.split for r in records]
        if not (self.use_published_splits and any(published)):
            return None
        if not all(s in SPLITS for s in published):
            log.warning("data set %s gives a published split for %d of %d eyes only; drawing the "
                        "splits instead", self.dataset_name, sum(s in SPLITS for s in published),
                        len(published))
            return None
        out = {s: [i for i, p in enumerate(published) if p == s] for s in SPLITS}
        if out["train"] and not out["val"]:  # carve validation out of the published train split
            train = out["train"]
            groups = self.base.groups()
            f_train, f_val, _ = self.split_fractions
            part = split_indices([records[i].label for i in train], [groups[i] for i in train],
                                 (f_train / (f_train + f_val), f_val / (f_train + f_val), 0.0), self.seed)
            out["train"] = [train[i] for i in part["train"]]
            out["val"] = [train[i] for i in part["val"]]
        if not all(out.values()):
            log.warning("the published split of data set %s leaves %s empty; drawing the splits "
                        "instead", self.dataset_name, ", ".join(s for s in SPLITS if not out[s]))
            return None
        return out

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Every file left out so far, each once, as ``{"path", "reason"}``: label rows and
        missing images found when listing, then the samples that loaders (in this process or
        in their workers) reported as unreadable — one left out in several epochs counts once.

        Example:
            >>> dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": 8, "size": 32},
            ...                       image_size=32)
            >>> dm.setup(); dm.skipped
            []
        """
        if self.base is None:
            return []
        listed = {(s.path, s.reason): s.as_dict() for s in self.base.skipped}
        return list({**listed, **self._decode_skips}.values())

    def record_skips(self, skips: list[dict[str, str]]) -> None:
        """Keep (and log, the first time) the skipped samples a batch reports."""
        for skip in skips:
            key = (skip["path"], skip["reason"])
            if key not in self._decode_skips:
                self._decode_skips[key] = {"path": skip["path"], "reason": skip["reason"]}
                log.warning("skipped %s: %s", *key)

    # ------------------------------------------------------------------ loaders
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise the train loader's uint8 images where the batch now is (the GPU in training;
        ``normalise_on_device``):
        :func:`~xmed.data.normalise.normalise_images` with this module's ``mean``/``std``. Batches of
        the other loaders arrive normalised and pass unchanged."""
        if isinstance(batch, dict) and torch.is_tensor(batch.get("image")):
            batch = {**batch, "image": normalise_images(batch["image"], self.mean, self.std)}
        return batch

    def _loader(self, split: str, shuffle: bool, view: SplitView | None = None) -> DataLoader:
        if not self.splits:
            self.setup()
        view = view or self.splits[split]
        sampler = None
        if shuffle:  # order and augmentations from (seed, epoch): a resumed run replays the same epochs
            trainer = self.trainer
            sampler = EpochSampler(
                len(self.splits[split]), self.seed,
                weights=balanced_weights(self.splits[split].labels()) if self.balanced_sampling else None,
                num_replicas=trainer.world_size if trainer else 1, rank=trainer.global_rank if trainer else 0)
        dataset, collate, prepare = view, collate_samples, self._device_pipeline(split, view)
        if prepare is not None:  # the workers read the files; the device decodes and prepares
            dataset, collate = EncodedView(view, prepare.augment, prepare.cache), collate_encoded
        return SkipRecordingLoader(
            dataset, batch_size=self.batch_size, sampler=sampler,
            num_workers=self.num_workers, pin_memory=self.pin_memory,
            multiprocessing_context=worker_start_method(self.num_workers),
            collate_fn=collate, worker_init_fn=_init_worker,
            persistent_workers=self.num_workers > 0, generator=torch.Generator().manual_seed(self.seed),
            record_skips=self.record_skips, prepare=prepare,
        )

    def _device_pipeline(self, split: str, view: SplitView):
        """The :class:`~xmed.data.device_pipeline.DevicePipeline` of ``view``'s loader when its
        photographs are prepared on the device (:attr:`pipeline`), else None; the choice is logged
        when it changes."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else None
        if device is None and self.pipeline == "gpu":
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        choice = choose_pipeline(self.pipeline, device.type if device is not None else None, pipeline_obstacle(view))
        if choice != self.pipeline_choice:
            log.info("input pipeline %s", choice)
            self.pipeline_choice = choice
        if choice.value != "gpu":
            return None
        cache = None
        if split in ("train", "val") and self.cache_mb:  # an unaugmented train loader shares the train eyes
            if split not in self._device_caches:
                self._device_caches[split] = DeviceEyeCache.for_budget(len(view), self.image_size,
                                                                       cache_bytes(self.cache_mb))
            cache = self._device_caches[split]
        augment = self.augment if view.transform is self.transforms["train"] else None
        return view_pipeline(view, device, augment=augment, cache=cache)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def unaugmented_dataloader(self, split: str) -> DataLoader:
        """The eyes of ``split`` in order, through the evaluation transform — the training eyes
        without their augmentation —: what a trained model's statistics are fitted on.

        Example:
            >>> dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": 20, "size": 32},
            ...                       image_size=32, batch_size=4)
            >>> batch = next(iter(dm.unaugmented_dataloader("train")))
            >>> first = [dm.base.records[i].id for i in dm.splits["train"].indices[:4]]
            >>> batch["image"].dtype, batch["meta"]["id"] == first
            (torch.float32, True)
        """
        if not self.splits:
            self.setup()
        view = self.splits[split]
        if view.transform is not self.transforms["eval"]:
            view = SplitView(self.base, view.indices, self.transforms["eval"], decode_reduced=self.decode_reduced)
        return self._loader(split, shuffle=False, view=view)


def datamodule_for_model(data_cfg: Any, model: Any, source: str | os.PathLike | None = None) -> FundusDataModule:
    """The data module of the ``data`` config ``data_cfg``, set up to prepare photographs the way
    ``model`` expects (its ``data_config``: input size, normalisation, field-of-view and disc crops,
    contrast). ``source``: the file ``data_cfg`` was read from, when it was not composed by this
    command (see :func:`xmed.saved_config.instantiate_group`).

    Example::

        datamodule = datamodule_for_model(cfg.data, load_model("outputs/demo/train/model"))
    """
    dc = model.data_config
    config = buildable(data_cfg, source, "data") if source is not None else \
        OmegaConf.to_container(data_cfg, resolve=True)
    config.update(image_size=dc.input_size, mean=list(dc.mean), std=list(dc.std))
    config["preprocess"] = dc.preprocess()
    datamodule = instantiate_group(OmegaConf.create(config), "data", source)
    datamodule.setup()
    return datamodule


def explained_view(cfg: Any, datamodule: FundusDataModule) -> SplitView:
    """The eyes an ``xmed-explain`` run explains (its config ``cfg``): split ``cfg.split``, only
    label ``cfg.label`` when set, the first ``cfg.n``, as the model sees them in evaluation — the
    train split too (never augmented). The review and the explanation study read a run's eyes
    through it.

    Example:
        >>> from omegaconf import OmegaConf
        >>> dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": 40, "size": 32}, image_size=32)
        >>> dm.setup()
        >>> view = explained_view(OmegaConf.create({"split": "train", "n": 3, "label": 1}), dm)
        >>> len(view), {dm.base.records[i].label for i in view.indices}
        (3, {1.0})
    """
    if cfg.split not in datamodule.splits:
        raise ConfigError("split", f"no split {cfg.split!r}; the data set has {', '.join(datamodule.splits)}")
    view = datamodule.splits[cfg.split]
    indices = view.indices
    if cfg.get("label") is not None:  # e.g. label=1: explain glaucomatous eyes only
        indices = [i for i in indices if view.base.records[i].label == float(cfg.label)]
    view = SplitView(view.base, indices[:int(cfg.n)], datamodule.transforms["eval"])
    if len(view) == 0:
        raise ConfigError("n", f"no eyes to explain in split {cfg.split!r}"
                               + (f" with label {cfg.label}" if cfg.get("label") is not None else ""))
    return view
