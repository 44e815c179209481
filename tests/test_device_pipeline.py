"""The input pipeline on the device (``data.pipeline: gpu``), checked on CPU tensors against the CPU
pipeline: the field-of-view search to 1e-6 px, the crop windows exactly, the prepared pixels to a
level (exact but for a few pixels where OpenCV sums in another order; a level on about a tenth of
them where it enlarges in fixed point), the normalised batches of a JPEG folder to one level, each
augmentation against albumentations' with the same parameters; and the wiring: files read as bytes
by the workers, prepared eyes kept on the device, unreadable files skipped as before, the choice
of the pipeline named and validated."""

from __future__ import annotations

import shutil

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from xmed.data.datamodule import FundusDataModule, SplitView, eval_loader
from xmed.data.device_pipeline import (
    AUGMENT_PARAMS, DeviceAugment, DeviceEyeCache, EncodedView, clean_jpeg, collate_encoded, crop_windows,
    decode_jpegs, find_fov_batch, hsv8_to_rgb, prepare_batch, rgb_to_hsv8,
)
from xmed.data.io import read_image
from xmed.data.phantom import render_phantom
from xmed.data.preprocess import FundusPreprocess, find_disc, find_fov, window_origin
from xmed.data.transforms import build_transforms
from xmed.errors import ConfigError
from xmed.findings import FINDINGS, finding_index


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensor operations, thousands of them: one torch thread each is fastest on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def photographs() -> list[np.ndarray]:
    """Phantom eyes at 512 and 300 px, one off-centre on a wider black frame, skimage's retina cut
    at the top and bottom (1000×1411), and a photograph without a dark border."""
    from skimage import data

    eyes = [render_phantom(seed, 512).image for seed in range(3)]
    framed = np.pad(render_phantom(5, 400).image, ((30, 60), (100, 10), (0, 0)))
    noise = np.random.default_rng(0).integers(60, 200, (200, 260, 3), dtype=np.uint8)
    return [*eyes, render_phantom(7, 300).image, framed, data.retina()[200:1200], noise]


@pytest.fixture(scope="module")
def jpeg_phantom(tmp_path_factory):
    from xmed.data.phantom.writer import write_phantom_dataset

    root = tmp_path_factory.mktemp("jpeg_phantom")
    write_phantom_dataset(root, n=24, size=256, seed=0, image_format="jpg", progress=False, workers=1)
    return root


def settings(**options) -> dict:
    return {"dataset": "phantom", "image_size": 96, "batch_size": 8, "num_workers": 0, "seed": 0,
            "preprocess": {"crop_fov": True}, "dataset_options": {"load_masks": False}, **options}


# ------------------------------------------------------------------------- searches and crops
def test_the_field_of_view_is_the_cpu_searchs(photographs):
    for photo in photographs:
        found = find_fov(photo)
        cx, cy, radius = find_fov_batch(tensor(photo)[None])[0].tolist()
        assert (cx, cy, radius) == pytest.approx((found.cx, found.cy, found.radius), abs=1e-6), photo.shape
    same_shape = [p for p in photographs if p.shape == (512, 512, 3)]
    batched = find_fov_batch(torch.stack([tensor(p) for p in same_shape]))   # a batch gives each its own
    assert batched[:, 2].tolist() == pytest.approx([find_fov(p).radius for p in same_shape], abs=1e-6)


def test_no_dark_border_gives_the_inscribed_circle_as_on_the_cpu(photographs):
    noise = photographs[-1]
    assert find_fov_batch(tensor(noise)[None])[0].tolist() == [129.5, 99.5, 100.0]
    assert find_fov(noise) == find_fov(noise).__class__(129.5, 99.5, 100.0)


@pytest.mark.parametrize("crop_fov", [True, False])
def test_the_crop_windows_are_the_cpu_pipelines(photographs, crop_fov):
    pre = FundusPreprocess(crop_fov=crop_fov, crop_disc=0.5)
    for photo in photographs[:5]:
        fov = find_fov(photo)
        x0 = y0 = 0
        image = photo
        if crop_fov:
            side = max(1, int(round(2 * fov.radius * (1 + pre.margin))))
            x0, y0 = window_origin(fov.cx, fov.cy, side)
            from xmed.data.preprocess import FieldOfView, crop_to_fov

            image, _ = crop_to_fov(photo, fov=fov, margin=pre.margin)
            fov = FieldOfView((side - 1) / 2, (side - 1) / 2, fov.radius)
        disc_x, disc_y = find_disc(image, fov)
        side = max(1, int(round(2 * fov.radius * pre.crop_disc)))
        dx, dy = window_origin(disc_x, disc_y, side)
        windows = crop_windows(tensor(photo)[None], pre)
        assert (windows.x0.item(), windows.y0.item(), windows.width.item()) == (x0 + dx, y0 + dy, side), photo.shape


PREPARED = [
    pytest.param({"crop_fov": True}, 256, id="fov-crop-to-256"),
    pytest.param({"crop_fov": True}, 224, id="fov-crop-to-224"),
    pytest.param({"crop_fov": False}, 256, id="whole-photograph-letterboxed"),
    pytest.param({"crop_fov": True, "crop_disc": 0.5}, 128, id="disc-crop-to-128"),
    pytest.param({"crop_fov": False, "crop_disc": 0.5}, 128, id="disc-crop-without-fov-crop"),
    pytest.param({"crop_fov": True}, 600, id="fov-crop-enlarged-to-600"),
]


@pytest.mark.parametrize("preprocess, size", PREPARED)
def test_prepared_pixels_are_the_cpu_pipelines(photographs, preprocess, size):
    """A level apart at most: on at most a thousandth of the pixels where the crop is shrunk (float
    sums in another order), on at most 15 % where it is enlarged (OpenCV's fixed-point sums)."""
    transform = build_transforms("eval", size, preprocess=preprocess, normalise=False)
    device = prepare_batch([tensor(p) for p in photographs], FundusPreprocess.from_dict(preprocess), size)
    for photo, mine in zip(photographs, device):
        crop = transform.preprocess({"image": photo, "masks": {}})["image"]
        cpu = transform.prepare({"image": photo, "masks": {}, "meta": {}})["image"]
        difference = np.abs(cpu.astype(int) - mine.permute(1, 2, 0).numpy())
        share = 0.15 if max(crop.shape[:2]) < size else 1e-3
        assert difference.max() <= 1 and (difference > 0).mean() <= share, (photo.shape, (difference > 0).mean())


def test_a_batch_of_a_jpeg_folder_is_the_cpu_pipelines_to_a_level(jpeg_phantom):
    """The val loader's normalised images, the CPU pipeline decoding whole (no reduced decode) against
    the device pipeline run on the CPU: one level at most, a thousandth of one on average."""
    cpu = FundusDataModule(root=str(jpeg_phantom), pipeline="cpu", decode_reduced=False, **settings())
    device = FundusDataModule(root=str(jpeg_phantom), pipeline="gpu", **settings())
    batches = [list(dm.val_dataloader()) + list(dm.test_dataloader()) for dm in (cpu, device)]
    level = 1 / (255 * min(cpu.std))
    differences = []
    for a, b in zip(*batches):
        assert a["meta"] == b["meta"] and torch.equal(a["label"], b["label"])
        assert torch.equal(a["findings"].nan_to_num(-1), b["findings"].nan_to_num(-1))
        assert b["image"].dtype == torch.float32 and b["image"].shape == a["image"].shape
        differences.append((a["image"] - b["image"]).abs())
    differences = torch.cat([d.flatten() for d in differences])
    assert differences.max().item() <= level + 1e-5 and differences.mean().item() < 1e-3
    assert device.pipeline_choice.value == "gpu" and "on cpu" in device.pipeline_choice.reason


def test_libjpeg_on_the_cpu_decodes_as_pillow_does(jpeg_phantom):
    path = sorted((jpeg_phantom / "images").iterdir())[0]
    data, area = clean_jpeg(path)
    decoded = decode_jpegs([torch.frombuffer(bytearray(data), dtype=torch.uint8)], "cpu")[0]
    assert torch.equal(decoded, tensor(read_image(path))) and area == 256 * 256


# ---------------------------------------------------------------------------------- the augmentations
def fixed(**values) -> torch.Tensor:
    row = np.zeros(len(AUGMENT_PARAMS))
    row[AUGMENT_PARAMS.index("scale")] = 1.0
    for name, value in values.items():
        row[AUGMENT_PARAMS.index(name)] = value
    return torch.from_numpy(row)[None]


# albumentations' transform, the same step with its parameters here, the largest difference; only
# OpenCV's 8-bit HSV to RGB conversion is not reproduced to the level (one level off on some dark pixels)
AUGMENTATIONS = [
    pytest.param(A.HorizontalFlip(p=1), fixed(hflip=1), 0, id="horizontal-flip"),
    pytest.param(A.VerticalFlip(p=1), fixed(vflip=1), 0, id="vertical-flip"),
    pytest.param(A.Affine(scale=(1.07, 1.07), rotate=(11.0, 11.0), keep_ratio=True, p=1, border_mode=cv2.BORDER_CONSTANT,
                          fill=0), fixed(affine=1, scale=1.07, angle=11.0), 0, id="affine-up"),
    pytest.param(A.Affine(scale=(0.92, 0.92), rotate=(-13.0, -13.0), keep_ratio=True, p=1,
                          border_mode=cv2.BORDER_CONSTANT, fill=0), fixed(affine=1, scale=0.92, angle=-13.0), 0,
                 id="affine-down"),
    pytest.param(A.RandomBrightnessContrast(brightness_limit=(0.13, 0.13), contrast_limit=(-0.17, -0.17), p=1),
                 fixed(brightness_contrast=1, alpha=0.83, beta=0.13 * 255), 0, id="brightness-contrast"),
    pytest.param(A.RandomGamma(gamma_limit=(87, 87), p=1), fixed(gamma_on=1, gamma=0.87), 0, id="gamma"),
    pytest.param(A.HueSaturationValue(hue_shift_limit=(-4.2, -4.2), sat_shift_limit=(9.3, 9.3), val_shift_limit=(0, 0),
                                      p=1), fixed(hsv=1, hue_shift=-4.2, sat_shift=9.3), 1, id="hue-saturation"),
    pytest.param(A.HueSaturationValue(hue_shift_limit=(3.7, 3.7), sat_shift_limit=(-8.6, -8.6), val_shift_limit=(0, 0),
                                      p=1), fixed(hsv=1, hue_shift=3.7, sat_shift=-8.6), 1, id="hue-saturation-2"),
    pytest.param(A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.7, 0.7), p=1), fixed(blur=1, kernel=3, sigma=0.7),
                 0, id="blur-3"),
    pytest.param(A.GaussianBlur(blur_limit=(5, 5), sigma_limit=(0.9, 0.9), p=1), fixed(blur=1, kernel=5, sigma=0.9),
                 0, id="blur-5"),
]


@pytest.mark.parametrize("albumentation, params, most", AUGMENTATIONS)
def test_each_augmentation_is_albumentations(albumentation, params, most):
    eye = cv2.resize(render_phantom(3, 256).image, (96, 96), interpolation=cv2.INTER_AREA)
    reference = albumentation(image=eye)["image"].astype(int)
    mine = DeviceAugment()(tensor(eye)[None], params)[0].permute(1, 2, 0).numpy()
    difference = np.abs(reference - mine)
    assert np.abs(reference - eye).mean() > 0.5               # the step changed the eye
    assert difference.max() <= most and (difference > 0).mean() < (0.1 if most else 1e-9)


def test_opencvs_8_bit_hsv_round_trip():
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, 64, 64), dtype=np.uint8))
    hsv = cv2.cvtColor(pixels[0].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2HSV)
    assert np.array_equal(torch.stack(rgb_to_hsv8(pixels), dim=1)[0].permute(1, 2, 0).numpy(), hsv)
    back = hsv8_to_rgb(*(torch.from_numpy(hsv[..., k]).long()[None] for k in range(3)))[0].permute(1, 2, 0).numpy()
    difference = np.abs(back.astype(int) - cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01   # ~0.3 % here: a level where OpenCV rounds otherwise


def test_the_noise_has_the_drawn_spread():
    eye = torch.full((2, 3, 64, 64), 128, dtype=torch.uint8)
    params = torch.cat([fixed(noise=1, noise_std=5.1, noise_seed=3), fixed(noise=1, noise_std=10.2, noise_seed=3)])
    noisy = DeviceAugment()(eye, params).float() - 128
    assert noisy[0].std().item() == pytest.approx(5.1, rel=0.05) and noisy[1].std().item() == pytest.approx(10.2, rel=0.05)


def test_parameters_are_drawn_per_eye_from_its_seed_at_albumentations_rates():
    augment = DeviceAugment()
    draws = np.stack([augment.draw(seed) for seed in range(2000)])
    assert np.array_equal(draws[7], augment.draw(7)) and not np.array_equal(draws[7], draws[8])
    rates = {name: draws[:, AUGMENT_PARAMS.index(name)].mean() for name in
             ("hflip", "vflip", "affine", "brightness_contrast", "gamma_on", "hsv", "blur", "noise")}
    expected = {"hflip": 0.5, "vflip": 0.0, "affine": 0.7, "brightness_contrast": 0.5, "gamma_on": 0.3, "hsv": 0.3,
                "blur": 0.2, "noise": 0.2}
    assert rates == pytest.approx(expected, abs=0.035)
    scale, angle = draws[:, AUGMENT_PARAMS.index("scale")], draws[:, AUGMENT_PARAMS.index("angle")]
    assert 0.9 <= scale.min() < 0.91 and 1.09 < scale.max() <= 1.1 and -15 <= angle.min() < -14.5 and 14.5 < angle.max() <= 15
    assert set(draws[:, AUGMENT_PARAMS.index("kernel")]) == {3.0, 5.0}
    still = DeviceAugment(hflip=0.0, rotate=0.0, scale=0.0, colour=False).draw(1)
    assert still[[AUGMENT_PARAMS.index(n) for n in ("hflip", "affine", "hsv", "noise")]].tolist() == [0, 0, 0, 0]


def test_flips_fix_the_eye_and_the_superior_inferior_findings():
    findings = torch.zeros(2, len(FINDINGS))
    findings[:, finding_index("ANRS")] = 1.0
    batch = {"findings": findings, "meta": {"id": ["a", "b"], "eye": ["OD", "OS"], "source": ["x", "x"]}}
    fixed_batch = DeviceAugment.fix_labels(batch, torch.cat([fixed(hflip=1, vflip=1), fixed()]))
    assert fixed_batch["meta"]["eye"] == ["OS", "OS"]
    assert fixed_batch["findings"][0, finding_index("ANRI")] == 1 and fixed_batch["findings"][0, finding_index("ANRS")] == 0
    assert torch.equal(fixed_batch["findings"][1], findings[1])


# ------------------------------------------------------------------------------------- the wiring
def test_training_batches_come_from_the_device_pipeline_and_its_store(jpeg_phantom):
    dm = FundusDataModule(root=str(jpeg_phantom), pipeline="gpu", cache_mb=8, **settings())
    first = list(dm.train_dataloader())
    store = dm._device_caches["train"]
    assert sum(b["size"] for b in first) == len(dm.splits["train"]) == store.slots == int(store._written.sum())
    assert first[0]["image"].dtype == torch.uint8 and first[0]["image"].shape[1:] == (3, 96, 96)
    assert dm.on_after_batch_transfer(first[0], 0)["image"].dtype == torch.float32
    view = EncodedView(dm.splits["train"], DeviceAugment(), store)
    assert "encoded" not in view[0] and view[0]["area"] == 0       # an eye the device holds: no file read
    again = list(dm.train_dataloader())                            # epoch 1 draws its own order and augmentations
    assert sorted(i for b in again for i in b["meta"]["id"]) == sorted(i for b in first for i in b["meta"]["id"])


def test_an_eye_from_the_store_is_the_eye_prepared_afresh(jpeg_phantom):
    dm = FundusDataModule(root=str(jpeg_phantom), pipeline="gpu", cache_mb=8, **settings())
    fresh, stored = next(iter(dm.val_dataloader())), next(iter(dm.val_dataloader()))
    assert torch.equal(fresh["image"], stored["image"]) and dm._device_caches["val"]._written.any()


def test_unreadable_files_and_other_formats_are_read_as_on_the_cpu(jpeg_phantom, tmp_path):
    """A truncated JPEG, text named .jpg and a PNG in a folder: the PNG decoded by the worker, the two
    others skipped with the CPU pipeline's reasons (``on_error=skip``)."""
    from xmed.data.datasets import get_dataset

    images = sorted((jpeg_phantom / "images").iterdir())[:4]
    for image in images[:2]:
        shutil.copy(image, tmp_path / image.name)
    data = images[2].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "text.jpg").write_text("not a photograph")
    cv2.imwrite(str(tmp_path / "eye.png"), cv2.cvtColor(read_image(images[3]), cv2.COLOR_RGB2BGR))
    dataset = get_dataset("photo_folder", tmp_path, on_error="skip")
    view = SplitView(dataset, range(len(dataset)), build_transforms("eval", 64, preprocess={"crop_fov": True}))
    batch = next(iter(eval_loader(view, 8, 0, "cpu")))
    cpu = collate_samples_of(view)
    assert batch["meta"]["id"] == cpu["meta"]["id"] and sorted(s["path"] for s in batch["skipped"]) == sorted(
        s["path"] for s in cpu["skipped"])
    assert {s["reason"].split(" (")[0] for s in batch["skipped"]} == {"truncated file", "not an image"}
    assert (batch["image"] - cpu["image"]).abs().max().item() <= 1 / (255 * 0.224) + 1e-5


def collate_samples_of(view: SplitView) -> dict:
    from xmed.data.datasets.base import collate_samples

    return collate_samples([view[i] for i in range(len(view))])


def test_collate_and_store_keep_what_they_are_given():
    from xmed.data.datasets.base import Skip

    items = [{"encoded": torch.zeros(3, dtype=torch.uint8), "position": 0, "index": 4, "area": 9, "label": 1.0,
              "findings": np.zeros(len(FINDINGS), np.float32), "vcdr": 0.5, "meta": {"id": "a", "eye": "OD"}},
             Skip("b.jpg", "zero-byte file")]
    batch = collate_encoded(items)
    assert batch["size"] == 1 and batch["skipped"] == [{"path": "b.jpg", "reason": "zero-byte file"}]
    assert batch["index"] == [4] and batch["pixels"] == [None] and batch["meta"]["source"] == [""]
    assert DeviceEyeCache.for_budget(100, 16, 3 * 16 * 16 * 5).slots == 5 and DeviceEyeCache.for_budget(1, 16, 10) is None


# --------------------------------------------------------------------------------------- the choice
def test_the_pipeline_is_validated_and_chosen_by_the_data(jpeg_phantom):
    with pytest.raises(ConfigError, match="data.pipeline"):
        FundusDataModule(root=str(jpeg_phantom), pipeline="tpu", **settings())
    masked = FundusDataModule(root=str(jpeg_phantom), pipeline="gpu", **settings(dataset_options={}))
    with pytest.raises(ConfigError, match="data.pipeline.*masks are read"):
        masked.val_dataloader()
    rendered = FundusDataModule(pipeline="gpu", **settings(dataset="phantom_render", dataset_options={"n": 8, "size": 32}))
    with pytest.raises(ConfigError, match="makes its eyes rather than reading files"):
        rendered.val_dataloader()
    auto = FundusDataModule(root=str(jpeg_phantom), pipeline="auto", **settings(dataset_options={}))
    auto.val_dataloader()                                         # no trainer: the workers prepare
    assert auto.pipeline_choice.value == "cpu" and "masks are read" in auto.pipeline_choice.reason
    contrast = FundusDataModule(root=str(jpeg_phantom), pipeline="auto",
                                **settings(preprocess={"crop_fov": True, "contrast": "clahe"}))
    contrast.val_dataloader()
    assert "contrast normalisation (clahe)" in contrast.pipeline_choice.reason


# ------------------------------------------------------------------------------------ the commands
def test_training_records_where_its_photographs_were_prepared(jpeg_phantom, tmp_path):
    from helpers.commands import compose

    from xmed.pipeline.training import train

    overrides = ["data=phantom", f"data.root={jpeg_phantom}", "data.image_size=48", "data.batch_size=8",
                 "data.num_workers=0", "data.pipeline=gpu", "model=tiny_test", "trainer.max_epochs=1",
                 "n_bootstrap=20", "logger=none", f"paths.output_dir={tmp_path}"]
    metrics = train(compose("train", overrides))
    card = (tmp_path / "model_card.md").read_text()
    assert metrics["n"] > 0
    assert "- **input pipeline**: gpu (set in the config; on cpu, the tensor pipeline is slower than the loader workers)" in card


def test_screening_through_the_device_pipeline_gives_the_cpu_pipelines_predictions(jpeg_phantom, tmp_path):
    import csv

    from helpers.commands import compose

    from xmed.models import FundusClassifier
    from xmed.models.export import export_model
    from xmed.pipeline.prediction import predict_run

    torch.manual_seed(0)
    model = export_model(FundusClassifier("test_resnet.r160_in1k", input_size=64, threshold=0.5), tmp_path / "model")
    rows, summaries = {}, {}
    for pipeline in ("cpu", "gpu"):
        out = tmp_path / pipeline
        summaries[pipeline] = predict_run(compose("predict", [f"ckpt_path={model}", f"input={jpeg_phantom / 'images'}",
                                                              f"paths.output_dir={out}", "num_workers=0",
                                                              f"pipeline={pipeline}"]))
        with open(out / "predictions.csv", newline="") as fh:
            rows[pipeline] = {row["id"]: float(row["prob"]) for row in csv.DictReader(fh)}
    assert rows["cpu"].keys() == rows["gpu"].keys() and len(rows["cpu"]) == 24
    # the CPU pipeline decodes these 256 px JPEGs at half size for a 64 px input, the device pipeline whole
    assert max(abs(rows["cpu"][k] - rows["gpu"][k]) for k in rows["cpu"]) < 0.02
    assert summaries["cpu"]["pipeline"] == "cpu (set in the config)" and summaries["gpu"]["pipeline"].startswith("gpu")
    assert summaries["gpu"]["batch_size"] == "16 (on cpu: a larger batch is no faster there)"
    with pytest.raises(ConfigError, match="'pipeline'"):
        predict_run(compose("predict", [f"ckpt_path={model}", f"input={jpeg_phantom / 'images'}",
                                        f"paths.output_dir={tmp_path / 'bad'}", "pipeline=tpu"]))


def test_explanations_read_through_the_device_pipeline_and_say_how_they_ran(jpeg_phantom, tmp_path):
    import json

    from helpers.commands import compose

    from xmed.models import FundusClassifier
    from xmed.models.export import export_model
    from xmed.pipeline.explanation import explain_run

    torch.manual_seed(0)
    net = FundusClassifier("test_resnet.r160_in1k", input_size=48, data_config={"crop_fov": True}, threshold=0.5)
    with torch.no_grad():
        net.glaucoma_head.weight.fill_(0.1)
    model = export_model(net.eval(), tmp_path / "model")
    common = [f"ckpt_path={model}", "data=phantom", f"data.root={jpeg_phantom}", "data.num_workers=0", "n=4",
              "explainer=gradcam", "metrics=[deletion]", "faithfulness.n_steps=4", "randomisation.n_images=0",
              "overlays=0"]
    maps, settings = {}, {}
    for pipeline, autocast in (("cpu", "false"), ("gpu", "auto"), ("cpu", "true")):
        out = tmp_path / f"{pipeline}_{autocast}"
        result = explain_run(compose("explain", [*common, f"paths.output_dir={out}", f"data.pipeline={pipeline}",
                                                 f"autocast={autocast}", "+data.dataset_options.load_masks=false"]))
        maps[pipeline, autocast] = np.stack([np.load(p) for p in sorted((out / "maps" / "gradcam").glob("*.npy"))])
        settings[pipeline, autocast] = result["settings"]
        assert json.loads((out / "metrics.json").read_text())["settings"] == result["settings"]
    result = {"settings": settings["gpu", "auto"]}
    assert settings["cpu", "true"]["autocast"] == "True (set in the config)"
    bf16, fp32 = maps["cpu", "true"], maps["cpu", "false"]          # Grad-CAM's passes in bf16, its map in fp32
    assert np.abs(bf16 - fp32).max() <= 0.1 * np.abs(fp32).max() and not np.array_equal(bf16, fp32)
    maps = {"cpu": fp32, "gpu": maps["gpu", "auto"]}
    assert result["settings"]["pipeline"].startswith("gpu (set in the config")
    assert result["settings"]["batch_size"] == "8 (on cpu: a larger batch is no faster there)"
    assert result["settings"]["autocast"] == "False (full precision on cpu)"
    assert maps["cpu"].shape == maps["gpu"].shape and maps["cpu"].shape[1:] == (48, 48)
    assert np.abs(maps["cpu"] - maps["gpu"]).max() <= 0.05 * np.abs(maps["cpu"]).max()
    with pytest.raises(ConfigError, match="data.pipeline.*masks are read"):   # the phantom's masks score the maps
        explain_run(compose("explain", [*common, f"paths.output_dir={tmp_path / 'masks'}", "data.pipeline=gpu"]))
