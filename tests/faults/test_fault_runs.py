"""Runs and data sets are never silently mixed: a folder holding an earlier run is refused unless the
user resumes or overwrites it, files are written whole or not at all, ``last.ckpt`` follows every
epoch, a resumed run keeps its history, each eye's outputs have their own file name, and each job of
a sweep has its own folder.
"""

from __future__ import annotations

import csv
import json
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xmed.errors import ConfigError

from helpers.commands import compose, tiny_overrides

BIN = Path(sys.executable).parent


def train_overrides(out: Path, *extra: str, epochs: int = 2) -> list[str]:
    """The tiny run, with the CSV history, and a best-checkpoint rule that never improves after epoch 0
    (``epoch``, minimised): only an every-epoch ``last.ckpt`` can follow the later epochs."""
    overrides = [o for o in tiny_overrides(out, epochs=epochs) if o != "logger=none"]
    return [*overrides, "logger=csv", "callbacks.model_checkpoint.monitor=epoch",
            "callbacks.model_checkpoint.mode=min", "callbacks.progress_bar.refresh_rate=0", *extra]


def train(out: Path, *extra: str, epochs: int = 2):
    from xmed.pipeline.training import train as run_train

    return run_train(compose("train", train_overrides(out, *extra, epochs=epochs)))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Path:
    """A finished two-epoch run; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("runs") / "first"
    train(out)
    return out


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


# ---------------------------------------------------------------- refusing a folder that holds a run
def test_a_run_is_not_started_in_a_folder_holding_another(first_run):
    before = snapshot(first_run)
    with pytest.raises(ConfigError) as err:
        train(first_run)
    assert err.value.key == "paths.output_dir"
    assert str(first_run) in str(err.value) and "overwrite=true" in str(err.value)
    assert "checkpoints" in str(err.value) and "model" in str(err.value)
    assert snapshot(first_run) == before


@pytest.mark.parametrize("command, extra", [
    pytest.param("eval", ["ckpt_path=unused"], id="eval-into-earlier-run"),
    pytest.param("explain", ["ckpt_path=unused"], id="explain-into-earlier-run"),
])
def test_eval_and_explain_refuse_an_earlier_run_folder(first_run, tmp_path, command, extra):
    from xmed.pipeline.evaluation import evaluate
    from xmed.pipeline.explanation import explain_run

    earlier = copy_run(first_run, tmp_path / "earlier")
    before = snapshot(earlier)
    cfg = compose(command, ["data=phantom_render", f"paths.output_dir={earlier}", *extra])
    with pytest.raises(ConfigError, match="already holds a run") as err:
        (evaluate if command == "eval" else explain_run)(cfg)
    assert err.value.key == "paths.output_dir"
    assert snapshot(earlier) == before


@pytest.mark.parametrize("content, reason", [
    pytest.param("notes.txt", "does not look like an xmed output folder", id="overwrite-a-folder-xmed-did-not-write"),
    pytest.param(None, "is a file, not a folder", id="output-dir-is-a-file"),
])
def test_overwrite_never_deletes_what_xmed_did_not_write(tmp_path, content, reason):
    from xmed.runs import claim_run_folder

    target = tmp_path / "mine"
    if content:
        target.mkdir()
        (target / content).write_text("keep me")
    else:
        target.write_text("a file")
    with pytest.raises(ConfigError, match=reason):
        claim_run_folder(target, overwrite=True)
    assert (target / content).read_text() == "keep me" if content else target.read_text() == "a file"


@pytest.mark.parametrize("value", ["maybe", "yes", 1], ids=["overwrite=maybe", "overwrite=yes", "overwrite=1"])
def test_overwrite_must_be_true_or_false(first_run, tmp_path, value):
    earlier = copy_run(first_run, tmp_path / "earlier")
    before = snapshot(earlier)
    with pytest.raises(ConfigError, match="expected true or false") as err:
        train(earlier, f"overwrite={value}")
    assert err.value.key == "overwrite" and snapshot(earlier) == before


def test_a_folder_with_only_the_launchers_files_is_free(tmp_path):
    """What a run that failed on its config leaves (Hydra's .hydra/ and log file) does not block the rerun."""
    from xmed.runs import claim_run_folder

    failed = tmp_path / "failed"
    (failed / ".hydra").mkdir(parents=True)
    (failed / "train.log").write_text("error: config key 'data.dataset': unknown data set")
    assert claim_run_folder(failed) == failed
    assert list(failed.iterdir()) == []   # the new run's config and log are its own


def test_overwrite_replaces_the_earlier_run_entirely(first_run, tmp_path):
    earlier = copy_run(first_run, tmp_path / "earlier")
    stale = earlier / "checkpoints" / "epoch_099.ckpt"
    stale.write_bytes(b"from an older run")
    (earlier / "plots" / "old_plot.png").write_bytes(b"old")
    (earlier / "train.log").write_text("the earlier run's log\n")
    train(earlier, "overwrite=true", epochs=1)
    assert not stale.exists() and not (earlier / "plots" / "old_plot.png").exists()
    assert not (earlier / "train.log").exists()
    assert sorted(p.name for p in (earlier / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    assert torch.load(earlier / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


# ---------------------------------------------------------------- checkpoints and history
def test_last_checkpoint_follows_every_epoch(first_run):
    """The best-checkpoint rule saved epoch 0 only; last.ckpt still holds the final epoch."""
    names = sorted(p.name for p in (first_run / "checkpoints").iterdir())
    assert names == ["epoch_000.ckpt", "last.ckpt"]  # no last-v1, no leftover .part
    last = torch.load(first_run / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(first_run / "checkpoints" / "epoch_000.ckpt", weights_only=True)
    assert (last["epoch"], best["epoch"]) == (1, 0)
    assert last["global_step"] == 2 * best["global_step"]


def test_resuming_in_the_run_folder_appends_to_its_history(first_run, tmp_path):
    run = copy_run(first_run, tmp_path / "resumed")
    before = metric_rows(run)
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    with open(run / "csv" / "metrics.csv", "a", newline="") as fh:  # logged after the checkpoint, then killed
        csv.writer(fh).writerow([""] * (len(before[0]) - 1) + [str(step + 5)])
    train(run, "ckpt_path=last", epochs=3)
    after = metric_rows(run)
    assert after[:len(before)] == before                      # the history up to the checkpoint is kept
    assert all(float(r["step"]) != step + 5 for r in after)   # the lost part after it is dropped
    epochs = sorted({int(float(r["epoch"])) for r in after if r.get("epoch")})
    assert epochs == [0, 1, 2]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("setup, key, message", [
    pytest.param("empty", "ckpt_path", "does not exist", id="ckpt-last-without-a-last-checkpoint"),
    pytest.param("other-run", "paths.output_dir", "already holds a run",
                 id="resume-another-runs-checkpoint-into-a-third-run"),
])
def test_resume_mistakes_are_refused(first_run, tmp_path, setup, key, message):
    out = tmp_path / "out"
    extra = ["ckpt_path=last"]
    if setup == "other-run":
        copy_run(first_run, out)
        (out / "checkpoints" / "last.ckpt").unlink()
        other = copy_run(first_run, tmp_path / "other")
        extra = [f"ckpt_path={other / 'checkpoints' / 'last.ckpt'}"]
    with pytest.raises(ConfigError, match=message) as err:
        train(out, *extra)
    assert err.value.key == key


# ---------------------------------------------------------------- whole files or none
def test_a_failed_export_leaves_the_earlier_model_untouched(first_run, tmp_path, monkeypatch):
    import safetensors.torch

    from xmed.models.export import export_model, load_model

    folder = copy_run(first_run / "model", tmp_path / "model")
    before = snapshot(folder)
    model = load_model(folder)

    def fail_half_way(state, path, metadata=None):
        Path(path).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", fail_half_way)
    with pytest.raises(OSError, match="No space left"):
        export_model(model, folder)
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]   # no staged leftovers


def test_a_failed_text_write_keeps_the_old_file(tmp_path, monkeypatch):
    from xmed.runs import write_text_atomic

    target = tmp_path / "metrics.json"
    target.write_text('{"auroc": 0.9}')
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        write_text_atomic(target, '{"auroc": 0.1}')
    assert target.read_text() == '{"auroc": 0.9}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


# ---------------------------------------------------------------- phantom data sets
def phantom_state(root: Path) -> tuple[list[str], list[str], list[str]]:
    """(ids in labels.csv, image stems, mask folders)"""
    with open(root / "labels.csv", newline="") as fh:
        ids = [row["id"] for row in csv.DictReader(fh)]
    return ids, sorted(p.stem for p in (root / "images").iterdir()), sorted(p.name for p in (root / "masks").iterdir())


def test_a_phantom_is_not_written_over_another(tmp_path):
    from xmed.data.phantom.writer import write_phantom_dataset

    root = tmp_path / "phantom"
    write_phantom_dataset(root, n=6, size=32, seed=1, workers=1, progress=False)
    before = snapshot(root)
    with pytest.raises(ConfigError, match="already holds a data set") as err:
        write_phantom_dataset(root, n=4, size=32, seed=2, workers=1, progress=False)
    assert err.value.key == "out" and snapshot(root) == before


def test_overwriting_a_phantom_leaves_no_stale_image_or_mask(tmp_path):
    from xmed.data.phantom.writer import write_phantom_dataset

    root = tmp_path / "phantom"
    write_phantom_dataset(root, n=6, size=32, seed=1, workers=1, progress=False)
    write_phantom_dataset(root, n=4, size=32, seed=2, workers=1, progress=False, overwrite=True)
    ids, images, masks = phantom_state(root)
    assert ids == images == masks == [f"phantom_{i:06d}" for i in range(4)]


def test_a_phantom_killed_part_way_leaves_the_earlier_set_whole(tmp_path, monkeypatch):
    from xmed.data.phantom import writer

    root = tmp_path / "phantom"
    writer.write_phantom_dataset(root, n=6, size=32, seed=1, workers=1, progress=False)
    before = snapshot(root)
    real, calls = writer._render_and_write, []

    def dies_at_the_third(job):
        calls.append(job.index)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(writer, "_render_and_write", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        writer.write_phantom_dataset(root, n=6, size=32, seed=9, workers=1, progress=False, overwrite=True)
    # overwrite empties the folder first; the new set never replaced it, and nothing half-written is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom"]
    assert snapshot(root) == {} or snapshot(root) == before


def test_the_data_command_refuses_and_overwrites(tmp_path):
    root = tmp_path / "phantom"
    command = [str(BIN / "xmed-data"), "phantom", "--out", str(root), "--n", "4", "--size", "32", "--workers", "1",
               "--quiet"]
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode != 0 and "already holds a data set" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert subprocess.run([*command, "--overwrite"], capture_output=True, text=True).returncode == 0


# ---------------------------------------------------------------- one file per eye
@pytest.mark.parametrize("ids", [
    pytest.param(["images/a_b", "images/a/b"], id="slash-versus-underscore"),
    pytest.param(["a b", "a_b", "a?b"], id="space-question-mark-underscore"),
    pytest.param([".", "..", "_"], id="dot-names"),
    pytest.param(["x" * 300, "x" * 301], id="ids-longer-than-a-file-name"),
    pytest.param(["g1", "g1-0123456789"], id="plain-id-shaped-like-a-hashed-one"),
])
def test_each_eye_has_its_own_file_name(ids):
    from xmed.runs import eye_file_stem

    stems = [eye_file_stem(i) for i in ids]
    assert len(set(stems)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,131}", s) and s.strip(".") for s in stems)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=40), min_size=2, max_size=6, unique=True))
def test_distinct_ids_never_share_a_file_name(ids):
    from xmed.runs import eye_file_stem

    assert len({eye_file_stem(i) for i in ids}) == len(ids)


# ---------------------------------------------------------------- the commands themselves (Hydra)
def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=600)


def test_the_train_command_refuses_before_hydra_writes_anything(first_run, tmp_path):
    earlier = copy_run(first_run, tmp_path / "earlier")
    (earlier / ".hydra").mkdir()
    (earlier / ".hydra" / "config.yaml").write_text("the earlier run's config\n")
    before = snapshot(earlier)
    result = run_command("xmed-train", *train_overrides(earlier))
    assert result.returncode == 1
    assert f"error: config key 'paths.output_dir': {earlier} already holds a run" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(earlier) == before   # the earlier .hydra/config.yaml is still the earlier one


def test_each_job_of_a_sweep_has_its_own_folder(tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [o for o in train_overrides(sweep, epochs=1) if not o.startswith("paths.output_dir")]
    result = run_command("xmed-train", "-m", "model.lr=1e-3,3e-3", f"paths.output_dir={sweep}", *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job, lr in (("0", "0.001"), ("1", "0.003")):
        folder = sweep / job
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
        assert len(metric_rows(folder)) >= 1
        card = (folder / "model_card.md").read_text()
        digest = re.search(r"`checkpoints/(epoch_000\.ckpt)` sha256 `([0-9a-f]{64})`", card)
        assert digest and digest.group(2) == hashlib.sha256((folder / "checkpoints" / digest.group(1)).read_bytes()
                                                            ).hexdigest()
        assert f"lr: {lr}" in (folder / ".hydra" / "config.yaml").read_text()
    with open(sweep / "summary.csv", newline="") as fh:
        summary = list(csv.DictReader(fh))
    assert [(r["job"], r["model.lr"]) for r in summary] == [("0", "0.001"), ("1", "0.003")]   # only what was swept
    for row in summary:
        auroc = json.loads((sweep / row["job"] / "metrics.json").read_text())["auroc"]
        assert row["auroc"] == ("" if auroc is None else f"{auroc:.4f}")
    assert (sweep / "summary.md").read_text().startswith("| job | model.lr | auroc |")


def test_a_sweep_summary_lists_what_differs_and_the_figures(tmp_path):
    from xmed.cli.rundir import write_sweep_summary

    for job, (lr, auroc) in enumerate([("1e-3", 0.81), ("3e-3", 0.7712345)]):
        folder = tmp_path / str(job)
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- model=resnet18\n- model.lr={lr}\n")
        (folder / "metrics.json").write_text(json.dumps({"auroc": auroc, "vcdr_mae": None, "n": 40}))
    (tmp_path / "not_a_job").mkdir()
    assert write_sweep_summary(tmp_path) == tmp_path / "summary.md"
    assert (tmp_path / "summary.md").read_text().splitlines() == [
        "| job | model.lr | auroc | n |", "|---|---|---|---|", "| 0 | 1e-3 | 0.8100 | 40 |", "| 1 | 3e-3 | 0.7712 | 40 |"]
    assert write_sweep_summary(tmp_path / "not_a_job") is None


def test_a_run_that_failed_on_its_config_leaves_only_its_log_and_is_rerun_cleanly(tmp_path):
    out = tmp_path / "run"
    failed = run_command("xmed-train", *train_overrides(out, "data.dataset=no_such_set", epochs=1))
    assert failed.returncode == 1 and "error: config key 'data.dataset'" in failed.stderr
    assert sorted(p.name for p in out.iterdir()) == [".hydra", "train.log"]   # no empty csv/ or checkpoints/
    assert "unknown data set 'no_such_set'" in (out / "train.log").read_text()
    rerun = run_command("xmed-train", *train_overrides(out, epochs=1))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    log = (out / "train.log").read_text()
    assert "no_such_set" not in log and "precision" in log
    assert "no_such_set" not in (out / ".hydra" / "overrides.yaml").read_text()
