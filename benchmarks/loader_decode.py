"""One training-loader worker's images/s from JPEG photographs decoded at a reduced scale
(``data.decode_reduced: true``, the default) against decoded whole (``false``).

Phantom eyes are written as JPEG files with ``xmed-data phantom`` at three sizes. The *train*
loader of a ``FundusDataModule`` (field-of-view crop, fitted into the input square, the training
augmentations; no masks, as in ``gpu_loader``) runs in this process on one thread, as one loader
worker runs: whole epochs of the two settings alternate, after one untimed epoch each. A 512 px
photograph gives the 256 px input a field of view ~480 px across, so it is decoded whole either
way (the two should match); a 1024 px one is decoded at 1/2 and a 2048 px one at 1/4. A check per
size compares the prepared images (before augmentation) of the two settings.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.timing import Context, Part, alternate, median, paired_ratio, torch_threads

#: the most the prepared images of the two settings may differ, in mean grey levels (0-255)
MEAN_DIFFERENCE_LIMIT = 1.0


def run(part: Part, ctx: Context) -> None:
    import cv2

    from benchmarks.commands import write_phantom_jpegs
    from xmed.data.datamodule import FundusDataModule

    sides = ctx.size((256, 512), (512, 1024, 2048))
    eyes = {side: ctx.size(10, 60 if side < 2048 else 20) for side in sides}
    size, batch, repeats = ctx.size(64, 256), ctx.size(4, 32), ctx.size(1, 5)
    part.settings.update({"input": f"{size} px, field-of-view crop", "batch": batch, "epochs": repeats,
                          "loader": "num_workers=0, one torch and one OpenCV thread (as a loader worker)",
                          "photographs": ", ".join(f"{eyes[s]} eyes at {s} px" for s in sides)})
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for side in sides:
            if ctx.left() < 20:
                part.note(f"time budget: {side} px not measured ({ctx.left():.0f} s left)")
                continue
            folder = ctx.scratch / f"jpeg_{side}"
            write_phantom_jpegs(folder, eyes[side], side, ctx.seed)
            loaders = {}
            for name, reduced in (("reduced", True), ("whole", False)):
                dm = FundusDataModule(dataset="phantom", root=str(folder), image_size=size, batch_size=batch,
                                      seed=ctx.seed, preprocess={"crop_fov": True},
                                      dataset_options={"load_masks": False}, decode_reduced=reduced)
                loaders[name] = dm.train_dataloader()
            with torch_threads(1):
                times, seen = alternate({name: (lambda loader=loader: sum(int(b["size"]) for b in loader))
                                         for name, loader in loaders.items()}, repeats, torch.device("cpu"),
                                        f"{side} px")
            views = {name: loader.dataset for name, loader in loaders.items()}
            factor = views["reduced"].pixel_need.reduction(side, side)
            label = f"{side} px JPEG -> {size} px input"
            speed = {name: seen[name] / median(t) for name, t in times.items()}
            part.figure(f"{label}: decode_reduced=true (1/{factor} decode)", speed["reduced"], "images/s",
                        "decode_reduced=false", speed["whole"], paired=paired_ratio(times["whole"], times["reduced"]),
                        note=f"{1000 / speed['reduced']:.2f} ms/image against {1000 / speed['whole']:.2f}")
            difference = np.mean([np.abs(views["reduced"].prepared(i)["image"].astype(np.int16)
                                         - views["whole"].prepared(i)["image"]).mean()
                                  for i in range(len(views["whole"]))])
            part.check(f"{label}: prepared images, reduced against whole decode", f"{difference:.3f} grey levels",
                       f"mean |difference| <= {MEAN_DIFFERENCE_LIMIT}", bool(difference <= MEAN_DIFFERENCE_LIMIT))
    finally:
        cv2.setNumThreads(before)
