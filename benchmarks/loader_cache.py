"""Training-loader epoch time with and without the prepared-eye cache (``data.cache_mb``).

Every epoch a loader without the cache decodes each photograph, finds its field of view and optic
disc, crops and resizes it, then augments it; with the cache (:class:`xmed.data.datamodule.SplitView`)
the workers keep the prepared eyes from their first epoch and later epochs only augment. This
times whole epochs of the *train* loader of two ``FundusDataModule``s that differ only in
``cache_mb`` — the loaders are built once and kept (persistent workers, as in training), each
is read once untimed, then the two alternate epoch by epoch so that a noisy, shared machine slows
both alike. Each worker keeps its own copy and prepares the eyes the shuffle sends it that it has
not seen, so the cached epochs get faster over the first few epochs (all are reported). No model runs: this is the loading work a training step
has to wait for or share the CPU with.

Data: ``--n`` phantom eyes written at ``--render`` px to a temporary folder (or ``--root``, an
existing phantom folder), prepared as ``phantom_smoke`` does (disc-centred crop 0.5, 128 px input).

Run: ``python benchmarks/loader_cache.py [--n 600] [--repeats 3] [--workers 2]``. Writes
``loader_cache.json`` and ``loader_cache.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from timing import add_run_arguments, alternate, device_name, paired_ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="an existing phantom folder (default: write one)")
    parser.add_argument("--n", type=int, default=600, help="eyes to write when no --root is given")
    parser.add_argument("--render", type=int, default=256, help="rendered image side when writing")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--crop-disc", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-mb", type=float, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs of each loader")
    add_run_arguments(parser)
    args = parser.parse_args()

    from xmed.data.datamodule import FundusDataModule
    from xmed.data.phantom.writer import write_phantom_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            root = Path(tmp) / "phantom"
            write_phantom_dataset(root, n=args.n, size=args.render, seed=args.seed, progress=False)
        loaders = {}
        for name, cache_mb in (("no_cache", 0), ("cache", args.cache_mb)):
            dm = FundusDataModule(dataset="phantom", root=str(root), image_size=args.input_size,
                                  batch_size=args.batch, num_workers=args.workers, seed=args.seed,
                                  preprocess={"crop_fov": False, "crop_disc": args.crop_disc},
                                  dataset_options={"load_masks": False}, cache_mb=cache_mb)
            loaders[name] = dm.train_dataloader()
        n_train = len(loaders["no_cache"].dataset)

        def epoch(loader):
            return lambda: sum(int(batch["size"]) for batch in loader)

        variants = {name: epoch(loader) for name, loader in loaders.items()}
        times, seen = alternate(variants, args.repeats, torch.device("cpu"), "epoch")
        assert all(v == n_train for v in seen.values()), seen      # both loaders served every eye

    median = {name: statistics.median(v) for name, v in times.items()}
    ratio = paired_ratios(times["cache"], times["no_cache"])
    record = {
        "benchmark": "loader_cache", "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "device_name": device_name(torch.device("cpu")),
        "settings": {"root": str(args.root) if args.root else f"written: {args.n} eyes at {args.render} px",
                     "train_eyes": n_train, "input_size": args.input_size, "crop_disc": args.crop_disc,
                     "batch": args.batch, "workers": args.workers, "cache_mb": args.cache_mb,
                     "repeats": args.repeats, "seed": args.seed},
        "seconds_per_epoch": {name: [round(t, 3) for t in v] for name, v in times.items()},
        "median_seconds_per_epoch": {name: round(v, 3) for name, v in median.items()},
        "cache_over_no_cache": {k: round(v, 4) for k, v in ratio.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loader_cache.json").write_text(json.dumps(record, indent=2))
    lines = ["| loader | s / epoch (median) | epochs | ms / eye |", "|---|---|---|---|"]
    for name in ("no_cache", "cache"):
        lines.append(f"| {name} | {median[name]:.2f} | {', '.join(f'{t:.2f}' for t in times[name])} | "
                     f"{1000 * median[name] / n_train:.2f} |")
    lines += ["", f"cache / no cache: {ratio['ratio_of_medians']:.3f} (ratio of medians; median of the "
                  f"per-epoch ratios {ratio['median_of_round_ratios']:.3f}).",
              f"Train loader of {n_train} eyes ({record['settings']['root']}), disc crop {args.crop_disc}, "
              f"{args.input_size} px, batch {args.batch}, {args.workers} workers, train augmentation; "
              f"{record['device_name']}. One untimed epoch each, then {args.repeats} alternating epochs (each "
              f"worker fills its own copy of the cache as the shuffle sends it new eyes).",
              f"Command: `{record['command']}`."]
    (args.out / "loader_cache.md").write_text("# Training-loader epoch time: prepared-eye cache\n\n"
                                              + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
