"""Training-loop throughput: Lightning (``FundusModule`` + ``Trainer``) vs a plain PyTorch loop.

Both loops train the same model (a ``FundusModule``'s :class:`~xmed.models.FundusClassifier`,
fresh from the same seed for every run) with the same losses, the same optimizer and
learning-rate schedule (``FundusModule.configure_optimizers``) on the same batches, measured
side by side in one process and alternating (plain, lightning, plain, lightning, …) so that a
noisy, shared machine affects both alike. Images per second count the timed steps only (the
first ``--warmup`` steps of each run are excluded, so are set-up and tear-down).

Data: ``--n`` phantom eyes from a ``FundusDataModule`` on ``phantom_render`` (fixed seed, no pixel masks: training uses none); the
training loader's batches are rendered once, kept in memory and served to both loops by one
``DataLoader`` (``num_workers=0``), so rendering speed does not dilute the comparison. Pass
``--live-data`` to render inside both loops instead.

Lightning overheads switched off, each a user-facing default a researcher also turns off when
timing (the plain loop has none of them): the progress bar, the logger (``self.log`` calls in
``training_step`` stay), the model summary, checkpointing, validation and the sanity check.

``FundusModule`` logs its training losses every ``log_every_n_steps`` steps of the Trainer
(Lightning's default, 50, here): each ``self.log`` costs a device synchronisation.

Run: ``python benchmarks/train_throughput.py [--device cuda] [--steps 20] [--repeats 2]``.
Writes ``train_throughput.json`` and ``train_throughput.md``; the target is
Lightning >= 0.9 x plain.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from types import SimpleNamespace
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from timing import add_run_arguments, prepare_device  # benchmarks/ is on sys.path when run as a script

TARGET_RATIO = 0.9
DISABLED = ["progress bar", "logger (self.log calls kept)", "model summary", "checkpointing", "validation",
            "sanity check"]


class CachedBatches(Dataset):
    """Collated batches served as they are (``DataLoader(batch_size=None)``)."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_module(args):
    """A fresh FundusModule from the seed."""
    from xmed.models import FundusModule

    torch.manual_seed(args.seed)
    module = FundusModule(net={"backbone": args.model, "input_size": args.image_size}, lr=1e-3,
                          warmup_epochs=0, channels_last=args.channels_last)
    module.pos_weight.fill_(args.pos_weight)
    return module


def run_plain(args, loader, device: torch.device) -> dict:
    """A hand-written loop: forward, the module's masked losses, backward, AdamW, scheduler."""
    module = build_module(args).to(device)
    model = module.model
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    # the same AdamW and schedule as under Lightning: configure_optimizers reads the step count
    # from its trainer, so it gets a stand-in with the numbers the Trainer below would report
    module._trainer = SimpleNamespace(estimated_stepping_batches=args.warmup + args.steps, max_epochs=args.epochs)
    config = module.configure_optimizers()
    module._trainer = None
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    model.train()
    steps, start, total = 0, None, args.warmup + args.steps
    for epoch in range(args.epochs):
        for batch in loader:
            if steps == total:
                break
            if steps == args.warmup:
                _sync(device)
                start = time.perf_counter()
            x = batch["image"].to(device, non_blocking=True)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            targets = {k: batch[k].to(device, non_blocking=True) for k in ("label", "findings", "vcdr")}
            with autocast:
                out = model(x)
            losses = module._losses({k: v.float() for k, v in out.items()}, targets)
            loss = sum(module.loss_weights[k] * v for k, v in losses.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            steps += 1
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"images_per_second": args.steps * args.batch_size / elapsed, "seconds": elapsed,
            "final_loss": float(loss.detach())}


class _StepTimer:
    """Lightning callback: wall time from the start of step ``warmup`` to the end of the last."""

    def __new__(cls, warmup: int, steps: int, device: torch.device):
        import lightning as L

        class StepTimer(L.Callback):
            def __init__(self):
                self.start = self.end = None
                self.loss = float("nan")

            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if trainer.global_step == warmup and self.start is None:
                    _sync(device)
                    self.start = time.perf_counter()

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                if trainer.global_step == warmup + steps:
                    _sync(device)
                    self.end = time.perf_counter()
                    self.loss = float(outputs["loss"])

        return StepTimer()


def run_lightning(args, loader, device: torch.device) -> dict:
    import lightning as L

    module = build_module(args)
    timer = _StepTimer(args.warmup, args.steps, device)
    trainer = L.Trainer(
        accelerator=device.type, devices=1, precision=args.precision,
        max_steps=args.warmup + args.steps, max_epochs=args.epochs, limit_val_batches=0,
        num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, callbacks=[timer], deterministic=False,
    )
    # no datamodule: pos_weight stays the one build_module set, as in the plain loop
    trainer.fit(module, train_dataloaders=loader)
    elapsed = timer.end - timer.start
    return {"images_per_second": args.steps * args.batch_size / elapsed, "seconds": elapsed,
            "final_loss": timer.loss}


def make_loader(args) -> tuple[Callable[[], DataLoader], dict]:
    """A factory of identical training loaders (same batches, same order) and a description."""
    from xmed.data import FundusDataModule

    dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": args.n, "size": args.image_size,
                                                                     "seed": args.seed, "load_masks": False},
                          image_size=args.image_size, batch_size=args.batch_size, num_workers=args.num_workers,
                          seed=args.seed, preprocess={"crop_fov": False})
    dm.setup()
    labels = dm.splits["train"].labels()
    args.pos_weight = float((labels == 0).sum() / max((labels == 1).sum(), 1))
    loader = dm.train_dataloader()
    info = {"train_eyes": len(dm.splits["train"]), "batches_per_epoch": len(loader)}
    needed = args.warmup + args.steps
    args.epochs = -(-needed // len(loader))  # ceil: enough epochs for warm-up + timed steps
    if args.live_data:
        info["data"] = f"rendered live in each loop, num_workers={args.num_workers}"

        def fresh():  # same shuffling and augmentation stream in every run
            dm.splits["train"].transform.set_random_seed(args.seed)
            return dm.train_dataloader()

        return fresh, info
    start = time.perf_counter()
    batches = [b for _, b in zip(range(needed), _cycle(loader))]
    info["render_seconds"] = round(time.perf_counter() - start, 2)
    info["data"] = "train batches rendered once, cached in memory, one DataLoader for both loops"
    # full batches only: the cached list holds exactly the warm-up + timed steps, one epoch
    args.epochs = 1
    cached = DataLoader(CachedBatches(batches), batch_size=None, shuffle=False, num_workers=0)
    return (lambda: cached), info


def _cycle(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n", type=int, default=400, help="phantom eyes (70%% train)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of each run")
    parser.add_argument("--repeats", type=int, default=2, help="alternating (plain, lightning) pairs")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--live-data", action="store_true", help="render in both loops instead of caching")
    add_run_arguments(parser)
    args = parser.parse_args()
    device = prepare_device(parser, args)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance.*LeafSpec.*")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    loaders, data_info = make_loader(args)
    loops = {"plain": run_plain, "lightning": run_lightning}
    runs = {name: [] for name in loops}
    for r in range(args.repeats):
        for name, fn in loops.items():
            result = fn(args, loaders(), device)
            runs[name].append(result)
            print(f"run {r + 1}/{args.repeats} {name:<24} {result['images_per_second']:8.1f} images/s "
                  f"({args.steps} steps in {result['seconds']:.2f} s, loss {result['final_loss']:.4f})", flush=True)
    median = {k: statistics.median(r["images_per_second"] for r in v) for k, v in runs.items()}
    ratio = median["lightning"] / median["plain"]
    # both loops did the same work: same model, data, losses and optimizer give the same loss
    # (bit-for-bit on the CPU; GPU kernels are not deterministic, so a looser check there)
    losses = [r["final_loss"] for v in runs.values() for r in v]
    tolerance = 1e-3 if device.type == "cpu" else 5e-2
    same_loss = max(losses) - min(losses) <= tolerance * max(1.0, abs(losses[0]))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    record = {
        "benchmark": "train_throughput",
        "device": args.device, "device_name": device_name, "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
        "model": args.model, "image_size": args.image_size, "batch_size": args.batch_size,
        "precision": args.precision, "channels_last": args.channels_last,
        "optimizer": "AdamW (FundusModule.configure_optimizers), per-step LR schedule",
        "timed_steps": args.steps, "warmup_steps": args.warmup, "repeats": args.repeats,
        "order": "alternating: " + ", ".join([", ".join(loops)] * args.repeats),
        **data_info,
        "lightning_overheads_disabled": DISABLED,
        "images_per_second": {k: [round(r["images_per_second"], 2) for r in v] for k, v in runs.items()},
        "median_images_per_second": {k: round(v, 2) for k, v in median.items()},
        "final_losses": {k: [round(r["final_loss"], 6) for r in v] for k, v in runs.items()},
        "same_final_loss": same_loss,
        "ratio_lightning_over_plain": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_throughput.json").write_text(json.dumps(record, indent=2))
    table = ["| loop | images/s (median) | runs |", "|---|---|---|"]
    table += [f"| {k} | {median[k]:.1f} | {', '.join(f'{r:.1f}' for r in record['images_per_second'][k])} |"
              for k in runs]
    table.append(f"\nLightning / plain = {ratio:.3f}; target >= {TARGET_RATIO} — "
                 f"{'met' if record['meets_target'] else 'NOT met'} (FundusModule as shipped).")
    table.append(f"\n{args.model} at {args.image_size} px, batch {args.batch_size}, {args.precision}"
                 f"{', channels_last' if args.channels_last else ''}, on {args.device} ({device_name}, "
                 f"{torch.get_num_threads()} torch threads); {args.steps} timed steps after {args.warmup} warm-up "
                 f"steps per run, runs alternating {'/'.join(loops)} x{args.repeats}.")
    table.append(f"Data: {data_info['data']}.")
    table.append(f"Same work check: final training loss of every run {'equal' if same_loss else 'DIFFERS'} "
                 f"(to {tolerance:g} relative) "
                 f"({', '.join(f'{x:.4f}' for x in losses)}).")
    table.append("Lightning overheads disabled (user-facing defaults): " + ", ".join(DISABLED) + ".")
    (args.out / "train_throughput.md").write_text("# Training-loop throughput: Lightning vs plain PyTorch\n\n"
                                                  + "\n".join(table) + "\n")
    print("\n".join(table))
    print(f"wrote {args.out / 'train_throughput.json'} and {args.out / 'train_throughput.md'}")


if __name__ == "__main__":
    main()
