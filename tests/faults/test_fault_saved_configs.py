"""A folder someone hands over never runs code: a config read from disk is data.

Every payload below, if it were ever imported and called, would create ``marker`` — by writing
it (``builtins.open``, ``numpy.save``), by a shell call (``subprocess.run``, ``os.system``) or by
unpickling a file whose ``__reduce__`` writes it (``torch.load``/``pickle.load``). Each is hidden
in an ``xmed-explain`` run's ``.hydra/config.yaml`` (the group that is built, nested in it, in
lists, elsewhere in the file, made by an interpolation), in an exported model's ``config.json``
and in a Lightning checkpoint's saved settings. The outcome is always the same: the marker does
not exist, and the error names the file and the key.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from xmed.errors import CheckpointError, ConfigError, PathError, UnsafeConfigError
from xmed.models import FundusClassifier
from xmed.models.export import export_model, load_model
from xmed.review.build import build_session
from xmed.saved_config import buildable, check_targets, shipped_targets

from helpers.commands import compose

SIZE = 48


class Payload:
    """Unpickling this creates ``marker`` (builtins.open in write mode)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def payloads(marker: Path, pickled: Path) -> dict[str, dict]:
    """Config nodes that create ``marker`` when Hydra instantiates them."""
    return {
        "file write": {"_target_": "builtins.open", "_args_": [str(marker), "w"]},
        # takes any keyword (the data module's settings too): writes payload_ran.npz wherever it is put
        "numpy write": {"_target_": "numpy.savez", "file": str(marker)},
        "pickle load": {"_target_": "torch.load", "f": str(pickled), "weights_only": False},
        "pickle module": {"_target_": "pickle.load", "file": {"_target_": "builtins.open",
                                                               "_args_": [str(pickled), "rb"]}},
        "shell call": {"_target_": "subprocess.run", "args": ["touch", str(marker)]},
        "os.system": {"_target_": "os.system", "command": f"touch {marker}"},
        "partial": {"_target_": "builtins.open", "_partial_": True, "_args_": [str(marker), "w"]},
    }


#: where a payload is put in an explain run's config: a function of (config, payload)
PLACES = {
    "as the data group": lambda cfg, p: cfg.update(data=p),
    "nested in the data group": lambda cfg, p: cfg["data"]["dataset_options"].update(hook=p),
    "in a list in the data group": lambda cfg, p: cfg["data"]["dataset_options"].update(hooks=[1, [p]]),
    "in an unused group": lambda cfg, p: cfg.update(callbacks={"x": p}),
    "in a top-level list": lambda cfg, p: cfg.update(extra=[{"a": [p]}]),
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=SIZE, data_config={"crop_fov": False})
    return export_model(model.eval(), tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def explain_config(model_dir):
    """An honest ``xmed-explain`` config (composed, not run, as plain containers): the payloads are
    added to copies."""
    return OmegaConf.to_container(compose("explain", ["data=phantom_render", "data.dataset_options.n=8", f"data.dataset_options.size={SIZE}",
                               "data.num_workers=0", f"ckpt_path={model_dir}", "n=2", "explainer=gradcam",
                               "split=train", "paths.output_dir=/nowhere"]), resolve=False)


@pytest.fixture
def trap(tmp_path) -> tuple[Path, dict[str, dict]]:
    """(the marker, the payloads that would create it)"""
    marker = tmp_path / "payload_ran"
    pickled = tmp_path / "payload.pkl"
    pickled.write_bytes(pickle.dumps(Payload(str(marker))))
    return marker, payloads(marker, pickled)


def ran(marker: Path) -> bool:
    """Whether a payload ran: the marker, or a file numpy named after it, exists."""
    return any(marker.parent.glob(marker.name + "*"))


def explain_folder(root: Path, config) -> Path:
    folder = root / "explain_run"
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    return folder


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("payload", ["file write", "numpy write", "pickle load", "pickle module", "shell call",
                                     "os.system", "partial"])
def test_an_explain_run_config_naming_a_callable_runs_nothing(explain_config, trap, tmp_path, place, payload):
    marker, hostile = trap
    config = copy.deepcopy(explain_config)
    PLACES[place](config, hostile[payload])
    folder = explain_folder(tmp_path, config)
    with pytest.raises(UnsafeConfigError) as caught:
        build_session(tmp_path / "review", explain_dir=folder, counterfactual=False, progress=False)
    assert not ran(marker)
    assert not (tmp_path / "review").exists()
    assert str(folder / ".hydra" / "config.yaml") in str(caught.value)
    assert "_target_" in str(caught.value) and hostile[payload]["_target_"] in str(caught.value)


@pytest.mark.parametrize("made_by", ["oc.create", "oc.decode", "escaped interpolation"])
def test_a_target_made_by_an_interpolation_is_refused_before_it_is_built(explain_config, trap, tmp_path, made_by):
    marker, _ = trap
    node = f"{{_target_: builtins.open, _args_: ['{marker}', w]}}"
    value = {"oc.create": f"${{oc.create:\"{node}\"}}", "oc.decode": f"${{oc.decode:\"{node}\"}}",
             "escaped interpolation": f"\\${{oc.create:\"{node}\"}}"}[made_by]
    config = copy.deepcopy(explain_config)
    config["data"]["dataset_options"]["hook"] = value
    folder = explain_folder(tmp_path, config)
    with pytest.raises(UnsafeConfigError, match=r"data\.dataset_options\.hook") as caught:
        build_session(tmp_path / "review", explain_dir=folder, counterfactual=False, progress=False)
    assert not ran(marker)
    assert str(folder / ".hydra" / "config.yaml") in str(caught.value)


def test_a_shipped_class_outside_its_group_is_not_built_as_that_group(explain_config, tmp_path):
    config = copy.deepcopy(explain_config)
    config["data"]["_target_"] = "lightning.pytorch.Trainer"  # xmed's own configs name it, but as the trainer
    folder = explain_folder(tmp_path, config)
    with pytest.raises(UnsafeConfigError, match=r"key 'data\._target_' names 'lightning\.pytorch\.Trainer'"):
        build_session(tmp_path / "review", explain_dir=folder, counterfactual=False, progress=False)


@pytest.mark.parametrize("key, value, message", [
    ("n", "abc", "key 'n' must be an integer ≥ 1, got 'abc'"),
    ("label", 2, "key 'label' must be one of null, 0, 1, got 2"),
    ("split", ["train"], "key 'split' must be a split name"),
    ("explainer", "gradcam", "key 'explainer' must be a mapping of method names"),
    ("ckpt_path", "${nowhere.at_all}", "key 'ckpt_path' cannot be read"),
])
def test_an_explain_run_config_with_bad_settings_names_the_key(explain_config, tmp_path, key, value, message):
    config = copy.deepcopy(explain_config)
    config[key] = value
    folder = explain_folder(tmp_path, config)
    with pytest.raises(PathError, match=message.replace("(", r"\(").replace("[", r"\[")) as caught:
        build_session(tmp_path / "review", explain_dir=folder, counterfactual=False, progress=False)
    assert str(caught.value).startswith(str(folder / ".hydra" / "config.yaml"))


ALIAS_BOMB = "\n".join([f"l0: &l0 [{', '.join(['x'] * 9)}]"] +
                       [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)])  # 9**9 values


@pytest.mark.parametrize("text", ["data: [unclosed", "- a list\n- not a mapping",
                                  "!!python/object/apply:os.system ['touch payload_ran']", ALIAS_BOMB,
                                  "x" * 10_000_001])
def test_an_explain_run_config_that_is_no_yaml_mapping_is_named(tmp_path, text, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "explain_run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(text)
    with pytest.raises(PathError, match="config.yaml: not a") as caught:
        build_session(tmp_path / "review", explain_dir=folder, counterfactual=False, progress=False)
    assert not (tmp_path / "payload_ran").exists()
    assert str(folder / ".hydra" / "config.yaml") in str(caught.value)


@pytest.mark.parametrize("cell", ["abc", "0.5.1", "1e999999x", "=cmd|' /C calc'!A0"])
def test_a_non_numeric_score_in_per_image_csv_is_named(explain_config, tmp_path, cell):
    folder = explain_folder(tmp_path, explain_config)
    (folder / "per_image.csv").write_text(f"id,method,quality,energy\neye-1,gradcam,,0.5\neye-2,gradcam,,{cell}\n")
    with pytest.raises(PathError, match=r"per_image.csv: line 3, column 'energy': .* is not a number"):
        build_session(tmp_path / "review", explain_dir=folder, counterfactual=False, progress=False)


# -- model folders and checkpoints ----------------------------------------------------------------


def hostile_model(model_dir: Path, root: Path, edit) -> Path:
    """A copy of the exported model whose config.json ``edit(config["model"])`` changed."""
    import shutil

    folder = root / "handed_model"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config["model"])
    (folder / "config.json").write_text(json.dumps(config))
    return folder


MODEL_PLACES = {
    "at the top": lambda m, p: m.update(_target_=p["_target_"]),
    "in data_config": lambda m, p: m["data_config"].update(preprocess=p),
    "in backbone_kwargs": lambda m, p: m.__setitem__("backbone_kwargs", {"act_layer": p}),
    "in a list": lambda m, p: m.__setitem__("mask_head", ["disc", p]),
}


@pytest.mark.parametrize("place", MODEL_PLACES)
@pytest.mark.parametrize("payload", ["file write", "pickle load", "shell call"])
def test_a_model_folder_naming_a_callable_runs_nothing(model_dir, trap, tmp_path, place, payload):
    marker, hostile = trap
    folder = hostile_model(model_dir, tmp_path, lambda m: MODEL_PLACES[place](m, hostile[payload]))
    with pytest.raises(UnsafeConfigError, match="_target_") as caught:
        load_model(folder)
    assert not ran(marker)
    assert str(folder / "config.json") in str(caught.value)


@pytest.mark.parametrize("option", ["checkpoint_path", "pretrained_cfg_overlay", "pretrained_cfg", "pretrained",
                                    "cache_dir"])
def test_a_model_folder_cannot_make_timm_read_another_file(model_dir, trap, tmp_path, option):
    marker, _ = trap
    value = {"checkpoint_path": str(tmp_path / "payload.pkl"), "pretrained_cfg_overlay": {"file": str(tmp_path / "payload.pkl")},
             "pretrained_cfg": "hf-hub:someone/model", "pretrained": True, "cache_dir": str(tmp_path)}[option]
    folder = hostile_model(model_dir, tmp_path, lambda m: m.__setitem__("backbone_kwargs", {option: value}))
    with pytest.raises(CheckpointError, match=f"backbone_kwargs.{option}: a saved model's backbone"):
        load_model(folder)
    assert not ran(marker)


def test_a_checkpoint_whose_settings_name_a_callable_runs_nothing(model_dir, trap, tmp_path):
    marker, hostile = trap
    net_config = json.loads((model_dir / "config.json").read_text())["model"]
    net_config["data_config"]["preprocess"] = hostile["file write"]
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"net_config": net_config}}, path)
    with pytest.raises(UnsafeConfigError, match=r"key 'data_config\.preprocess\._target_' names 'builtins\.open'"):
        load_model(path)
    assert not ran(marker)


# -- other run folders ------------------------------------------------------------------------------


def test_a_compared_run_is_read_as_figures_only(trap, tmp_path):
    from xmed.pipeline.explanation_report import run_comparison

    marker, hostile = trap
    other = tmp_path / "other_run"
    (other / ".hydra").mkdir(parents=True)
    (other / ".hydra" / "config.yaml").write_text(json.dumps({"data": hostile["file write"]}))
    (other / "metrics.json").write_text(json.dumps({"methods": {"gradcam": {"energy_in_mask": hostile["shell call"],
                                                                             "validity": "0.9"}}}))
    table = run_comparison({"gradcam": {"energy_in_mask": 0.5, "validity": 1.0}}, other)
    assert "| gradcam | energy in mask | 0.500 | – |" in table
    assert "| gradcam | validity | 1.000 | – |" in table
    assert not ran(marker)
    (other / "metrics.json").write_text('{"methods": ["gradcam"]}')
    with pytest.raises(ConfigError, match=r"compare_run.*metrics.json is not an xmed-explain metrics.json"):
        run_comparison({}, other)


@pytest.mark.parametrize("flag", ["--experimental-rerun", "--experimental-rerun=x", "--exp", "--e"])
def test_hydra_commands_refuse_to_rerun_from_a_pickle(trap, tmp_path, monkeypatch, capsys, flag):
    from xmed.cli import eval as eval_cli

    marker, _ = trap
    argv = [flag] if "=" in flag else [flag, str(tmp_path / "payload.pkl")]
    monkeypatch.setattr("sys.argv", ["xmed-eval", *argv])
    with pytest.raises(SystemExit) as exited:
        eval_cli.main()
    assert exited.value.code == 2
    assert "refused, it would unpickle the file" in capsys.readouterr().err
    assert not ran(marker)


def test_the_allow_list_is_what_the_shipped_configs_name():
    assert shipped_targets("data") == {"xmed.data.FundusDataModule"}
    assert "xmed.models.FundusModule" in shipped_targets("model")
    assert {"builtins.open", "torch.load", "subprocess.run", "os.system"}.isdisjoint(shipped_targets())
    check_targets({"trainer": {"_target_": "lightning.pytorch.Trainer"}}, "f.yaml")  # shipped: accepted
    with pytest.raises(UnsafeConfigError, match=r"key 'a\[1\]\._target_' names 3"):
        check_targets({"a": [0, {"_target_": 3}]}, "f.yaml")
    with pytest.raises(UnsafeConfigError, match="key 'data' cannot be resolved"):
        buildable(OmegaConf.create({"data": {"root": "${missing}"}}).data, "f.yaml", "data")


# -- review sessions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("place", ["top", "model", "case", "panel list"])
def test_a_review_session_naming_a_callable_is_refused_and_runs_nothing(trap, tmp_path, place):
    from xmed.review.server import create_app
    from xmed.review.session import load_session
    from xmed.review.synthetic import synthetic_session

    marker, hostile = trap
    folder = tmp_path / "session"
    synthetic_session(folder)
    path = folder / "session.json"
    session = json.loads(path.read_text())
    payload = hostile["file write"]
    {"top": lambda: session.update(hook=payload), "model": lambda: session["model"].update(hook=payload),
     "case": lambda: session["cases"][0].update(hook=payload),
     "panel list": lambda: next(iter(session["cases"][0]["panels"].values())).update(extra=[0, payload])}[place]()
    path.write_text(json.dumps(session))
    for read in (load_session, create_app):
        with pytest.raises(UnsafeConfigError, match=r"_target_' names 'builtins\.open'") as caught:
            read(folder)
        assert str(path) in str(caught.value)
    assert not ran(marker)
    assert not (folder / "ratings.sqlite").exists()


@pytest.mark.parametrize("text, reason", [("[" * 200_000 + "]" * 200_000, "nested too deeply"),
                                          ('{"format": "xmed.FundusClassifier/1", "model": {"input_size": 1' + "0" * 5000 + "}}",
                                           "holds an integer of 5001 digits"),
                                          ('{"format": NaN}', "NaN is not a JSON number"),
                                          ('{"format": "\\ud800"}', "lone surrogate")])
def test_a_model_config_that_is_no_json_is_named(model_dir, tmp_path, text, reason):
    folder = hostile_model(model_dir, tmp_path, lambda m: None)
    (folder / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=f"config.json: not valid JSON: .*{reason}"):
        load_model(folder)
