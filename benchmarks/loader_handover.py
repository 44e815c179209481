"""The training loader's hand-over: images as uint8 pixels, normalised after the batch reaches the
main process (on the GPU in training), against float32 images normalised in the workers.

Two ``FundusDataModule`` *train* loaders on the same JPEG phantom eyes (field-of-view crop, the
training augmentations, the prepared-eye cache on, two workers): one as xmed builds it (uint8
out of the workers, :meth:`~xmed.data.datamodule.FundusDataModule.on_after_batch_transfer`
normalising in the main process), one whose train transform normalises in the workers (float32
batches, four times the bytes through shared memory). The main process does what a training
step does before the model: normalise (a no-op for float32) and make the batch channels_last.
With the cache, the workers only augment, so the hand-over is a large part of the work: the
case of later epochs on a GPU. Whole epochs alternate after one untimed epoch each; a check
compares the normalised batches of the two with augmentation off.
"""

from __future__ import annotations

import torch

from benchmarks.timing import Context, Part, alternate, median, paired_ratio


def run(part: Part, ctx: Context) -> None:
    from benchmarks.commands import write_phantom_jpegs
    from xmed.data.datamodule import FundusDataModule
    from xmed.data.transforms import build_transforms

    n, side, size = ctx.size(24, 400), ctx.size(128, 512), ctx.size(64, 256)
    batch, workers, repeats = ctx.size(8, 64), 2, ctx.size(1, 5)
    folder = ctx.scratch / "jpeg"
    write_phantom_jpegs(folder, n, side, ctx.seed)

    def datamodule(in_workers: bool, augment: dict | None = None) -> FundusDataModule:
        dm = FundusDataModule(dataset="phantom", root=str(folder), image_size=size, batch_size=batch,
                              num_workers=workers, seed=ctx.seed, preprocess={"crop_fov": True},
                              dataset_options={"load_masks": False}, cache_mb=1024, decode_reduced=True,
                              augment=augment)
        dm.setup()
        if in_workers:  # the float32 hand-over: the same train transform, normalising at its end
            dm.splits["train"].transform = build_transforms("train", size, dm.mean, dm.std, preprocess=dm.preprocess,
                                                            seed=dm.seed, normalise=True, **dm.augment)
        return dm

    def epoch(dm: FundusDataModule) -> int:
        seen = 0
        for b in dm.train_dataloader():
            x = dm.on_after_batch_transfer(b, 0)["image"].contiguous(memory_format=torch.channels_last)
            seen += int(x.shape[0])
        return seen

    still = {"hflip": 0.0, "rotate": 0.0, "scale": 0.0, "color": False}
    first = [next(iter(datamodule(in_workers, still).train_dataloader())) for in_workers in (False, True)]
    kinds = [str(b["image"].dtype).replace("torch.", "") for b in first]
    hook = datamodule(False).on_after_batch_transfer
    difference = float((hook(first[0], 0)["image"] - hook(first[1], 0)["image"]).abs().max())
    part.check("augmentation off: the two hand-overs give the same normalised batch (max |difference|)",
               f"{difference:.2g} ({' vs '.join(kinds)} handed over)", "< 1e-5",
               difference < 1e-5 and kinds == ["uint8", "float32"])
    dms = {"uint8": datamodule(False), "float32": datamodule(True)}
    n_train = len(dms["uint8"].splits["train"])
    part.settings.update({"photographs": f"{n} phantom eyes, JPEG, {side} px ({n_train} train eyes)",
                          "input": f"{size} px, field-of-view crop, training augmentations",
                          "batch": batch, "workers": workers, "cache": "data.cache_mb=1024", "epochs": repeats})
    times, seen = alternate({name: (lambda dm=dm: epoch(dm)) for name, dm in dms.items()}, repeats,
                            torch.device("cpu"), "epoch")
    part.check("both loaders served every train eye", seen, f"{n_train} each", set(seen.values()) == {n_train})
    speed = {name: seen[name] / median(t) for name, t in times.items()}
    part.figure(f"cached train epoch, {workers} workers: uint8 hand-over, normalised in the main process",
                speed["uint8"], "images/s", "float32 normalised in the workers", speed["float32"],
                paired=paired_ratio(times["float32"], times["uint8"]))
