"""End to end from JPEG files on disk, through xmed's training loader, against the same training
step on tensors already on the device.

A phantom set is written as JPEG files with ``xmed-data phantom`` into a scratch folder. The
*train* loader of a ``FundusDataModule`` on it (decode, at a reduced scale where the crop allows
as the data configs' ``decode_reduced`` does; field-of-view crop, resize, augment; one worker
process per available CPU core; uint8 images handed over and normalised on the device, as in
training) feeds a resnet18 training step (the precision :mod:`xmed.runtime` chooses,
channels_last); the baseline is the same step on one batch kept on the device. Epochs of the two
alternate, after one untimed epoch each. The loader alone (no model) is timed too, to say whether
it is the bottleneck; where it is, one worker alone is timed (do the workers scale over the
cores?) and the levers xmed exposes are tried as extra rows while the time budget allows: pinned memory (``data.pin_memory``), the prepared-eye
cache (``data.cache_mb``) and photographs of half the side (the decoding work). Goal: end to end
>= 0.9 x the cached step.
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
        dm = FundusDataModule(dataset="phantom", root=str(folders[photo_side]), image_size=size, batch_size=batch,
                              num_workers=workers, seed=ctx.seed, preprocess={"crop_fov": True},
                              dataset_options={"load_masks": False}, decode_reduced=True, **options)
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

    def measure(label: str, photo_side: int, **options) -> bool | None:
        """One figure; whether it meets the goal."""
        loader = loader_of(photo_side, **options)
        eyes = len(loader.dataset)
        steps = math.ceil(eyes / batch)
        times, seen = alternate({"jpeg": lambda: train_epoch(loader), "cached": lambda: cached_steps(steps),
                                 "loader alone": lambda: sum(int(b["size"]) for b in loader)},
                                epochs, device, label)
        speed = {k: seen[k] / median(t) for k, t in times.items()}
        bound = speed["loader alone"] < 1.1 * speed["cached"]
        met = part.figure(f"{label}: JPEG -> loader -> training step", speed["jpeg"], "images/s",
                          "the same step on cached tensors", speed["cached"], goal=GOAL,
                          paired=paired_ratio([t / seen["cached"] for t in times["cached"]],
                                              [t / seen["jpeg"] for t in times["jpeg"]]),
                          note=f"loader alone {speed['loader alone']:,.0f} images/s: "
                               + ("the loader is the bottleneck" if bound else "the loader keeps up"))["met"]
        if bound and not options and photo_side == side and cores > 1:
            worker_scaling(speed["loader alone"])
        return met

    def worker_scaling(all_workers: float) -> None:
        """Whether the workers scale: the loader alone against one worker's speed times the workers."""
        one = loader_of(side, workers=1)
        eyes = min(len(one.dataset), ctx.size(8, 4 * batch))

        def first_eyes() -> int:
            got = 0
            for b in one:
                got += int(b["size"])
                if got >= eyes:
                    break
            return got

        times, seen = alternate({"one worker": first_eyes}, 2, device, "one worker")
        single = seen["one worker"] / median(times["one worker"])
        part.figure(f"loader alone, {cores} workers", all_workers, "images/s", f"{cores} x one worker's",
                    cores * single, note=f"one worker {single:,.0f} images/s; the ratio is how well the workers "
                                         "scale over the cores")

    part.settings.update({"photographs": f"{n} phantom eyes, JPEG, {side} px", "model": f"resnet18, {size} px",
                          "batch": batch, "workers": cores, "timed epochs": epochs,
                          "precision": "bf16 autocast" if ctx.bf16 else "fp32"})
    if measure(f"{cores} workers", side):
        return
    levers = [("+ data.cache_mb=1024 (epochs after the first only augment)", side, {"cache_mb": 1024}),
              (f"photographs of half the side ({side // 2} px)", side // 2, {}),
              ("+ data.pin_memory=true", side, {"pin_memory": True})]
    for label, photo_side, options in levers:
        if ctx.left() < 30:
            part.note(f"time budget: lever '{label}' not tried ({ctx.left():.0f} s left)")
            continue
        if photo_side not in folders:
            folders[photo_side] = ctx.scratch / f"jpeg_{photo_side}"
            write_phantom_jpegs(folders[photo_side], n, photo_side, ctx.seed)
        part.attempt(label, lambda: measure(f"{cores} workers {label}", photo_side, **options))
