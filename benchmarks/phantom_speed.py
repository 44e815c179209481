"""Phantom rendering speed on one core, against reading the same eyes from PNG files.

Rendering (``xmed.data.render_phantom``) and reading the eye back from disk
(``xmed.data.read_image`` of a PNG written once beforehand: what the on-disk ``phantom`` data set
does instead) alternate round by round on one pinned core, at 256 and 512 px. The goal:
>= 40 images/s at 256 px.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import cv2
import torch

from benchmarks.timing import Context, Goal, Part, alternate, median, paired_ratio

GOAL_256 = Goal("value", ">=", 40)


@contextmanager
def one_core():
    """This process on its first allowed core and OpenCV on one thread, restored afterwards."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    if affinity:
        os.sched_setaffinity(0, {min(affinity)})
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
        if affinity:
            os.sched_setaffinity(0, affinity)


def run(part: Part, ctx: Context) -> None:
    from xmed.data import read_image, render_phantom

    n = ctx.size(8, 60)
    repeats = ctx.size(1, 3)
    part.settings.update({"eyes per round": f"{n} at 256 px, {n // 2} at 512 px", "rounds": repeats,
                          "cores": 1})
    for size in (256, 512):
        count = n if size == 256 else n // 2
        files = []
        for seed in range(count):
            path = ctx.scratch / f"eye_{size}_{seed}.png"
            cv2.imwrite(str(path), cv2.cvtColor(render_phantom(seed, size).image, cv2.COLOR_RGB2BGR))
            files.append(path)
        with one_core():
            times, _ = alternate({"render": lambda: [render_phantom(s, size) for s in range(count)],
                                  "read": lambda: [read_image(p) for p in files]},
                                 repeats, torch.device("cpu"), f"phantom {size}px")
        part.figure(f"render {size} px, 1 core", count / median(times["render"]), "images/s",
                    "read_image of the PNG", count / median(times["read"]),
                    goal=GOAL_256 if size == 256 else None, paired=paired_ratio(times["read"], times["render"]))
