"""Phantom rendering speed on one core: images per second at 256 and 512 px, one process.

Run: ``python benchmarks/phantom_speed.py [--n 200] [--out benchmarks/results]``.
Writes ``phantom_speed.json`` and ``phantom_speed.md``; the target is >= 40 images/s at 256 px.
"""

from __future__ import annotations

import os

# one core: set before numpy/OpenCV start their thread pools
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse
import json
import platform
import time
from pathlib import Path

import cv2

from xmed.data import render_phantom

TARGET_256 = 40.0


def images_per_second(size: int, n: int, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of rendering ``n`` eyes (the machine is shared and noisy)."""
    render_phantom(0, size)  # warm caches
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        for seed in range(r * n, (r + 1) * n):
            render_phantom(seed, size)
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}) if hasattr(os, "sched_setaffinity") else None

    results = {size: images_per_second(size, args.n if size == 256 else args.n // 2) for size in (256, 512)}
    record = {
        "benchmark": "phantom_speed",
        "cores": 1,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "images_per_second": {str(k): round(v, 1) for k, v in results.items()},
        "target_256": TARGET_256,
        "meets_target": results[256] >= TARGET_256,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "phantom_speed.json").write_text(json.dumps(record, indent=2))
    table = ["| size (px) | images/s (1 core) |", "|---|---|"]
    table += [f"| {k} | {v:.1f} |" for k, v in results.items()]
    table.append(f"\nTarget at 256 px: >= {TARGET_256:.0f} images/s — {'met' if record['meets_target'] else 'NOT met'}.")
    (args.out / "phantom_speed.md").write_text("# Phantom rendering speed\n\n" + "\n".join(table) + "\n")
    print("\n".join(table))
    print(f"wrote {args.out / 'phantom_speed.json'} and {args.out / 'phantom_speed.md'}")


if __name__ == "__main__":
    main()
