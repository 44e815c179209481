"""Albumentations pipelines: flips that know anatomy, exact eval normalisation, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmed.data.datasets.base import to_tensor_sample
from xmed.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from xmed.errors import ConfigError
from xmed.findings import FINDINGS, finding_index

MEAN = np.array(IMAGENET_MEAN, np.float32)
STD = np.array(IMAGENET_STD, np.float32)
GEOMETRY_OFF = dict(hflip=0.0, vflip=0.0, rotate=0.0, scale=0.0, colour=False)


def make_sample(h: int = 64, w: int = 64, eye: str = "OD", seed: int = 0) -> dict:
    """Random image; ANRS mask in the top band, a disc mask on the left; ANRS=1, ANRI=0."""
    rng = np.random.default_rng(seed)
    findings = np.zeros(len(FINDINGS), np.float32)
    findings[finding_index("ANRS")] = 1.0
    findings[finding_index("RNFLDS")] = np.nan
    findings[finding_index("RNFLDI")] = 1.0
    anrs = np.zeros((h, w), bool)
    anrs[5:15, 20:40] = True
    disc = np.zeros((h, w), bool)
    disc[25:35, 4:14] = True
    return {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "label": 1.0,
        "findings": findings,
        "vcdr": 0.6,
        "masks": {"ANRS": anrs, "disc": disc},
        "meta": {"id": "s0", "eye": eye, "source": "test"},
    }


def denormalise(image: np.ndarray) -> np.ndarray:
    return (image * STD + MEAN) * 255.0


# ------------------------------------------------------------------------------- flips
@pytest.mark.parametrize("eye, flipped", [("OD", "OS"), ("OS", "OD"), ("", "")])
def test_hflip_mirrors_image_masks_and_eye(eye, flipped):
    sample = make_sample(eye=eye)
    out = build_transforms("train", 64, **{**GEOMETRY_OFF, "hflip": 1.0}, seed=0)(sample)
    assert out["meta"]["eye"] == flipped
    np.testing.assert_allclose(denormalise(out["image"]), np.fliplr(sample["image"]), atol=1e-3)
    for name in ("ANRS", "disc"):
        np.testing.assert_array_equal(out["masks"][name], np.fliplr(sample["masks"][name]))
    np.testing.assert_array_equal(out["findings"], sample["findings"])  # L-R keeps S/I
    assert sample["meta"]["eye"] == eye  # input not modified


def test_vflip_swaps_superior_and_inferior():
    sample = make_sample()
    out = build_transforms("train", 64, **{**GEOMETRY_OFF, "vflip": 1.0}, seed=0)(sample)
    f = out["findings"]
    assert f[finding_index("ANRI")] == 1.0 and f[finding_index("ANRS")] == 0.0
    assert f[finding_index("RNFLDS")] == 1.0 and np.isnan(f[finding_index("RNFLDI")])
    assert np.isnan(f).sum() == 1
    assert set(out["masks"]) == {"ANRI", "disc"}
    rows = np.flatnonzero(out["masks"]["ANRI"].any(axis=1))
    assert (rows.min(), rows.max()) == (64 - 15, 64 - 6)  # top band 5..14 -> bottom 49..58
    np.testing.assert_array_equal(out["masks"]["disc"], np.flipud(sample["masks"]["disc"]))
    np.testing.assert_allclose(denormalise(out["image"]), np.flipud(sample["image"]), atol=1e-3)
    assert out["meta"]["eye"] == "OD" and out["vcdr"] == 0.6 and out["label"] == 1.0


def test_random_flips_are_detected_call_by_call():
    sample = make_sample()
    reference = build_transforms("eval", 64)(sample)["image"]
    t = build_transforms("train", 64, **{**GEOMETRY_OFF, "hflip": 0.5, "vflip": 0.5}, seed=3)
    seen = set()
    for _ in range(24):
        out = t(sample)
        h = out["meta"]["eye"] == "OS"
        v = out["findings"][finding_index("ANRI")] == 1.0
        expected = reference[:, ::-1] if h else reference
        expected = expected[::-1] if v else expected
        np.testing.assert_array_equal(out["image"], expected)
        assert ("ANRI" in out["masks"]) == v
        seen.add((h, v))
    # every combination occurs (flips draw independently, see FundusTransform.set_random_seed)
    assert len(seen) == 4


def test_no_label_breaking_transforms_offered():
    names = {type(t).__name__ for t in build_transforms("train", 64, vflip=0.5).compose}
    assert not names & {"Transpose", "RandomRotate90", "GridDistortion", "ElasticTransform"}


def test_scaling_is_isotropic_and_keeps_vertical_ratio():
    sample = make_sample()
    cup = np.zeros((64, 64), bool)
    cup[26:34, 28:36] = True  # 8 px tall
    disc = np.zeros((64, 64), bool)
    disc[20:40, 22:42] = True  # 20 px tall: vertical ratio 0.4
    sample["masks"] = {"cup": cup, "disc": disc}
    t = build_transforms("train", 64, **{**GEOMETRY_OFF, "scale": 0.3}, seed=1)
    for _ in range(6):
        masks = t(sample)["masks"]
        rows = [np.flatnonzero(masks[n].any(axis=1)) for n in ("cup", "disc")]
        cols = [np.flatnonzero(masks[n].any(axis=0)) for n in ("cup", "disc")]
        heights = [r.max() - r.min() + 1 for r in rows]
        widths = [c.max() - c.min() + 1 for c in cols]
        assert abs(heights[1] - widths[1]) <= 1  # a square stays square
        assert heights[0] / heights[1] == pytest.approx(0.4, abs=0.06)


# ------------------------------------------------------------------------------- eval
def test_eval_exact_normalisation_and_determinism():
    sample = make_sample()
    t = build_transforms("eval", 64)
    out, again = t(sample), build_transforms("eval", 64)(sample)
    np.testing.assert_array_equal(out["image"], again["image"])
    assert out["image"].dtype == np.float32 and out["image"].shape == (64, 64, 3)
    y, x = 17, 42
    expected = (sample["image"][y, x] / 255.0 - MEAN) / STD
    np.testing.assert_allclose(out["image"][y, x], expected, rtol=1e-5, atol=1e-5)
    for name in ("ANRS", "disc"):
        assert out["masks"][name].dtype == bool
        np.testing.assert_array_equal(out["masks"][name], sample["masks"][name])


def test_eval_resizes_non_square_by_letterbox():
    sample = make_sample(h=80, w=100)
    sample["image"][:] = (200, 100, 50)
    out = build_transforms("eval", 64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(sample)
    assert out["image"].shape == (64, 64, 3) and out["masks"]["disc"].shape == (64, 64)
    # 100 -> 64 wide, 80 -> 51 tall: 6 black rows on top, 7 below, exact colour in between
    np.testing.assert_allclose(out["image"][32, 32], (np.array([200, 100, 50]) / 255 - 0.5) / 0.25,
                               rtol=1e-5)
    np.testing.assert_allclose(out["image"][0, 0], (0 - 0.5) / 0.25)
    colour_rows = np.flatnonzero(out["image"][:, 32, 0] > -2)
    assert (colour_rows.min(), colour_rows.max()) == (6, 56)


def test_preprocess_runs_first_and_masks_follow():
    h, w, cx, cy, r = 120, 180, 95.0, 60.0, 80.0  # circle cut at top and bottom
    yy, xx = np.mgrid[:h, :w]
    image = np.zeros((h, w, 3), np.uint8)
    image[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (180, 80, 40)
    square = np.zeros((h, w), bool)
    square[50:70, 85:105] = True  # centred on the FOV centre
    image[square] = 255
    sample = {**make_sample(h, w), "image": image, "masks": {"square": square}}
    out = build_transforms("eval", 64, preprocess={"crop_fov": True, "margin": 0.0})(sample)
    rows = np.flatnonzero(out["masks"]["square"].any(axis=1))
    cols = np.flatnonzero(out["masks"]["square"].any(axis=0))
    assert abs((rows.min() + rows.max()) / 2 - 31.5) <= 1 and abs((cols.min() + cols.max()) / 2 - 31.5) <= 1
    white = denormalise(out["image"]).min(axis=2) > 150  # edge pixels are blended by the resize
    centre_white = np.argwhere(white).mean(axis=0)
    centre_mask = np.argwhere(out["masks"]["square"]).mean(axis=0)
    np.testing.assert_allclose(centre_white, centre_mask, atol=0.5)
    assert denormalise(out["image"])[0, 32].max() < 1  # the cut-off top is black padding


def test_preprocess_dict_with_unknown_key_rejected():
    with pytest.raises(ConfigError, match="'crop'"):
        build_transforms("eval", 64, preprocess={"crop": True})


# ------------------------------------------------------------------------------- train
def test_train_reproducible_with_seed_and_random_across_calls():
    sample = make_sample()
    a, b = build_transforms("train", 64, seed=7), build_transforms("train", 64, seed=7)
    outs_a = [a(sample) for _ in range(3)]
    outs_b = [b(sample) for _ in range(3)]
    for x, y in zip(outs_a, outs_b):
        np.testing.assert_array_equal(x["image"], y["image"])
        assert x["meta"] == y["meta"] and x["masks"].keys() == y["masks"].keys()
    assert not np.array_equal(outs_a[0]["image"], outs_a[1]["image"])
    other = build_transforms("train", 64, seed=8)(sample)
    assert not np.array_equal(outs_a[0]["image"], other["image"])


def test_photometric_changes_image_but_not_masks():
    sample = make_sample()
    reference = build_transforms("eval", 64)(sample)["image"]
    t = build_transforms("train", 64, **{**GEOMETRY_OFF, "colour": True}, seed=0)
    changed = 0
    for _ in range(6):
        out = t(sample)
        for name in ("ANRS", "disc"):
            np.testing.assert_array_equal(out["masks"][name], sample["masks"][name])
        changed += not np.allclose(out["image"], reference)
    assert changed >= 4


def test_rotation_moves_masks_with_image():
    sample = make_sample()
    sample["image"][:] = 0
    sample["image"][sample["masks"]["ANRS"]] = 255
    t = build_transforms("train", 64, **{**GEOMETRY_OFF, "rotate": 15.0, "scale": 0.1}, seed=2)
    for _ in range(4):
        out = t(sample)
        bright = denormalise(out["image"]).min(axis=2) > 128
        mask = out["masks"]["ANRS"]
        assert (bright & mask).sum() / (bright | mask).sum() > 0.8


def test_to_tensor_sample_round_trip():
    out = to_tensor_sample(build_transforms("train", 48, seed=0)(make_sample()))
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 48, 48)
    assert out["masks"]["disc"].shape == (48, 48) and out["masks"]["disc"].dtype == torch.bool
    assert out["findings"].shape == (len(FINDINGS),)
    assert out["image"].min() < 0  # normalised, not rescaled a second time


# ------------------------------------------------------------------------------- masks and decoding
def test_empty_masks_skip_the_pipeline_and_come_out_empty_at_the_output_size():
    """Masks known empty (the phantom's absent findings) come out all False at the input size, in
    their order; the others move with the image as before (here: the same as without the empty ones)."""
    sample = make_sample(80, 100)
    with_empty = {**sample, "masks": {"ANRI": np.zeros((80, 100), bool), **sample["masks"]}}
    geometry = {**GEOMETRY_OFF, "hflip": 1.0, "rotate": 15.0, "scale": 0.1}
    out = build_transforms("train", 64, **geometry, seed=3)(with_empty)
    plain = build_transforms("train", 64, **geometry, seed=3)(sample)
    assert list(out["masks"]) == ["ANRI", "ANRS", "disc"]
    assert out["masks"]["ANRI"].shape == (64, 64) and not out["masks"]["ANRI"].any()
    for name in ("ANRS", "disc"):
        assert out["masks"][name].any()
        np.testing.assert_array_equal(out["masks"][name], plain["masks"][name])
    np.testing.assert_array_equal(out["image"], plain["image"])


def fundus(side: int, radius: float) -> dict:
    """A sample whose photograph is a ``side`` px square with a bright field of view of ``radius``."""
    yy, xx = np.mgrid[:side, :side]
    image = np.zeros((side, side, 3), np.uint8)
    image[(xx - side / 2) ** 2 + (yy - side / 2) ** 2 <= radius ** 2] = (180, 80, 40)
    return {**make_sample(), "image": image, "masks": {}}


def test_a_crop_short_of_pixels_after_a_reduced_decode_is_prepared_from_the_whole_photograph():
    """The transform says what it needs; a sample decoded at 1/2 whose crop keeps the input's side is
    prepared as it is, one whose field of view proved too small for it is prepared from
    ``decode_whole()``."""
    t = build_transforms("eval", 64, preprocess={"crop_fov": True})
    assert (t.pixel_need.shorter, t.pixel_need.longer, t.pixel_need.crop) == (79, 256, 64)
    whole_calls = []

    def halved(sample: dict) -> dict:
        return {**sample, "image": sample["image"][::2, ::2], "meta": {**sample["meta"], "decode_reduction": 2}}

    big_enough = fundus(512, 200)
    out = t.prepare(halved(big_enough), decode_whole=lambda: whole_calls.append(1) or big_enough)
    assert out["image"].shape == (64, 64, 3) and whole_calls == []   # a crop 102 px across
    short = fundus(512, 60)
    out = t.prepare(halved(short), decode_whole=lambda: whole_calls.append(1) or short)
    assert whole_calls == [1]                                      # a crop 31 px across: decoded again
    np.testing.assert_array_equal(out["image"], t.prepare(short)["image"])
    small = fundus(256, 30)                          # decoded whole already (a 61 px crop): nothing more to get
    assert t.prepare(small, decode_whole=lambda: whole_calls.append(1) or small)["image"].shape == (64, 64, 3)
    assert whole_calls == [1]
    assert build_transforms("eval", 64).pixel_need.longer == 64  # no preprocessing: the longer side only


def test_the_input_fit_is_albumentations_longest_max_size_and_pad():
    """Fitting into the input square (area resize through float32) gives what A.LongestMaxSize and
    A.PadIfNeeded give, bit for bit, for shrinking by a non-whole factor, a whole one and enlarging."""
    import albumentations as A
    import cv2

    reference = A.Compose([A.LongestMaxSize(max_size=64, interpolation=cv2.INTER_AREA),
                           A.PadIfNeeded(64, 64, position="center", border_mode=cv2.BORDER_CONSTANT, fill=0)])
    fit = build_transforms("eval", 64).fit
    rng = np.random.default_rng(0)
    for h, w in ((121, 157), (128, 96), (50, 40)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.testing.assert_array_equal(fit(image=image)["image"], reference(image=image)["image"])


# ------------------------------------------------------------------------------- uint8 hand-over
def test_normalise_images_equals_albumentations_normalize():
    import albumentations as A

    from xmed.data.normalise import normalise_images

    pixels = make_sample(40, 56)["image"]
    mean, std = (0.3, 0.5, 0.7), (0.2, 0.25, 0.1)
    expected = A.Normalize(mean=mean, std=std, max_pixel_value=255.0)(image=pixels)["image"]
    batch = torch.from_numpy(pixels).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    for layout in (torch.contiguous_format, torch.channels_last):
        got = normalise_images(batch.contiguous(memory_format=layout), mean, std)
        assert got.dtype == torch.float32 and got.shape == (2, 3, 40, 56)
        np.testing.assert_allclose(got[1].permute(1, 2, 0).numpy(), expected, rtol=0, atol=1e-6)
    already = torch.randn(1, 3, 4, 4)
    assert normalise_images(already) is already  # floats are taken as normalised
    with pytest.raises(TypeError, match="int16"):
        normalise_images(torch.zeros(1, 3, 4, 4, dtype=torch.int16))
    with pytest.raises(ValueError, match="one value per channel"):
        normalise_images(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))


def test_the_old_keywords_still_work_and_warn():
    """``build_transforms(size=, color=)``, ``DeviceAugment(color=)`` and ``data.augment.color`` (run
    configs and checkpoints saved before carry it) are read under their new names with a warning."""
    from xmed.data.datamodule import FundusDataModule
    from xmed.data.device_pipeline import DeviceAugment

    sample = make_sample()
    new = build_transforms("train", input_size=48, colour=False, seed=4)
    with pytest.warns(DeprecationWarning) as caught:
        old = build_transforms("train", size=48, color=False, seed=4)
    assert sorted(str(w.message).split(";")[0] for w in caught) == [
        "build_transforms: 'color' is now 'colour'", "build_transforms: 'size' is now 'input_size'"]
    assert old.input_size == new.input_size == 48
    assert not {type(t).__name__ for t in old.compose} & {"RandomBrightnessContrast", "GaussNoise"}
    np.testing.assert_array_equal(old(sample)["image"], new(sample)["image"])
    with pytest.raises(TypeError, match="'color' and its new name 'colour'"):
        build_transforms("train", 48, color=False, colour=True)
    with pytest.warns(DeprecationWarning, match="DeviceAugment: 'color' is now 'colour'"):
        augment = DeviceAugment(color=False)
    assert augment.colour is False
    np.testing.assert_array_equal(augment.draw(3), DeviceAugment(colour=False).draw(3))
    with pytest.warns(DeprecationWarning, match="data.augment: 'color' is now 'colour'"):
        dm = FundusDataModule(dataset="phantom_render", image_size=32, augment={"color": False, "hflip": 0.0})
    assert dm.augment == {"colour": False, "hflip": 0.0}
    with pytest.raises(ConfigError) as err:
        FundusDataModule(dataset="phantom_render", image_size=32, augment={"color": False, "colour": True})
    assert err.value.key == "data.augment.color"


@pytest.mark.parametrize("command, typed, read", [
    ("train", "data.augment.color=false", ("data", "augment", "colour")),
    ("explain", "+explainer.latent_shift.normalize_gradient=false", ("explainer", "latent_shift", "normalise_gradient")),
])
def test_an_old_key_typed_on_the_command_line_is_read_under_its_new_name(command, typed, read, monkeypatch, capsys):
    import importlib

    import yaml
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    main = importlib.import_module(f"xmed.cli.{command}").main
    extra = ["ckpt_path=unused", "explainer=latent_shift", "explainer.latent_shift.autoencoder=unused"] * (command == "explain")
    monkeypatch.setattr("sys.argv", [f"xmed-{command}", *extra, typed, "--cfg", "job"])
    try:
        main()
    finally:  # Hydra keeps the printed job's config as the process's own: later commands would read it
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr()
    old_key = typed.lstrip("+").split("=")[0]
    assert f"warning: {old_key} is now {'.'.join(read)}; the old name is read for now" in err
    node = yaml.safe_load(out)
    for key in read[:-1]:
        node = node[key]
    assert node[read[-1]] is False and old_key.rpartition(".")[2] not in node


def test_a_train_transform_without_normalise_gives_the_same_augmented_pixels():
    from xmed.data.normalise import normalise_images

    sample = make_sample(72, 60)
    kept = build_transforms("train", 48, seed=3, normalise=False)
    normalised = build_transforms("train", 48, seed=3)
    assert not kept.normalised and normalised.normalised
    for _ in range(4):  # the same random draws call after call
        raw = to_tensor_sample(kept(sample), scale_uint8=False)
        ref = to_tensor_sample(normalised(sample))
        assert raw["image"].dtype == torch.uint8 and raw["image"].shape == (3, 48, 48)
        torch.testing.assert_close(normalise_images(raw["image"]), ref["image"], rtol=0, atol=1e-5)
        assert raw["meta"] == ref["meta"] and torch.equal(raw["masks"]["disc"], ref["masks"]["disc"])
