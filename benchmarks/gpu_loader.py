"""End to end from JPEG files on disk, through xmed's training loader, against the same training
step on tensors already on the device — with the photographs prepared on the device
(``data.pipeline=gpu``: the workers read the files, nvJPEG decodes each batch, the searches,
crops, resize and augmentations run as batched tensor operations, prepared eyes kept on the device)
and, for comparison, in the loader workers (``data.pipeline=cpu``).

A phantom set is written as JPEG files with ``xmed-data phantom`` into a scratch folder. The
*train* loader of a ``FundusDataModule`` on it, set up as the data configs set it up (field-of-view
crop, resize, augment; ``cache_mb=1024``; one worker process per available CPU core; uint8 images
normalised on the device, as in training), feeds a resnet18 training step (the precision
:mod:`xmed.runtime` chooses, channels_last); the baseline is the same step on one batch kept on the
device. Rows, epochs of the two alternating:

- the bound: nvJPEG's own decode rate on the same files (bytes already in memory, batches as the
  loader's), and the device pipeline alone (files read by the workers, decoded and prepared, no
  model) in a first epoch;
- ``data.pipeline=gpu``, epochs after the first (after one untimed epoch: every eye is on the
  device, the workers read no file): goal >= 0.9 of the cached step;
- ``data.pipeline=gpu``, a first epoch (a new loader every time: its workers start, every file is
  read and decoded): goal >= 0.5 of the cached step;
- ``data.pipeline=cpu``, the same two rows while the time budget allows (what the workers give).

A check compares the device pipeline's prepared eyes (nvJPEG's decode on a GPU) with the CPU
pipeline's (Pillow's whole decode): mean and largest difference in levels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from benchmarks.commands import write_phantom_jpegs
from benchmarks.timing import Context, Goal, Part, alternate, median, paired_ratio, random_batch, training_step

LATER_GOAL = Goal("ratio", ">=", 0.9)
FIRST_GOAL = Goal("ratio", ">=", 0.5)


def run(part: Part, ctx: Context) -> None:
    from xmed.data.datamodule import FundusDataModule
    from xmed.data.normalise import normalise_images
    from xmed.models import FundusClassifier
    from xmed.runtime import available_cpus

    device, cores = ctx.device, available_cpus()
    n, side, size, batch = ctx.size(16, 2000), ctx.size(128, 512), ctx.size(64, 256), ctx.size(4, 128)
    epochs = ctx.size(1, 2)
    folder = ctx.scratch / f"jpeg_{side}"
    write_phantom_jpegs(folder, n, side, ctx.seed)
    torch.manual_seed(ctx.seed)
    model = FundusClassifier("resnet18", input_size=size).to(device).train().to(memory_format=torch.channels_last)
    images, labels = random_batch(batch, size, device, ctx.seed)
    step = training_step(model, images.contiguous(memory_format=torch.channels_last), labels, device, bf16=ctx.bf16)

    def datamodule(pipeline: str, **options) -> FundusDataModule:
        """The train loader's data module as the data configs set it up, the pipeline chosen."""
        settings = {"decode_reduced": True, "cache_mb": 1024, **options}
        return FundusDataModule(dataset="phantom", root=str(folder), image_size=size, batch_size=batch,
                                num_workers=cores, seed=ctx.seed, preprocess={"crop_fov": True},
                                dataset_options={"load_masks": False}, pipeline=pipeline, **settings)

    def train_epoch(loader) -> int:
        seen = 0
        for b in loader:
            x = normalise_images(b["image"].to(device, non_blocking=True))  # uint8 in, as in training
            step(x.contiguous(memory_format=torch.channels_last), {"glaucoma": b["label"].to(device, non_blocking=True),
                     "findings": b["findings"].to(device, non_blocking=True),
                     "vcdr": b["vcdr"].to(device, non_blocking=True)})
            seen += int(b["size"])
        return seen

    def cached_steps(count: int) -> int:
        for _ in range(count):
            step()
        return count * batch

    def loader_only(loader) -> int:
        return sum(int(b["size"]) for b in loader)

    def measure(label: str, pipeline: str, first_epoch: bool, goal: Goal) -> bool | None:
        """One figure; whether it meets the goal. ``first_epoch``: every timed epoch on a new loader,
        its workers started and every photograph read, as a run's first epoch is."""
        loader = datamodule(pipeline).train_dataloader()
        steps = math.ceil(len(loader.dataset) / batch)
        if first_epoch:
            jpeg, alone = (lambda: train_epoch(datamodule(pipeline).train_dataloader())), \
                          (lambda: loader_only(datamodule(pipeline).train_dataloader()))
        else:  # the loader's workers persist, the prepared eyes stay (on the device under gpu)
            jpeg, alone = (lambda: train_epoch(loader)), (lambda: loader_only(loader))
        times, seen = alternate({"jpeg": jpeg, "cached": lambda: cached_steps(steps), "loader alone": alone},
                                epochs, device, label)
        speed = {k: seen[k] / median(t) for k, t in times.items()}
        bound = speed["loader alone"] < 1.1 * speed["cached"]
        return part.figure(f"{label}: JPEG -> loader -> training step", speed["jpeg"], "images/s",
                           "the same step on cached tensors", speed["cached"], goal=goal,
                           paired=paired_ratio([t / seen["cached"] for t in times["cached"]],
                                               [t / seen["jpeg"] for t in times["jpeg"]]),
                           note=f"loader alone {speed['loader alone']:,.0f} images/s: "
                                + ("the loader is the bottleneck" if bound else "the loader keeps up"))["met"]

    part.settings.update({"photographs": f"{n} phantom eyes, JPEG, {side} px", "model": f"resnet18, {size} px",
                          "batch": batch, "workers": cores, "timed epochs": epochs,
                          "loader": "the data configs' settings: data.cache_mb=1024, data.decode_reduced=true (cpu)",
                          "precision": "bf16 autocast" if ctx.bf16 else "fp32"})
    part.attempt("nvJPEG decode rate",
                 lambda: decode_rate(part, ctx, folder, batch, cached_steps, step_count(n, batch)))
    part.attempt("device pipeline check", lambda: agreement(part, ctx, folder, size))
    rows = [(f"data.pipeline=gpu, {cores} workers, epochs after the first (prepared eyes on the device)", "gpu", False,
             LATER_GOAL),
            (f"data.pipeline=gpu, {cores} workers, a first epoch (workers started, every file read and decoded)", "gpu",
             True, FIRST_GOAL),
            (f"data.pipeline=cpu, {cores} workers, epochs after the first (prepared eyes cached)", "cpu", False,
             LATER_GOAL),
            (f"data.pipeline=cpu, {cores} workers, a first epoch (workers started, every photograph decoded)", "cpu",
             True, FIRST_GOAL)]
    for label, pipeline, first_epoch, goal in rows:
        if ctx.left() < 10:
            part.note(f"time budget: '{label}' not run ({ctx.left():.0f} s left)")
            continue
        part.attempt(label, lambda: measure(label, pipeline, first_epoch, goal))


def step_count(n: int, batch: int) -> int:
    return max(1, math.ceil(0.7 * n / batch))


def decode_rate(part: Part, ctx: Context, folder, batch: int, cached_steps, steps: int) -> None:
    """nvJPEG's decode rate on the phantom's files (their bytes in memory, in the loader's batches),
    and the device pipeline's preparation of the decoded batches, against the cached training step."""
    from xmed.data.device_pipeline import decode_jpegs, prepare_batch
    from xmed.data.preprocess import FundusPreprocess

    device = ctx.device
    files = sorted((folder / "images").glob("*.jpg"))
    data = [torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8) for path in files]
    batches = [data[i:i + batch] for i in range(0, len(data), batch)]
    size = ctx.size(64, 256)

    def decode_all() -> int:
        for chunk in batches:
            decode_jpegs(chunk, device)
        return len(data)

    decoded = [torch.stack(decode_jpegs(chunk, device)) for chunk in batches[:ctx.size(2, 4)]]

    def prepare_some() -> int:
        for images in decoded:
            prepare_batch(list(images), FundusPreprocess(crop_fov=True), size)
        return sum(len(images) for images in decoded)

    times, seen = alternate({"decode": decode_all, "prepare": prepare_some, "cached": lambda: cached_steps(steps)},
                            ctx.size(1, 3), device, "decode")
    cached = seen["cached"] / median(times["cached"])
    where = "nvJPEG" if device.type == "cuda" else "libjpeg (CPU)"
    part.figure(f"{where} decode alone, batches of {batch}: the bound of a first epoch", seen["decode"] /
                median(times["decode"]), "images/s", "the training step on cached tensors", cached,
                note=f"{len(data)} files of {files[0].stat().st_size / 1024:.0f} KiB on average" if files else None)
    part.figure(f"device preparation alone (field-of-view search, crop, resize) of decoded batches of {batch}",
                seen["prepare"] / median(times["prepare"]), "images/s", "the training step on cached tensors", cached)


def agreement(part: Part, ctx: Context, folder, size: int) -> None:
    """The device pipeline's prepared eyes against the CPU pipeline's, on the same files."""
    from xmed.data.device_pipeline import clean_jpeg, decode_jpegs, prepare_batch
    from xmed.data.io import read_image
    from xmed.data.preprocess import FundusPreprocess
    from xmed.data.transforms import build_transforms

    files = sorted((folder / "images").glob("*.jpg"))[:ctx.size(4, 64)]
    data = [torch.frombuffer(bytearray(clean_jpeg(path)[0]), dtype=torch.uint8) for path in files]
    device = prepare_batch(decode_jpegs(data, ctx.device), FundusPreprocess(crop_fov=True), size).cpu()
    transform = build_transforms("eval", size, preprocess={"crop_fov": True}, normalise=False)
    cpu = np.stack([transform.prepare({"image": read_image(path), "masks": {}, "meta": {}})["image"] for path in files])
    difference = np.abs(cpu.astype(int) - device.permute(0, 2, 3, 1).numpy())
    part.check(f"device pipeline ({'nvJPEG' if ctx.device.type == 'cuda' else 'libjpeg'}) against the CPU pipeline "
               f"(Pillow), {len(files)} eyes: mean |difference| in levels (largest)",
               f"{difference.mean():.3f} ({difference.max()})", "mean <= 1 level", bool(difference.mean() <= 1.0))
