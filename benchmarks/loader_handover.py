"""The training loader's hand-over: images as uint8 pixels normalised after the batch has moved
(``data.normalise_on_device: true``, the default), against float32 images the workers normalised.

Two ``FundusDataModule`` *train* loaders on the same JPEG phantom eyes (field-of-view crop, the
training augmentations, the prepared-eye cache on, two workers) that differ only in
``normalise_on_device``. With the cache the workers only augment, so the hand-over is a large part
of the work — the case of later epochs on a GPU. Two figures, whole epochs alternating after one
untimed epoch each:

- the main process copies each batch once, as pinning or the copy to a GPU does (the GPU then
  normalises uint8 in a fraction of a millisecond): what a GPU run's loader delivers;
- the main process normalises the batch and makes it channels_last, as training on the CPU does
  (the normalising moves from the workers into the training process).

A check compares the normalised batches of the two with augmentation off.
"""

from __future__ import annotations

import torch

from benchmarks.timing import Context, Part, alternate, median, paired_ratio


def run(part: Part, ctx: Context) -> None:
    from benchmarks.commands import write_phantom_jpegs
    from xmed.data.datamodule import FundusDataModule

    n, side, size = ctx.size(24, 400), ctx.size(128, 512), ctx.size(64, 256)
    batch, workers, repeats = ctx.size(8, 64), 2, ctx.size(1, 5)
    folder = ctx.scratch / "jpeg"
    write_phantom_jpegs(folder, n, side, ctx.seed)

    def datamodule(in_workers: bool, augment: dict | None = None) -> FundusDataModule:
        dm = FundusDataModule(dataset="phantom", root=str(folder), image_size=size, batch_size=batch,
                              num_workers=workers, seed=ctx.seed, preprocess={"crop_fov": True},
                              dataset_options={"load_masks": False}, cache_mb=1024, decode_reduced=True,
                              augment=augment, normalise_on_device=not in_workers)
        dm.setup()
        return dm

    def epoch(dm: FundusDataModule, loader, consume) -> int:
        seen = 0
        for b in loader:
            seen += int(consume(dm, b).shape[0])
        return seen

    def copied(dm, b):  # as pinning or the copy to a GPU reads and writes every byte once
        return b["image"].clone()

    def normalised_here(dm, b):  # as training on the CPU does before the model
        return dm.on_after_batch_transfer(b, 0)["image"].contiguous(memory_format=torch.channels_last)

    still = {"hflip": 0.0, "rotate": 0.0, "scale": 0.0, "colour": False}
    pair = [datamodule(in_workers, still) for in_workers in (False, True)]
    first = [next(iter(dm.train_dataloader())) for dm in pair]
    kinds = [str(b["image"].dtype).replace("torch.", "") for b in first]
    normalised = [dm.on_after_batch_transfer(b, 0)["image"] for dm, b in zip(pair, first)]
    difference = float((normalised[0] - normalised[1]).abs().max())
    part.check("augmentation off: the two hand-overs give the same normalised batch (max |difference|)",
               f"{difference:.2g} ({' vs '.join(kinds)} handed over)", "< 1e-5",
               difference < 1e-5 and kinds == ["uint8", "float32"])
    dms = {"uint8": datamodule(False), "float32": datamodule(True)}
    n_train = len(dms["uint8"].splits["train"])
    part.settings.update({"photographs": f"{n} phantom eyes, JPEG, {side} px ({n_train} train eyes)",
                          "input": f"{size} px, field-of-view crop, training augmentations",
                          "batch": batch, "workers": workers, "cache": "data.cache_mb=1024", "epochs": repeats})
    loaders = {kind: dm.train_dataloader() for kind, dm in dms.items()}  # persistent workers, as in training
    variants = {f"{kind} {use.__name__}": (lambda kind=kind, use=use: epoch(dms[kind], loaders[kind], use))
                for use in (copied, normalised_here) for kind in dms}
    times, seen = alternate(variants, repeats, torch.device("cpu"), "epoch")
    part.check("every loader served every train eye", seen, f"{n_train} each", set(seen.values()) == {n_train})
    speed = {name: seen[name] / median(t) for name, t in times.items()}
    for use, label in ((copied, "batch copied once in the main process (the GPU normalises)"),
                       (normalised_here, "batch normalised in the main process (training on the CPU)")):
        mine, theirs = f"uint8 {use.__name__}", f"float32 {use.__name__}"
        part.figure(f"cached train epoch, {workers} workers, uint8 hand-over: {label}", speed[mine], "images/s",
                    "float32 normalised in the workers", speed[theirs], paired=paired_ratio(times[theirs], times[mine]))
