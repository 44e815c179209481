"""Field-of-view detection, FOV crop, contrast normalisation and the preprocessing config."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import uniform_filter
from skimage import data

from xmed.data.preprocess import (
    FieldOfView,
    FundusPreprocess,
    contrast_normalise,
    crop_around,
    crop_to_fov,
    find_disc,
    find_fov,
)
from xmed.errors import ConfigError

# The FOV of skimage.data.retina(), measured by hand once: on the brightness max(R, G, B) > 40,
# the middle row (y=705) is bright from x=9 to 1399 and the middle column (x=705) from y=6 to
# 1399, so centre ≈ (704, 702.5) and radius ≈ 695–697; the chord of row 400 (x=78..1330, half
# length 626, 302.5 px above the centre) gives r = hypot(626, 302.5) ≈ 695.3.
RETINA_CX, RETINA_CY, RETINA_R = 704.0, 702.5, 696.0


@pytest.fixture(scope="module")
def retina() -> np.ndarray:
    return data.retina()


def synthetic_disc(h, w, cx, cy, r, colour=(180, 80, 40), noise=0.0, seed=0) -> np.ndarray:
    """A uniformly coloured disc on black, with optional Gaussian noise everywhere."""
    yy, xx = np.mgrid[:h, :w]
    image = np.zeros((h, w, 3), np.float32)
    image[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = colour
    image += np.random.default_rng(seed).normal(0, noise, image.shape) if noise else 0
    return np.clip(image, 0, 255).astype(np.uint8)


def local_std(image: np.ndarray, mask: np.ndarray, window: int = 15) -> float:
    g = image.astype(np.float32).mean(axis=2)
    mu = uniform_filter(g, window)
    var = uniform_filter(g * g, window) - mu * mu
    return float(np.sqrt(np.maximum(var, 0))[mask].mean())


# ------------------------------------------------------------------------------- find_fov
def test_retina_fov_matches_hand_measurement(retina):
    fov = find_fov(retina)
    assert fov.cx == pytest.approx(RETINA_CX, abs=0.01 * RETINA_R)
    assert fov.cy == pytest.approx(RETINA_CY, abs=0.01 * RETINA_R)
    assert fov.radius == pytest.approx(RETINA_R, rel=0.01)


def test_retina_fov_cut_at_top_and_bottom(retina):
    fov = find_fov(retina[200:1200])  # 1000 rows of a ~1392 px circle
    assert fov.cx == pytest.approx(RETINA_CX, abs=7)
    assert fov.cy == pytest.approx(RETINA_CY - 200, abs=7)
    assert fov.radius == pytest.approx(RETINA_R, rel=0.01)


def test_retina_fov_dark_and_noisy(retina):
    dark = retina * 0.25 + np.random.default_rng(0).normal(0, 4, retina.shape)
    fov = find_fov(np.clip(dark, 0, 255).astype(np.uint8))
    assert fov.radius == pytest.approx(RETINA_R, rel=0.01)
    assert np.hypot(fov.cx - RETINA_CX, fov.cy - RETINA_CY) < 7


@pytest.mark.parametrize(
    "h, w, cx, cy, r",
    [
        (300, 400, 201.3, 150.7, 120.0),  # whole circle
        (300, 400, 201.3, 150.7, 180.0),  # circle taller than the image: cut at top and bottom
        (260, 420, 215.0, 120.4, 170.0),  # cut at top and bottom, off-centre
    ],
)
def test_synthetic_disc_recovered(h, w, cx, cy, r):
    fov = find_fov(synthetic_disc(h, w, cx, cy, r))
    assert fov.cx == pytest.approx(cx, abs=1.0)
    assert fov.cy == pytest.approx(cy, abs=1.0)
    assert fov.radius == pytest.approx(r, abs=1.5)


def test_dark_noisy_synthetic_disc_recovered():
    image = synthetic_disc(300, 400, 210.0, 140.0, 180.0, colour=(40, 15, 5), noise=8.0)
    fov = find_fov(image)
    assert (fov.cx, fov.cy) == pytest.approx((210.0, 140.0), abs=1.5)
    assert fov.radius == pytest.approx(180.0, abs=2.0)


@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_no_dark_border_gives_inscribed_circle(kind):
    rng = np.random.default_rng(0)
    image = (rng.integers(50, 255, (200, 300, 3)) if kind == "noise"
             else np.full((200, 300, 3), 120)).astype(np.uint8)
    assert find_fov(image) == FieldOfView(149.5, 99.5, 100.0)


def test_fov_mask_is_the_circle():
    mask = FieldOfView(2.0, 2.0, 1.0).mask((5, 6, 3))
    assert mask.shape == (5, 6)
    assert sorted(zip(*np.nonzero(mask))) == [(1, 2), (2, 1), (2, 2), (2, 3), (3, 2)]


# ------------------------------------------------------------------------------- crop_to_fov
def test_retina_crop_leaves_a_thin_black_ring(retina):
    crop, _ = crop_to_fov(retina, margin=0.02)
    side = crop.shape[0]
    assert crop.shape == (side, side, 3) and side == pytest.approx(2 * RETINA_R * 1.02, rel=0.01)
    bright = crop.max(axis=2) > 40
    mid = side // 2
    for profile in (bright[mid], bright[:, mid]):
        first, last = np.flatnonzero(profile)[[0, -1]]
        assert first < 0.02 * side and side - 1 - last < 0.02 * side  # ring ≈ 1% of the side
        assert abs(first - (side - 1 - last)) <= 3  # centred


def test_crop_of_cut_fov_pads_black_and_centres(retina):
    crop, _ = crop_to_fov(retina[200:1200])
    side = crop.shape[0]
    assert side == pytest.approx(2 * RETINA_R * 1.02, rel=0.01)
    column = crop.max(axis=2)[:, side // 2] > 40
    first, last = np.flatnonzero(column)[[0, -1]]
    assert first > 150 and side - 1 - last > 150  # black bands where the photo was cut
    assert abs(first - (side - 1 - last)) <= 10


def test_crop_keeps_masks_aligned():
    image = synthetic_disc(300, 400, 240.0, 150.0, 180.0)  # cut at top and bottom
    image[100:120, 300:320] = 255  # a bright square, with its mask
    square = np.zeros((300, 400), bool)
    square[100:120, 300:320] = True
    crop, masks = crop_to_fov(image, {"square": square, "disc": image.max(axis=2) > 0})
    assert masks["square"].dtype == bool and masks["square"].shape == crop.shape[:2]
    assert masks["square"].sum() == 400
    assert np.all(crop[masks["square"]] == 255)
    ys, xs = np.nonzero(np.all(crop == 255, axis=2))
    assert (ys.min(), xs.min()) == tuple(np.argwhere(masks["square"]).min(axis=0))
    # padding is False in masks, black in the image
    assert not masks["disc"][0].any() and not crop[0].any()


def test_crop_geometry_with_given_fov():
    image = np.arange(10 * 12, dtype=np.uint8).reshape(10, 12)[..., None].repeat(3, axis=2)
    crop, _ = crop_to_fov(image, fov=FieldOfView(5.0, 4.0, 3.0), margin=0.0)
    assert crop.shape == (6, 6, 3)
    np.testing.assert_array_equal(crop, image[2:8, 3:9])  # centre (5, 4) at (2.5, 2.5) of crop


# ------------------------------------------------------------------------------- contrast
@pytest.mark.parametrize("method", ["clahe", "graham"])
def test_contrast_keeps_outside_black_and_raises_local_contrast(retina, method):
    image = retina[::2, ::2]  # 706 px: same picture, faster
    mask = find_fov(image).mask(image.shape)
    out = contrast_normalise(image, method, mask)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert not out[~mask].any()
    assert local_std(out, mask) > 1.5 * local_std(image, mask)


def test_contrast_finds_fov_when_not_given():
    image = synthetic_disc(120, 160, 80.0, 60.0, 70.0, noise=5.0)
    out = contrast_normalise(image, "graham")
    assert not out[:, :5].any() and out[60, 80].max() > 0  # disc spans x = 10..150


def test_graham_has_no_bright_rim_at_fov_edge():
    image = synthetic_disc(200, 200, 99.5, 99.5, 90.0)  # flat disc: nothing to enhance
    out = contrast_normalise(image, "graham", FieldOfView(99.5, 99.5, 90.0).mask(image.shape))
    inside = FieldOfView(99.5, 99.5, 90.0).mask(image.shape)
    assert np.abs(out[inside].astype(int) - 128).max() <= 2


def test_unknown_contrast_method():
    with pytest.raises(ValueError, match="sharpen"):
        contrast_normalise(np.zeros((8, 8, 3), np.uint8), "sharpen")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- FundusPreprocess
def test_preprocess_on_sample(retina):
    square = np.zeros(retina.shape[:2], bool)
    square[600:700, 800:900] = True
    sample = {"image": retina, "label": 1.0, "findings": np.zeros(10, np.float32), "vcdr": 0.5,
              "masks": {"square": square}, "meta": {"id": "r", "eye": "OS", "source": "skimage"}}
    out = FundusPreprocess(size=128, contrast="clahe")(sample)
    assert out["image"].shape == (128, 128, 3) and out["image"].dtype == np.uint8
    assert out["masks"]["square"].shape == (128, 128) and out["masks"]["square"].dtype == bool
    assert out["masks"]["square"].sum() == pytest.approx(100 * 100 * (128 / 1421) ** 2, rel=0.15)
    assert out["meta"] == sample["meta"] and out["label"] == 1.0
    assert sample["image"] is retina and sample["masks"]["square"] is square  # input untouched
    assert not out["image"][0, 0].any()


def test_preprocess_without_crop_keeps_aspect():
    image = synthetic_disc(100, 200, 100.0, 50.0, 90.0)
    out = FundusPreprocess(size=50, crop_fov=False)({"image": image, "masks": {}})
    assert out["image"].shape == (25, 50, 3)


def test_preprocess_config_round_trip():
    pre = FundusPreprocess(size=384, crop_fov=True, margin=0.05, contrast="graham")
    config = json.loads(json.dumps(pre.to_dict()))
    assert config == {"size": 384, "crop_fov": True, "margin": 0.05, "contrast": "graham", "crop_disc": None}
    assert FundusPreprocess.from_dict(config) == pre


def test_preprocess_rejects_unknown_key():
    with pytest.raises(ConfigError, match="'contrst'") as info:
        FundusPreprocess.from_dict({"size": 256, "contrst": "clahe"})
    assert info.value.key == "contrst"


@pytest.mark.parametrize("key, value", [("size", 0), ("contrast", "hist"), ("margin", -0.1), ("crop_disc", 0),
                                        ("crop_disc", 1.5), ("crop_disc", True)])
def test_preprocess_rejects_bad_values(key, value):
    with pytest.raises(ConfigError) as info:
        FundusPreprocess.from_dict({key: value})
    assert info.value.key == key


# ---------------------------------------------------------------------------- the optic disc
@pytest.fixture(scope="module")
def phantom_eyes():
    from xmed.data import render_phantom

    return [render_phantom(seed, size=192, prevalence=0.5) for seed in range(24)]


def _centre(mask: np.ndarray) -> tuple[float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean()), float(np.sqrt(mask.sum() / np.pi))


def test_find_disc_lands_on_the_phantom_disc(phantom_eyes):
    errors = []
    for eye in phantom_eyes:
        cx, cy, radius = _centre(eye.masks["disc"])
        x, y = find_disc(eye.image)
        errors.append(np.hypot(x - cx, y - cy) / radius)
    errors = np.array(errors)
    assert errors.max() < 1.0, errors          # inside the disc on every eye (OD and OS)
    assert np.median(errors) < 0.6, errors


def test_find_disc_ignores_vignetting_and_small_bright_specks():
    image = synthetic_disc(240, 240, 120, 120, 110).astype(np.float32)
    yy, xx = np.mgrid[:240, :240]
    image *= (1.3 - np.hypot(xx - 120, yy - 120) / 240)[..., None]    # brighter centre
    inside = (xx - 120) ** 2 + (yy - 120) ** 2 <= 110 ** 2
    image[((xx - 60) ** 2 + (yy - 130) ** 2 <= 9 ** 2) & inside] = (250, 230, 170)   # the disc
    image[((xx - 150) ** 2 + (yy - 100) ** 2 <= 2 ** 2)] = (255, 255, 255)            # a druse
    x, y = find_disc(np.clip(image, 0, 255).astype(np.uint8))
    assert abs(x - 60) <= 2 and abs(y - 130) <= 2


def test_crop_around_pads_outside_the_image():
    image = np.arange(1, 26, dtype=np.uint8).reshape(5, 5)
    crop, masks = crop_around(image, {"m": image > 12}, 0, 4, 3)
    assert crop.tolist() == [[0, 16, 17], [0, 21, 22], [0, 0, 0]]
    assert masks["m"].tolist() == [[False, True, True], [False, True, True], [False, False, False]]


def test_preprocess_crops_around_the_disc(phantom_eyes):
    pre = FundusPreprocess(crop_fov=True, margin=0.0, crop_disc=0.5, size=64)
    for eye in phantom_eyes[:8]:
        out = pre({"image": eye.image, "masks": dict(eye.masks)})
        assert out["image"].shape == (64, 64, 3) and out["masks"]["disc"].shape == (64, 64)
        cx, cy, radius = _centre(out["masks"]["disc"])
        # the disc is whole and near the centre of the crop, at twice its full-FOV scale
        assert np.hypot(cx - 31.5, cy - 31.5) < radius
        side = round(find_fov(eye.image).radius)   # half the FOV diameter
        assert out["masks"]["disc"].sum() == pytest.approx(eye.masks["disc"].sum() * (64 / side) ** 2, rel=0.1)
        # the image went through the same window as the masks: the disc is the bright part
        brightness = out["image"].mean(axis=2)
        assert brightness[out["masks"]["disc"]].mean() > brightness[~out["masks"]["disc"]].mean() + 20


def test_brightness_is_the_max_over_channels():
    """The channel-by-channel maximum equals numpy's max over the channel axis, in whole levels:
    uint8 photographs as they are, float images in [0, 1] scaled to 0-255 and 16-bit ones to a
    maximum of 255, both rounded; any channel count; gray images as they are."""
    from xmed.data.preprocess import _brightness

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_brightness(photo), photo.max(axis=2))
    unit = rng.random((20, 30, 4)).astype(np.float32)
    np.testing.assert_array_equal(_brightness(unit), np.rint(unit.max(axis=2) * 255).astype(np.uint8))
    wide = np.array([[0, 257, 65535]], np.uint16)
    np.testing.assert_array_equal(_brightness(wide), [[0, 1, 255]])
    gray = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    np.testing.assert_array_equal(_brightness(gray), gray)
    assert _brightness(photo).dtype == _brightness(unit).dtype == np.uint8


def test_percentiles_read_from_a_histogram_are_numpys():
    """The field-of-view search reads percentiles and medians from the 256-level histogram: the same
    numbers np.percentile gives (bit for bit), for any count of values, levels and percentiles."""
    from xmed.data.preprocess import _level_percentiles

    rng = np.random.default_rng(0)
    q = [0, 1, 33.3, 50, 99.5, 100]
    for n in (1, 2, 3, 10, 1001, 65536):
        for top in (1, 7, 255):
            values = rng.integers(0, top + 1, n).astype(np.uint8)
            expected = np.percentile(values.astype(np.float32), q)
            np.testing.assert_array_equal(_level_percentiles(np.bincount(values, minlength=256), q), expected)


def test_the_channel_mean_is_numpys():
    """find_disc's channel-by-channel mean is numpy's mean over the channel axis in float32, bit for bit."""
    from xmed.data.preprocess import _channel_mean

    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 256, (33, 47, 3), dtype=np.uint8), rng.random((20, 30, 3)),
                  rng.random((20, 30, 4)).astype(np.float32), rng.integers(0, 256, (9, 11), dtype=np.uint8)):
        expected = np.asarray(image, np.float32)
        expected = expected.mean(axis=2) if expected.ndim == 3 else expected
        np.testing.assert_array_equal(_channel_mean(image), expected)


@pytest.mark.parametrize(("preprocess", "input_size", "need", "reductions"), [
    # field-of-view crop: the crop (~0.8 of the shorter side, + margin) keeps the input's side
    ({"crop_fov": True}, 256, (314, 256, 256), {(512, 512): 1, (1024, 1024): 2, (2048, 1536): 4,
                                                 (3000, 2000): 4, (4096, 4096): 8}),
    ({"crop_fov": True, "margin": 0.1}, 512, (582, 512, 512), {(1024, 1024): 1, (2048, 1536): 2}),
    # disc crop half the FOV across: its crop keeps the input's side and the disc search 128 px of FOV
    ({"crop_fov": False, "crop_disc": 0.5}, 128, (320, 256, 128), {(256, 256): 1, (1024, 1024): 2,
                                                                    (2048, 2048): 4}),
    ({"crop_fov": False, "crop_disc": 1.0}, 64, (160, 256, 128), {(1024, 1024): 4, (2048, 2048): 8}),
    # no crop: the longer side keeps the input's side, and 256 px for the FOV search of a contrast step
    ({"crop_fov": False}, 256, (1, 256, 256), {(1024, 768): 4, (3000, 2000): 8, (400, 300): 1}),
    ({"crop_fov": False}, 64, (1, 64, 64), {(512, 512): 8}),
    ({"crop_fov": False, "contrast": "clahe"}, 64, (1, 256, 64), {(512, 512): 2}),
    # preprocess's own size counts when larger than the input's
    ({"crop_fov": True, "size": 512}, 256, (628, 512, 512), {(2048, 2048): 2}),
])
def test_the_pixels_a_preprocessing_needs_and_the_decode_reduction_they_allow(preprocess, input_size, need,
                                                                               reductions):
    from xmed.data.preprocess import PixelNeed

    pixel_need = FundusPreprocess.from_dict(preprocess).pixel_need(input_size)
    assert pixel_need == PixelNeed(*need)
    assert {size: pixel_need.reduction(*size) for size in reductions} == reductions
    for (width, height), factor in reductions.items():  # the largest factor that keeps the need
        assert pixel_need.reduction(height, width) == factor


def test_the_field_of_view_found_on_a_reduced_decode_matches_the_whole_decode(tmp_path):
    """A 1024 px phantom eye and skimage's 1411 px retina as JPEG files, decoded at 1/2 and 1/4: the
    circle found there, in the whole photograph's pixels, has its centre within 0.15 px and its
    radius within 0.5 px of the one found on the whole decode (0.06 and 0.38 px at most here)."""
    from PIL import Image

    from xmed.data import render_phantom
    from xmed.data.io import read_image, read_image_reduced

    for name, photo in (("phantom", render_phantom(3, 1024).image), ("retina", data.retina())):
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(photo).save(path, quality=90)
        whole = find_fov(read_image(path))
        for factor in (2, 4):
            image, applied = read_image_reduced(path, lambda w, h, factor=factor: factor)
            reduced = find_fov(image).scaled(applied)
            assert applied == factor
            assert abs(reduced.cx - whole.cx) < 0.15 and abs(reduced.cy - whole.cy) < 0.15, (name, factor)
            assert abs(reduced.radius - whole.radius) < 0.5, (name, factor)


def test_the_field_of_view_search_on_a_256_px_copy_matches_a_1024_px_search(monkeypatch):
    """The search runs on a copy of at most 256 px: on 512 px phantom eyes and skimage's 1411 px retina it
    finds the circle a 1024 px search finds, centres within 0.15 px and radii within 0.75 px."""
    import xmed.data.preprocess as preprocess
    from xmed.data import render_phantom

    images = [render_phantom(seed, 512).image for seed in range(8)] + [data.retina()]
    found = {}
    for work_size in (1024, 256):
        monkeypatch.setattr(preprocess, "_WORK_SIZE", work_size)
        found[work_size] = [preprocess.find_fov(image) for image in images]
    for fine, coarse in zip(found[1024], found[256]):
        assert abs(fine.cx - coarse.cx) < 0.15 and abs(fine.cy - coarse.cy) < 0.15
        assert abs(fine.radius - coarse.radius) < 0.75


def test_area_resize_gives_opencvs_levels():
    """area_resize shrinks uint8 images through float32 when the factor is not whole: the levels of
    cv2.resize(INTER_AREA), bit for bit, over random sizes, channel counts, whole factors (OpenCV's
    own path, which rounds halves up) and enlargements."""
    import cv2

    from xmed.data.preprocess import area_resize

    rng = np.random.default_rng(0)
    sizes = [((h, w), (int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))))
             for h, w in rng.integers(2, 400, (150, 2))]
    sizes += [((64, 48), (24, 32)), ((64, 48), (12, 16)), ((30, 40), (80, 60)), ((30, 40), (20, 60))]
    for i, ((h, w), size) in enumerate(sizes):
        image = rng.integers(0, 256, (h, w, 3) if i % 2 else (h, w), dtype=np.uint8)
        if i % 3 == 0:
            image = cv2.GaussianBlur(image, (0, 0), 2)   # smooth, as photographs are
        np.testing.assert_array_equal(area_resize(image, size), cv2.resize(image, size, interpolation=cv2.INTER_AREA))
