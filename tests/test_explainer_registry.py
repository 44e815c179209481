"""Explanation methods say their own title and kind, and one registry holds them all: adding a method
is its class, registered, and its config file — ``xmed-explain``, the review build and the study then
take it without another edit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from xmed.cli.common import CONFIG_DIR, store_every_saliency_method
from xmed.explain import (COUNTERFACTUALS, EXPLAINERS, KINDS, METHODS, Explainer, RationaleExplainer,
                          register_explainer, register_method)
from xmed.explain.counterfactual import register_counterfactual
from xmed.explain.rationale import explained_share, rationale
from xmed.models import FundusClassifier
from xmed.runs import eye_file_stem

from helpers.commands import compose

SIZE = 48

#: every shipped method: (title, kind)
SHIPPED = {"gradcam": ("Grad-CAM", "saliency"), "gradcampp": ("Grad-CAM++", "saliency"),
           "hirescam": ("HiResCAM", "saliency"), "layercam": ("LayerCAM", "saliency"),
           "integrated_gradients": ("Integrated gradients", "saliency"), "smoothgrad": ("SmoothGrad", "saliency"),
           "smoothgrad_sq": ("SmoothGrad²", "saliency"), "input_x_gradient": ("Input × gradient", "saliency"),
           "guided_gradcam": ("Guided Grad-CAM", "saliency"), "occlusion": ("Occlusion", "saliency"),
           "rise": ("RISE", "saliency"), "adversarial": ("Adversarial explanation", "edit"),
           "latent_shift": ("Latent shift", "edit"), "rationale": ("Finding-level rationale", "rationale")}


def test_every_method_states_its_title_and_kind_and_has_its_config_file():
    assert {name: (cls.title, cls.kind) for name, cls in METHODS.items()} == SHIPPED
    assert list(EXPLAINERS) == [n for n, (_, kind) in SHIPPED.items() if kind == "saliency"]
    assert list(COUNTERFACTUALS) == ["adversarial", "latent_shift"] and METHODS["rationale"] is RationaleExplainer
    for name in METHODS:
        config = OmegaConf.load(Path(CONFIG_DIR) / "explainer" / f"{name}.yaml")
        assert config[name].method == name
    assert METHODS.lookup("ig") is EXPLAINERS.lookup("ig") is METHODS["integrated_gradients"]
    assert "ig" not in COUNTERFACTUALS.aliases


def test_each_class_states_what_it_costs_and_whether_bf16_may_run_it():
    assert {name: cls.held_graphs({}) for name, cls in METHODS.items() if cls.held_graphs({}) != 1} == {
        "smoothgrad": 25, "smoothgrad_sq": 25, "guided_gradcam": 2}
    assert METHODS["smoothgrad"].held_graphs({"n_samples": 25, "batch_size": 5}) == 5
    assert METHODS["adversarial"].recorded_frames({"max_steps": 30, "record_every": 10}) == 3 + 2
    assert METHODS["latent_shift"].recorded_frames({"n_lambdas": 5}) == 5 + 1
    assert METHODS["rationale"].recorded_frames({}) == METHODS["adversarial"].recorded_frames({}) == 50 // 10 + 2
    assert METHODS["rationale"].recorded_frames({"counterfactual": None}) == METHODS["gradcam"].recorded_frames({}) == 0
    assert [name for name, cls in EXPLAINERS.items() if not cls.backward_pass] == ["occlusion", "rise"]


def test_a_method_without_a_title_or_of_an_unknown_kind_is_refused():
    class Untitled(Explainer):
        name = "untitled"

    class Odd(Explainer):
        name, title, kind = "odd", "Odd", "guess"

    with pytest.raises(ValueError, match="Untitled states no title"):
        register_method(Untitled)
    with pytest.raises(ValueError, match=f"kind 'guess'; one of {', '.join(KINDS)}"):
        register_method(Odd)
    with pytest.raises(ValueError, match="RationaleExplainer is of kind 'rationale', not a saliency explainer"):
        register_explainer(RationaleExplainer)
    with pytest.raises(ValueError, match="GradCAM is of kind 'saliency', not an edit method"):
        register_counterfactual(EXPLAINERS["gradcam"])
    assert list(METHODS) == list(SHIPPED)


@pytest.mark.filterwarnings("ignore::xmed.errors.QualityWarning")  # random pixels are no fundus photograph
def test_the_registered_rationale_gives_what_the_function_gives():
    torch.manual_seed(0)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=SIZE, threshold=0.3).eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    by_class = RationaleExplainer(model, counterfactual=None, heatmaps=False)(images)
    by_function = rationale(model, images, counterfactual=None, heatmaps=False)
    assert [r.to_dict() for r in by_class] == [r.to_dict() for r in by_function]
    assert [explained_share(r) for r in by_class] == [explained_share(r) for r in by_function]
    assert by_class[0].threshold == 0.3


# -- one class and one config file ------------------------------------------------------------------


class BrightnessMap(Explainer):
    """A made-up method: each pixel's mean over the channels, shifted to start at 0."""

    name, title = "brightness", "Brightness map"

    def __init__(self, model, offset: float = 0.0):
        super().__init__(model)
        self.offset = offset

    def attribute(self, images, target):
        maps = images.mean(dim=1, keepdim=True)
        return maps - maps.amin(dim=(2, 3), keepdim=True) + self.offset


@pytest.fixture(scope="module")
def added(tmp_path_factory):
    """The made-up method registered, and its config file in a folder on Hydra's search path; the
    registry is as it was afterwards."""
    configs = tmp_path_factory.mktemp("configs")
    (configs / "explainer").mkdir()
    (configs / "explainer" / "brightness.yaml").write_text("brightness:\n  method: brightness\n  offset: 0.25\n")
    register_explainer(BrightnessMap)
    try:
        yield f"hydra.searchpath=[file://{configs}]"
    finally:
        del METHODS[BrightnessMap.name]
        assert list(METHODS) == list(SHIPPED)


@pytest.fixture(scope="module")
def explained(added, cam_model_dir, tmp_path_factory) -> Path:
    from xmed.pipeline.explanation import explain_run

    out = tmp_path_factory.mktemp("explain")
    cfg = compose("explain", [added, "explainer=[gradcam,brightness]", "data=phantom_render",
                              "data.dataset_options.n=16", f"data.dataset_options.size={SIZE}", "data.num_workers=0",
                              f"ckpt_path={cam_model_dir}", "n=2", "batch_size=2", "overlays=0", "label=1", "split=train",
                              "randomisation.n_images=2", "randomisation.skip=[gradcam]", "faithfulness.n_steps=4", "metrics=[energy_pointing_game]",
                              f"paths.output_dir={out}"])
    explain_run(cfg)
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")   # as the xmed-explain command's Hydra run does
    return out


def test_explainer_all_is_every_saliency_method_with_its_own_config(added):
    store_every_saliency_method()   # as a program that registers a method of its own does
    try:
        cfg = compose("explain", [added, "explainer=all", "ckpt_path=unused"])
    finally:  # the other modules' explainer=all knows the shipped methods only
        store_every_saliency_method([name for name in EXPLAINERS if name != BrightnessMap.name])
    saliency = [name for name, (_, kind) in SHIPPED.items() if kind == "saliency"]
    assert list(cfg.explainer) == [*saliency, "brightness"]
    assert OmegaConf.to_container(cfg.explainer.brightness) == {"method": "brightness", "offset": 0.25}
    assert cfg.explainer.rise == OmegaConf.load(Path(CONFIG_DIR) / "explainer" / "rise.yaml").rise


def test_xmed_explain_runs_a_method_added_by_its_class_and_config_file(explained):
    from xmed.data.datamodule import datamodule_for_model, explained_view
    from xmed.data.datasets.base import collate_samples
    from xmed.models.export import load_model

    cfg = OmegaConf.load(explained / ".hydra" / "config.yaml")
    assert OmegaConf.to_container(cfg.explainer.brightness) == {"method": "brightness", "offset": 0.25}
    methods = json.loads((explained / "metrics.json").read_text())["methods"]
    assert set(methods) == {"gradcam", "brightness"} and methods["brightness"]["n"] == 2
    assert 0.0 <= methods["brightness"]["energy_pointing_game"] <= 1.0
    assert methods["brightness"]["randomisation_spearman"] == 1.0   # its maps do not read the model
    assert "randomisation_spearman" not in methods["gradcam"]
    view = explained_view(cfg, datamodule_for_model(cfg.data, load_model(cfg.ckpt_path)))
    batch = collate_samples([view[i] for i in range(len(view))])
    reference = BrightnessMap(None, offset=0.25).attribute(batch["image"], None)
    for i, eye_id in enumerate(batch["meta"]["id"]):
        written = np.load(explained / "maps" / "brightness" / f"{eye_file_stem(eye_id)}.npy")
        np.testing.assert_allclose(written, reference[i, 0].numpy(), atol=1e-6)


def test_the_review_build_shows_it_under_its_own_title(explained, tmp_path):
    from xmed.review.build import build_session
    from xmed.review.session import load_session

    folder = build_session(tmp_path / "session", explain_dir=explained, counterfactual=False, progress=False)
    session = load_session(folder)
    assert session["methods"] == [{"name": "gradcam", "kind": "saliency", "title": "Grad-CAM"},
                                  {"name": "brightness", "kind": "saliency", "title": "Brightness map"}]
    assert all(set(case["panels"]) == {"gradcam", "brightness"} for case in session["cases"])


def test_the_study_scores_it_beside_the_shipped_methods(added, cam_model_dir, tmp_path):
    from xmed.pipeline.study import study_run

    out = tmp_path / "study"
    result = study_run(compose("study", ["experiment=study_quick", "train=null", f"models={{m: {cam_model_dir}}}",
                                         "saliency=[gradcam,brightness]", "adversarial=null", "rationale=false",
                                         f"data.dataset_options.size={SIZE}", "n=3", "n_bootstrap=20",
                                         "progress=false", f"paths.output_dir={out}"]))
    with open(out / "scores.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["method"] == "brightness"]
    assert {r["score"] for r in rows} == {"energy_in_evidence", "pointing_game", "map_auroc"}
    assert len(rows) == 3 * 3 and all(0.0 <= float(r["value"]) <= 1.0 for r in rows)
    assert {(d["method"], d["reference"]) for d in result["differences"]} == {("brightness", "gradcam")}
