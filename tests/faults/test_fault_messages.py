"""Every command's front door: a mistake a user types, or a broken model folder a user was handed,
gives one clear line naming the key, argument or file at fault — never a traceback.

The Hydra commands (``xmed-train``, ``xmed-eval``, ``xmed-explain``) are run as console scripts for a
few cases (exit status, the one ``error:`` line, the run's log file, a sweep); the rest call each
command's ``main`` in-process on composed configs (Hydra hands ``main`` a given config straight
to the task function, through the same front door).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import xmed.cli.data
from xmed.cli.config_rules import CONFIG_RULES, check_config
from xmed.cli.entry import command
from xmed.errors import CheckpointError, ConfigError, SecurityWarning

from helpers.commands import PUBLISHED, compose

SCRIPTS = Path(sys.executable).parent
COMMAND_MODULES = {"train": "xmed.cli.train", "eval": "xmed.cli.eval", "explain": "xmed.cli.explain",
                   "predict": "xmed.cli.predict"}


@pytest.fixture(autouse=True)
def compact_errors(monkeypatch):
    """The default error display, whatever the shell running the tests asks for."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)


def needs(config: str) -> list[str]:
    """Overrides every run of ``config`` needs besides the case's own."""
    return {"eval": ["ckpt_path=/no/model"], "explain": ["ckpt_path=/no/model"],
            "predict": ["ckpt_path=/no/model", "input=/no/folder"]}.get(config, [])


def run_main(config: str, overrides: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of the command's ``main`` on a composed config."""
    main = importlib.import_module(COMMAND_MODULES[config]).main
    cfg = compose(config, overrides)
    with pytest.raises(SystemExit) as exited:
        main(cfg)
    return exited.value.code, capsys.readouterr().err


# ------------------------------------------------------------------------ values typed on the command line
BAD_VALUES = [
    pytest.param("train", "data.batch_size=abc", "data.batch_size", "expected an integer ≥ 1, got 'abc'",
                 id="batch-size-not-a-number"),
    pytest.param("train", "data.batch_size=true", "data.batch_size", "expected an integer ≥ 1, got True",
                 id="batch-size-a-bool"),
    pytest.param("train", "data.image_size=sixty", "data.image_size", "expected an integer ≥ 16, got 'sixty'",
                 id="image-size-in-words"),
    pytest.param("train", "data.num_workers=many", "data.num_workers", "expected an integer ≥ 0 or auto, got 'many'",
                 id="num-workers-neither-number-nor-auto"),
    pytest.param("train", "model.lr=abc", "model.lr", "expected a number > 0, got 'abc'", id="lr-not-a-number"),
    pytest.param("train", "model.lr=0", "model.lr", "expected a number > 0, got 0", id="lr-zero"),
    pytest.param("train", "model.weight_decay=-0.1", "model.weight_decay", "expected a number ≥ 0, got -0.1",
                 id="weight-decay-negative"),
    pytest.param("train", "model.loss_weights.vcdr=-1", "model.loss_weights.vcdr", "expected a number ≥ 0, got -1",
                 id="loss-weight-negative"),
    pytest.param("train", "trainer.max_epochs=2.5", "trainer.max_epochs", "expected an integer ≥ 1, got 2.5",
                 id="max-epochs-fractional"),
    pytest.param("train", "seed=one", "seed", "expected an integer, got 'one'", id="seed-in-words"),
    pytest.param("train", "test=no", "test", "expected true or false, got 'no'", id="switch-not-a-bool"),
    pytest.param("eval", "threshold_rule=best", "threshold_rule", "expected one of youden, spec95, got 'best'",
                 id="threshold-rule-unknown"),
    pytest.param("eval", "n_bootstrap=-1", "n_bootstrap", "expected an integer ≥ 0, got -1", id="bootstrap-negative"),
    pytest.param("explain", "split=validation", "split", "expected one of train, val, test, got 'validation'",
                 id="explain-split-unknown"),
    pytest.param("explain", "label=2", "label", "expected one of null, 0, 1, got 2", id="explain-label-not-0-or-1"),
    pytest.param("explain", "faithfulness.baseline=noise", "faithfulness.baseline",
                 "expected one of zero, black, mean, blur, got 'noise'", id="explain-baseline-unknown"),
    pytest.param("explain", "explainer=latent_shift", "explainer.latent_shift.autoencoder",
                 "has no value; give it on the command line, e.g. explainer.latent_shift.autoencoder=…",
                 id="required-value-left-unset"),
]


@pytest.mark.parametrize("config, override, key, reason", BAD_VALUES)
def test_a_bad_value_names_its_key_before_anything_loads(config, override, key, reason, capsys):
    code, err = run_main(config, [*needs(config), override], capsys)
    assert code == 1
    assert err == f"error: config key {key!r}: {reason}\n"


DEVICES = [
    pytest.param("eval", "trainer=gpu", False, "trainer.accelerator",
                 "CUDA was asked for but torch sees no GPU (torch.cuda.is_available() is False); use trainer=cpu",
                 id="eval-gpu-trainer-without-gpu"),
    pytest.param("predict", "trainer=ddp", False, "trainer.accelerator",
                 "CUDA was asked for but torch sees no GPU (torch.cuda.is_available() is False); use trainer=cpu",
                 id="predict-ddp-trainer-without-gpu"),
    pytest.param("train", "trainer=gpu", False, "trainer.accelerator",
                 "CUDA was asked for but torch sees no GPU (torch.cuda.is_available() is False); use trainer=cpu",
                 id="train-gpu-trainer-without-gpu"),
    pytest.param("explain", "trainer.accelerator=cuda", False, "trainer.accelerator",
                 "CUDA was asked for but torch sees no GPU (torch.cuda.is_available() is False); use trainer=cpu",
                 id="explain-cuda-accelerator-without-gpu"),
]


@pytest.mark.parametrize("config, override, has_gpu, key, reason", DEVICES)
def test_a_device_the_machine_lacks_is_named_before_anything_loads(config, override, has_gpu, key, reason, capsys,
                                                                   monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_gpu)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(has_gpu))
    code, err = run_main(config, [*needs(config), override], capsys)
    assert (code, err) == (1, f"error: config key {key!r}: {reason}\n")


def test_every_shipped_config_passes_the_checks():
    from xmed.cli.common import CONFIG_DIR

    experiments = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
    assert "phantom_smoke" in experiments
    for name in experiments:   # the published data sets' experiment with each of its data sets
        for data in (PUBLISHED if name == "public" else [None]):
            check_config(compose("train", [f"experiment={name}", *([f"data={data}"] if data else [])]))
    check_config(compose("train", ["task=autoencoder"]))
    check_config(compose("eval", needs("eval")))
    for explainer in ("all", "adversarial", "rationale", "latent_shift"):
        extra = [f"explainer.{explainer}.autoencoder=/ae"] if explainer == "latent_shift" else []
        check_config(compose("explain", [*needs("explain"), f"explainer={explainer}", *extra]))
    assert "model.lr" in CONFIG_RULES and "data.batch_size" in CONFIG_RULES


# ------------------------------------------------------------------------------ the error path itself
def test_an_unexpected_exception_keeps_its_traceback(capsys):
    @command
    def task(cfg):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        task(compose("eval", needs("eval")))
    assert capsys.readouterr().err == ""


def test_hydra_full_error_shows_the_traceback_of_xmed_errors_too(capsys, monkeypatch, caplog):
    @command
    def task(cfg):
        raise ConfigError("n", "no eyes to explain")

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError) as err:
        task(compose("eval", needs("eval")))
    assert err.value.key == "n"
    assert capsys.readouterr().err == "error: config key 'n': no eyes to explain\n"
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("xmed.cli.entry", "ERROR", "config key 'n': no eyes to explain")]


@pytest.fixture(scope="module")
def console_runs(tmp_path_factory):
    """The console scripts, started together: {case: (folder, exit status, stdout, stderr)}."""
    root = tmp_path_factory.mktemp("console")
    commands = {
        "train-bad-value": ["xmed-train", "model.lr=abc"],
        "eval-model-not-found": ["xmed-eval", f"ckpt_path={root / 'nowhere'}"],
        "explain-ckpt-path-unset": ["xmed-explain"],
        "eval-sweep": ["xmed-eval", "-m", "ckpt_path=/no/model", "data.batch_size=abc,0",
                       f"hydra.sweep.dir={root / 'eval-sweep'}"],
    }
    started = {}
    for case, (script, *overrides) in commands.items():
        folder = root / case
        started[case] = folder, subprocess.Popen(
            [str(SCRIPTS / script), *overrides, f"paths.output_dir={folder}"], cwd=root, text=True,
            env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = {}
    for case, (folder, process) in started.items():
        stdout, stderr = process.communicate(timeout=300)
        runs[case] = folder, process.returncode, stdout, stderr
    return runs


CONSOLE = [
    pytest.param("train-bad-value", "train.log", "config key 'model.lr': expected a number > 0, got 'abc'",
                 id="xmed-train-bad-value"),
    pytest.param("eval-model-not-found", "eval.log", "cannot load model {root}/nowhere: no such file or folder",
                 id="xmed-eval-model-not-found"),
    pytest.param("explain-ckpt-path-unset", "explain.log",
                 "config key 'ckpt_path': has no value; give it on the command line, e.g. ckpt_path=…",
                 id="xmed-explain-ckpt-path-unset"),
]


@pytest.mark.parametrize("case, log_name, message", CONSOLE)
def test_a_console_script_prints_one_line_logs_it_and_exits_1(console_runs, case, log_name, message):
    folder, code, stdout, stderr = console_runs[case]
    message = message.format(root=folder.parent)
    assert code == 1, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stdout + stderr and "HYDRA_FULL_ERROR" not in stderr  # not Hydra's report
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [f"error: {message}"]
    assert (folder / log_name).read_text().strip().endswith(f"[xmed.cli.entry][ERROR] - {message}")


def test_a_sweep_reports_each_failed_job_and_exits_1(console_runs):
    folder, code, stdout, stderr = console_runs["eval-sweep"]
    assert code == 1, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stdout + stderr
    job_errors = ["config key 'data.batch_size': expected an integer ≥ 1, got 'abc'",
                  "config key 'data.batch_size': expected an integer ≥ 1, got 0"]
    for job, message in enumerate(job_errors):  # each job's own log holds its own error
        assert (folder / str(job) / "eval.log").read_text().strip().endswith(f"[ERROR] - {message}")
    # each job as it failed, then Hydra's summary naming the first failed job's overrides
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        f"error: {job_errors[0]}", f"error: {job_errors[1]}", f"error: {job_errors[0]}"]
    assert "Error executing job with overrides: ['ckpt_path=/no/model', 'data.batch_size=abc'" in stderr


# --------------------------------------------------------------------------------------- xmed-data
DATA_ARGUMENTS = [
    pytest.param(["inspect", "--dataset", "phantom_render", "--options", "{bad"],
                 "argument --options: not valid JSON (Expecting property name enclosed in double quotes at line 1, "
                 "column 2): '{bad'", id="options-bad-json"),
    pytest.param(["inspect", "--dataset", "phantom_render", "--options", "[1]"],
                 "argument --options: expected a JSON object such as '{\"split\": \"test\"}', got '[1]'",
                 id="options-not-an-object"),
    pytest.param(["inspect", "--dataset", "refugee", "--root", "."],
                 "argument --dataset: unknown data set 'refugee'; known: phantom, phantom_render,",
                 id="dataset-unknown"),
    pytest.param(["inspect", "--dataset", "refuge"],
                 "argument --root: data set 'refuge' is read from a folder; give its path", id="root-missing"),
    pytest.param(["inspect", "--dataset", "refuge", "--root", ".", "--options", '{"bogus": 1}'],
                 "argument --options: option 'bogus' of data set 'refuge': ", id="option-the-data-set-lacks"),
    pytest.param(["phantom", "--out", "{tmp}/p", "--n", "0"], "argument --n: must be at least 1, got 0",
                 id="phantom-no-eyes"),
    pytest.param(["sheet", "--out", "{tmp}/s.png", "--columns", "0"],
                 "argument --columns: expected an integer ≥ 1, got '0'", id="sheet-zero-columns"),
]


@pytest.mark.parametrize("argv, message", DATA_ARGUMENTS)
def test_xmed_data_names_the_argument(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = xmed.cli.data.main(argv)
    except SystemExit as exited:  # argparse's own checks
        code = exited.code
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.split(": error: ", 1)[1].startswith(message), last


def test_an_unknown_data_set_names_the_data_dataset_key():
    from xmed.data.datasets import get_dataset

    with pytest.raises(ConfigError) as err:
        get_dataset("refugee", ".")
    assert err.value.key == "data.dataset" and "unknown data set 'refugee'" in err.value.reason


# ------------------------------------------------------------------------- a model folder's config.json
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from xmed.models import FundusClassifier, export_model

    return export_model(FundusClassifier("test_resnet.r160_in1k", input_size=32), tmp_path_factory.mktemp("m") / "m")


def without_backbone(config):
    del config["model"]["backbone"]


BROKEN_CONFIGS = [
    pytest.param(without_backbone, "not an xmed model config: missing key 'backbone'", id="missing-key"),
    pytest.param(lambda c: c["model"].update(colour="red"), "not an xmed model config: unknown key 'colour' (known: "
                 "backbone, mode, input_size, drop_rate, data_config, backbone_kwargs, mask_head, findings, threshold, "
                 "feature_check)",
                 id="unknown-key"),
    pytest.param(lambda c: c.update(model=["resnet18"]), "not an xmed model config: a list, not a mapping of settings",
                 id="model-not-a-mapping"),
    pytest.param(lambda c: c["model"].update(input_size="large"),
                 "bad model config: invalid literal for int() with base 10: 'large'", id="value-of-the-wrong-type"),
]


@pytest.mark.parametrize("damage, reason", BROKEN_CONFIGS)
def test_a_broken_config_json_names_the_file_and_the_key(exported, damage, reason, tmp_path):
    from xmed.models import load_model

    folder = shutil.copytree(exported, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    damage(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_model(folder)
    assert (err.value.path, err.value.reason) == (str(folder / "config.json"), reason)


def test_a_lightning_checkpoint_without_backbone_names_the_checkpoint(tmp_path):
    from xmed.models import load_model

    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"net_config": {"mode": "multitask"}}}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert (err.value.path, err.value.reason) == (str(path), "not an xmed model config: missing key 'backbone'")


def test_an_autoencoder_config_without_channels_names_the_file(tmp_path):
    from xmed.models.autoencoder import FundusAutoencoder, export_autoencoder, load_autoencoder

    folder = export_autoencoder(FundusAutoencoder(input_size=32, channels=[4, 8], latent_channels=2), tmp_path / "ae")
    config = json.loads((folder / "config.json").read_text())
    del config["model"]["channels"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_autoencoder(folder)
    assert (err.value.path, err.value.reason) == (str(folder / "config.json"),
                                                  "not an xmed autoencoder config: missing key 'channels'")


# ------------------------------------------------------------------------------------ the DICOM salt
def test_the_public_dicom_salt_warns_once_per_process_and_a_site_salt_not_at_all(monkeypatch, caplog):
    from xmed.data import io

    monkeypatch.delenv(io.DICOM_SALT_ENV, raising=False)
    monkeypatch.setattr(io, "_public_salt_warned", False)
    with pytest.warns(SecurityWarning) as caught:
        io.dicom_pseudonym("1.2.3")
        io.dicom_pseudonym("1.2.4", salt=io.DEFAULT_DICOM_SALT)
    assert len(caught) == 1 and "set the environment variable XMED_DICOM_SALT" in str(caught[0].message)
    assert [(r.name, r.levelname) for r in caplog.records if "XMED_DICOM_SALT" in r.getMessage()] == [
        ("xmed.data.io", "WARNING")]

    monkeypatch.setattr(io, "_public_salt_warned", False)
    monkeypatch.setenv(io.DICOM_SALT_ENV, "site-secret")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SecurityWarning)
        io.dicom_pseudonym("1.2.3")
