"""Reading fundus photographs, masks and DICOM files into numpy arrays.

:func:`read_image` returns every photograph as ``H×W×3`` uint8 RGB, whatever its format or mode
(JPEG, PNG, BMP, TIFF, DICOM; greyscale, alpha, 16-bit, palette, CMYK). :func:`read_mask` returns
the raw levels of a mask file. :func:`read_dicom` also returns de-identified metadata: a salted
pseudonym of the instance, the eye and a few technical attributes, never a patient identifier.
:func:`read_image_reduced` decodes a JPEG at 1/2, 1/4 or 1/8 of its size where fewer pixels do.

Every failure raises :class:`xmed.errors.ImageReadError` (a ``ValueError``) naming the file and
the reason; no Pillow or pydicom exception escapes without the path.

Example:
    >>> from xmed.data import read_image, read_dicom
    >>> image = read_image("fundus.jpg")                       # doctest: +SKIP
    >>> image.shape, image.dtype                               # doctest: +SKIP
    ((1536, 2048, 3), dtype('uint8'))
    >>> image, meta = read_dicom("fundus.dcm")                 # doctest: +SKIP
    >>> meta["eye"], meta["id"]                                # doctest: +SKIP
    ('OD', '3f1c0e6a9b2d4c7e')
"""

from __future__ import annotations

import hashlib
import io
import logging
import operator
import os
import reprlib
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xmed.errors import ImageReadError, InputError, SecurityWarning

__all__ = [
    "DEFAULT_DICOM_SALT",
    "DEFAULT_MAX_PIXELS",
    "DICOM_SALT_ENV",
    "DICOM_SUFFIXES",
    "IMAGE_EXTENSIONS",
    "JPEG_REDUCTIONS",
    "SOP_CLASSES",
    "dicom_pseudonym",
    "is_dicom_file",
    "read_dicom",
    "read_image",
    "read_image_reduced",
    "read_mask",
]

PathLike = str | os.PathLike

#: Largest ``width * height`` accepted before decoding (a 100-megapixel photograph).
DEFAULT_MAX_PIXELS = 100_000_000

#: The factors by which libjpeg can shrink each side of a JPEG while decoding it (DCT scaling).
JPEG_REDUCTIONS = (1, 2, 4, 8)

#: Environment variable holding the salt of DICOM pseudonyms.
DICOM_SALT_ENV = "XMED_DICOM_SALT"

#: File name endings read as DICOM whatever the file holds; other files are DICOM when they hold the
#: ``DICM`` preamble at byte 128.
DICOM_SUFFIXES = (".dcm", ".dicom")

#: File name endings listed as photographs (compared lower-case).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
)

#: Salt used when neither ``salt=`` nor :data:`DICOM_SALT_ENV` is given. It is public, so anyone
#: can recompute the pseudonym of a known SOP Instance UID: a site must set its own secret salt.
DEFAULT_DICOM_SALT = "xmed-default-dicom-salt-v1"

#: The SOP classes fundus photographs come in; others are read too when their pixels are
#: colour or monochrome, and ``meta["sop_class"]`` tells which one it was.
SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.77.1.5.1": "Ophthalmic Photography 8 Bit Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}

_LATERALITY_TO_EYE = {"R": "OD", "L": "OS"}
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) as stored in a little-endian file


# ----------------------------------------------------------------------------------- public API
def read_image(path: PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a photograph as an ``H×W×3`` uint8 RGB array.

    JPEG, PNG, BMP and TIFF are decoded with Pillow (first frame of multi-page files), after
    applying the EXIF orientation. DICOM files (the ``DICM`` prefix at byte 128, or a ``.dcm``
    suffix) go to :func:`read_dicom`. Modes are converted explicitly: greyscale is repeated on
    three channels; alpha (RGBA, LA, palette transparency) is composited onto **black**, the
    background of a fundus photograph; 16-bit images are scaled to 8 bits by their bit depth
    (``0x8000`` in a 16-bit PNG gives 128; a TIFF's BitsPerSample is honoured), and values above
    the declared depth widen it instead of being clipped; palette images give the palette
    colours; CMYK and YCbCr use Pillow's conversion. Floating-point images are refused.

    Args:
        path: the image file.
        max_pixels: largest ``width * height`` accepted, checked from the header before any
            decoding. Pillow's own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``,
            about 89 megapixels by default) applies as well: the smaller limit wins.

    Returns:
        ``H×W×3`` uint8 RGB array.

    Raises:
        ImageReadError: the file is missing, a folder, empty, truncated, not an image, too large
            (decompression bomb), or a DICOM file without usable pixel data.

    Example:
        >>> image = read_image("eye.png")                          # doctest: +SKIP
        >>> image.shape, image.dtype                               # doctest: +SKIP
        ((512, 512, 3), dtype('uint8'))
    """
    return _read(path, max_pixels)[0]


def read_image_reduced(
    path: PathLike, reduction: Callable[[int, int], int] | None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, int]:
    """Read a photograph as :func:`read_image` does, a JPEG decoded smaller: ``(image, factor)``.

    ``reduction(width, height)`` is given the stored size (from the header, before any decoding)
    and returns one of :data:`JPEG_REDUCTIONS`; a JPEG is then decoded at ``1/factor`` of each
    side by libjpeg's DCT scaling (Pillow's ``Image.draft``), several times cheaper than a whole
    decode followed by a resize. Its sides are ``ceil(side / factor)`` (before the EXIF
    orientation turns it). ``factor`` is the one applied: 1 for other formats, which are decoded
    whole, and for ``reduction=None``; less than asked for a JPEG too small to be shrunk that
    much. Checks and errors are those of :func:`read_image` (the size limit applies to the
    stored size).

    Example, on a 2048×1536 JPEG:
        >>> image, factor = read_image_reduced("eye.jpg", lambda w, h: 4)   # doctest: +SKIP
        >>> image.shape, factor                                             # doctest: +SKIP
        ((384, 512, 3), 4)
    """
    return _read(path, max_pixels, reduction)


def _read(path: PathLike, max_pixels: int,
          reduction: Callable[[int, int], int] | None = None) -> tuple[np.ndarray, int]:
    """:func:`read_image_reduced`; whole when ``reduction`` is None."""
    path = _check_file(path)
    if _is_dicom(path):
        return read_dicom(path, max_pixels=max_pixels)[0], 1
    image, factor = _load_pil(path, max_pixels, reduction)
    return _pil_to_rgb(path, image), factor


def read_mask(path: PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a segmentation mask as a 2-D array of its raw levels.

    Grayscale masks are returned as stored (uint8, or uint16 for 16-bit files; 1-bit files give
    0/1); palette masks give the palette **indices**, not colours. Colour masks whose three
    channels are equal give that channel; otherwise the ITU-R 601 luma
    ``(19595 R + 38470 G + 7471 B + 2**15) >> 16`` (Pillow's ``convert("L")``). Alpha is first
    composited onto black, so transparent pixels read as 0. Errors are those of
    :func:`read_image`.

    Args:
        path: the mask file (any format :func:`read_image` reads).
        max_pixels: largest ``width * height`` accepted, as in :func:`read_image`.

    Returns:
        ``H×W`` uint8 (or uint16) array.

    Example:
        >>> levels = read_mask("disc_cup.png")                     # doctest: +SKIP
        >>> sorted(set(levels.ravel().tolist()))                   # doctest: +SKIP
        [0, 128, 255]
    """
    path = _check_file(path)
    if _is_dicom(path):
        return _rgb_to_levels(read_dicom(path, max_pixels=max_pixels)[0])
    image, _ = _load_pil(path, max_pixels)
    if image.mode in ("P", "L"):
        return np.array(image)
    if image.mode == "1":
        return np.array(image, dtype=np.uint8)
    if image.mode.startswith("I;16"):
        return np.array(image).astype(np.uint16)
    if image.mode == "I":
        levels = np.array(image)
        if levels.size and (levels.min() < 0 or levels.max() > np.iinfo(np.uint16).max):
            raise ImageReadError(path, "32-bit mask levels outside 0..65535 are not supported")
        return levels.astype(np.uint16)
    return _rgb_to_levels(_pil_to_rgb(path, image))


def read_dicom(
    path: PathLike, *, salt: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a DICOM photograph as ``H×W×3`` uint8 RGB plus de-identified metadata.

    Meant for Ophthalmic Photography 8 Bit, VL Photographic and Secondary Capture images (see
    :data:`SOP_CLASSES`); any other SOP class with colour or monochrome pixels is read too.
    Transfer syntaxes: uncompressed (Implicit/Explicit VR Little Endian) and JPEG Baseline, plus
    whatever pydicom has a decoder for here. pydicom 3 converts ``YBR_FULL`` and
    ``YBR_FULL_422`` to RGB itself (BT.601 full range, native or JPEG) and handles planar
    configuration 1; ``MONOCHROME1`` is inverted, monochrome is repeated on three channels, and
    samples wider than 8 bits are scaled by *Bits Stored*. Multi-frame files give the first frame.
    No Modality/VOI LUT is applied.

    ``meta`` holds only: ``id`` (first 16 hex digits of ``sha256(f"{salt}:{SOPInstanceUID}")``;
    the SHA-256 of the pixel data stands in for a missing UID), ``eye`` (``"OD"``/``"OS"`` from
    Image Laterality (0020,0062) or Laterality (0020,0060); None for both eyes or unknown),
    ``modality``, ``sop_class``, ``photometric`` (as stored), ``rows``, ``columns``,
    ``n_frames`` and ``transfer_syntax``. No patient, study, institution, date or person
    attribute is read into it or logged.

    Args:
        path: the DICOM file.
        salt: salt of the pseudonym; defaults to the ``XMED_DICOM_SALT`` environment variable,
            else :data:`DEFAULT_DICOM_SALT`, which is public: each site should set its own.
        max_pixels: largest ``Rows * Columns`` accepted, checked before decoding.

    Returns:
        ``(image, meta)``.

    Raises:
        ImageReadError: not a DICOM file, no pixel data, truncated pixel data, a transfer
            syntax that cannot be decoded here (named by UID), a header attribute that cannot be
            read as its VR says or is not one whole number (named with its tag), or pixels that
            are not an image.

    Example:
        >>> image, meta = read_dicom("OP0001.dcm", salt="site-secret")   # doctest: +SKIP
        >>> meta["eye"], meta["modality"], image.shape                   # doctest: +SKIP
        ('OS', 'OP', (2000, 2400, 3))
    """
    from pydicom.uid import UID

    path = _check_file(path)
    ds = _dcmread(path)
    pixel_data = _dicom_value(path, ds, "PixelData")
    if not pixel_data:
        raise ImageReadError(path, _missing_pixel_data_reason(path, ds))
    if not isinstance(pixel_data, bytes):
        raise ImageReadError(path, f"Pixel Data (7FE0,0010) has VR {ds['PixelData'].VR}, not the "
                                   "OB or OW of pixel bytes")
    file_meta = getattr(ds, "file_meta", None)
    syntax = _dicom_value(path, file_meta, "TransferSyntaxUID") if file_meta is not None else None
    if not syntax:
        raise ImageReadError(path, "no Transfer Syntax UID (0002,0010) in the file meta")
    syntax = UID(str(syntax))
    decoder = _decoder_for(path, syntax)
    geometry = _pixel_geometry(path, ds)
    _check_pixel_count(path, geometry["columns"], geometry["rows"], max_pixels)
    if not syntax.is_encapsulated:
        _check_native_length(path, ds, geometry)
    pixels, photometric = _decode_first_frame(path, ds, syntax, decoder)
    image = _dicom_pixels_to_rgb(path, ds, pixels, photometric)
    return image, _deidentified_meta(path, ds, syntax, geometry, salt)


# ------------------------------------------------------------------------------- file checks
def _check_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "file does not exist")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not a file")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageReadError(path, f"cannot open file ({err.strerror})") from None
    if size == 0:
        raise ImageReadError(path, "zero-byte file")
    return path


def _check_pixel_count(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageReadError(path, f"image is {width}x{height} pixels, more than "
                                   f"max_pixels={max_pixels} (possible decompression bomb)")


def is_dicom_file(path: PathLike) -> bool:
    """Whether a file is read as DICOM: a name ending in one of :data:`DICOM_SUFFIXES`, or the
    ``DICM`` preamble at byte 128 (the first 132 bytes are read; an ``OSError`` when they cannot be).

    Example:
        >>> is_dicom_file("IM0001.dcm")                              # by its name: nothing is read
        True
    """
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as f:
        return f.read(132)[128:132] == b"DICM"


def _is_dicom(path: Path) -> bool:
    try:
        return is_dicom_file(path)
    except OSError as err:
        raise ImageReadError(path, f"cannot open file ({err.strerror})") from None


# ----------------------------------------------------------------------------------- Pillow
def _load_pil(path: Path, max_pixels: int,
              reduction: Callable[[int, int], int] | None = None) -> tuple[Image.Image, int]:
    """Open, size-check, decode (a JPEG at ``1/reduction(width, height)`` of its size) and
    EXIF-orient an image: ``(image, the factor applied)``; every failure names ``path``."""
    try:
        # Pillow warns (and errors at 2x) above Image.MAX_IMAGE_PIXELS; make the warning an error
        # here only, without touching the global limit.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # decoded from memory: a decoder that fails part-way (libtiff on a damaged TIFF) can
            # leave no file descriptor of ours open
            with Image.open(io.BytesIO(path.read_bytes())) as image:
                _check_pixel_count(path, *image.size, max_pixels)
                factor = _draft(path, image, reduction(*image.size)) if reduction else 1
                image.load()  # decode now, so that truncation fails here and not later
                return ImageOps.exif_transpose(image), factor
    except (ImageReadError, InputError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(path, f"decompression bomb: {err}") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (format not recognised by Pillow)") from None
    except PermissionError as err:
        raise ImageReadError(path, f"cannot open file ({err.strerror})") from None
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error, ...
        kind = "truncated file" if "truncated" in str(err).lower() else "corrupt image data"
        raise ImageReadError(path, f"{kind} ({type(err).__name__}: {err})") from err


def _draft(path: Path, image: Image.Image, factor: int) -> int:
    """Have a JPEG decoded at ``1/factor`` of each side (the mode unchanged); the factor applied
    (1 for other formats)."""
    if factor not in JPEG_REDUCTIONS:
        raise InputError("reduction", f"returned {factor!r} for {path}; must be one of {JPEG_REDUCTIONS}")
    width, height = image.size
    if factor == 1 or image.format not in ("JPEG", "MPO"):
        return 1
    # Pillow takes the largest factor that keeps the size asked for: ask for width // factor
    # (not its ceiling) so that exactly `factor` is taken
    drafted = image.draft(None, (max(1, width // factor), max(1, height // factor)))
    if not drafted:  # a JPEG Pillow cannot scale (several tiles)
        return 1
    _, (_, _, scaled_width, _) = drafted  # (mode, box): the box is (0, 0, width / scale, height / scale)
    return round(width / scaled_width)


def _pil_to_rgb(path: Path, image: Image.Image) -> np.ndarray:
    """Convert a loaded Pillow image of any mode to ``H×W×3`` uint8 RGB."""
    mode = image.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode == "RGB":
        return np.array(image)
    if mode in ("1", "L"):
        return grey_to_rgb(np.array(image.convert("L")))
    if mode in ("LA", "La"):
        grey_alpha = np.array(image.convert("LA"))
        return grey_to_rgb(onto_black(grey_alpha[..., :1], grey_alpha[..., 1])[..., 0])
    if mode in ("RGBA", "RGBa"):
        rgba = np.array(image.convert("RGBA"))
        return onto_black(rgba[..., :3], rgba[..., 3])
    if mode == "I" or mode.startswith("I;16"):
        values = np.array(image)
        if values.size and values.min() < 0:
            raise ImageReadError(path, f"negative values in a {mode} image are not supported")
        return grey_to_rgb(_to_uint8(values, _pil_bit_depth(image)))
    if mode in ("CMYK", "YCbCr", "RGBX", "LAB", "HSV"):
        return np.array(image.convert("RGB"))
    raise ImageReadError(path, f"unsupported image mode {mode!r} (e.g. floating point)")


def _pil_bit_depth(image: Image.Image) -> int:
    """Bits per sample of an integer image: TIFF's BitsPerSample tag, else 16."""
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None  # 258 = BitsPerSample
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if bits else 16


# ------------------------------------------------------------------------------ array helpers
def _to_uint8(values: np.ndarray, bits: int) -> np.ndarray:
    """Scale unsigned integers of ``bits`` bits to uint8 (shift down, or stretch up below 8).

    If the data exceed the declared depth (a mislabelled file) the depth is widened rather than
    letting values wrap or clip.
    """
    if values.size:
        bits = max(bits, int(values.max()).bit_length())
    if bits == 8 and values.dtype == np.uint8:
        return np.array(values)  # a writable copy, never a view on a decoder's buffer
    values = values.astype(np.uint64)
    if bits > 8:
        return (values >> (bits - 8)).astype(np.uint8)
    top = (1 << bits) - 1
    return ((values * 255 + top // 2) // top).astype(np.uint8)


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """An H×W grey image as H×W×3 (the value repeated in every channel)."""
    return np.repeat(grey[..., None], 3, axis=-1)


def onto_black(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite ``colour`` (H×W×C uint8) with ``alpha`` (H×W uint8) onto black, rounding."""
    weighted = colour.astype(np.uint32) * alpha[..., None].astype(np.uint32)
    return ((weighted + 127) // 255).astype(np.uint8)


def _rgb_to_levels(rgb: np.ndarray) -> np.ndarray:
    """One channel when R == G == B everywhere, else ITU-R 601 luma as Pillow computes it."""
    red, green, blue = (rgb[..., i] for i in range(3))
    if np.array_equal(red, green) and np.array_equal(red, blue):
        return np.array(red)
    red, green, blue = (channel.astype(np.uint32) for channel in (red, green, blue))
    return ((red * 19595 + green * 38470 + blue * 7471 + 0x8000) >> 16).astype(np.uint8)


# ------------------------------------------------------------------------------------ DICOM
def _dcmread(path: Path):
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        return dcmread(path)
    except InvalidDicomError:
        raise ImageReadError(path, "not a DICOM file (no 'DICM' prefix at byte 128)") from None
    except Exception as err:  # EOFError, struct.error, ... (or a pydicom warning made an error)
        truncated = isinstance(err, EOFError) or "end of file" in str(err).lower()
        kind = "truncated" if truncated else "corrupt"
        raise ImageReadError(path, f"{kind} DICOM file ({type(err).__name__}: {err})") from err


def _dicom_value(path: Path, ds, keyword: str) -> Any:
    """``ds.get(keyword)``; pydicom converts elements on first access, so a value that lies about
    its VR (wrong length, a broken sequence, ...) fails here, and the error names the attribute."""
    try:
        return ds.get(keyword)
    except Exception as err:
        raise ImageReadError(path, f"unreadable {_attribute_label(keyword)} "
                                   f"({type(err).__name__}: {err})") from err


def _whole_number(path: Path, keyword: str, value: Any) -> int:
    """``value`` of the attribute ``keyword`` as an int; several values, text or bytes are refused."""
    try:
        return operator.index(value)
    except TypeError:
        raise ImageReadError(path, f"{_attribute_label(keyword)} is {reprlib.repr(value)}, not "
                                   "one whole number") from None


def _attribute_label(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import Tag

    return f"{keyword} {Tag(tag_for_keyword(keyword))}"


def _missing_pixel_data_reason(path: Path, ds) -> str:
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return "floating-point pixel data is not supported"
    if "PixelData" in ds:
        return "the Pixel Data (7FE0,0010) element is empty"
    # pydicom drops a Pixel Data element whose encapsulated items run past the end of the file
    if _PIXEL_DATA_TAG in path.read_bytes():
        return "truncated pixel data (the file ends inside the Pixel Data element)"
    return "no pixel data: the DICOM file has no Pixel Data (7FE0,0010) element"


def _pixel_geometry(path: Path, ds) -> dict[str, Any]:
    """The Image Pixel attributes needed to decode, checked for presence."""
    needed = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
              "PhotometricInterpretation")
    values = {name: _dicom_value(path, ds, name) for name in needed}
    missing = [name for name, value in values.items() if value in (None, "")]
    if missing:
        raise ImageReadError(path, f"Image Pixel attribute(s) missing: {', '.join(missing)}")
    frames = _dicom_value(path, ds, "NumberOfFrames")
    geometry = {
        "rows": _whole_number(path, "Rows", values["Rows"]),
        "columns": _whole_number(path, "Columns", values["Columns"]),
        "samples": _whole_number(path, "SamplesPerPixel", values["SamplesPerPixel"]),
        "bits_allocated": _whole_number(path, "BitsAllocated", values["BitsAllocated"]),
        "n_frames": _whole_number(path, "NumberOfFrames", frames) if frames not in (None, "") else 1,
        "photometric": str(values["PhotometricInterpretation"]),
    }
    if geometry["samples"] not in (1, 3):
        raise ImageReadError(path, f"{geometry['samples']} samples per pixel (expected 1 or 3)")
    return geometry


def _check_native_length(path: Path, ds, geometry: dict[str, Any]) -> None:
    """Uncompressed pixel data shorter than the header promises is a truncated file."""
    samples_per_frame = geometry["rows"] * geometry["columns"] * geometry["samples"]
    if geometry["photometric"] == "YBR_FULL_422":  # stored with horizontally halved chroma
        samples_per_frame = samples_per_frame * 2 // 3
    bits = samples_per_frame * geometry["n_frames"] * geometry["bits_allocated"]
    expected = (bits + 7) // 8
    actual = len(ds.PixelData)
    if actual < expected:
        raise ImageReadError(path, f"truncated pixel data: {actual} bytes, expected {expected} for "
                                   f"{geometry['n_frames']} frame(s) of {geometry['columns']}x"
                                   f"{geometry['rows']}x{geometry['samples']}")


def _syntax_label(syntax) -> str:
    return f"{syntax} ({syntax.name})" if syntax.name != str(syntax) else str(syntax)


def _decoder_for(path: Path, syntax):
    """pydicom's decoder of ``syntax``, or an error naming the UID when there is none here."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise ImageReadError(path, f"unsupported transfer syntax {_syntax_label(syntax)}: "
                                   "pydicom has no decoder for it") from None
    if not decoder.is_available:
        raise ImageReadError(path, f"cannot decode transfer syntax {_syntax_label(syntax)} here: "
                                   f"needs one of {'; '.join(decoder.missing_dependencies)}")
    return decoder


def _decode_first_frame(path: Path, ds, syntax, decoder) -> tuple[np.ndarray, str]:
    """Decode frame 0; return it with its photometric interpretation *after* decoding.

    pydicom 3's ``as_rgb=True`` turns YBR_FULL / YBR_FULL_422 into RGB (also for JPEG, whose
    Pillow decoder keeps YCbCr), and reports the change; trusting that report avoids converting
    twice or not at all.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            pixels, changes = decoder.as_array(ds, index=0, as_rgb=True)
    except Exception as err:
        truncated = "truncated" in str(err).lower()
        kind = "truncated pixel data" if truncated else "cannot decode pixel data"
        raise ImageReadError(path, f"{kind} with transfer syntax {_syntax_label(syntax)} "
                                   f"({type(err).__name__}: {err})") from err
    return pixels, str(changes.get("photometric_interpretation", ds.PhotometricInterpretation))


def _dicom_pixels_to_rgb(path: Path, ds, pixels: np.ndarray, photometric: str) -> np.ndarray:
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        # signed range onto 0..2**bits-1; in uint64 (wrapping) so that 64-bit samples fit
        pixels = pixels.astype(np.int64).astype(np.uint64) + np.uint64(1 << (bits - 1))
    if pixels.size:
        bits = max(bits, int(pixels.max()).bit_length())
    if photometric == "RGB" and pixels.ndim == 3 and pixels.shape[-1] == 3:
        return _to_uint8(pixels, bits)
    if photometric in ("MONOCHROME1", "MONOCHROME2") and pixels.ndim == 2:
        if photometric == "MONOCHROME1":  # 0 is white
            pixels = np.uint64((1 << bits) - 1) - pixels.astype(np.uint64)
        return grey_to_rgb(_to_uint8(pixels, bits))
    if photometric == "PALETTE COLOR" and pixels.ndim == 2:
        from pydicom.pixels import apply_color_lut

        try:
            rgb = apply_color_lut(pixels, ds)
            lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception as err:
            raise ImageReadError(path, f"bad palette colour lookup table ({type(err).__name__}: "
                                       f"{err})") from err
        return _to_uint8(rgb, lut_bits)
    raise ImageReadError(path, f"unsupported photometric interpretation {photometric!r} with "
                               f"pixel array shape {pixels.shape}")


def _deidentified_meta(path: Path, ds, syntax, geometry: dict[str, Any],
                       salt: str | None) -> dict[str, Any]:
    """Whitelisted, non-identifying attributes only (see :func:`read_dicom`)."""
    file_meta = getattr(ds, "file_meta", None)

    def value(keyword: str, file_meta_keyword: str | None = None) -> Any:
        found = _dicom_value(path, ds, keyword)
        if not found and file_meta_keyword and file_meta is not None:
            found = _dicom_value(path, file_meta, file_meta_keyword)
        return found

    instance = value("SOPInstanceUID", "MediaStorageSOPInstanceUID")
    if not instance:
        instance = hashlib.sha256(bytes(ds.PixelData)).hexdigest()
    sop_class = value("SOPClassUID", "MediaStorageSOPClassUID")
    laterality = value("ImageLaterality") or value("Laterality") or ""
    modality = value("Modality")
    return {
        "id": dicom_pseudonym(str(instance), salt),
        "eye": _LATERALITY_TO_EYE.get(str(laterality).strip().upper()),
        "modality": str(modality) if modality else None,
        "sop_class": str(sop_class) if sop_class else None,
        "photometric": geometry["photometric"],
        "rows": geometry["rows"],
        "columns": geometry["columns"],
        "n_frames": geometry["n_frames"],
        "transfer_syntax": str(syntax),
    }


def dicom_pseudonym(value: str, salt: str | None = None) -> str:
    """The salted SHA-256 pseudonym (16 hex characters) xmed uses in place of a DICOM UID.

    ``salt`` defaults to ``$XMED_DICOM_SALT``, else a public project default: set your own.

    Example:
        >>> dicom_pseudonym("1.2.3", salt="site-secret") == dicom_pseudonym("1.2.3", salt="site-secret")
        True
    """
    if salt is None:
        salt = os.environ.get(DICOM_SALT_ENV) or DEFAULT_DICOM_SALT
    if salt == DEFAULT_DICOM_SALT:
        _warn_public_salt()
    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:16]


_public_salt_warned = False


def _warn_public_salt() -> None:
    """Warn (and log) once per process that pseudonyms use the public default salt."""
    global _public_salt_warned
    if _public_salt_warned:
        return
    _public_salt_warned = True
    message = (f"DICOM pseudonyms are salted with xmed's public default salt, so anyone can recompute them "
               f"from the instance and patient IDs; set the environment variable {DICOM_SALT_ENV} to your "
               f"site's own secret")
    logging.getLogger(__name__).warning(message)
    warnings.warn(message, SecurityWarning, stacklevel=3)
