"""Latent-shift counterfactuals and the fundus autoencoder.

Known answers come from a synthetic family whose only class-relevant factor is known: 32×32
"fundi" (a disc-shaped field of view on black, a tinted background of random brightness) with a
16×16 square whose brightness is the class evidence, a tiny autoencoder trained on them for a
couple of hundred steps, and a classifier whose logit is ``gain × (mean of the square − 0.5)``.
Latent shift must then move the score the asked way by changing the square, not the rest.
"""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from xmed.errors import CheckpointError, ConfigError
from xmed.explain.counterfactual import COUNTERFACTUALS, counterfactual
from xmed.explain.counterfactual.latent_shift import LatentShiftExplainer
from xmed.findings import FINDINGS
from xmed.models import FundusClassifier
from xmed.models.autoencoder import (
    AutoencoderModule,
    FundusAutoencoder,
    export_autoencoder,
    load_autoencoder,
    reconstruction_l1,
)

from helpers.counterfactual import assert_path_is_the_models

SIZE = 32
_yy, _xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
FOV = (_yy - (SIZE - 1) / 2) ** 2 + (_xx - (SIZE - 1) / 2) ** 2 <= 15 ** 2
SQUARE = torch.zeros(SIZE, SIZE, dtype=torch.bool)
SQUARE[8:24, 8:24] = True
TINT = torch.tensor([1.0, 0.6, 0.4]).view(1, 3, 1, 1)


def family(n: int, seed: int, square: float | None = None) -> torch.Tensor:
    """n images in pixel units: background 0.3–0.5 × tint, the square's grey level random in
    [0, 1] (or ``square``), black outside the field of view."""
    gen = torch.Generator().manual_seed(seed)
    background = (0.3 + 0.2 * torch.rand(n, 1, 1, 1, generator=gen)) * TINT
    level = torch.rand(n, 1, 1, 1, generator=gen) if square is None else torch.full((n, 1, 1, 1), square)
    images = torch.where(SQUARE, level.expand(n, 3, 1, 1), background).expand(n, 3, SIZE, SIZE)
    return (images * FOV).contiguous()


def square_mean(images: torch.Tensor) -> torch.Tensor:
    return (images * SQUARE).sum((-3, -2, -1)) / (images.shape[-3] * SQUARE.sum())


class SquareReader(nn.Module):
    """Logit ``gain × (mean of the square − 0.5)``: probability 0.5 exactly at grey level 0.5."""

    def __init__(self, gain: float = 12.0):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(gain))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * (square_mean(x) - 0.5)


class PeakedReader(nn.Module):
    """Logit ``1 − 40 (mean of the square − 0.6)²``: highest (p = 0.73) at grey level 0.6."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (1.0 - 40.0 * (square_mean(x) - 0.6) ** 2)


@pytest.fixture(scope="module")
def toy_autoencoder() -> FundusAutoencoder:
    """A FundusAutoencoder trained to reconstruct the family (pixel units: identity normalisation)."""
    torch.manual_seed(0)
    ae = FundusAutoencoder(input_size=SIZE, channels=(8, 16), latent_channels=4,
                           data_config={"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)})
    steps = 400
    optimizer = torch.optim.Adam(ae.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-2, total_steps=steps)
    for k in range(steps):
        x = family(8, seed=1000 + k)
        loss = (ae(x) - x).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    ae.eval()
    for p in ae.parameters():
        p.grad = None
    return ae


# ------------------------------------------------------------------------------ the toy family


def test_toy_autoencoder_reconstructs_the_family(toy_autoencoder):
    x = family(8, seed=1)
    err = reconstruction_l1(toy_autoencoder, x)
    assert err.shape == (8,) and float(err.max()) < 0.1  # grey levels 0–1: a few % off
    assert torch.allclose(err, (toy_autoencoder(x) - x).abs().flatten(1).mean(1))
    noise = torch.rand(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    assert float(reconstruction_l1(toy_autoencoder, noise).min()) > 2 * float(err.max())  # off the family


@pytest.mark.parametrize("direction, level", [("decrease", 0.85), ("increase", 0.15)])
def test_latent_shift_moves_the_score_by_changing_the_square(toy_autoencoder, direction, level):
    clf = SquareReader()
    x = family(4, seed=3, square=level)
    cf = LatentShiftExplainer(clf, toy_autoencoder)(x, target=0, direction=direction)
    t = cf.frames.shape[0]
    assert cf.frames.shape == (t, 4, 3, SIZE, SIZE) and cf.probability.shape == (t, 4) and t >= 3
    # the score moves the asked way along the path, and crosses 0.5
    steps = cf.probability.diff(dim=0)
    if direction == "decrease":
        assert bool((steps <= 0).all()) and bool((cf.probability[0] > 0.9).all())
        assert bool((cf.probability[-1] < 0.5).all())
    else:
        assert bool((steps >= 0).all()) and bool((cf.probability[0] < 0.1).all())
        assert bool((cf.probability[-1] > 0.5).all())
    assert cf.reached.all() and bool((cf.steps >= 2).all()) and bool((cf.steps <= 20).all())
    # the recorded probability is the classifier's on the recorded frames
    with torch.no_grad():
        assert torch.allclose(cf.probability, torch.sigmoid(clf(cf.frames.flatten(0, 1))).view(t, 4), atol=1e-6)
    # keep_detail: frame 0 is the input itself, pixels outside the field of view never change
    assert torch.equal(cf.frames[0], x) and torch.equal(cf.original, x)
    assert torch.equal(cf.frames[:, :, :, ~FOV], x[:, :, ~FOV].expand(t, -1, -1, -1))
    assert torch.equal(cf.images, cf.frames[-1]) and torch.equal(cf.fov[:, 0], FOV.expand(4, -1, -1))
    # what changed is the square: > 0.6 of the heatmap's energy (it is 0.36 of the field of view),
    # and the square's grey level moved past 0.5, more than 3× as much per pixel as the background
    energy = cf.difference[:, 0]
    assert bool(((energy * SQUARE).sum((1, 2)) / energy.sum((1, 2)) > 0.6).all())
    moved_square = (square_mean(cf.images) - level).abs()
    moved_background = (cf.images - x)[:, :, FOV & ~SQUARE].abs().mean((1, 2))
    assert bool((moved_square > 0.3).all()) and bool((moved_background < 0.1).all())
    assert bool((moved_square > 3 * moved_background).all()), (moved_square, moved_background)
    # the heatmap is the largest frame-to-frame-0 change, summed over channels
    expected = (cf.frames - cf.frames[0]).abs().sum(2).amax(0)
    assert torch.allclose(energy, expected) and cf.difference.shape == (4, 1, SIZE, SIZE)
    assert cf.method == "latent_shift" and cf.direction == direction and cf.epsilon is None
    assert cf.findings is None and cf.vcdr is None and cf.std is None  # no data config: pixel units


def test_without_keep_detail_frames_are_decodings(toy_autoencoder):
    clf = SquareReader()
    x = family(3, seed=4, square=0.8)
    cf = LatentShiftExplainer(clf, toy_autoencoder, keep_detail=False)(x, target=0, direction="decrease")
    with torch.no_grad():
        recon = toy_autoencoder(x)
        assert torch.allclose(cf.frames[0], recon, atol=1e-6)
        assert torch.allclose(cf.probability[0], torch.sigmoid(clf(recon)), atol=1e-6)
    assert cf.reached.all() and bool((cf.probability.diff(dim=0) <= 0).all())
    assert not torch.equal(cf.images[:, :, ~FOV], x[:, :, ~FOV])  # the raw decoding everywhere


def test_per_image_stop_already_there_and_class_index_targets(toy_autoencoder):
    x = torch.cat([family(1, seed=5, square=0.2), family(2, seed=6, square=0.85)])
    clf = SquareReader()
    cf = LatentShiftExplainer(clf, toy_autoencoder)(x, target=0, direction="decrease")
    assert cf.steps[0] == 0 and cf.reached.all()
    assert bool((cf.frames[:, 0] == x[0]).all())  # already below 0.5: never edited
    assert cf.frames.shape[0] == int(cf.steps.max()) + 1
    # each image stays where it stopped in later frames
    for b in (1, 2):
        k = int(cf.steps[b])
        assert bool((cf.frames[k:, b] == cf.frames[k, b]).all()) and cf.probability[k, b] < 0.5 <= cf.probability[k - 1, b]

    class TwoClass(nn.Module):  # softmax over (−logit, logit): class 1 probability = sigmoid(2·logit)
        def __init__(self):
            super().__init__()
            self.reader = SquareReader(gain=6.0)

        def forward(self, images):
            logit = self.reader(images)
            return torch.stack([-logit, logit], dim=1)

    cf = LatentShiftExplainer(TwoClass(), toy_autoencoder)(x, target=torch.tensor([1, 1, 0]), direction="decrease")
    assert cf.steps[0] == 0 and cf.steps[2] == 0 and cf.steps[1] > 0  # class 0 of image 2 is already low
    assert cf.probability[-1, 1] < 0.5 and cf.reached.all()


def test_search_stops_where_the_score_stops_rising_and_at_max_lambda(toy_autoencoder):
    x = family(2, seed=7, square=0.15)
    goals = {"decrease": 0.1, "increase": 0.9}  # a goal per direction; this one is out of reach
    cf = LatentShiftExplainer(PeakedReader(), toy_autoencoder, threshold=goals)(x, target=0, direction="increase")
    assert not cf.reached.any() and cf.threshold == 0.9  # the probability cannot pass 0.73
    assert bool((cf.steps < 20).all()) and bool((cf.steps >= 3).all())  # stopped by the peak, not by max_lambda
    assert bool((cf.probability.diff(dim=0) >= 0).all())
    assert bool(((square_mean(cf.images) - 0.6).abs() < 0.12).all())  # near the peak at 0.6
    assert bool((cf.probability[-1] > 0.65).all())
    # max_lambda bounds the shift: two tiny steps, both taken, the goal not reached
    cf = LatentShiftExplainer(SquareReader(), toy_autoencoder, max_lambda=0.01, n_lambdas=2)(x, 0, "increase")
    assert cf.steps.tolist() == [2, 2] and not cf.reached.any() and cf.frames.shape[0] == 3
    assert bool((cf.probability[2] > cf.probability[0]).all())


def test_paper_scale_gradient_is_the_same_direction(toy_autoencoder):
    """normalise_gradient=False shifts by λ·∂p/∂z: with λ scaled to the same shift norm, the
    same frames; the keyword's old spelling, normalize_gradient, is read with a warning."""
    x = family(1, seed=8, square=0.8)
    clf = SquareReader()
    with torch.enable_grad():
        z = toy_autoencoder.encode(x).detach().requires_grad_(True)
        p = torch.sigmoid(clf(x + FOV * (toy_autoencoder.decode(z) - toy_autoencoder.decode(z).detach())))
        (g,) = torch.autograd.grad(p.sum(), z)
    max_lambda = float(z.detach().norm() / g.norm())  # λ·‖g‖ = ‖z‖ at |λ| = max_lambda
    raw = LatentShiftExplainer(clf, toy_autoencoder, max_lambda=max_lambda, normalise_gradient=False)(x, 0, "decrease")
    ref = LatentShiftExplainer(clf, toy_autoencoder)(x, 0, "decrease")
    assert raw.steps.tolist() == ref.steps.tolist()
    assert torch.allclose(raw.images, ref.images, atol=1e-4)
    with pytest.warns(DeprecationWarning, match="'normalize_gradient' is now 'normalise_gradient'"):
        old = LatentShiftExplainer(clf, toy_autoencoder, max_lambda=max_lambda, normalize_gradient=False)
    assert old.normalise_gradient is False and old.max_lambda == max_lambda  # what the path above ran with
    with pytest.raises(TypeError, match="normalize_gradient"):
        LatentShiftExplainer(clf, toy_autoencoder, normalize_gradient=False, normalise_gradient=False)


def test_modes_and_parameters_untouched_and_registry(toy_autoencoder):
    clf = SquareReader().train()
    toy_autoencoder.train()
    try:
        x = family(2, seed=9, square=0.9)
        cf = counterfactual(clf, x, method="latent_shift", target=0, direction="decrease", autoencoder=toy_autoencoder)
        assert clf.training and toy_autoencoder.training
    finally:
        toy_autoencoder.eval()
    assert COUNTERFACTUALS["latent_shift"] is LatentShiftExplainer and cf.reached.all()
    assert all(p.grad is None for p in [*clf.parameters(), *toy_autoencoder.parameters()])


def test_configuration_errors(toy_autoencoder):
    clf = SquareReader()
    with pytest.raises(ConfigError, match="'autoencoder'.*encode"):
        LatentShiftExplainer(clf, nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="n_lambdas"):
        LatentShiftExplainer(clf, toy_autoencoder, n_lambdas=0)
    with pytest.raises(ConfigError, match="max_lambda"):
        LatentShiftExplainer(clf, toy_autoencoder, max_lambda=-1.0)
    with pytest.raises(ConfigError, match="trained on 32×32 images, these are 64×64"):
        LatentShiftExplainer(clf, toy_autoencoder)(torch.zeros(1, 3, 64, 64), 0)
    imagenet = FundusClassifier("test_resnet.r160_in1k", input_size=SIZE)
    with pytest.raises(ConfigError, match="normalises images with mean"):
        LatentShiftExplainer(imagenet, toy_autoencoder)  # the toy autoencoder works in pixel units
    disc_view = FundusClassifier("test_resnet.r160_in1k", input_size=SIZE,
                                 data_config={**toy_autoencoder.data_config.as_dict(), "crop_disc": 0.5})
    with pytest.raises(ConfigError, match="crop_disc=None, the model sees crop_disc=0.5"):
        LatentShiftExplainer(disc_view, toy_autoencoder)  # whole fundi vs disc-centred crops
    with pytest.raises(ConfigError, match="model.net.input_size"):
        FundusAutoencoder(input_size=36, channels=(8, 16, 32))
    with pytest.raises(ConfigError, match="model.net.channels"):
        FundusAutoencoder(input_size=32, channels=())


# ------------------------------------------------------------------------------ FundusClassifier


@pytest.fixture(scope="module")
def fundus_pair():
    torch.manual_seed(0)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=SIZE).eval()
    ae = FundusAutoencoder(input_size=SIZE, channels=(4, 8), latent_channels=2,
                           data_config=model.data_config.as_dict()).eval()
    return model, ae


@pytest.mark.parametrize("target", ["glaucoma", "DH", "vcdr"])
def test_fundus_classifier_shapes_and_recorded_heads(fundus_pair, target):
    model, ae = fundus_pair
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(10))
    direction = "decrease" if target != "vcdr" else "increase"
    cf = LatentShiftExplainer(model, ae, n_lambdas=3, threshold={"vcdr": 1.0}.get(target, 0.0))(
        images, target, direction)
    t = cf.frames.shape[0]
    assert 2 <= t <= 4 and cf.images.shape == (2, 3, SIZE, SIZE) and cf.frames.shape == (t, 2, 3, SIZE, SIZE)
    assert cf.probability.shape == (t, 2) and cf.findings.shape == (t, 2, len(FINDINGS))
    assert cf.vcdr.shape == (t, 2) and cf.difference.shape == (2, 1, SIZE, SIZE)
    assert cf.steps.dtype == torch.long and bool((cf.steps >= 0).all()) and bool((cf.steps <= 3).all())
    assert cf.reached.dtype == torch.bool and not cf.reached.any()  # thresholds out of reach
    assert cf.target == target and cf.std == tuple(model.data_config.std) and cf.epsilon is None
    assert cf.fov.shape == (2, 1, SIZE, SIZE) and cf.fov.dtype == torch.bool
    assert_path_is_the_models(model, cf, target)
    moved = cf.probability.diff(dim=0)
    assert bool((moved <= 0).all() if direction == "decrease" else (moved >= 0).all())
    assert torch.equal(cf.frames[0], images)
    assert all(p.grad is None for p in [*model.parameters(), *ae.parameters()])
    assert not model.training and not ae.training


# ------------------------------------------------------------------------------ export / load


def test_export_load_roundtrip_and_path_autoencoder(toy_autoencoder, tmp_path):
    folder = export_autoencoder(toy_autoencoder, tmp_path / "ae")
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "xmed-autoencoder-1" and config["model"] == toy_autoencoder.export_config()
    assert config["model"]["data_config"]["input_size"] == SIZE and config["model"]["channels"] == [8, 16]
    loaded = load_autoencoder(folder)
    assert not loaded.training and isinstance(loaded, FundusAutoencoder)
    x = family(2, seed=11)
    with torch.no_grad():
        assert torch.equal(loaded(x), toy_autoencoder(x))
        assert torch.equal(loaded.encode(x), toy_autoencoder.encode(x))
    a = LatentShiftExplainer(SquareReader(), str(folder))(x, 0, "increase")
    b = LatentShiftExplainer(SquareReader(), toy_autoencoder)(x, 0, "increase")
    assert torch.equal(a.images, b.images) and torch.equal(a.steps, b.steps)


def test_broken_folders_raise_checkpoint_error_naming_the_path(toy_autoencoder, tmp_path):
    folder = export_autoencoder(toy_autoencoder, tmp_path / "ae")

    def expect(path, match):
        with pytest.raises(CheckpointError, match=match) as info:
            load_autoencoder(path)
        assert str(path) in str(info.value)

    expect(tmp_path / "nowhere", "no such file")
    (folder / "model.safetensors").write_bytes(b"\x00" * 12)
    expect(folder, "cannot read the weights")
    (folder / "model.safetensors").unlink()
    expect(folder, "model.safetensors is missing")
    folder = export_autoencoder(toy_autoencoder, tmp_path / "ae2")
    (folder / "config.json").write_text("{not json")
    expect(folder, "not valid JSON")
    (folder / "config.json").write_text(json.dumps({"format": "xmed.FundusClassifier/1", "model": {}}))
    expect(folder, "not an xmed autoencoder config")
    (folder / "config.json").write_text(json.dumps({"format": "xmed-autoencoder-1",
                                                    "model": {"backbone": "resnet18"}}))
    expect(folder, "not an xmed autoencoder config")
    config = {**toy_autoencoder.export_config(), "channels": [8, 32]}
    (folder / "config.json").write_text(json.dumps({"format": "xmed-autoencoder-1", "model": config}))
    expect(folder, "weights do not fit")
    pickled = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {"net_config": toy_autoencoder.export_config()}, "obj": _Opaque()}, pickled)
    expect(pickled, "not a weights-only checkpoint")


class _Opaque:  # an arbitrary object: weights-only loading must refuse it
    pass


# ------------------------------------------------------------------------------ training


def _batches(n_batches: int, batch_size: int = 4) -> list[dict]:
    return [{"image": family(batch_size, seed=20 + k), "id": [f"eye{k}_{i}" for i in range(batch_size)]}
            for k in range(n_batches)]


def test_autoencoder_module_fits_and_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    net = {"input_size": SIZE, "channels": [4, 8], "latent_channels": 2}
    module = AutoencoderModule(net=net, lr=1e-3, loss="mse")
    assert module.hparams.net_config == module.model.export_config() and module.hparams.loss == "mse"
    loader = DataLoader(_batches(2), batch_size=None)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        accelerator="cpu", enable_model_summary=False)
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer.fit(module, loader, DataLoader(_batches(1), batch_size=None))
    assert trainer.global_step == 2
    assert any(not torch.equal(a, p) for a, p in zip(before, module.model.parameters()))
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"])) and math.isfinite(float(metrics["val/loss"]))
    ckpt = tmp_path / "ae.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = load_autoencoder(ckpt)
    x = family(2, seed=30)
    with torch.no_grad():
        assert torch.equal(loaded(x), module.model.eval()(x))


def test_autoencoder_module_steps_loss_and_batches():
    torch.manual_seed(0)
    module = AutoencoderModule(net={"input_size": SIZE, "channels": [8, 16], "latent_channels": 4}, lr=3e-3)
    batch = _batches(1)[0]
    assert module.training_step({"image": torch.zeros(0, 3, SIZE, SIZE), "size": 0}, 0) is None
    assert module.validation_step({"image": torch.zeros(0, 3, SIZE, SIZE), "size": 0}, 0) is None
    moved = module.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    assert moved["id"] is batch["id"] and torch.equal(moved["image"], batch["image"])
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    losses = []
    for _ in range(50):
        loss = module.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    with torch.no_grad():
        assert float(module.training_step(batch, 0)) == pytest.approx((module.model(batch["image"]) - batch["image"])
                                                                      .abs().mean().item(), rel=1e-5)
    with pytest.raises(ConfigError, match="model.loss"):
        AutoencoderModule(net={"input_size": SIZE, "channels": [8]}, loss="huber")
    with pytest.raises(ConfigError, match="model.net"):
        AutoencoderModule(net={"input_size": SIZE, "width": 3})
