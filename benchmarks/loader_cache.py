"""Training-loader epoch time with the prepared-eye cache (``data.cache_mb``) against without it.

Without the cache, every epoch decodes each photograph, finds its field of view and optic disc,
crops and resizes it, then augments it; with it (:class:`xmed.data.datamodule.SplitView`) the
prepared eyes of the first epoch are kept in one store the workers share, and later epochs only
augment. Whole epochs of the *train* loader of two ``FundusDataModule``s that differ only in
``cache_mb`` alternate (persistent workers, as in training; one untimed epoch each first, which
fills the store). No model runs. Data: phantom eyes written to a scratch folder, prepared as ``phantom_smoke`` does
(disc-centred crop 0.5, 128 px input).
"""

from __future__ import annotations

import torch

from benchmarks.timing import Context, Part, alternate, median, paired_ratio


def run(part: Part, ctx: Context) -> None:
    from xmed.data.datamodule import FundusDataModule
    from xmed.data.phantom.writer import write_phantom_dataset

    n, render, size = ctx.size(40, 600), ctx.size(128, 256), ctx.size(64, 128)
    batch, workers, repeats = ctx.size(8, 32), 2, ctx.size(1, 5)
    root = ctx.scratch / "phantom"
    write_phantom_dataset(root, n=n, size=render, seed=ctx.seed, progress=False)
    loaders = {}
    for name, cache_mb in (("no cache", 0), ("cache", 1024)):
        dm = FundusDataModule(dataset="phantom", root=str(root), image_size=size, batch_size=batch,
                              num_workers=workers, seed=ctx.seed, preprocess={"crop_fov": False, "crop_disc": 0.5},
                              dataset_options={"load_masks": False}, cache_mb=cache_mb)
        loaders[name] = dm.train_dataloader()
    n_train = len(loaders["no cache"].dataset)
    part.settings.update({"eyes": f"{n_train} train eyes of {n} written at {render} px", "input": f"{size} px",
                          "batch": batch, "workers": workers, "epochs": repeats})
    times, seen = alternate({name: (lambda loader=loader: sum(int(b["size"]) for b in loader))
                             for name, loader in loaders.items()}, repeats, torch.device("cpu"), "epoch")
    part.check("both loaders served every train eye", seen, f"{n_train} each", set(seen.values()) == {n_train})
    kept = loaders["cache"].dataset.cached
    part.check("eyes the workers keep prepared, in the store they share", kept, f"{n_train}", kept == n_train)
    part.figure(f"train epoch with data.cache_mb=1024, {workers} workers", median(times["cache"]), "s/epoch",
                "data.cache_mb=0", median(times["no cache"]), paired=paired_ratio(times["cache"], times["no cache"]))
