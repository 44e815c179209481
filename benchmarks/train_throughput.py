"""Training-loop throughput: Lightning (``FundusModule`` + ``Trainer``) against a plain PyTorch loop.

Both loops train the same model (a ``FundusModule``'s :class:`~xmed.models.FundusClassifier`,
fresh from the same seed for every run) with the same losses, AdamW and per-step learning-rate
schedule (``FundusModule.configure_optimizers``) on the same batches — ``torch.randn`` images and
random labels made once, kept on the device and served to both by one ``DataLoader`` — in the
precision and memory format :mod:`xmed.runtime` chooses. Runs alternate (plain, Lightning, …);
images per second count the timed steps only (warm-up steps, set-up and tear-down excluded), and
every run must end on the same loss. Lightning overheads switched off, each a user-facing default
a researcher also turns off when timing: the progress bar, the logger (the ``self.log`` calls
stay), the model summary, checkpointing, validation and the sanity check. Goal: Lightning >= 0.95 x
plain.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.timing import Context, Goal, Part, median, random_batch, synchronize

GOAL = Goal("ratio", ">=", 0.95)
DISABLED = "progress bar, logger (self.log calls kept), model summary, checkpointing, validation, sanity check"


@dataclass
class LoopSettings:
    """One comparison: model, input side, batch, steps, precision (a Lightning ``precision``)."""

    model: str
    size: int
    batch: int
    steps: int
    warmup: int
    precision: str
    channels_last: bool
    seed: int = 0


class CachedBatches(Dataset):
    """Collated batches served as they are (``DataLoader(batch_size=None)``), cycling through them."""

    def __init__(self, batches: list[dict], length: int):
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        return self.batches[i % len(self.batches)]


def device_batches(s: LoopSettings, device: torch.device, distinct: int = 4) -> DataLoader:
    """``s.warmup + s.steps`` batches (``distinct`` different ones, on ``device``) in one loader."""
    batches = []
    for i in range(distinct):
        images, labels = random_batch(s.batch, s.size, device, s.seed + i)
        batches.append({"image": images, "label": labels["glaucoma"], "findings": labels["findings"],
                        "vcdr": labels["vcdr"], "size": s.batch})
    return DataLoader(CachedBatches(batches, s.warmup + s.steps), batch_size=None, shuffle=False, num_workers=0)


def build_module(s: LoopSettings):
    from xmed.models import FundusModule

    torch.manual_seed(s.seed)
    return FundusModule(net={"backbone": s.model, "input_size": s.size}, lr=1e-3, warmup_epochs=0,
                        channels_last=s.channels_last)


def run_plain(s: LoopSettings, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Images/s of a hand-written loop (the module's losses, backward, AdamW, scheduler), final loss."""
    module = build_module(s).to(device)
    model = module.model
    if s.channels_last:
        model.to(memory_format=torch.channels_last)
    # configure_optimizers reads the step count from its trainer: a stand-in with the Trainer's numbers
    module._trainer = SimpleNamespace(estimated_stepping_batches=s.warmup + s.steps, max_epochs=1)
    config = module.configure_optimizers()
    module._trainer = None
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    model.train()
    start = None
    for step, batch in enumerate(loader):
        if step == s.warmup:
            synchronize(device)
            start = time.perf_counter()
        x = batch["image"].to(device, non_blocking=True)
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = {k: batch[k].to(device, non_blocking=True) for k in ("label", "findings", "vcdr")}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16-mixed"):
            out = model(x)
        losses = module._losses({k: v.float() for k, v in out.items()}, targets)
        loss = sum(module.loss_weights[k] * v for k, v in losses.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    synchronize(device)
    return s.steps * s.batch / (time.perf_counter() - start), float(loss)


def run_lightning(s: LoopSettings, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Images/s of ``Trainer.fit`` on a ``FundusModule`` (overheads off), final loss."""
    import lightning as L

    class StepTimer(L.Callback):
        start = end = None
        loss = float("nan")

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == s.warmup and self.start is None:
                synchronize(device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == s.warmup + s.steps:
                synchronize(device)
                self.end, self.loss = time.perf_counter(), float(outputs["loss"])

    timer = StepTimer()
    trainer = L.Trainer(accelerator=device.type, devices=1, precision=s.precision, max_steps=s.warmup + s.steps,
                        max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[timer], deterministic=False)
    trainer.fit(build_module(s), train_dataloaders=loader)  # no datamodule: pos_weight stays 1, as in the plain loop
    return s.steps * s.batch / (timer.end - timer.start), timer.loss


def compare_loops(part: Part, s: LoopSettings, device: torch.device, repeats: int) -> None:
    """Alternating plain and Lightning runs of ``s``: one figure, and a same-loss check."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance.*LeafSpec.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    loader = device_batches(s, device)
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "lightning": []}
    for r in range(repeats):
        for name, loop in (("plain", run_plain), ("lightning", run_lightning)):
            runs[name].append(loop(s, loader, device))
            print(f"loops {r + 1}/{repeats} {name:<10} {runs[name][-1][0]:9.1f} images/s", flush=True)
    speed = {name: [ips for ips, _ in v] for name, v in runs.items()}
    losses = [loss for v in runs.values() for _, loss in v]
    tolerance = 1e-3 if device.type == "cpu" else 5e-2  # GPU kernels are not deterministic
    part.figure(f"Lightning Trainer, {s.model} {s.size} px, batch {s.batch}", median(speed["lightning"]), "images/s",
                "plain loop", median(speed["plain"]), goal=GOAL,
                paired=median([a / b for a, b in zip(speed["lightning"], speed["plain"])]),
                note=f"{s.precision}{', channels_last' if s.channels_last else ''}; off: {DISABLED}")
    part.check(f"both loops did the same work ({s.model} {s.size} px): final losses",
               [round(x, 4) for x in losses], f"equal to {tolerance:g} relative",
               max(losses) - min(losses) <= tolerance * max(1.0, abs(losses[0])))


def run(part: Part, ctx: Context) -> None:
    from xmed.runtime import choose_channels_last

    s = LoopSettings(model="resnet10t", size=ctx.size(64, 128), batch=ctx.size(4, 32), steps=ctx.size(3, 16),
                     warmup=ctx.size(1, 3), precision="bf16-mixed" if ctx.bf16 else "32-true",
                     channels_last=bool(choose_channels_last(ctx.device.type).value), seed=ctx.seed)
    repeats = ctx.size(1, 3)
    part.settings.update({"model": f"{s.model} FundusModule, {s.size} px", "batch": s.batch, "timed steps": s.steps,
                          "warm-up steps": s.warmup, "runs": f"{repeats} of each, alternating"})
    compare_loops(part, s, ctx.device, repeats)
