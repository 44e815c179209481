"""Writing the phantom to disk, `xmed-data`, the data module and the Hydra data configs."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from xmed.cli.data import main as xmed_data
from xmed.data import render_phantom
from xmed.data.datamodule import FundusDataModule, split_indices
from xmed.data.datasets import DATASETS, FundusDataset, SkippedSample, dataset_class, get_dataset
from xmed.data.phantom.writer import LABEL_COLUMNS, write_phantom_dataset
from xmed.errors import ConfigError, DatasetError
from xmed.findings import FINDINGS

from xmed.cli.common import CONFIG_DIR as CONFIGS  # the configs the installed package reads


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    assert xmed_data(["phantom", "--out", str(out), "--n", "24", "--size", "64", "--seed", "3",
                      "--shortcut", "--workers", "2", "--quiet"]) == 0
    return out


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_phantom_layout_and_parameters(phantom_dir, capsys):
    rows = read_rows(phantom_dir / "labels.csv")
    assert len(rows) == 24 and list(rows[0]) == LABEL_COLUMNS
    params = json.loads((phantom_dir / "phantom.json").read_text())
    assert params["n"] == 24 and params["size"] == 64 and params["seed"] == 3
    assert params["options"]["shortcut"] == 0.9 and params["shortcut_in_splits"] == ["train"]
    assert params["n_positive"] == sum(int(r["label"]) for r in rows)
    assert sorted(params["split_counts"]) == ["test", "train", "val"]
    for row in rows:
        eye = render_phantom(int(row["seed"]), 64)        # every row can be re-rendered from its seed
        assert int(row["label"]) == eye.label and row["eye"] == eye.eye
        assert [int(row[c]) for c in FINDINGS] == [eye.findings[c] for c in FINDINGS]
        assert (phantom_dir / row["image"]).is_file()
        masks = {p.stem for p in (phantom_dir / "masks" / row["id"]).glob("*.png")}
        assert {"disc", "cup", "fov"} <= masks
        assert {c for c in FINDINGS if eye.findings[c]} == masks & set(FINDINGS)
    # pixels on disk equal the in-memory render (PNG is lossless)
    first = rows[0]
    ds = get_dataset("phantom", phantom_dir)
    sample = ds[0]
    expected = render_phantom(int(first["seed"]), 64, shortcut=0.9 if first["split"] == "train" else 0.0).image
    np.testing.assert_allclose(sample["image"].permute(1, 2, 0).numpy() * 255, expected, atol=1e-3)


def test_same_seed_gives_identical_files_for_any_worker_count(tmp_path):
    a = write_phantom_dataset(tmp_path / "a", n=10, size=48, seed=5, workers=1, progress=False)
    b = write_phantom_dataset(tmp_path / "b", n=10, size=48, seed=5, workers=2, progress=False)
    assert (tmp_path / "a/labels.csv").read_bytes() == (tmp_path / "b/labels.csv").read_bytes()
    for image in sorted((tmp_path / "a/images").iterdir()):
        assert image.read_bytes() == (tmp_path / "b/images" / image.name).read_bytes()
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    c = write_phantom_dataset(tmp_path / "c", n=10, size=48, seed=6, workers=1, progress=False)
    assert (tmp_path / "a/labels.csv").read_bytes() != (tmp_path / "c/labels.csv").read_bytes()
    assert c["seed"] == 6


def test_inspect_json_counts(phantom_dir, capsys):
    assert xmed_data(["inspect", "--dataset", "phantom", "--root", str(phantom_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = read_rows(phantom_dir / "labels.csv")
    assert report["n_images"] == 24
    assert report["n_positive"] == sum(int(r["label"]) for r in rows)
    for code in FINDINGS:
        assert report["findings"][code] == {"positive": sum(int(r[code]) for r in rows), "unknown": 0}
    assert report["eyes"]["OD"] + report["eyes"]["OS"] == 24
    assert report["skipped"] == []


def test_inspect_lists_unreadable_and_missing_files(phantom_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    write_phantom_dataset(broken, n=6, size=48, seed=1, workers=1, progress=False)
    rows = read_rows(broken / "labels.csv")
    (broken / rows[0]["image"]).write_bytes(b"")                       # zero-byte image
    (broken / rows[1]["image"]).unlink()                               # listed but missing
    assert xmed_data(["inspect", "--dataset", "phantom", "--root", str(broken), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_images"] == 4
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert "zero-byte" in reasons[Path(rows[0]["image"]).name]
    assert "missing" in reasons[Path(rows[1]["image"]).name]
    assert xmed_data(["inspect", "--dataset", "phantom", "--root", str(broken)]) == 0
    text = capsys.readouterr().out
    assert "skipped     2" in text and rows[1]["image"].split("/")[-1] in text


def test_inspect_missing_root_names_it(tmp_path, capsys):
    assert xmed_data(["inspect", "--dataset", "phantom", "--root", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err


def test_missing_label_column_names_column_and_file(phantom_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "phantom.json").write_text((phantom_dir / "phantom.json").read_text())
    text = (phantom_dir / "labels.csv").read_text().replace("vcdr", "cdr", 1)
    (copy / "labels.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"'vcdr'.*") as err:
        get_dataset("phantom", copy)
    assert "labels.csv" in str(err.value)


def test_split_indices_keep_patients_together_and_stratify():
    rng = np.random.default_rng(0)
    patients = [f"p{i // 2}" for i in range(400)]                      # two eyes per patient
    labels = [float(rng.random() < 0.3) for _ in range(200) for _ in range(2)]
    parts = split_indices(labels, patients, (0.6, 0.2, 0.2), seed=1)
    assert sorted(i for p in parts.values() for i in p) == list(range(400))
    owner = {}
    for name, idx in parts.items():
        for i in idx:
            assert owner.setdefault(patients[i], name) == name        # no patient in two splits
    rates = [np.mean([labels[i] for i in parts[s]]) for s in ("train", "val", "test")]
    assert max(rates) - min(rates) < 0.05
    assert abs(len(parts["train"]) / 400 - 0.6) < 0.03
    assert parts == split_indices(labels, patients, (0.6, 0.2, 0.2), seed=1)
    assert parts != split_indices(labels, patients, (0.6, 0.2, 0.2), seed=2)
    with pytest.raises(ConfigError, match="data.splits"):
        split_indices(labels, patients, (0.6, 0.6, 0.2), seed=1)


def test_datamodule_follows_published_splits_and_batches(phantom_dir):
    dm = FundusDataModule(dataset="phantom", root=str(phantom_dir), image_size=32, batch_size=4,
                          preprocess={"crop_fov": False})
    dm.setup()
    rows = read_rows(phantom_dir / "labels.csv")
    for split, view in dm.splits.items():
        assert sorted(dm.base.records[i].id for i in view.indices) == sorted(r["id"] for r in rows if r["split"] == split)
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["findings"].shape == (4, len(FINDINGS)) and batch["skipped"] == []
    assert all(batch["mask_valid"][c].all() for c in FINDINGS)      # phantom: absent = known empty
    # eval transform: the de-normalised image is the source image, resized (channel means kept)
    mean, std = torch.tensor(dm.mean)[:, None, None], torch.tensor(dm.std)[:, None, None]
    restored = batch["image"][0] * std + mean
    source = dm.base.get(dm.splits["val"].indices[0])["image"]
    torch.testing.assert_close(restored.mean((1, 2)), source.mean((1, 2)), atol=0.01, rtol=0)


def test_datamodule_training_log_reports_skipped_samples(tmp_path, caplog):
    root = tmp_path / "ph"
    write_phantom_dataset(root, n=8, size=32, seed=2, workers=1, progress=False)
    rows = read_rows(root / "labels.csv")
    victim = next(r for r in rows if r["split"] == "train")
    (root / victim["image"]).write_bytes(b"not an image at all")
    dm = FundusDataModule(dataset="phantom", root=str(root), image_size=32, batch_size=16,
                          on_error="skip", preprocess={"crop_fov": False})
    batch = next(iter(dm.train_dataloader()))
    assert [Path(s["path"]).name for s in batch["skipped"]] == [Path(victim["image"]).name]
    assert batch["size"] == len(dm.splits["train"]) - 1
    assert any(Path(victim["image"]).name in r.getMessage() and "skipped" in r.getMessage()
               for r in caplog.records if r.levelname == "WARNING")


def test_prepared_cache_gives_the_same_samples_and_skips_the_decoding(tmp_path, monkeypatch):
    root = tmp_path / "ph"
    write_phantom_dataset(root, n=12, size=64, seed=3, workers=1, progress=False)
    victim = next(r for r in read_rows(root / "labels.csv") if r["split"] == "train")
    (root / victim["image"]).write_bytes(b"not an image at all")
    options = dict(dataset="phantom", root=str(root), image_size=32, on_error="skip",
                   preprocess={"crop_fov": True, "crop_disc": 0.6})
    plain, cached = FundusDataModule(**options), FundusDataModule(**options, cache_mb=64)
    plain.setup(), cached.setup()
    assert cached.splits["test"].cache_bytes == 0          # read once per run: not worth keeping
    decoded = []
    load = cached.base.load_sample
    monkeypatch.setattr(cached.base, "load_sample", lambda record: decoded.append(record.id) or load(record))
    val = cached.splits["val"]
    for _ in range(3):                                      # eval transform: identical every time
        for i in range(len(val)):
            torch.testing.assert_close(val[i]["image"], plain.splits["val"][i]["image"], rtol=0, atol=0)
    assert sorted(decoded) == sorted(cached.base.records[j].id for j in val.indices)   # each once
    train = cached.splits["train"]
    broken = [i for i in range(len(train)) if isinstance(train[i], SkippedSample)]
    assert [cached.base.records[train.indices[i]].id for i in broken] == [victim["id"]]
    assert train.cached == len(train) - 1                   # the unreadable file is never kept
    kept = {k: v["image"].copy() for k, v in train._prepared.items()}
    train.transform.set_random_seed(0)
    first = [train[i]["image"] for i in range(len(train)) if i not in broken]
    train.transform.set_random_seed(0)
    again = [train[i]["image"] for i in range(len(train)) if i not in broken]
    assert all(torch.equal(a, b) for a, b in zip(first, again))       # augmentation still seeded
    assert all(np.array_equal(train._prepared[k]["image"], v) for k, v in kept.items())  # and never in place
    plain.splits["train"].transform.set_random_seed(0)
    uncached = [plain.splits["train"][i]["image"] for i in range(len(train)) if i not in broken]
    assert all(torch.equal(a, b) for a, b in zip(first, uncached))     # the same stream as without a cache


def test_prepared_cache_stays_within_its_budget():
    from xmed.data.datamodule import SplitView
    from xmed.data.datasets import get_dataset
    from xmed.data.transforms import build_transforms

    base = get_dataset("phantom_render", n=6, size=64)
    transform = build_transforms("eval", 32)
    prepared = transform.prepare(base.load(0))
    one_eye = (prepared["image"].nbytes + sum(m.nbytes for m in prepared["masks"].values())) / 2**20
    view = SplitView(base, range(6), transform, cache_mb=2.5 * one_eye)
    for i in range(6):
        view[i]
    assert view.cached == 2
    with pytest.raises(ConfigError, match="data.cache_mb"):
        FundusDataModule(cache_mb=-1)


def test_the_loader_workers_share_one_store_of_prepared_eyes(tmp_path):
    root = tmp_path / "ph"
    write_phantom_dataset(root, n=30, size=64, seed=5, workers=1, progress=False)
    options = dict(dataset="phantom", root=str(root), image_size=32, batch_size=4, num_workers=2, seed=1,
                   preprocess={"crop_fov": False, "crop_disc": 0.5}, dataset_options={"load_masks": False})
    shared, plain = FundusDataModule(**options, cache_mb=16), FundusDataModule(**options)
    shared.setup(), plain.setup()
    if sys.platform == "linux":  # forked on Linux whatever the interpreter's default (forkserver from 3.14)
        assert shared.train_dataloader().multiprocessing_context.get_start_method() == "fork"
    train = shared.splits["train"]
    assert train.cached == 0 and train._shared.slots == len(train)
    epochs = {name: [[b["image"].clone() for b in dm.train_dataloader()] for _ in range(2)]
              for name, dm in (("shared", shared), ("plain", plain))}
    # the workers' first epoch filled the store this process made: every eye, none kept per worker
    assert train.cached == train._shared.filled() == len(train) and train._prepared == {}
    for mine, theirs in zip(epochs["shared"], epochs["plain"]):  # the same batches as without the cache
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))
    for i in range(len(train)):  # and every stored eye is what preparing it gives
        stored, fresh = train._shared.get(i), plain.splits["train"].prepared(i)
        assert np.array_equal(stored["image"], fresh["image"]) and stored["meta"] == fresh["meta"]
        assert stored["label"] == fresh["label"] and np.array_equal(stored["findings"], fresh["findings"],
                                                                        equal_nan=True)


def test_the_shared_store_keeps_only_what_it_can_give_back_whole():
    import pickle

    from xmed.data.cache import FIELD_BYTES, SharedEyeStore

    eye = {"image": np.full((8, 8, 3), 9, np.uint8), "label": float("nan"), "vcdr": np.float32(0.25),
           "findings": np.array([np.nan] + [1.0] * 9, np.float32), "masks": {},
           "meta": {"id": "e1", "eye": "OS", "source": "x", "decode_reduction": 2}}
    store = SharedEyeStore.for_budget(eyes=10, side=8, budget_bytes=3 * (8 * 8 * 3 + FIELD_BYTES + 1))
    assert store.slots == 3 and SharedEyeStore.for_budget(10, 8, 100) is None
    assert store.put(0, eye)
    back = store.get(0)
    assert np.array_equal(back["image"], eye["image"]) and back["meta"] == eye["meta"] and back["vcdr"] == 0.25
    assert np.isnan(back["label"]) and np.array_equal(back["findings"], eye["findings"], equal_nan=True)
    back["image"][:] = 0
    assert store.get(0)["image"][0, 0, 0] == 9  # a private copy
    refused = {"masks": {**eye, "masks": {"disc": np.ones((8, 8), bool)}},
               "size": {**eye, "image": np.zeros((8, 9, 3), np.uint8)},
               "dtype": {**eye, "image": np.zeros((8, 8, 3), np.float32)},
               "object": {**eye, "meta": {**eye["meta"], "fov": object()}},
               "long": {**eye, "meta": {**eye["meta"], "note": "x" * FIELD_BYTES}}}
    assert {name: store.put(1, sample) for name, sample in refused.items()} == dict.fromkeys(refused, False)
    assert not store.put(3, eye) and store.filled() == 1  # beyond its slots
    copied = pickle.loads(pickle.dumps(store))  # as into a worker started afresh: no shared memory
    assert not copied.available and copied.get(0) is None and not copied.put(0, eye) and copied.filled() == 0


def test_a_split_copied_into_a_fresh_process_keeps_eyes_in_its_own_memory(tmp_path):
    import pickle

    from xmed.data.datamodule import SplitView
    from xmed.data.transforms import build_transforms

    base = get_dataset("phantom_render", n=4, size=64, load_masks=False)
    view = pickle.loads(pickle.dumps(SplitView(base, range(4), build_transforms("eval", 32), cache_mb=1)))
    assert not view._shared.available
    first = [view[i]["image"] for i in range(4)]
    assert view.cached == 4 and len(view._prepared) == 4
    assert all(torch.equal(a, view[i]["image"]) for i, a in enumerate(first))


def test_workers_started_afresh_keep_their_own_prepared_eyes_and_give_the_same_batches(tmp_path):
    from torch.utils.data import DataLoader

    from xmed.data.datasets import collate_samples

    options = dict(dataset="phantom_render", dataset_options={"n": 12, "size": 48, "load_masks": False},
                   image_size=32, batch_size=4, cache_mb=4)
    dm = FundusDataModule(**options)
    dm.setup()
    view = dm.splits["val"]  # eval transform: the same images whichever process prepares them
    spawned = DataLoader(view, batch_size=4, num_workers=1, multiprocessing_context="spawn",
                         collate_fn=collate_samples, persistent_workers=True)
    epochs = [[b["image"] for b in spawned] for _ in range(2)]  # the second reads the worker's own copies
    assert view._shared.filled() == 0  # the worker could not reach this process's store
    expected = [b["image"] for b in DataLoader(view, batch_size=4, collate_fn=collate_samples)]
    assert view._shared.filled() == len(view)  # this process's reads filled it
    for batches in epochs:
        assert all(torch.equal(a, b) for a, b in zip(batches, expected, strict=True))


def test_bad_datamodule_values_name_the_key():
    with pytest.raises(ConfigError, match="data.image_size"):
        FundusDataModule(image_size=4)
    with pytest.raises(ConfigError, match="data.dataset"):
        FundusDataModule(dataset="refugee", root=".").setup()


def _compose(*overrides):
    with initialize_config_dir(str(CONFIGS / ""), version_base="1.3"):
        return compose(overrides=["+paths=default", *overrides])


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_data_set_has_a_hydra_config(name):
    cfg = _compose(f"+data={name}", "paths.root_dir=/srv/xmed")
    assert cfg.data._target_ == "xmed.data.FundusDataModule" and cfg.data.dataset == name
    if name != "phantom_render":
        assert str(cfg.data.root).startswith("/srv/xmed/data/")


def test_a_data_set_is_named_once_in_the_registry():
    configs = {path.stem for path in (CONFIGS / "data").glob("*.yaml") if not path.stem.startswith("_")}
    assert configs == set(DATASETS)  # each data/<name>.yaml selects the set of its own name (above)
    assert {name: dataset_class(name).name for name in DATASETS} == {name: name for name in DATASETS}
    with pytest.raises(TypeError, match="registered as 'refuge'.*remove its own name"):
        type("RefugeDataset", (FundusDataset,), {"__module__": "xmed.data.datasets.refuge", "name": "refuge"})
    own = type("ClinicDataset", (FundusDataset,), {"__module__": "clinic", "name": "clinic"})
    assert own.name == "clinic"  # a set of one's own, not registered, names itself


def test_hydra_config_instantiates_a_working_datamodule():
    cfg = _compose("+data=phantom_render", "data.dataset_options.n=20", "data.dataset_options.size=48",
                   "data.image_size=48", "data.batch_size=5", "data.num_workers=0")
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 14, "val": 3, "test": 3}
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (5, 3, 48, 48)


def test_hydra_data_root_missing_names_the_path(tmp_path):
    cfg = _compose("+data=refuge", f"data.root={tmp_path / 'REFUGE'}")
    dm = instantiate(cfg.data, _convert_="all")
    with pytest.raises(DatasetError, match="REFUGE"):
        dm.setup()
