"""Fuzzing the image and DICOM readers: whatever bytes a file holds (random bytes; truncated,
bit-flipped or overwritten PNG, JPEG, TIFF, BMP, WebP, GIF and DICOM files; odd shapes and modes;
DICOM headers that lie about their pixels), :func:`read_image`, :func:`read_mask` and
:func:`read_dicom` return an array of the documented dtype and shape or raise an
``ImageReadError`` naming the file — nothing else escapes, nothing hangs, no file stays open.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import reprlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom import uid

from xmed.data.io import read_dicom, read_image, read_mask
from xmed.errors import ImageReadError

# pydicom warns about every lying value it reads; the readers' behaviour is what is checked here.
pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("ignore::UserWarning")]
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Keeps a mutated header from asking for a large (slow, but legitimate) decode.
FUZZ_MAX_PIXELS = 1 << 20
META_KEYS = {"id", "eye", "modality", "sop_class", "photometric", "rows", "columns", "n_frames", "transfer_syntax"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


# ------------------------------------------------------------------------------- the property
def open_files_under(folder: Path) -> list[str]:
    """Files under ``folder`` this process holds open (Linux ``/proc``; empty elsewhere)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return []
    targets = []
    for fd in os.listdir(fds):
        try:
            targets.append(os.readlink(fds / fd))
        except OSError:  # closed meanwhile (e.g. the descriptor listdir itself used)
            continue
    return [target for target in targets if target.startswith(str(folder) + os.sep)]


def check_image(image, shape: tuple[int, int] | None = None) -> None:
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1, image.shape
    assert shape is None or image.shape[:2] == shape


def read_each(path: Path, **kwargs) -> dict[str, np.ndarray | ImageReadError]:
    """Run every reader on ``path``; each returns the documented array or raises an
    ``ImageReadError`` naming ``path`` (any other exception fails the test). Returns reader
    name -> array or error."""
    readers = [read_image, read_mask]
    if path.suffix.lower() == ".dcm" or path.read_bytes()[128:132] == b"DICM":
        readers.append(read_dicom)
    outcomes = {}
    for reader in readers:
        try:
            out = reader(path, **kwargs)
        except ImageReadError as err:
            assert err.path == str(path) and str(path) in str(err) and err.reason, str(err)
            outcomes[reader.__name__] = err
            continue
        if reader is read_dicom:
            out, meta = out
            assert set(meta) == META_KEYS and len(meta["id"]) == 16 and meta["eye"] in ("OD", "OS", None)
            check_image(out, (meta["rows"], meta["columns"]))
        elif reader is read_mask:
            assert out.ndim == 2 and out.dtype in (np.uint8, np.uint16) and min(out.shape) >= 1
        else:
            check_image(out)
        outcomes[reader.__name__] = out
    for name, outcome in outcomes.items():  # shown by --hypothesis-show-statistics
        if currently_in_test_context():
            event(f"{name}: {type(outcome).__name__}")
    assert not open_files_under(path.parent)
    image, mask = outcomes["read_image"], outcomes["read_mask"]
    if isinstance(image, np.ndarray) and isinstance(mask, np.ndarray):
        assert mask.shape == image.shape[:2]
    if "read_dicom" in outcomes:  # read_image of a DICOM file is read_dicom's image
        dicom = outcomes["read_dicom"]
        assert type(dicom) is type(image)
        if isinstance(image, np.ndarray):
            np.testing.assert_array_equal(image, dicom)
    return outcomes


# ---------------------------------------------------------------------------------- seed images
@functools.cache
def small_retina() -> np.ndarray:
    """A real fundus photograph, shrunk to 32x24 so that every decode is fast."""
    return np.array(Image.fromarray(skimage.data.retina()).resize((32, 24), Image.BILINEAR))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@functools.cache
def seed_files() -> dict[str, tuple[bytes, tuple[int, int] | None]]:
    """name -> (file bytes, the H×W read_image gives, or None when it refuses the file)."""
    rgb = Image.fromarray(small_retina())
    gray = rgb.convert("L")
    palette = rgb.quantize(16)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: 24x32 reads as 32x24
    sixteen = Image.fromarray(np.array(gray, np.uint16) * 257)
    pages = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return {
        "png": (encode(rgb, "PNG"), (24, 32)),
        "jpeg": (encode(rgb, "JPEG", quality=90), (24, 32)),
        "progressive-jpeg": (encode(rgb, "JPEG", progressive=True), (24, 32)),
        "tiff": (encode(rgb, "TIFF"), (24, 32)),
        "tiff-deflate": (encode(rgb, "TIFF", compression="tiff_adobe_deflate"), (24, 32)),
        "bmp": (encode(rgb, "BMP"), (24, 32)),
        "webp": (encode(rgb, "WEBP", lossless=True), (24, 32)),
        "gif": (encode(palette, "GIF"), (24, 32)),
        "png-1x1": (encode(rgb.resize((1, 1)), "PNG"), (1, 1)),
        "png-1xN": (encode(rgb.resize((40, 1)), "PNG"), (1, 40)),
        "bmp-Nx1": (encode(rgb.resize((1, 40)), "BMP"), (40, 1)),
        "png-16bit": (encode(sixteen, "PNG"), (24, 32)),
        "tiff-16bit": (encode(sixteen, "TIFF"), (24, 32)),
        "tiff-32bit": (encode(sixteen.convert("I"), "TIFF"), (24, 32)),
        "png-palette-transparent": (encode(palette, "PNG", transparency=0), (24, 32)),
        "png-gray": (encode(gray, "PNG"), (24, 32)),
        "png-1bit": (encode(gray.convert("1"), "PNG"), (24, 32)),
        "png-la": (encode(Image.merge("LA", [gray, gray]), "PNG"), (24, 32)),
        "png-rgba": (encode(Image.merge("RGBA", [*rgb.split(), gray]), "PNG"), (24, 32)),
        "webp-rgba": (encode(Image.merge("RGBA", [*rgb.split(), gray]), "WEBP"), (24, 32)),
        "tiff-cmyk": (encode(rgb.convert("CMYK"), "TIFF"), (24, 32)),
        "jpeg-cmyk": (encode(rgb.convert("CMYK"), "JPEG"), (24, 32)),
        "tiff-ycbcr": (encode(rgb.convert("YCbCr"), "TIFF"), (24, 32)),
        "tiff-multipage": (encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]), (24, 32)),
        "png-exif-rotated": (encode(rgb, "PNG", exif=exif), (32, 24)),
        "tiff-float": (encode(gray.convert("F"), "TIFF"), None),
    }


@st.composite
def mutations(draw, data: bytes, header_start: int = 0) -> bytes:
    """``data`` intact, truncated, with bits flipped (often in the 256 bytes of header from
    ``header_start``), a stretch overwritten with random bytes, or random bytes appended."""
    data = bytearray(data)
    header = st.integers(header_start, min(len(data), header_start + 256) - 1)
    header_or_anywhere = st.one_of(header, st.integers(0, len(data) - 1))
    kind = draw(st.sampled_from(["intact", "truncated", "bit-flipped", "bit-flipped", "overwritten", "appended"]))
    if kind == "truncated":
        return bytes(data[: draw(st.integers(1, len(data) - 1))])
    if kind == "bit-flipped":
        for _ in range(draw(st.integers(1, 6))):
            data[draw(header_or_anywhere)] ^= 1 << draw(st.integers(0, 7))
    elif kind == "overwritten":
        start = draw(header_or_anywhere)
        data[start:start + 16] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "appended":
        data += draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_images")


@settings(FUZZ, max_examples=400)
@given(name=st.sampled_from(sorted(seed_files())), data=st.data())
def test_mutated_images_read_or_raise_an_image_read_error(fuzz_dir, name, data):
    original, shape = seed_files()[name]
    content = data.draw(mutations(original), label="content")
    suffix = data.draw(st.sampled_from([".png", ".jpg", ".tif", ""]), label="suffix")  # suffix needn't match
    path = fuzz_dir / f"{name}{suffix}"
    path.write_bytes(content)
    outcomes = read_each(path, max_pixels=FUZZ_MAX_PIXELS)
    if content == original:  # intact: exactly what the seed promises
        if shape is None:
            assert isinstance(outcomes["read_image"], ImageReadError)
        else:
            check_image(outcomes["read_image"], shape)


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF89a",
         b"RIFF\x00\x01\x00\x00WEBPVP8 ", bytes(128) + b"DICM"]


@settings(FUZZ, max_examples=200)
@given(magic=st.sampled_from(MAGIC), rest=st.binary(max_size=600),
       suffix=st.sampled_from([".png", ".jpg", ".tiff", ".bmp", ".webp", ".gif", ".dcm", ""]))
def test_random_bytes_read_or_raise_an_image_read_error(fuzz_dir, magic, rest, suffix):
    path = fuzz_dir / f"random{suffix}"
    path.write_bytes(magic + rest)
    outcomes = read_each(path, max_pixels=FUZZ_MAX_PIXELS)
    if not magic + rest:
        assert "zero-byte" in outcomes["read_image"].reason


# ---------------------------------------------------------------------------------- DICOM files
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}
SEQUENCE_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
PIXEL_DATA = 0x7FE00010
#: (group, element) of the Image Pixel attributes the readers use.
SAMPLES, PHOTOMETRIC, PLANAR, FRAMES, ROWS, COLUMNS = (0x00280002, 0x00280004, 0x00280006, 0x00280008, 0x00280010,
                                                       0x00280011)
BITS_ALLOCATED, BITS_STORED, HIGH_BIT, PIXEL_REPRESENTATION = 0x00280100, 0x00280101, 0x00280102, 0x00280103
PALETTE_DESCRIPTORS, PALETTE_DATA = (0x00281101, 0x00281102, 0x00281103), (0x00281201, 0x00281202, 0x00281203)


def element(tag: int, vr: str, value: bytes, *, implicit: bool) -> bytes:
    """One little-endian data element, byte for byte as given (the value may lie about its VR or
    length); Pixel Data holding :func:`encapsulated` items gets an undefined length."""
    group, number = tag >> 16, tag & 0xFFFF
    undefined_length = tag == PIXEL_DATA and value.endswith(SEQUENCE_DELIMITER)
    length = 0xFFFFFFFF if undefined_length else len(value)
    if implicit:
        return struct.pack("<HHI", group, number, length) + value
    if vr in LONG_VRS or undefined_length:
        return struct.pack("<HH2s2xI", group, number, vr.encode(), length) + value
    return struct.pack("<HH2sH", group, number, vr.encode(), length) + value


def text_value(text: str | bytes, pad: bytes = b" ") -> bytes:
    value = text.encode("latin-1") if isinstance(text, str) else text
    return value + pad if len(value) % 2 else value


def encapsulated(fragments: list[bytes]) -> bytes:
    """Encapsulated Pixel Data: an empty basic offset table, the fragments, the delimiter."""
    items = [struct.pack("<HHI", 0xFFFE, 0xE000, 0)]
    items += [struct.pack("<HHI", 0xFFFE, 0xE000, len(f)) + f for f in fragments]
    return b"".join(items) + SEQUENCE_DELIMITER


def dicom_file(elements: dict[int, tuple[str, bytes]], syntax: str, *, implicit: bool = False) -> bytes:
    """A DICOM Part 10 file written by hand (pydicom refuses to write lies): preamble, ``DICM``,
    file meta, then ``elements`` (tag -> (VR, value)) in tag order, deflated for the Deflated
    transfer syntax."""
    meta = b"".join(element(tag, vr, value, implicit=False) for tag, (vr, value) in [
        (0x00020001, ("OB", b"\x00\x01")), (0x00020002, ("UI", text_value(SECONDARY_CAPTURE, b"\0"))),
        (0x00020003, ("UI", text_value("1.2.826.0.1.3680043.8.498.1", b"\0"))),
        (0x00020010, ("UI", text_value(syntax, b"\0")))])
    body = b"".join(element(tag, vr, value, implicit=implicit) for tag, (vr, value) in sorted(elements.items()))
    if syntax == uid.DeflatedExplicitVRLittleEndian:
        deflate = zlib.compressobj(wbits=-15)
        body = deflate.compress(body) + deflate.flush()
    group_length = element(0x00020000, "UL", struct.pack("<I", len(meta)), implicit=False)
    return bytes(128) + b"DICM" + group_length + meta + body


def us(value: int) -> tuple[str, bytes]:
    return "US", struct.pack("<H", value % 65536)


def photograph_elements(rows: int, columns: int, samples: int, bits: int, photometric: str, pixel_data: bytes, *,
                        bits_stored: int | None = None, signed: int = 0, frames: int | None = None,
                        planar: int = 0) -> dict[int, tuple[str, bytes]]:
    """The elements of a plain DICOM photograph with the given Image Pixel attributes."""
    stored = bits if bits_stored is None else bits_stored
    elements = {
        0x00080016: ("UI", text_value(SECONDARY_CAPTURE, b"\0")),
        0x00080018: ("UI", text_value("1.2.826.0.1.3680043.8.498.2", b"\0")),
        0x00080060: ("CS", text_value("OP")), 0x00200062: ("CS", text_value("L")),
        SAMPLES: us(samples), PHOTOMETRIC: ("CS", text_value(photometric)), ROWS: us(rows), COLUMNS: us(columns),
        BITS_ALLOCATED: us(bits), BITS_STORED: us(stored), HIGH_BIT: us(stored - 1), PIXEL_REPRESENTATION: us(signed),
        PIXEL_DATA: ("OW" if bits > 8 else "OB", pixel_data),
    }
    if samples == 3:
        elements[PLANAR] = us(planar)
    if frames is not None:
        elements[FRAMES] = ("IS", text_value(str(frames)))
    return elements


def palette_elements(entries: int, bits: int, data: bytes) -> dict[int, tuple[str, bytes]]:
    """A Palette Color lookup table: the same ``entries``/``bits`` descriptor and data for R, G, B."""
    elements = {tag: ("US", struct.pack("<3H", entries % 65536, 0, bits)) for tag in PALETTE_DESCRIPTORS}
    elements.update({tag: ("OW", text_value(data, b"\0")) for tag in PALETTE_DATA})
    return elements


def seeded_bytes(seed: int, length: int) -> bytes:
    return np.random.default_rng(seed).bytes(length + length % 2)


odd_strings = st.one_of(st.binary(max_size=12), st.text(max_size=6).map(lambda t: t.encode("utf-8")),
                        st.sampled_from([b"R", b"L", b"B", b"OD", b"\xff\xfe", b"\x1b$B", b"R\\L", b"\x00"]))
CHARACTER_SETS = ["ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87", "\\ISO 2022 IR 149", "GB18030", "ISO_IR 999"]


@st.composite
def well_formed_dicom(draw) -> tuple[dict[int, tuple[str, bytes]], str]:
    """The elements and transfer syntax of a DICOM photograph the reader must read: native
    (explicit, implicit or deflated) monochrome, palette or colour pixels of 1 to 16 bits, signed
    or not, one or two frames, planar or not; or a JPEG Baseline colour image. Its string fields
    (character set, modality, patient name, laterality) hold odd bytes and encodings."""
    syntax = draw(st.sampled_from([uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian,
                                   uid.DeflatedExplicitVRLittleEndian, uid.JPEGBaseline8Bit]))
    if syntax == uid.JPEGBaseline8Bit:
        jpeg = encode(Image.fromarray(small_retina()), "JPEG")
        elements = photograph_elements(24, 32, 3, 8, "YBR_FULL_422", encapsulated([text_value(jpeg, b"\0")]))
    else:
        rows, columns = draw(st.integers(1, 9)), draw(st.integers(1, 9))
        samples = draw(st.sampled_from([1, 3]))
        bits = draw(st.sampled_from([8, 16, 1] if samples == 1 else [8, 16]))
        stored = draw(st.sampled_from([16, 12])) if bits == 16 else bits
        photometric = draw(st.sampled_from(["MONOCHROME1", "MONOCHROME2"] + ["PALETTE COLOR"] * (bits == 8)
                                           if samples == 1 else ["RGB"] + ["YBR_FULL"] * (bits == 8)))
        signed = draw(st.sampled_from([0, 1])) if photometric.startswith("MONO") and bits > 1 else 0
        frames = draw(st.sampled_from([None, 1, 2]))
        length = (rows * columns * samples * (frames or 1) * bits + 7) // 8
        elements = photograph_elements(rows, columns, samples, bits, photometric,
                                       seeded_bytes(draw(st.integers(0, 2**32 - 1)), length), bits_stored=stored,
                                       signed=signed, frames=frames, planar=draw(st.sampled_from([0, 1])))
        if photometric == "PALETTE COLOR":
            elements.update(palette_elements(256, 16, seeded_bytes(draw(st.integers(0, 2**32 - 1)), 512)))
    if draw(st.booleans()):
        elements[0x00080005] = ("CS", text_value(draw(st.sampled_from(CHARACTER_SETS))))
    for tag, vr in [(0x00080060, "CS"), (0x00100010, "PN"), (0x00200060, "CS"), (0x00200062, "CS")]:
        if draw(st.booleans()):
            elements[tag] = (vr, text_value(draw(odd_strings)))
    return elements, syntax


#: A value that lies about its VR or length: random bytes under a plausible or nonsense VR.
lies = st.tuples(st.sampled_from(["US", "SS", "UL", "IS", "DS", "LO", "CS", "UI", "UN", "OB", "SQ", "??"]),
                 st.binary(max_size=10))
ODD_SYNTAXES = [uid.ExplicitVRBigEndian, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLSLossless,
                uid.JPEG2000Lossless, uid.RLELossless, uid.HTJ2KLossless, uid.ExplicitVRLittleEndian,
                "1.2.3.4.5", "not a uid", ""]
ODD_NUMBERS = [0, 2, 4, 7, 9, 12, 17, 32, 64, 65535]
HEADER_TAGS = [0x00080005, 0x00080018, 0x00080060, 0x00200062, SAMPLES, PHOTOMETRIC, PLANAR, FRAMES, ROWS, COLUMNS,
               BITS_ALLOCATED, BITS_STORED, HIGH_BIT, PIXEL_REPRESENTATION, *PALETTE_DESCRIPTORS, PIXEL_DATA]


@st.composite
def lie(draw, elements: dict[int, tuple[str, bytes]], syntax: str) -> str:
    """Make one header attribute lie (in place): a number out of range, a value of the wrong VR
    or length, a missing attribute, an odd photometric or frame count, pixel data of the wrong
    length or kind, an inconsistent palette, or a transfer syntax that does not match. Returns
    the (maybe changed) transfer syntax."""
    kind = draw(st.sampled_from(["number", "number", "wrong VR", "missing", "photometric", "frames", "pixel data",
                                 "palette", "syntax"]))
    if kind == "number":
        elements[draw(st.sampled_from([SAMPLES, PLANAR, ROWS, COLUMNS, BITS_ALLOCATED, BITS_STORED, HIGH_BIT,
                                       PIXEL_REPRESENTATION]))] = us(draw(st.sampled_from(ODD_NUMBERS)))
    elif kind == "wrong VR":
        elements[draw(st.sampled_from(HEADER_TAGS))] = draw(lies)
    elif kind == "missing":
        elements.pop(draw(st.sampled_from(HEADER_TAGS)), None)
    elif kind == "photometric":
        odd = ["YBR_FULL_422", "YBR_ICT", "YBR_RCT", "CMYK", "ARGB", "HSV", "PALETTE COLOR", "", "rgb", "FOO",
               "RGB\\RGB", "MONOCHROME2 "]
        elements[PHOTOMETRIC] = ("CS", text_value(draw(st.sampled_from(odd))))
    elif kind == "frames":
        odd = ["0", "-1", "1000000000", "abc", "1.5", "", " 2 ", "1\\2", "99"]
        elements[FRAMES] = ("IS", text_value(draw(st.sampled_from(odd))))
    elif kind == "pixel data":
        vr, value = elements[PIXEL_DATA] if PIXEL_DATA in elements else ("OB", b"")
        odd = st.sampled_from([value[: len(value) // 2 & ~1], value + bytes(64), b"", value[:-2]]).map(
            lambda data: (vr, data))
        fragments = st.lists(st.binary(min_size=1, max_size=40).map(lambda f: text_value(f, b"\0")), max_size=3)
        elements[PIXEL_DATA] = draw(st.one_of(odd, fragments.map(lambda f: ("OB", encapsulated(f))), lies))
    elif kind == "palette":
        elements.update(palette_elements(draw(st.sampled_from([0, 3, 4, 256, 65535])), draw(st.sampled_from(
            [0, 1, 8, 12, 16, 17])), draw(st.binary(max_size=40))))
    else:
        syntax = draw(st.sampled_from(ODD_SYNTAXES))
    return syntax


@st.composite
def dicom_files(draw) -> tuple[bytes, bool]:
    """``(file bytes, well formed)``: a well-formed DICOM photograph (:func:`well_formed_dicom`);
    one whose header tells one to three lies (:func:`lie`); one truncated, bit-flipped or
    overwritten after writing; or random bytes after a valid preamble."""
    kind = draw(st.sampled_from(["well formed"] * 3 + ["lying"] * 4 + ["damaged"] * 2 + ["random"]))
    if kind == "random":
        return bytes(128) + b"DICM" + draw(st.binary(max_size=400)), False
    elements, syntax = draw(well_formed_dicom())
    implicit = syntax == uid.ImplicitVRLittleEndian
    if kind == "lying":
        for _ in range(draw(st.integers(1, 3))):
            syntax = draw(lie(elements, syntax))
    content = dicom_file(elements, syntax, implicit=implicit)
    if kind == "damaged":
        content = draw(mutations(content, header_start=132))
    return content, kind == "well formed"


@settings(FUZZ, max_examples=500)
@given(case=dicom_files(), suffix=st.sampled_from([".dcm", ""]))
def test_dicom_files_read_or_raise_an_image_read_error(fuzz_dir, case, suffix):
    content, well_formed = case
    path = fuzz_dir / f"fuzz{suffix}"
    path.write_bytes(content)
    outcomes = read_each(path, max_pixels=FUZZ_MAX_PIXELS)
    if well_formed:
        assert all(isinstance(outcome, np.ndarray) for outcome in outcomes.values()), outcomes


# ------------------------------------------------------------------------ plain regression cases
LOSSLESS_RGB = {"png", "tiff", "tiff-deflate", "bmp", "webp"}


@pytest.mark.parametrize("name", sorted(seed_files()))
def test_odd_shapes_and_modes_read_as_documented(tmp_path, name):
    data, shape = seed_files()[name]
    path = tmp_path / f"{name}.img"
    path.write_bytes(data)
    image = read_each(path)["read_image"]
    if shape is None:
        assert "unsupported image mode 'F'" in image.reason
        return
    check_image(image, shape)
    if name in LOSSLESS_RGB:
        np.testing.assert_array_equal(image, small_retina())


def symlink_loop(folder: Path) -> Path:
    path = folder / "loop.png"
    path.symlink_to(path)
    return path


def fifo(folder: Path) -> Path:
    path = folder / "pipe.png"
    os.mkfifo(path)
    return path


def empty_file(folder: Path) -> Path:
    path = folder / "empty.jpg"
    path.touch()
    return path


@pytest.mark.parametrize(("make_path", "reason"), [
    pytest.param(empty_file, "zero-byte file", id="empty-file"),
    pytest.param(lambda folder: folder, "is a folder", id="directory"),
    pytest.param(symlink_loop, "", id="symlink-loop"),
    pytest.param(fifo, "zero-byte file", id="fifo-is-never-opened"),
])
def test_paths_that_are_not_image_files(tmp_path, make_path, reason):
    path = make_path(tmp_path)
    for reader in (read_image, read_mask, read_dicom):
        with pytest.raises(ImageReadError) as info:
            reader(path)
        assert info.value.path == str(path) and reason in info.value.reason


@pytest.mark.parametrize("name", [
    pytest.param("eye with spaces.png", id="spaces"),
    pytest.param("fundus ø 眼.PNG", id="unicode"),
    pytest.param(os.fsdecode(b"eye-\xff.png"), id="undecodable-bytes"),
    pytest.param("-leading-dash", id="leading-dash-no-suffix"),
])
def test_unusual_file_names_read_and_are_named_in_errors(tmp_path, name):
    path = tmp_path / name
    png = seed_files()["png"][0]
    path.write_bytes(png)
    np.testing.assert_array_equal(read_each(path)["read_image"], small_retina())
    path.write_bytes(png[: len(png) // 2])
    assert "truncated" in read_each(path)["read_image"].reason


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IEND", b""))


def jpeg_header(width: int, height: int) -> bytes:
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"".join(struct.pack(">3B", i, 0x11, 0) for i in (1, 2, 3))
    return b"\xff\xd8\xff\xc0" + struct.pack(">H", len(frame) + 2) + frame + b"\xff\xd9"


def bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info


def gif_header(width: int, height: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b"," + struct.pack("<HHHHB", 0, 0, width,
                                                                                              height, 0)
            + b"\x02\x02\x44\x01\x00;")


def tiff_header(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def webp_header(width: int, height: int) -> bytes:
    extended = (b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little")
                + (height - 1).to_bytes(3, "little"))
    return b"RIFF" + struct.pack("<I", 4 + len(extended)) + b"WEBP" + extended


@pytest.mark.parametrize("header", [
    pytest.param(png_header(100_000, 100_000), id="png-100000x100000"),
    pytest.param(png_header(1, 2**31 - 1), id="png-1x2147483647"),
    pytest.param(jpeg_header(65535, 65535), id="jpeg-65535x65535"),
    pytest.param(bmp_header(50_000, -50_000), id="bmp-50000x50000-top-down"),
    pytest.param(gif_header(65535, 65535), id="gif-65535x65535"),
    pytest.param(tiff_header(2**31, 2**31), id="tiff-2147483648x2147483648"),
    pytest.param(webp_header(16384, 16384), id="webp-16384x16384"),
])
def test_huge_declared_dimensions_in_a_tiny_file_are_refused(tmp_path, header):
    path = tmp_path / "bomb.img"
    path.write_bytes(header)
    for outcome in read_each(path).values():
        assert "decompression bomb" in outcome.reason


def test_max_pixels_is_checked_from_the_header_of_images_and_dicom(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_header(3000, 3000))
    for outcome in read_each(path, max_pixels=1000).values():
        assert "image is 3000x3000 pixels, more than max_pixels=1000" in outcome.reason
    path = tmp_path / "big.dcm"
    path.write_bytes(dicom_file(photograph_elements(65535, 65535, 1, 8, "MONOCHROME2", bytes(2)),
                                uid.ExplicitVRLittleEndian))
    for outcome in read_each(path).values():
        assert "image is 65535x65535 pixels, more than max_pixels=100000000" in outcome.reason


def lying_dicom(changes: dict[int, tuple[str, bytes]]) -> bytes:
    """A 3x2 monochrome photograph whose elements ``changes`` replace."""
    elements = photograph_elements(2, 3, 1, 8, "MONOCHROME2", bytes(range(6)))
    elements.update(changes)
    return dicom_file(elements, uid.ExplicitVRLittleEndian)


BROKEN_SEQUENCE = ("SQ", b"\x01\x02\x03\x04")


@pytest.mark.parametrize(("changes", "reason"), [
    pytest.param({ROWS: ("US", struct.pack("<2H", 2, 3))}, "Rows (0028,0010) is [2, 3], not one whole number",
                 id="rows-two-values"),
    pytest.param({ROWS: ("LO", b"two ")}, "Rows (0028,0010) is 'two', not one whole number", id="rows-as-text"),
    pytest.param({FRAMES: ("IS", b"abc ")}, "NumberOfFrames (0028,0008) is 'abc', not one whole number",
                 id="frames-as-text"),
    pytest.param({COLUMNS: ("LO", b"x" * 400)}, f"Columns (0028,0011) is {reprlib.repr('x' * 400)}, not one",
                 id="long-text-is-shortened-in-the-message"),
    pytest.param({BITS_STORED: ("US", b"\x08\x00\x00")}, "unreadable BitsStored (0028,0101)",
                 id="value-length-not-a-multiple-of-its-vr"),
    pytest.param({COLUMNS: BROKEN_SEQUENCE}, "unreadable Columns (0028,0011)", id="number-as-broken-sequence"),
    pytest.param({0x00200062: BROKEN_SEQUENCE}, "unreadable ImageLaterality (0020,0062)",
                 id="laterality-as-broken-sequence"),
    pytest.param({0x00080018: ("US", b"\x01\x02\x03")}, "unreadable SOPInstanceUID (0008,0018)",
                 id="instance-uid-as-odd-length-number"),
    pytest.param({PIXEL_DATA: ("OB", b"")}, "the Pixel Data (7FE0,0010) element is empty", id="empty-pixel-data"),
    pytest.param({PIXEL_DATA: ("US", b"\x05\x00")}, "Pixel Data (7FE0,0010) has VR US, not the OB or OW",
                 id="pixel-data-as-number"),
])
def test_lying_dicom_header_raises_an_error_naming_the_attribute(tmp_path, changes, reason):
    path = tmp_path / "lying.dcm"
    path.write_bytes(lying_dicom(changes))
    outcomes = read_each(path)
    assert len(outcomes) == 3
    for outcome in outcomes.values():
        assert isinstance(outcome, ImageReadError) and reason in outcome.reason, outcome


@pytest.mark.parametrize(("photometric", "signed", "samples", "expected"), [
    pytest.param("MONOCHROME2", 1, [-2**63, -1, 0, 2**63 - 1, 5, 6], [0, 127, 128, 255, 128, 128],
                 id="signed-64-bit"),
    pytest.param("MONOCHROME1", 0, [0, 1, 2**64 - 1, 2**63, 0, 0], [255, 255, 0, 127, 255, 255],
                 id="monochrome1-64-bit"),
    pytest.param("MONOCHROME1", 1, [-2**63, -1, 0, 2**63 - 1, 0, 0], [255, 128, 127, 0, 127, 127],
                 id="signed-monochrome1-64-bit"),
])
def test_64_bit_dicom_samples_are_scaled_without_overflow(tmp_path, photometric, signed, samples, expected):
    stored = np.array(samples, "<i8" if signed else "<u8").tobytes()
    path = tmp_path / "wide.dcm"
    path.write_bytes(dicom_file(photograph_elements(2, 3, 1, 64, photometric, stored, signed=signed),
                                uid.ExplicitVRLittleEndian))
    image = read_each(path)["read_dicom"]
    np.testing.assert_array_equal(image[..., 0].ravel(), expected)


class TouchOnUnpickle:
    """Unpickling this creates ``marker``: proof that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize(("name", "object_array", "reason"), [
    pytest.param("eye.png", False, "not an image", id="pickle-named-png"),
    pytest.param("eye.npy", False, "not an image", id="pickle-named-npy"),
    pytest.param("eye.npy", True, "not an image", id="object-array-npy"),
    pytest.param("eye.dcm", False, "not a DICOM file", id="pickle-named-dcm"),
])
def test_reading_never_unpickles(tmp_path, name, object_array, reason):
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(TouchOnUnpickle(marker)))  # the payload works ...
    assert marker.exists()
    marker.unlink()
    path = tmp_path / name
    if object_array:
        np.save(path, np.array([TouchOnUnpickle(marker)], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(pickle.dumps(TouchOnUnpickle(marker)))
    for reader in (read_image, read_mask):
        with pytest.raises(ImageReadError, match=reason) as info:
            reader(path)
        assert info.value.path == str(path)
    assert not marker.exists()  # ... but no reader ran it
