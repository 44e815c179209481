"""The fundus phantom: difficulty, ground truth, anatomy, determinism, shortcut."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from xmed.data import render_phantom
from xmed.data.phantom import PhantomOptions, draw_phantom_cause
from xmed.data.phantom.cause import LARGE_CUP_VCDR
from xmed.errors import ConfigError
from xmed.findings import FINDINGS


@pytest.fixture(scope="module")
def causes():
    """5,000 eyes' causes: exactly the draws render_phantom makes, without the pixels."""
    drawn = [draw_phantom_cause(seed) for seed in range(5000)]
    return [c for c, _, _ in drawn], [eye for _, eye, _ in drawn]


@pytest.fixture(scope="module")
def eyes256():
    return [render_phantom(seed, 256) for seed in range(40)]


def centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def test_oracle_auroc_is_high_but_not_perfect(causes):
    cs, _ = causes
    labels = np.array([c.label for c in cs])
    auroc = roc_auc_score(labels, [c.oracle for c in cs])
    assert 0.93 <= auroc <= 0.98, auroc
    assert abs(labels.mean() - 0.3) < 3 * np.sqrt(0.3 * 0.7 / len(cs))


def test_oracle_is_calibrated(causes):
    """The oracle is P(glaucoma | findings, vCDR): within each decile it matches the label rate."""
    cs, _ = causes
    oracle = np.array([c.oracle for c in cs])
    labels = np.array([c.label for c in cs])
    bins = np.quantile(oracle, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(bins, oracle, side="right") - 1, 0, 9)
    ece = sum(abs(oracle[which == b].mean() - labels[which == b].mean()) * (which == b).mean() for b in range(10))
    assert ece < 0.03, ece


def test_render_uses_the_same_cause(eyes256):
    for eye in eyes256[:10]:
        cause, laterality, _ = draw_phantom_cause(eye.seed)
        assert (eye.label, eye.findings, eye.vcdr, eye.oracle, eye.eye) == (
            cause.label, cause.findings, cause.vcdr, cause.oracle, laterality)


def test_findings_depend_on_disease_and_co_occur(causes):
    cs, _ = causes
    f = np.array([[c.findings[k] for k in FINDINGS] for c in cs])
    labels = np.array([c.label for c in cs])
    for j, code in enumerate(FINDINGS):
        assert f[labels == 1, j].mean() > 2 * f[labels == 0, j].mean(), code
    corr = np.corrcoef(f[:, FINDINGS.index("ANRI")], f[:, FINDINGS.index("RNFLDI")])[0, 1]
    assert corr > 0.15
    lc = np.array([c.vcdr >= LARGE_CUP_VCDR for c in cs])
    np.testing.assert_array_equal(f[:, FINDINGS.index("LC")], lc)


def test_healthy_eyes_can_have_large_cups_in_large_discs(causes):
    cs, _ = causes
    healthy_large = [c for c in cs if c.label == 0 and c.vcdr >= LARGE_CUP_VCDR]
    healthy = sum(c.label == 0 for c in cs)
    assert len(healthy_large) / healthy > 0.03
    small = [render_phantom(s, 128) for s in range(200)]
    area = {True: [], False: []}
    for eye in small:
        if eye.label == 0:
            area[eye.vcdr >= 0.6].append(eye.masks["disc"].sum())
    assert np.mean(area[True]) > 1.15 * np.mean(area[False])


@pytest.mark.parametrize("size", [256, 512])
def test_vcdr_measured_from_masks_matches_parameter(size):
    for seed in range(25 if size == 256 else 10):
        eye = render_phantom(seed, size)
        disc_rows = eye.masks["disc"].any(1).sum()
        cup_rows = eye.masks["cup"].any(1).sum()
        assert abs(cup_rows / disc_rows - eye.vcdr) <= 0.05, (seed, cup_rows / disc_rows, eye.vcdr)


def test_same_seed_same_eye_and_labels_independent_of_size():
    a, b = render_phantom(7, 128), render_phantom(7, 128)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.masks.keys() == b.masks.keys()
    for k in a.masks:
        np.testing.assert_array_equal(a.masks[k], b.masks[k])
    c = render_phantom(7, 256)
    assert (a.label, a.findings, a.vcdr, a.eye) == (c.label, c.findings, c.vcdr, c.eye)
    assert not np.array_equal(render_phantom(8, 128).image, a.image)


def test_masks_exist_exactly_for_present_findings(eyes256):
    for eye in eyes256:
        for code in FINDINGS:
            if eye.findings[code]:
                assert code in eye.masks and eye.masks[code].sum() > 0, (eye.seed, code)
                assert not (eye.masks[code] & ~eye.masks["fov"]).any(), (eye.seed, code)
            else:
                assert code not in eye.masks
        assert eye.masks["cup"].sum() > 0
        assert not (eye.masks["cup"] & ~eye.masks["disc"]).any()


def test_findings_sit_where_they_appear_clinically():
    seen = set()
    for seed in range(200):
        eye = render_phantom(seed, 256)
        dx, dy = centroid(eye.masks["disc"])
        fov_x, _ = centroid(eye.masks["fov"])
        nasal = 1 if eye.eye == "OD" else -1        # OD: the disc, nasal, lies right of centre
        assert (dx - fov_x) * nasal > 0
        m = eye.masks
        for code in ("ANRS", "RNFLDS", "BCLVS"):
            if code in m:
                assert centroid(m[code])[1] < dy, (seed, code)   # superior = up in the image
                seen.add(code)
        for code in ("ANRI", "RNFLDI", "BCLVI"):
            if code in m:
                assert centroid(m[code])[1] > dy, (seed, code)
                seen.add(code)
        for code in ("RNFLDS", "RNFLDI"):
            if code in m:                                        # wedges run temporally
                assert (centroid(m[code])[0] - dx) * nasal < 0, (seed, code)
        if "NVT" in m:
            assert (centroid(m["NVT"])[0] - dx) * nasal > 0, seed
            seen.add("NVT")
        if "LD" in m:
            assert not (m["LD"] & ~m["cup"]).any()
            seen.add("LD")
        if "DH" in m:                                           # at the disc margin
            ring = ndimage.binary_dilation(m["disc"], iterations=3) & ~ndimage.binary_erosion(m["disc"], iterations=3)
            assert (m["DH"] & ring).any(), seed
            seen.add("DH")
        if "LC" in m:
            np.testing.assert_array_equal(m["LC"], m["cup"])
            seen.add("LC")
    assert seen == set(FINDINGS)


def test_looks_like_a_fundus(eyes256):
    for eye in eyes256[:10]:
        img = eye.image.astype(float)
        outside = ~ndimage.binary_dilation(eye.masks["fov"], iterations=3)  # past the soft edge
        assert img[outside].mean() < 1 and (img[outside] > 10).mean() < 0.005  # black (JPEG ringing aside)
        inside = img[eye.masks["fov"]]
        r, g, b = inside.mean(0)
        assert r > g > b                                          # orange-red fundus
        disc = img[eye.masks["disc"]].mean()
        assert disc > inside.mean() + 20                          # the disc is the bright spot


def test_shortcut_marker_correlates_with_label_only_when_asked():
    with_marker = [draw_phantom_cause(s, shortcut=0.9) for s in range(2000)]
    rate = {lab: np.mean([m for c, _, m in with_marker if c.label == lab]) for lab in (0, 1)}
    assert rate[1] > 0.9 and rate[0] < 0.1
    random_marker = [draw_phantom_cause(s, shortcut=0.0) for s in range(2000)]
    rate0 = {lab: np.mean([m for c, _, m in random_marker if c.label == lab]) for lab in (0, 1)}
    assert abs(rate0[1] - rate0[0]) < 0.08
    assert not any(m for _, _, m in (draw_phantom_cause(s) for s in range(200)))


def test_shortcut_changes_only_the_marker_pixels():
    seed = next(s for s in range(100) if draw_phantom_cause(s, shortcut=1.0)[0].label == 1)
    plain, marked = render_phantom(seed, 256), render_phantom(seed, 256, shortcut=1.0)
    assert marked.shortcut and "shortcut" in marked.masks and "shortcut" not in plain.masks
    assert (plain.label, plain.findings, plain.vcdr) == (marked.label, marked.findings, marked.vcdr)
    ys, xs = np.nonzero(marked.masks["shortcut"])
    far = np.ones((256, 256), bool)
    far[max(ys.min() - 16, 0):ys.max() + 17, max(xs.min() - 16, 0):xs.max() + 17] = False
    np.testing.assert_array_equal(plain.image[far], marked.image[far])
    assert marked.image[marked.masks["shortcut"]].mean() > plain.image[marked.masks["shortcut"]].mean() + 60


def test_bad_options_name_the_key():
    with pytest.raises(ConfigError, match="prevalance"):
        render_phantom(0, 64, prevalance=0.5)
    with pytest.raises(ConfigError, match="prevalence"):
        PhantomOptions(prevalence=1.5)
    with pytest.raises(ConfigError, match="size"):
        render_phantom(0, 8)
    prevalent = np.mean([draw_phantom_cause(s, prevalence=0.6)[0].label for s in range(2000)])
    assert abs(prevalent - 0.6) < 0.04
