"""Tests of xmed.data.io: every fixture is written inside the test, every check is on values."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread, uid
from pydicom.encaps import encapsulate

from xmed.data.io import DEFAULT_DICOM_SALT, read_dicom, read_image, read_image_reduced, read_mask
from xmed.errors import ImageReadError, InputError

from helpers.dicom import INSTANCE_UID, OP_8BIT, PHI, write_dicom

H, W = 24, 32
VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def random_rgb(seed: int = 0, shape=(H, W, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def smooth_rgb() -> np.ndarray:
    """Slow colour ramps: JPEG keeps them within a few levels."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([40 + 180 * x / (W - 1), 30 + 150 * y / (H - 1),
                     200 - 120 * (x + y) / (W + H - 2)], axis=-1).round().astype(np.uint8)


def rgb_to_ybr_full(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 full range, as DICOM PS3.3 C.7.6.3.1.2 defines YBR_FULL."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.clip(np.stack([y, cb, cr], axis=-1).round(), 0, 255).astype(np.uint8)


def expect_error(func, path, *reason_parts, **kwargs) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        func(path, **kwargs)
    err = info.value
    assert isinstance(err, ValueError)
    assert str(path) in str(err) and err.path == str(path)
    for part in reason_parts:
        assert part in err.reason, (part, err.reason)
    return err


def png_header_only(path, width: int, height: int) -> None:
    """A PNG whose IHDR declares ``width x height`` but holds no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------ read_image
@pytest.mark.parametrize("suffix", ["png", "bmp", "tif"])
def test_lossless_formats_round_trip_exactly(tmp_path, suffix):
    rgb = random_rgb()
    path = tmp_path / f"eye.{suffix}"
    Image.fromarray(rgb).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_round_trips_within_tolerance(tmp_path):
    rgb = smooth_rgb()
    path = tmp_path / "eye.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    out = read_image(path)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 2


def test_grayscale_gives_three_equal_channels(tmp_path):
    gray = random_rgb(shape=(H, W))
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_rgba_and_la_are_composited_onto_black(tmp_path):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, :, :3] = [200, 100, 50]
    rgba[0, :, 3] = [255, 128, 0]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png")[0],
                                  [[200, 100, 50], [100, 50, 25], [0, 0, 0]])
    la = np.array([[[200, 255], [200, 128], [200, 0]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png")[0, :, 0], [200, 100, 0])


def test_16bit_png_is_scaled_by_its_bit_depth(tmp_path):
    values = np.array([[0x8000, 0xFFFF, 0x00FF, 0x0100]], np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode == "I;16"
    out = read_image(tmp_path / "d.png")
    np.testing.assert_array_equal(out[0, :, 0], [128, 255, 0, 1])
    assert (out[..., 0] == out[..., 2]).all()


def test_palette_image_gives_palette_colours_and_mask_gives_indices(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    colours = [(10, 20, 30), (200, 0, 0), (0, 250, 5)]
    image = Image.fromarray(indices, "P")
    image.putpalette([c for colour in colours for c in colour])
    image.save(tmp_path / "p.png")
    expected = np.array(colours, np.uint8)[indices]
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), expected)
    mask = read_mask(tmp_path / "p.png")
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, indices)


def test_palette_transparency_is_black(tmp_path):
    image = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    image.putpalette([255, 255, 255, 90, 80, 70])
    image.save(tmp_path / "t.png", transparency=0)
    np.testing.assert_array_equal(read_image(tmp_path / "t.png")[0], [[0, 0, 0], [90, 80, 70]])


def test_cmyk_is_converted_to_rgb(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]], np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif")[0],
                                  [[255, 255, 255], [0, 255, 255], [0, 0, 0]])


def test_exif_orientation_is_applied(tmp_path):
    rgb = random_rgb()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(rgb).save(tmp_path / "o.png", exif=exif)
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), np.rot90(rgb, k=-1))


# ---------------------------------------------------------------------- read_image_reduced
def smooth_photo(height: int, width: int) -> np.ndarray:
    """A bright disc with slow colour ramps on black, like a fundus photograph."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    ramps = np.stack([120 + 100 * x / width, 40 + 60 * y / height, 30 + 20 * (x + y) / (width + height)], -1)
    inside = (x - width / 2) ** 2 + (y - height / 2) ** 2 <= (0.45 * min(height, width)) ** 2
    return (ramps * inside[..., None]).round().astype(np.uint8)


def block_means(image: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each ``factor``×``factor`` block (the last ones padded by repeating the edge)."""
    h, w = -(-image.shape[0] // factor), -(-image.shape[1] // factor)
    padded = np.pad(image.astype(np.float64), ((0, h * factor - image.shape[0]), (0, w * factor - image.shape[1]),
                                               (0, 0)), mode="edge")
    return padded.reshape(h, factor, w, factor, 3).mean(axis=(1, 3))


@pytest.mark.parametrize(("height", "width"), [(96, 128), (101, 130)])
def test_a_reduced_jpeg_decode_is_the_photograph_at_a_fraction_of_its_size(tmp_path, height, width):
    """Decoded at 1/2, 1/4, 1/8: sides rounded up, each pixel within 2 grey levels on average of
    the mean of the block of the whole decode it stands for; the factor is chosen from the stored
    size."""
    path = tmp_path / "eye.jpg"
    Image.fromarray(smooth_photo(height, width)).save(path, quality=95)
    whole = read_image(path)
    asked = []
    for factor in (1, 2, 4, 8):
        image, applied = read_image_reduced(path, lambda w, h, factor=factor: asked.append((w, h)) or factor)
        assert applied == factor and image.dtype == np.uint8
        assert image.shape == (-(-height // factor), -(-width // factor), 3)
        assert np.abs(image - block_means(whole, factor)).mean() < 2, factor
    assert asked == [(width, height)] * 4


def test_a_reduced_decode_keeps_the_exif_orientation_and_reads_other_formats_whole(tmp_path):
    photo = smooth_photo(64, 96)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(photo).save(tmp_path / "o.jpg", quality=95, exif=exif)
    image, factor = read_image_reduced(tmp_path / "o.jpg", lambda w, h: 2)
    assert factor == 2 and image.shape == (48, 32, 3)   # the stored 96x64, halved, then turned
    turned_whole = read_image(tmp_path / "o.jpg")
    assert turned_whole.shape == (96, 64, 3)
    assert np.abs(image - block_means(turned_whole, 2)).mean() < 2
    Image.fromarray(photo).save(tmp_path / "eye.png")
    image, factor = read_image_reduced(tmp_path / "eye.png", lambda w, h: 4)
    assert factor == 1
    np.testing.assert_array_equal(image, photo)


def test_a_reduced_decode_keeps_the_checks_and_refuses_other_factors(tmp_path):
    def halved(path, **kwargs):
        return read_image_reduced(path, lambda w, h: 2, **kwargs)

    path = tmp_path / "eye.jpg"
    Image.fromarray(smooth_photo(H, W)).save(path)
    expect_error(halved, path, f"{W}x{H}", "max_pixels=100", max_pixels=100)
    buffer = io.BytesIO()
    Image.fromarray(random_rgb(1, (64, 64, 3))).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    expect_error(halved, tmp_path / "cut.jpg", "truncated")
    expect_error(halved, tmp_path / "nope.jpg", "does not exist")
    with pytest.raises(InputError, match="reduction: returned 3 for .*eye.jpg; must be one of"):
        read_image_reduced(path, lambda w, h: 3)


# ------------------------------------------------------------------------------- read_mask
def test_read_mask_levels(tmp_path):
    levels = np.array([[0, 128, 255]], np.uint8)
    Image.fromarray(levels, "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png"), levels)

    Image.fromarray(np.repeat(levels[..., None], 3, -1)).save(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "grey_rgb.png"), levels)

    colour = np.array([[[255, 0, 0], [0, 255, 0], [10, 20, 200]]], np.uint8)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "colour.png"),
                                  np.array(Image.fromarray(colour).convert("L")))  # [76, 150, 40]

    wide = np.array([[0, 1, 2, 40000]], np.uint16)
    Image.fromarray(wide).save(tmp_path / "w.png")
    out = read_mask(tmp_path / "w.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, wide)

    rgba = np.array([[[255, 255, 255, 0], [255, 255, 255, 255]]], np.uint8)  # transparent white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "a.png"), [[0, 255]])

    Image.fromarray(np.array([[0, 1, 1]], bool)).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "bits.png"), [[0, 1, 1]])


# ---------------------------------------------------------------------------------- errors
def test_missing_folder_and_empty_files(tmp_path):
    expect_error(read_image, tmp_path / "nope.png", "does not exist")
    expect_error(read_mask, tmp_path / "nope.png", "does not exist")
    expect_error(read_dicom, tmp_path / "nope.dcm", "does not exist")
    expect_error(read_image, tmp_path, "folder")
    (tmp_path / "empty.png").write_bytes(b"")
    expect_error(read_image, tmp_path / "empty.png", "zero-byte")
    (tmp_path / "empty.dcm").write_bytes(b"")
    expect_error(read_image, tmp_path / "empty.dcm", "zero-byte")


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_image(tmp_path, suffix):
    buffer = io.BytesIO()
    Image.fromarray(random_rgb(1, (64, 64, 3))).save(buffer, "PNG" if suffix == "png" else "JPEG")
    path = tmp_path / f"cut.{suffix}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    expect_error(read_image, path, "truncated")
    expect_error(read_mask, path, "truncated")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is a text file, not a photograph\n" * 10)
    expect_error(read_image, path, "not an image")
    path = tmp_path / "notes.dcm"
    path.write_text("this is a text file, not a DICOM file\n" * 10)
    expect_error(read_image, path, "not a DICOM file")


def test_decompression_bomb(tmp_path):
    huge = tmp_path / "huge.png"
    png_header_only(huge, 100_000, 100_000)  # Pillow's own hard limit
    expect_error(read_image, huge, "decompression bomb")
    limit = Image.MAX_IMAGE_PIXELS
    warned = tmp_path / "warned.png"
    png_header_only(warned, 10_000, 10_000)  # Pillow's warning, turned into the error
    expect_error(read_image, warned, "decompression bomb")
    assert Image.MAX_IMAGE_PIXELS == limit
    big = tmp_path / "big.png"
    png_header_only(big, 5_000, 5_000)  # above max_pixels only: rejected before decoding
    expect_error(read_image, big, "5000x5000", "max_pixels=1000", max_pixels=1000)
    small = tmp_path / "small.png"
    Image.fromarray(random_rgb()).save(small)
    expect_error(read_image, small, f"{W}x{H}", "max_pixels=100", "decompression bomb",
                 max_pixels=100)
    expect_error(read_mask, small, "max_pixels=100", max_pixels=100)


def test_unsupported_mode(tmp_path):
    Image.fromarray(np.ones((2, 2), np.float32)).save(tmp_path / "f.tif")
    expect_error(read_image, tmp_path / "f.tif", "unsupported image mode 'F'")


# ----------------------------------------------------------------------------------- DICOM
def test_ophthalmic_photography_rgb_and_meta(tmp_path):
    rgb = random_rgb(2)
    image, meta = read_dicom(write_dicom(tmp_path / "op.dcm", rgb), salt="s")
    np.testing.assert_array_equal(image, rgb)
    assert meta == {
        "id": hashlib.sha256(f"s:{INSTANCE_UID}".encode()).hexdigest()[:16],
        "eye": "OD", "modality": "OP", "sop_class": OP_8BIT, "photometric": "RGB",
        "rows": H, "columns": W, "n_frames": 1, "transfer_syntax": uid.ExplicitVRLittleEndian,
    }


def test_planar_configuration_1_and_implicit_vr(tmp_path):
    rgb = random_rgb(3)
    path = write_dicom(tmp_path / "planar.dcm", rgb, planar=1, syntax=uid.ImplicitVRLittleEndian)
    np.testing.assert_array_equal(read_dicom(path)[0], rgb)


def test_read_image_detects_dicom_by_preamble_and_suffix(tmp_path):
    rgb = random_rgb(4)
    path = write_dicom(tmp_path / "IM0001", rgb)  # no suffix: found by the DICM prefix
    np.testing.assert_array_equal(read_image(path), rgb)
    np.testing.assert_array_equal(read_image(write_dicom(tmp_path / "x.DCM", rgb)), rgb)


def test_ybr_full_uncompressed_is_converted_to_rgb(tmp_path):
    rgb = random_rgb(5)
    path = write_dicom(tmp_path / "ybr.dcm", rgb_to_ybr_full(rgb), photometric="YBR_FULL")
    image, meta = read_dicom(path)
    assert np.abs(image.astype(int) - rgb).max() <= 2
    assert meta["photometric"] == "YBR_FULL"


def test_ybr_full_422_uncompressed_is_upsampled_and_converted(tmp_path):
    rgb = random_rgb(10)
    rgb[:, 1::2] = rgb[:, ::2]  # horizontal pairs share a colour, so 4:2:2 loses nothing
    ybr = rgb_to_ybr_full(rgb)
    stored = np.stack([ybr[:, ::2, 0], ybr[:, 1::2, 0], ybr[:, ::2, 1], ybr[:, ::2, 2]], axis=-1)
    path = write_dicom(tmp_path / "422.dcm", rgb, photometric="YBR_FULL_422",
                       pixel_data=stored.tobytes())  # Y1 Y2 Cb Cr per pair (PS3.3 C.7.6.3.1.2)
    assert np.abs(read_dicom(path)[0].astype(int) - rgb).max() <= 2


def test_palette_colour_dicom(tmp_path):
    path = write_dicom(tmp_path / "pal.dcm", np.array([[0, 1, 2, 3]], np.uint8),
                       photometric="PALETTE COLOR")
    ds = dcmread(path)
    for colour, entries in {"Red": [0, 65535, 0, 32768], "Green": [0, 0, 65535, 32768],
                            "Blue": [0, 0, 0, 65535]}.items():
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [4, 0, 16])
        ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
        setattr(ds, f"{colour}PaletteColorLookupTableData", np.array(entries, "<u2").tobytes())
    ds.save_as(path)
    np.testing.assert_array_equal(read_dicom(path)[0][0],
                                  [[0, 0, 0], [255, 0, 0], [0, 255, 0], [128, 128, 255]])


def test_jpeg_baseline_ybr_full_422_is_converted_to_rgb(tmp_path):
    rgb = smooth_rgb()
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=95)  # YCbCr with 4:2:0 chroma
    path = write_dicom(tmp_path / "jpeg.dcm", rgb, photometric="YBR_FULL_422",
                       syntax=uid.JPEGBaseline8Bit, pixel_data=encapsulate([buffer.getvalue()]))
    image, meta = read_dicom(path)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    error = np.abs(image.astype(int) - rgb)
    assert error.mean() < 4 and error.max() < 20
    assert meta["transfer_syntax"] == uid.JPEGBaseline8Bit and meta["photometric"] == "YBR_FULL_422"


OP_16BIT = "1.2.840.10008.5.1.4.1.1.77.1.5.2"  # not one of the three: read all the same


@pytest.mark.parametrize("sop_class", [SECONDARY_CAPTURE, VL_PHOTO, OP_16BIT])
def test_other_sop_classes(tmp_path, sop_class):
    rgb = random_rgb(6)
    image, meta = read_dicom(write_dicom(tmp_path / "sc.dcm", rgb, sop_class=sop_class))
    np.testing.assert_array_equal(image, rgb)
    assert meta["sop_class"] == sop_class


def test_monochrome(tmp_path):
    gray = np.array([[0, 1, 254, 255]], np.uint8)
    image, _ = read_dicom(write_dicom(tmp_path / "m1.dcm", gray, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(image, np.repeat((255 - gray)[..., None], 3, -1))
    image, _ = read_dicom(write_dicom(tmp_path / "m2.dcm", gray, photometric="MONOCHROME2"))
    np.testing.assert_array_equal(image[..., 1], gray)
    twelve = np.array([[0, 0x800, 0xFFF, 0x10]], np.uint16)
    image, _ = read_dicom(write_dicom(tmp_path / "m12.dcm", twelve, photometric="MONOCHROME2",
                                      bits_stored=12))
    np.testing.assert_array_equal(image[0, :, 0], [0, 128, 255, 1])


def test_multiframe_gives_first_frame(tmp_path):
    frames = np.stack([random_rgb(7), random_rgb(8)])
    image, meta = read_dicom(write_dicom(tmp_path / "mf.dcm", frames, frames=2))
    np.testing.assert_array_equal(image, frames[0])
    assert meta["n_frames"] == 2


@pytest.mark.parametrize(("keyword", "value", "eye"), [
    ("ImageLaterality", "R", "OD"), ("ImageLaterality", "L", "OS"), ("Laterality", "L", "OS"),
    ("ImageLaterality", "B", None), (None, None, None),
])
def test_laterality(tmp_path, keyword, value, eye):
    path = write_dicom(tmp_path / "lat.dcm", random_rgb(), laterality=value,
                       laterality_keyword=keyword or "ImageLaterality")
    assert read_dicom(path)[1]["eye"] == eye


def test_meta_is_deidentified_and_salted(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "phi.dcm", random_rgb())
    monkeypatch.delenv("XMED_DICOM_SALT", raising=False)
    _, meta = read_dicom(path)
    text = json.dumps(meta)
    for value in [*PHI.values(), "Doe", "Jane", "20240102", INSTANCE_UID]:
        assert value not in text
    assert set(meta) == {"id", "eye", "modality", "sop_class", "photometric", "rows", "columns",
                         "n_frames", "transfer_syntax"}

    def expected(salt: str) -> str:
        return hashlib.sha256(f"{salt}:{INSTANCE_UID}".encode()).hexdigest()[:16]

    assert meta["id"] == expected(DEFAULT_DICOM_SALT) and len(meta["id"]) == 16
    assert read_dicom(path, salt="site-a")[1]["id"] == expected("site-a")
    assert read_dicom(path, salt="site-b")[1]["id"] != expected("site-a")
    monkeypatch.setenv("XMED_DICOM_SALT", "from-env")
    assert read_dicom(path)[1]["id"] == expected("from-env")


def test_dicom_errors(tmp_path):
    rgb = random_rgb()
    expect_error(read_dicom, write_dicom(tmp_path / "nopix.dcm", rgb, pixel_data=False),
                 "no pixel data")
    expect_error(read_image, tmp_path / "nopix.dcm", "no pixel data")

    short = rgb.tobytes()[:-100]
    expect_error(read_dicom, write_dicom(tmp_path / "short.dcm", rgb, pixel_data=short),
                 "truncated pixel data", f"{len(short)} bytes, expected {rgb.size}")

    buffer = io.BytesIO()
    Image.fromarray(random_rgb(9, (64, 64, 3))).save(buffer, "JPEG")
    path = write_dicom(tmp_path / "jpeg.dcm", random_rgb(9, (64, 64, 3)),
                       photometric="YBR_FULL_422", syntax=uid.JPEGBaseline8Bit,
                       pixel_data=encapsulate([buffer.getvalue()]))
    data = path.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 600])
    with pytest.warns(UserWarning, match="End of file"):  # pydicom's own warning
        expect_error(read_dicom, tmp_path / "cut.dcm", "truncated")

    bad_jpeg = encapsulate([buffer.getvalue()[: len(buffer.getvalue()) // 2]])
    expect_error(read_dicom, write_dicom(tmp_path / "badjpeg.dcm", rgb, photometric="YBR_FULL_422",
                                         syntax=uid.JPEGBaseline8Bit, pixel_data=bad_jpeg),
                 "truncated pixel data", uid.JPEGBaseline8Bit)
    garbage = encapsulate([b"this is no JPEG at all!!"])
    expect_error(read_dicom, write_dicom(tmp_path / "garbage.dcm", rgb, photometric="YBR_FULL_422",
                                         syntax=uid.JPEGBaseline8Bit, pixel_data=garbage),
                 "cannot decode pixel data", uid.JPEGBaseline8Bit)

    unknown = tmp_path / "unknown.dcm"  # same-length UID that pydicom has no decoder for
    unknown.write_bytes(data.replace(uid.JPEGBaseline8Bit.encode(), b"1.2.840.10008.1.2.4.99"))
    expect_error(read_dicom, unknown, "unsupported transfer syntax 1.2.840.10008.1.2.4.99")

    jpeg_ls = write_dicom(tmp_path / "jls.dcm", rgb, syntax=uid.JPEGLSLossless,
                          pixel_data=encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"]))
    expect_error(read_dicom, jpeg_ls, uid.JPEGLSLossless)

    png = tmp_path / "photo.dcm"
    Image.fromarray(rgb).save(png, format="PNG")
    expect_error(read_dicom, png, "not a DICOM file")
    expect_error(read_dicom, write_dicom(tmp_path / "big.dcm", rgb), "max_pixels=10", max_pixels=10)
