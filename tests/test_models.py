"""FundusClassifier, FundusModule, export/load and the model configs: values, not "it ran".

Tiny timm ``test_*`` architectures at 48–64 px; Lightning runs are a few batches of a 40-eye
rendered phantom. No network: ``pretrained=True`` is never exercised.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import timm
import torch
import yaml

from xmed.errors import CheckpointError, ConfigError
from xmed.findings import FINDINGS, VCDR, finding_index
from xmed.models import DataConfig, FundusClassifier, export_model, load_model, target_scalar
from xmed.models.classifier import TARGETS, apply_intervention
from xmed.models.module import FundusModule, masked_bce, masked_l1

from xmed.cli.common import CONFIG_DIR as CONFIGS  # the configs the installed package reads
TINY = "test_resnet.r160_in1k"
BACKBONES = {"cnn": TINY, "vit": "test_vit", "efficientnet": "test_efficientnet", "convnext": "test_convnext"}
SIZE = 64


def _input(batch: int = 3, size: int = SIZE, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dtype)


def _trainer(root: Path, **kw) -> L.Trainer:
    opts = dict(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(root))
    opts.update(kw)
    return L.Trainer(**opts)


@pytest.fixture(scope="module")
def datamodule():
    from xmed.data import FundusDataModule

    dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": 40, "size": 48}, image_size=48,
                          batch_size=8, num_workers=0, seed=0)
    dm.setup()
    return dm


# ---------------------------------------------------------------------------- output contract
@pytest.mark.parametrize("mode", ["multitask", "concept_bottleneck"])
@pytest.mark.parametrize("family", list(BACKBONES))
def test_output_contract(family, mode):
    torch.manual_seed(0)
    model = FundusClassifier(BACKBONES[family], input_size=SIZE, mode=mode).eval()
    x = _input()
    with torch.no_grad():
        out = model(x)
        split = model.forward_head(model.forward_features(x))
    expected = {"logits", "finding_logits", "vcdr"} | ({"concepts"} if mode == "concept_bottleneck" else set())
    assert set(out) == expected
    assert out["logits"].shape == (3,)
    assert out["finding_logits"].shape == (3, len(FINDINGS)) == (3, 10)
    assert out["vcdr"].shape == (3,)
    assert ((out["vcdr"] >= 0) & (out["vcdr"] <= 1)).all()
    assert all(torch.isfinite(v).all() for v in out.values())
    for key in out:  # forward == forward_features + forward_head
        assert torch.equal(out[key], split[key])
    if mode == "concept_bottleneck":
        assert out["concepts"].shape == (3, 11)
    # the target strings select the right scalar of this very output
    assert torch.equal(target_scalar(out, "glaucoma"), out["logits"])
    assert torch.equal(target_scalar(out, "vcdr"), out["vcdr"])
    assert torch.equal(target_scalar(out, "DH"), out["finding_logits"][:, 7])


def test_target_scalar_every_target():
    out = {"logits": torch.tensor([-1.0, -2.0]), "finding_logits": torch.arange(20.0).view(2, 10),
           "vcdr": torch.tensor([0.3, 0.6])}
    assert TARGETS == ("glaucoma", *FINDINGS, "vcdr") and VCDR == "vcdr"
    assert target_scalar(out, "glaucoma").tolist() == [-1.0, -2.0]
    for alias in ("vcdr", "vCDR", "VCDR"):  # the vCDR in any case
        assert target_scalar(out, alias).tolist() == pytest.approx([0.3, 0.6]), alias
    for j, code in enumerate(("ANRS", "ANRI", "RNFLDS", "RNFLDI", "BCLVS", "BCLVI", "NVT", "DH", "LD", "LC")):
        assert target_scalar(out, code).tolist() == [float(j), float(10 + j)], code
    with pytest.raises(ConfigError, match="'glaucom'") as err:
        target_scalar(out, "glaucom")
    assert err.value.key == "target"
    with pytest.raises(ConfigError, match="'dh'; use one of glaucoma, ANRS"):  # finding codes are as written
        target_scalar(out, "dh")


def test_bad_constructor_arguments_name_the_key():
    with pytest.raises(ConfigError) as err:
        FundusClassifier(TINY, mode="bottleneck")
    assert err.value.key == "model.net.mode"
    with pytest.raises(ConfigError) as err:
        FundusClassifier("no_such_net_xyz")
    assert err.value.key == "model.net.backbone" and "no_such_net_xyz" in str(err.value)
    with pytest.raises(ConfigError) as err:
        FundusClassifier(TINY, data_config={"input_sise": 64})
    assert err.value.key == "model.net.data_config.input_sise"


# ---------------------------------------------------------------------------- concept bottleneck
@pytest.fixture(scope="module")
def cbm():
    torch.manual_seed(1)
    model = FundusClassifier(TINY, input_size=SIZE, mode="concept_bottleneck").eval().double()
    with torch.no_grad():  # a head with visibly different weights per concept
        model.glaucoma_head.weight.copy_(torch.linspace(-2.0, 3.0, 11, dtype=torch.float64)[None])
        model.glaucoma_head.bias.fill_(-0.25)
    return model


def test_cbm_logit_is_the_head_of_the_concepts(cbm):
    x = _input(dtype=torch.float64)
    with torch.no_grad():
        out = cbm(x)
    concepts = torch.cat([torch.sigmoid(out["finding_logits"]), out["vcdr"][:, None]], dim=1)
    assert torch.equal(out["concepts"], concepts)
    w, b = cbm.glaucoma_head.weight[0].detach(), cbm.glaucoma_head.bias.detach()
    by_hand = (concepts * w).sum(1) + b
    torch.testing.assert_close(out["logits"], by_hand, rtol=1e-12, atol=1e-12)
    terms = cbm.bottleneck_terms(out["concepts"]).detach()
    assert terms.shape == (3, 11)
    torch.testing.assert_close(terms.sum(1) + b, out["logits"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms[:, finding_index("DH")], w[7] * concepts[:, 7], rtol=0, atol=0)


def test_cbm_intervention_scalar_and_masked_tensor(cbm):
    x = _input(dtype=torch.float64)
    w = cbm.glaucoma_head.weight[0].detach()
    with torch.no_grad():
        base = cbm(x)
        scalar = cbm(x, intervene={"DH": 1.0, VCDR: 0.4})
        alias = cbm(x, intervene={"DH": 1.0, "vCDR": 0.4})
        masked = cbm(x, intervene={"LC": torch.tensor([0.0, math.nan, 1.0], dtype=torch.float64)})
    dh, lc, vc = finding_index("DH"), finding_index("LC"), len(FINDINGS)
    # scalar: the column is replaced for every eye, nothing else moves
    assert scalar["concepts"][:, dh].tolist() == [1.0, 1.0, 1.0]
    assert scalar["concepts"][:, vc].tolist() == pytest.approx([0.4] * 3, abs=1e-15)
    others = [j for j in range(11) if j not in (dh, vc)]
    assert torch.equal(scalar["concepts"][:, others], base["concepts"][:, others])
    delta = w[dh] * (1.0 - base["concepts"][:, dh]) + w[vc] * (0.4 - base["concepts"][:, vc])
    torch.testing.assert_close(scalar["logits"] - base["logits"], delta, rtol=1e-9, atol=1e-12)
    # the backbone's own predictions are untouched by an intervention
    assert torch.equal(scalar["finding_logits"], base["finding_logits"])
    assert torch.equal(alias["logits"], scalar["logits"])
    # tensor with NaN: NaN keeps the prediction, the others are replaced
    assert masked["concepts"][0, lc] == 0.0 and masked["concepts"][2, lc] == 1.0
    assert masked["concepts"][1, lc] == base["concepts"][1, lc]
    assert masked["logits"][1] == base["logits"][1]
    torch.testing.assert_close(masked["logits"][0] - base["logits"][0], w[lc] * (0.0 - base["concepts"][0, lc]),
                               rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(masked["logits"][2] - base["logits"][2], w[lc] * (1.0 - base["concepts"][2, lc]),
                               rtol=1e-9, atol=1e-12)


def test_apply_intervention_does_not_modify_its_input():
    concepts = torch.full((2, 11), 0.5)
    out = apply_intervention(concepts, {"ANRS": 1.0})
    assert concepts[:, 0].tolist() == [0.5, 0.5] and out[:, 0].tolist() == [1.0, 1.0]


def test_intervention_errors():
    x = _input(2)
    multitask = FundusClassifier(TINY, input_size=SIZE).eval()
    with pytest.raises(ConfigError) as err:
        multitask(x, intervene={"DH": 1.0})
    assert err.value.key == "intervene"
    with pytest.raises(ConfigError) as err:
        multitask.bottleneck_terms(torch.zeros(2, 11))
    assert err.value.key == "model.net.mode"
    cbm = FundusClassifier(TINY, input_size=SIZE, mode="concept_bottleneck").eval()
    with pytest.raises(ConfigError, match="'HAEMORRHAGE'"):
        cbm(x, intervene={"HAEMORRHAGE": 1.0})
    with pytest.raises(ConfigError, match="unknown concept 'glaucoma'") as err:  # a target, not a concept
        cbm(x, intervene={"glaucoma": 1.0})
    assert err.value.key == "intervene"


# ---------------------------------------------------------------------------- masked losses
def _bce_by_hand(z: torch.Tensor, y: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(z)
    return -(pos_weight * y * torch.log(p) + (1 - y) * torch.log(1 - p))


def test_masked_bce_equals_bce_on_known_entries():
    z = torch.tensor([[0.3, -1.2, 2.0], [-0.4, 0.9, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, math.nan, 0.0], [math.nan, 1.0, 1.0]], dtype=torch.float64)
    known = [(0, 0), (0, 2), (1, 1), (1, 2)]
    expected = torch.stack([_bce_by_hand(z[i, j], y[i, j]) for i, j in known]).mean()
    torch.testing.assert_close(masked_bce(z, y), expected, rtol=1e-12, atol=1e-12)
    # pos_weight scales only the positive terms
    pw = torch.tensor(3.0, dtype=torch.float64)
    expected_pw = torch.stack([_bce_by_hand(z[i, j], y[i, j], 3.0) for i, j in known]).mean()
    torch.testing.assert_close(masked_bce(z, y, pw), expected_pw, rtol=1e-12, atol=1e-12)
    # a NaN target does not leak into the gradient of its logit
    z.requires_grad_(True)
    masked_bce(z, y).backward()
    assert z.grad[0, 1] == 0 and z.grad[1, 0] == 0 and torch.isfinite(z.grad).all()


def test_masked_l1_equals_l1_on_known_entries():
    pred = torch.tensor([0.2, 0.5, 0.9, 0.4])
    true = torch.tensor([0.3, math.nan, 0.6, math.nan])
    assert masked_l1(pred, true).item() == pytest.approx((0.1 + 0.3) / 2, abs=1e-7)


@pytest.mark.parametrize("loss", [masked_bce, masked_l1])
def test_all_unknown_gives_zero_with_a_gradient_path(loss):
    z = torch.randn(4, 3, requires_grad=True)
    value = loss(z, torch.full((4, 3), math.nan))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.equal(z.grad, torch.zeros(4, 3))


# ---------------------------------------------------------------------------- Lightning module
def test_pos_weight_is_negatives_over_positives_of_train_split(datamodule, tmp_path):
    labels = datamodule.splits["train"].labels()
    neg, pos = float((labels == 0).sum()), float((labels == 1).sum())
    assert pos > 0 and neg != pos  # else the check below could not tell set from default
    module = FundusModule(net={"backbone": TINY}, warmup_epochs=0)
    assert module.pos_weight.item() == 1.0
    _trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0).fit(module, datamodule)
    assert module.pos_weight.item() == pytest.approx(neg / pos)
    # and the training split it used is the 70 % of the 40 eyes, stratified (25 % prevalence)
    assert len(labels) == 28 and pos == 7


def test_configure_optimizers_without_a_trainer():
    module = FundusModule(net={"backbone": TINY, "input_size": SIZE})
    config = module.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.AdamW)
    n_params = sum(1 for _ in module.model.parameters())
    assert sum(len(g["params"]) for g in config["optimizer"].param_groups) == n_params


class _Snapshots(L.Callback):
    """Model state before and after each training batch, by epoch."""

    def __init__(self):
        self.before, self.after, self.requires_grad, self.training = {}, {}, {}, {}

    @staticmethod
    def _state(module):
        return {k: v.detach().clone() for k, v in module.model.state_dict().items()}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            self.before[trainer.current_epoch] = self._state(module)
            self.requires_grad[trainer.current_epoch] = {n for n, p in module.model.named_parameters()
                                                         if p.requires_grad}
            self.training[trainer.current_epoch] = {n: m.training for n, m in module.model.named_children()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.after[trainer.current_epoch] = self._state(module)


def test_sequential_cbm_freezes_the_concepts(datamodule, tmp_path):
    torch.manual_seed(0)
    module = FundusModule(net={"backbone": TINY, "mode": "concept_bottleneck", "drop_rate": 0.1},
                          cbm_training="sequential", sequential_epochs=1, warmup_epochs=0)
    snaps = _Snapshots()
    _trainer(tmp_path, max_epochs=2, limit_train_batches=1, limit_val_batches=1,
             callbacks=[snaps]).fit(module, datamodule)
    # epoch 0 (concepts): the backbone learns
    b0, a0 = snaps.before[0], snaps.after[0]
    assert not torch.equal(b0["backbone.conv1.0.weight"], a0["backbone.conv1.0.weight"])
    assert not torch.equal(b0["findings_head.weight"], a0["findings_head.weight"])
    # epoch 1 (diagnosis): only glaucoma_head trains, everything else is bit-for-bit fixed,
    # BatchNorm running statistics included (the frozen part runs in eval mode)
    assert snaps.requires_grad[1] == {"glaucoma_head.weight", "glaucoma_head.bias"}
    assert {n for n, p in module.model.named_parameters() if p.requires_grad} == snaps.requires_grad[1]
    assert snaps.training[1] == {"backbone": False, "dropout": False, "findings_head": False,
                                 "vcdr_head": False, "glaucoma_head": True}
    b1, a1 = snaps.before[1], snaps.after[1]
    frozen = [k for k in b1 if not k.startswith("glaucoma_head")]
    assert any("running_mean" in k for k in frozen)
    changed = [k for k in frozen if not torch.equal(b1[k], a1[k])]
    assert changed == []
    assert not torch.equal(b1["glaucoma_head.weight"], a1["glaucoma_head.weight"])


def test_sequential_cbm_resumed_after_the_concept_phase_stays_frozen(datamodule, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def module():
        return FundusModule(net={"backbone": TINY, "mode": "concept_bottleneck"}, cbm_training="sequential",
                            sequential_epochs=1, warmup_epochs=0)

    _trainer(tmp_path, max_epochs=2, limit_val_batches=0, limit_train_batches=1, enable_checkpointing=True,
             callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)]).fit(module(), datamodule)
    snaps, resumed = _Snapshots(), module()
    _trainer(tmp_path, max_epochs=3, limit_val_batches=0, limit_train_batches=1,
             callbacks=[snaps]).fit(resumed, datamodule, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert list(snaps.requires_grad) == [2]  # it did resume at epoch 2
    assert snaps.requires_grad[2] == {"glaucoma_head.weight", "glaucoma_head.bias"}
    b, a = snaps.before[2], snaps.after[2]
    assert all(torch.equal(b[k], a[k]) for k in b if not k.startswith("glaucoma_head"))


def test_sequential_needs_concept_bottleneck():
    with pytest.raises(ConfigError) as err:
        FundusModule(net={"backbone": TINY}, cbm_training="sequential")
    assert err.value.key == "model.cbm_training"


# ---------------------------------------------------------------------------- export / load
DATA_CONFIG = {"input_size": SIZE, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "crop_fov": False,
               "margin": 0.05, "contrast": "clahe"}


@pytest.mark.parametrize("backbone,mode", [(TINY, "concept_bottleneck"), ("test_vit", "multitask")])
def test_export_then_load_is_identical(backbone, mode, tmp_path):
    torch.manual_seed(0)
    model = FundusClassifier(backbone, mode=mode, data_config=DATA_CONFIG, drop_rate=0.2).eval()
    folder = export_model(model, tmp_path / "model", extra={"dataset": "phantom"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["dataset"] == "phantom" and config["model"]["findings"] == list(FINDINGS)
    loaded = load_model(folder)
    assert not loaded.training
    assert loaded.mode == mode and loaded.config == model.config
    assert loaded.data_config == DataConfig.from_dict(DATA_CONFIG) == model.data_config
    x = _input()
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_export_keeps_backbone_options_that_weights_cannot_show(tmp_path):
    """A dilated last stage has the same weights as the plain one: only the config can restore it."""
    from xmed.explain.layers import find_target_layer

    torch.manual_seed(0)
    model = FundusClassifier("resnet10t", input_size=64, backbone_kwargs={"output_stride": 16}).eval()
    loaded = load_model(export_model(model, tmp_path / "model"))
    x = torch.rand(1, 3, 64, 64)
    assert tuple(loaded.feature_map(loaded.backbone.forward_features(x)).shape[-2:]) == (4, 4)  # not 2×2
    assert find_target_layer(loaded, x).name == find_target_layer(model, x).name
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], loaded(x)["logits"])


def test_load_lightning_checkpoint(datamodule, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    module = FundusModule(net={"backbone": TINY, "mode": "concept_bottleneck",
                               "data_config": datamodule.data_config()}, warmup_epochs=0)
    trainer = _trainer(tmp_path, enable_checkpointing=True, limit_val_batches=0,
                       callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    trainer.fit(module, datamodule)
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    loaded = load_model(ckpt)
    assert loaded.mode == "concept_bottleneck" and loaded.data_config.input_size == 48
    x = _input(size=48)
    module.model.eval()
    with torch.no_grad():
        a, b = module.model(x), loaded(x)
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Payload:
    """Unpickling this runs ``_write_marker`` — what weights_only loading must never do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


def _write_marker(path: str) -> str:
    Path(path).write_text("executed")
    return path


def test_load_refuses_a_checkpoint_with_an_arbitrary_object(tmp_path):
    marker = tmp_path / "marker.txt"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"net_config": {"backbone": TINY}}, "x": _Payload(marker)},
               ckpt)
    with pytest.raises(CheckpointError) as err:
        load_model(ckpt)
    assert err.value.path == str(ckpt) and str(ckpt) in str(err.value)
    assert not marker.exists()
    # control: the payload is real — a full unpickle would have run it
    torch.load(ckpt, weights_only=False)
    assert marker.read_text() == "executed"


def test_load_refuses_broken_folders(tmp_path):
    model = FundusClassifier(TINY, input_size=SIZE)
    no_config = export_model(model, tmp_path / "a")
    (no_config / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing") as err:
        load_model(no_config)
    assert err.value.path == str(no_config)

    corrupt = export_model(model, tmp_path / "b")
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(CheckpointError) as err:
        load_model(corrupt)
    assert err.value.path == str(corrupt / "model.safetensors")

    garbage = export_model(model, tmp_path / "c")
    (garbage / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 4)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(garbage)

    bad_json = export_model(model, tmp_path / "d")
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        load_model(bad_json)
    assert err.value.path == str(bad_json / "config.json")

    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "missing")


def test_load_refuses_weights_of_another_architecture(tmp_path):
    folder = export_model(FundusClassifier(TINY, input_size=SIZE), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["backbone"] = "test_efficientnet"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_model(folder)


# ---------------------------------------------------------------------------- local backbone weights
def test_local_backbone_weights(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(123)
    reference = timm.create_model(TINY).state_dict()
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in reference.items()}, str(path))
    torch.manual_seed(0)
    fresh = FundusClassifier(TINY, input_size=SIZE)
    loaded = FundusClassifier(TINY, input_size=SIZE, checkpoint_path=str(path))
    key = "conv1.0.weight"
    assert not torch.equal(fresh.backbone.state_dict()[key], reference[key])
    backbone = loaded.backbone.state_dict()
    assert torch.equal(backbone[key], reference[key])
    assert all(torch.equal(backbone[k], reference[k]) for k in backbone)  # every tensor, BN stats too
    assert "fc.weight" not in backbone  # the file's classifier is dropped


def test_missing_backbone_weights_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        FundusClassifier(TINY, checkpoint_path=str(tmp_path / "nope.safetensors"))
    assert err.value.key == "model.net.checkpoint_path" and "nope.safetensors" in str(err.value)


# ---------------------------------------------------------------------------- prepare
def test_prepare_equals_the_eval_transform_of_the_data_config():
    from xmed.data import build_transforms, render_phantom

    image = render_phantom(0, 96).image
    assert image.dtype == np.uint8 and image.shape == (96, 96, 3)
    model = FundusClassifier(TINY, data_config={**DATA_CONFIG, "crop_fov": True, "crop_disc": 0.6})
    dc = model.data_config
    transform = build_transforms("eval", dc.input_size, dc.mean, dc.std,
                                 preprocess={"crop_fov": True, "margin": dc.margin, "contrast": dc.contrast,
                                             "crop_disc": 0.6})
    sample = {"image": image, "masks": {}, "findings": np.full(10, np.nan, np.float32), "label": math.nan,
              "vcdr": math.nan, "meta": {"eye": ""}}
    expected = torch.from_numpy(transform(sample)["image"]).permute(2, 0, 1)
    batch = model.prepare(image)
    assert batch.shape == (1, 3, SIZE, SIZE) and batch.dtype == torch.float32
    assert torch.equal(batch[0], expected)
    two = model.prepare([image, image[:, ::-1].copy()])
    assert two.shape == (2, 3, SIZE, SIZE) and torch.equal(two[0], expected)


@pytest.mark.parametrize("preprocess", [{"crop_fov": True, "contrast": "graham"},
                                        {"crop_fov": True, "contrast": "clahe", "size": 64}])
def test_prepare_matches_the_datamodule_the_model_was_trained_on(preprocess, tmp_path):
    """A model carrying a data module's data config prepares a raw photograph as that data
    module's evaluation loader does — its own resize before the contrast (``data.preprocess.size``)
    included, which changes what CLAHE gives."""
    from xmed.data import FundusDataModule

    dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": 12, "size": 80}, image_size=48,
                          preprocess=preprocess, mean=(0.4, 0.4, 0.4), std=(0.3, 0.3, 0.3))
    dm.setup()
    model = FundusClassifier(TINY, data_config=dm.data_config())
    assert model.data_config.preprocess_size == preprocess.get("size")
    view = dm.splits["test"]
    raw = view.base.load_sample(view.base.records[view.indices[0]])["image"]
    assert torch.equal(model.prepare(raw)[0], view[0]["image"])
    from xmed.models.export import export_model, load_model

    exported = load_model(export_model(model.eval(), tmp_path / "model"))
    assert exported.data_config == model.data_config
    assert torch.equal(exported.prepare(raw)[0], view[0]["image"])
    if "size" in preprocess:
        at_crop_resolution = FundusClassifier(TINY, data_config={**dm.data_config(), "preprocess_size": None})
        assert (at_crop_resolution.prepare(raw)[0] - view[0]["image"]).abs().max() > 0.05


@pytest.mark.filterwarnings("ignore::xmed.errors.QualityWarning")  # this mean/std puts the eyes outside the gate's range
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the hand-over normalised on a GPU needs CUDA"))])
def test_a_photograph_gives_the_same_tensor_in_training_and_in_evaluation(device):
    """One definition of the normalisation (:func:`xmed.data.normalise.normalise_images`): a
    photograph the training loader hands over as uint8, normalised by the data module's hook where
    the batch is, equals the same photograph through ``model.prepare``, the evaluation transform
    (to float32 rounding: 1e-6 at most; on the CPU, exactly)."""
    from xmed.data import FundusDataModule

    dm = FundusDataModule(dataset="phantom_render", dataset_options={"n": 16, "size": 80}, image_size=48,
                          batch_size=16, preprocess={"crop_fov": True}, mean=(0.4, 0.45, 0.5),
                          std=(0.3, 0.2, 0.1), augment={"hflip": 0.0, "rotate": 0.0, "scale": 0.0, "colour": False})
    dm.setup()
    handed = next(iter(dm.train_dataloader()))
    assert handed["image"].dtype == torch.uint8
    trained = dm.on_after_batch_transfer({**handed, "image": handed["image"].to(device)}, 0)["image"]
    model = FundusClassifier(TINY, data_config=dm.data_config())
    record = {r.id: r for r in dm.base.records}
    photos = [dm.base.load_sample(record[eye])["image"] for eye in handed["meta"]["id"]]
    evaluated = model.prepare(photos)
    assert evaluated.shape == trained.shape == (len(photos), 3, 48, 48)
    torch.testing.assert_close(trained.cpu(), evaluated, rtol=0, atol=1e-6 if device != "cpu" else 0)


def test_the_evaluation_transform_of_a_model_is_built_in_one_place():
    """``eval_transform`` of the model's data config, of its dict, and the evaluation transform of
    the data module :func:`datamodule_for_model` gives it, prepare a photograph alike."""
    from omegaconf import OmegaConf

    from xmed.data import render_phantom
    from xmed.data.datamodule import datamodule_for_model
    from xmed.data.datasets import to_tensor_sample
    from xmed.data.transforms import eval_transform, transform_settings

    model = FundusClassifier(TINY, data_config={**DATA_CONFIG, "crop_fov": True, "crop_disc": 0.6,
                                                "mean": [0.3, 0.4, 0.5]})
    data = OmegaConf.create({"_target_": "xmed.data.FundusDataModule", "dataset": "phantom_render",
                             "dataset_options": {"n": 8, "size": 96}, "image_size": 256, "mean": [0.5] * 3,
                             "preprocess": {"crop_fov": False, "contrast": "clahe"}})
    dm = datamodule_for_model(data, model)
    settings = transform_settings(model.data_config)
    assert settings["input_size"] == SIZE and settings["mean"] == (0.3, 0.4, 0.5)
    assert transform_settings(dm.data_config()) == transform_settings(model.data_config.as_dict()) == settings
    photo = {"image": render_phantom(0, 96).image, "masks": {}, "findings": np.full(10, np.nan, np.float32),
             "label": math.nan, "vcdr": math.nan, "meta": {"eye": ""}}
    expected = model.prepare(photo["image"])[0]
    for transform in (eval_transform(model.data_config), eval_transform(model.data_config.as_dict()),
                      dm.transforms["eval"]):
        assert transform.input_size == SIZE
        assert torch.equal(to_tensor_sample(transform(photo))["image"], expected)
    with pytest.raises(ConfigError, match="data_config.input_size"):
        eval_transform({"mean": [0.5] * 3})


# ---------------------------------------------------------------------------- Hydra configs
@pytest.fixture
def compose():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        yield lambda overrides=(): hydra_compose("train", overrides=list(overrides))
    GlobalHydra.instance().clear()


# classifier configs; model/autoencoder.yaml belongs to task=autoencoder (tests/test_latent_shift.py)
MODEL_FILES = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml") if p.stem not in ("_base", "autoencoder"))


def test_every_model_config_is_listed():
    assert {"tiny_test", "resnet18", "resnet10t", "vit_small", "efficientnet_b0", "convnext_nano"} <= set(MODEL_FILES)


@pytest.mark.parametrize("name", MODEL_FILES)
def test_compose_every_model_config(compose, name):
    cfg = compose([f"model={name}"])
    own = yaml.safe_load((CONFIGS / "model" / f"{name}.yaml").read_text())
    assert cfg.model._target_ == "xmed.models.FundusModule"
    assert cfg.model.net.backbone == own["net"]["backbone"]
    assert timm.is_model(cfg.model.net.backbone)
    assert cfg.model.net.pretrained is False and cfg.model.net.mode == "multitask"


def test_unknown_override_key_fails_naming_it(compose):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="backbonee"):
        compose(["model=tiny_test", "model.net.backbonee=x"])


def test_bad_mode_is_a_config_error_naming_the_key(compose):
    from xmed.saved_config import instantiate_group

    cfg = compose(["model=tiny_test", "model.net.mode=bad"])
    with pytest.raises(ConfigError) as err:
        instantiate_group(cfg.model, "model")
    assert err.value.key == "model.net.mode" and "'bad'" in str(err.value)
    good = instantiate_group(compose(["model=tiny_test", "model.net.mode=concept_bottleneck"]).model, "model")
    assert isinstance(good, FundusModule) and good.model.mode == "concept_bottleneck"


# ---------------------------------------------------------------------------- mask head
@pytest.mark.parametrize("backbone,grid", [(TINY, 2), ("test_vit", 4)])
def test_mask_head_predicts_on_the_feature_grid(backbone, grid):
    model = FundusClassifier(backbone, input_size=SIZE, mask_head=["disc", "cup", "DH"]).eval()
    with torch.no_grad():
        out = model(_input())
    assert out["mask_logits"].shape == (3, 3, grid, grid) and model.mask_names == ("disc", "cup", "DH")
    assert "mask_logits" not in FundusClassifier(backbone, input_size=SIZE).eval()(_input())


def test_mask_loss_is_bce_against_each_cells_covered_fraction():
    from xmed.models.module import mask_loss

    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 0.5]]]])                  # 1×1×2×2
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True                                              # top-left cell fully covered
    mask[0, 0, 2] = True                                                # top-right cell: 1 of 4 pixels
    target = torch.tensor([[[[1.0, 0.25], [0.0, 0.0]]]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    got = mask_loss(logits, ("disc",), {"disc": mask}, {"disc": torch.tensor([True])})
    assert got.item() == pytest.approx(expected.item())
    # a sample without that mask does not count; no mask at all gives 0 with a gradient path
    two = torch.cat([logits, torch.full_like(logits, 9.0)])
    got = mask_loss(two, ("disc",), {"disc": torch.cat([mask, mask])}, {"disc": torch.tensor([True, False])})
    assert got.item() == pytest.approx(expected.item())
    empty = mask_loss(two.requires_grad_(), ("disc",), {}, {})
    assert empty.item() == 0.0 and empty.requires_grad


def test_mask_head_trains_and_round_trips(datamodule, tmp_path):
    torch.manual_seed(0)
    module = FundusModule(net={"backbone": TINY, "input_size": 48, "mask_head": ["disc", "cup", "ANRS"]},
                          warmup_epochs=0)
    batch = next(iter(datamodule.train_dataloader()))
    losses = module._losses(module.model(batch["image"]), batch)
    assert set(losses) == {"glaucoma", "findings", "vcdr", "masks"} and losses["masks"].item() > 0
    head_before = module.model.mask_head.weight.detach().clone()
    _trainer(tmp_path, limit_train_batches=2, limit_val_batches=0).fit(module, datamodule)
    assert not torch.equal(head_before, module.model.mask_head.weight)  # the mask loss reached it
    loaded = load_model(export_model(module.model.eval(), tmp_path / "model"))
    assert loaded.mask_names == ("disc", "cup", "ANRS")
    x = _input(size=48)
    with torch.no_grad():
        assert torch.equal(loaded(x)["mask_logits"], module.model(x)["mask_logits"])


# ---------------------------------------------------------------------------- adversarial training
def test_pgd_attack_stays_in_the_ball_and_raises_the_loss():
    from xmed.models.robust import AdversarialTraining

    torch.manual_seed(0)
    model = FundusClassifier(TINY, input_size=48).train()
    x, label = _input(4, 48), torch.tensor([0.0, 1.0, 0.0, 1.0])
    attack = AdversarialTraining(method="pgd", epsilon=2.0, steps=3)
    adv = attack.perturb(model, x, label)
    assert model.training and all(p.grad is None for p in model.parameters())  # mode kept, no gradients
    assert float((adv - x).flatten(1).norm(dim=1).max()) <= 2.0 + 1e-4
    model.eval()
    with torch.no_grad():
        clean_loss = masked_bce(model(x)["logits"], label)
        adv_loss = masked_bce(model(adv)["logits"], label)
    assert adv_loss > clean_loss


def test_trades_adds_a_robustness_term_and_bad_settings_name_the_key(datamodule):
    from xmed.models.robust import bernoulli_kl

    assert torch.allclose(bernoulli_kl(torch.tensor([2.0]), torch.tensor([-1.0])),
                          torch.tensor([0.8808 * math.log(0.8808 / 0.2689) + 0.1192 * math.log(0.1192 / 0.7311)]),
                          atol=1e-3)
    torch.manual_seed(0)
    module = FundusModule(net={"backbone": TINY, "input_size": 48},
                          adversarial_training={"method": "trades", "epsilon": 1.0, "steps": 2})
    batch = next(iter(datamodule.train_dataloader()))
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)
    loss = module.training_step(batch, 0)
    assert "train/loss_robust" in logged and float(logged["train/loss_robust"]) >= 0
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="model.adversarial_training"):
        FundusModule(net={"backbone": TINY}, adversarial_training={"method": "fgsm"})
    with pytest.raises(ConfigError, match="model.adversarial_training"):
        FundusModule(net={"backbone": TINY}, adversarial_training={"eps": 1.0})


def test_uint8_pixels_are_normalised_by_the_models_own_data_config():
    from xmed.data.normalise import normalise_images

    torch.manual_seed(0)
    model = FundusClassifier(TINY, input_size=48, data_config={"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.25]}).eval()
    pixels = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        from_pixels = model(pixels)["logits"]
        by_hand = model(normalise_images(pixels, (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)))["logits"]
        imagenet = model(normalise_images(pixels))["logits"]
    torch.testing.assert_close(from_pixels, by_hand, rtol=0, atol=1e-6)
    assert not torch.allclose(from_pixels, imagenet)  # the model's own statistics, not the defaults
