"""End to end from JPEG files on disk, through xmed's training loader, against the same training
step on tensors already on the device.

A phantom set is written as JPEG files with ``xmed-data phantom`` into a scratch folder. The
*train* loader of a ``FundusDataModule`` on it, set up as the data configs set it up (JPEGs
decoded at a reduced scale where the crop allows, ``decode_reduced``; the prepared eyes kept in the
store the workers share, ``cache_mb=1024``; field-of-view crop, resize, augment; one worker
process per available CPU core; uint8 images normalised on the device, as in training), feeds a
resnet18 training step (the precision :mod:`xmed.runtime` chooses, channels_last); the baseline is
the same step on one batch kept on the device. Two rows, epochs of the two alternating:

- epochs after the first (after one untimed epoch: the workers only augment prepared eyes), what
  most of a training run sees;
- a first epoch (a new loader every time: its workers start and decode every photograph), what
  every run pays once.

The loader alone (no model) is timed too, to say whether it is the bottleneck. Where a first
epoch's loader is, one worker alone is timed (do the workers scale over the cores?); where the
later epochs miss the goal, pinned memory (``data.pin_memory``) and photographs of half the side
(the decoding work of a first epoch) are tried as extra rows while the time budget allows.
Goal: end to end >= 0.9 x the cached step.
"""

from __future__ import annotations

import math

import torch

from benchmarks.commands import write_phantom_jpegs
from benchmarks.timing import Context, Goal, Part, alternate, median, paired_ratio, random_batch, training_step

GOAL = Goal("ratio", ">=", 0.9)


def run(part: Part, ctx: Context) -> None:
    from xmed.data.datamodule import FundusDataModule
    from xmed.data.normalise import normalise_images
    from xmed.models import FundusClassifier
    from xmed.runtime import available_cpus

    device, cores = ctx.device, available_cpus()
    n, side, size, batch = ctx.size(16, 2000), ctx.size(128, 512), ctx.size(64, 256), ctx.size(4, 128)
    epochs = ctx.size(1, 2)
    folders = {side: ctx.scratch / f"jpeg_{side}"}
    write_phantom_jpegs(folders[side], n, side, ctx.seed)
    torch.manual_seed(ctx.seed)
    model = FundusClassifier("resnet18", input_size=size).to(device).train().to(memory_format=torch.channels_last)
    images, labels = random_batch(batch, size, device, ctx.seed)
    step = training_step(model, images.contiguous(memory_format=torch.channels_last), labels, device, bf16=ctx.bf16)

    def loader_of(photo_side: int, workers: int = cores, **options):
        """The train loader as the data configs set it up (reduced decoding, the prepared-eye cache),
        with ``options`` on top."""
        settings = {"decode_reduced": True, "cache_mb": 1024, **options}
        dm = FundusDataModule(dataset="phantom", root=str(folders[photo_side]), image_size=size, batch_size=batch,
                              num_workers=workers, seed=ctx.seed, preprocess={"crop_fov": True},
                              dataset_options={"load_masks": False}, **settings)
        return dm.train_dataloader()

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

    def measure(label: str, photo_side: int, first_epoch: bool = False, **options) -> bool | None:
        """One figure; whether it meets the goal. ``first_epoch``: every timed epoch on a new loader,
        its workers started and every photograph decoded, as a run's first epoch is."""
        loader = loader_of(photo_side, **options)
        steps = math.ceil(len(loader.dataset) / batch)
        if first_epoch:
            jpeg, alone = (lambda: train_epoch(loader_of(photo_side, **options))), \
                          (lambda: loader_only(loader_of(photo_side, **options)))
        else:  # the loader's workers persist and keep their prepared eyes, as in training
            jpeg, alone = (lambda: train_epoch(loader)), (lambda: loader_only(loader))
        times, seen = alternate({"jpeg": jpeg, "cached": lambda: cached_steps(steps), "loader alone": alone},
                                epochs, device, label)
        speed = {k: seen[k] / median(t) for k, t in times.items()}
        bound = speed["loader alone"] < 1.1 * speed["cached"]
        met = part.figure(f"{label}: JPEG -> loader -> training step", speed["jpeg"], "images/s",
                          "the same step on cached tensors", speed["cached"], goal=GOAL,
                          paired=paired_ratio([t / seen["cached"] for t in times["cached"]],
                                              [t / seen["jpeg"] for t in times["jpeg"]]),
                          note=f"loader alone {speed['loader alone']:,.0f} images/s: "
                               + ("the loader is the bottleneck" if bound else "the loader keeps up"))["met"]
        if first_epoch and bound and cores > 1 and not options:
            worker_scaling(speed["loader alone"])
        return met

    def worker_scaling(all_workers: float) -> None:
        """Whether the workers scale: the first-epoch loader alone against one worker's speed times
        the workers (its first eyes, decoded as in a first epoch)."""
        eyes = min(n, ctx.size(8, 4 * batch))

        def first_eyes() -> int:
            got = 0
            for b in loader_of(side, workers=1):
                got += int(b["size"])
                if got >= eyes:
                    break
            return got

        times, seen = alternate({"one worker": first_eyes}, 2, device, "one worker")
        single = seen["one worker"] / median(times["one worker"])
        part.figure(f"first epoch, loader alone, {cores} workers", all_workers, "images/s", f"{cores} x one worker's",
                    cores * single, note=f"one worker {single:,.0f} images/s; the ratio is how well the workers "
                                         "scale over the cores")

    part.settings.update({"photographs": f"{n} phantom eyes, JPEG, {side} px", "model": f"resnet18, {size} px",
                          "batch": batch, "workers": cores, "timed epochs": epochs,
                          "loader": "the data configs' settings: data.decode_reduced=true, data.cache_mb=1024",
                          "precision": "bf16 autocast" if ctx.bf16 else "fp32"})
    steady = measure(f"{cores} workers, epochs after the first (prepared eyes cached)", side)
    measure(f"{cores} workers, a first epoch (workers started, every photograph decoded)", side, first_epoch=True)
    if steady:
        return
    levers = [("+ data.pin_memory=true, epochs after the first", side, {"pin_memory": True}),
              (f"photographs of half the side ({side // 2} px), a first epoch", side // 2, {})]
    for label, photo_side, options in levers:
        if ctx.left() < 30:
            part.note(f"time budget: lever '{label}' not tried ({ctx.left():.0f} s left)")
            continue
        if photo_side not in folders:
            folders[photo_side] = ctx.scratch / f"jpeg_{photo_side}"
            write_phantom_jpegs(folders[photo_side], n, photo_side, ctx.seed)
        part.attempt(label, lambda: measure(f"{cores} workers {label}", photo_side,
                                            first_epoch=photo_side != side, **options))
